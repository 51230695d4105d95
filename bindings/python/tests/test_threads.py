"""Threads: long calls release the GIL, calls on one model from several threads are serialised,
distinct models run in parallel, and close() waits for a running call."""

import ctypes
import threading
import time

import numpy as np
import peftkit
import pytest
from peftkit import _capi


@pytest.fixture(scope="module")
def big():
    """A model big enough that one train step takes a good fraction of a second."""
    peftkit.set_num_threads(1)
    m = peftkit.Model.create(vocab_size=4096, hidden_size=256, num_layers=4, num_heads=8, seed=1)
    m.attach_adapter("a")
    m.set_active_adapter("a")
    ids = np.random.default_rng(0).integers(0, 4096, size=(2, 128), dtype=np.int32)
    m.train_step(ids)  # warm up (first-step allocations)
    yield m, ids
    m.close()
    peftkit.set_num_threads(0)


def ticks_inside(call):
    """Runs `call` on this thread while another Python thread counts; returns how many of the
    counter's progress marks fall well inside the call (its middle 80%), the call's duration, and the
    longest stretch of the call without a mark."""
    marks = []
    stop = threading.Event()
    running = threading.Event()

    def counter():
        n = 0
        running.set()
        while not stop.is_set():
            n += 1
            if n % 200 == 0:
                marks.append(time.perf_counter())

    t = threading.Thread(target=counter)
    t.start()
    running.wait()
    time.sleep(0.01)
    t0 = time.perf_counter()
    call()
    t1 = time.perf_counter()
    stop.set()
    t.join()
    lo, hi = t0 + 0.1 * (t1 - t0), t1 - 0.1 * (t1 - t0)
    inside = [x for x in marks if t0 < x < t1]
    edges = [t0] + inside + [t1]
    gap = max(b - a for a, b in zip(edges, edges[1:]))
    return sum(lo < x < hi for x in marks), t1 - t0, gap


def test_train_step_releases_the_gil(big):
    m, ids = big
    inside, seconds, _ = ticks_inside(lambda: m.train_step(ids))
    print(f"train_step {seconds * 1e3:.0f} ms: {inside} counter marks inside the call")
    assert seconds > 0.05
    assert inside >= 20


def test_the_same_call_through_pydll_holds_the_gil(big):
    """The control experiment: ctypes.PyDLL keeps the GIL during the call, and the counter stops."""
    m, ids = big
    pylib = ctypes.PyDLL(peftkit.library_path)
    fn = pylib.peftkit_train_step
    fn.restype, fn.argtypes = _capi.PROTOTYPES["peftkit_train_step"]
    cfg = peftkit.TrainConfig()._to_struct()

    def call():
        with m._call as h:
            assert fn(h, ids.ctypes.data, None, 2, 128, ctypes.byref(cfg), None) == 0

    inside, seconds, gap = ticks_inside(call)
    print(f"PyDLL train_step {seconds * 1e3:.0f} ms: {inside} counter marks inside the call, "
          f"longest gap {gap * 1e3:.0f} ms")
    assert seconds > 0.05
    # The counter runs only while the calling thread is outside the C function (taking the model lock,
    # waiting for the GIL on a loaded machine), so one gap covers the C call; CDLL gives marks throughout.
    assert gap >= 0.6 * seconds


def test_forward_and_generate_release_the_gil(big):
    m, ids = big
    inside, _, _ = ticks_inside(lambda: m.forward(np.concatenate([ids, ids, ids])))
    assert inside >= 10
    inside, _, _ = ticks_inside(lambda: m.generate(ids[0, :100], max_new_tokens=25))
    assert inside >= 10


def test_calls_on_one_model_from_many_threads_are_serialised():
    ids = np.array([[1, 2, 3, 4, 5, 6, 7, 8]] * 2, dtype=np.int32)
    with peftkit.Model.create(seed=1) as m, peftkit.Model.create(seed=1) as ref:
        for x in (m, ref):
            x.attach_adapter("a")
            x.set_active_adapter("a")
        errors = []
        steps = []

        def work():
            try:
                for _ in range(10):
                    steps.append(m.train_step(ids, learning_rate=1e-3).step)
                    m.forward(ids)
                    assert m.adapters == ["a"]
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert sorted(steps) == list(range(1, 41))  # each thread gets its own step's result
        for _ in range(40):
            ref.train_step(ids, learning_rate=1e-3)
        # Same inputs, same step count: the serialised steps equal 40 sequential ones.
        np.testing.assert_allclose(m.forward(ids), ref.forward(ids), rtol=0, atol=1e-6)


def test_distinct_models_in_parallel_threads():
    ids = np.array([[1, 2, 3, 4, 5, 6, 7, 8]], dtype=np.int32)
    results = {}

    def work(seed):
        with peftkit.Model.create(seed=seed) as m:
            m.attach_adapter("a")
            m.set_active_adapter("a")
            results[seed] = [m.train_step(ids, learning_rate=1e-2).loss for _ in range(20)]

    threads = [threading.Thread(target=work, args=(s,)) for s in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in (1, 2, 3):
        with peftkit.Model.create(seed=s) as m:
            m.attach_adapter("a")
            m.set_active_adapter("a")
            assert results[s] == [m.train_step(ids, learning_rate=1e-2).loss for _ in range(20)]


def test_close_waits_for_a_running_call(big):
    _, ids = big
    m = peftkit.Model.create(vocab_size=4096, hidden_size=256, num_layers=4, num_heads=8, seed=2)
    m.attach_adapter("a")
    m.set_active_adapter("a")
    done = []
    t = threading.Thread(target=lambda: done.append(m.train_step(ids).loss))
    t.start()
    while not m._call.calls:  # wait until the step is inside the library
        time.sleep(0.001)
    m.close()  # blocks until the step has finished, then frees
    t.join()
    assert len(done) == 1 and np.isfinite(done[0]) and m.closed
