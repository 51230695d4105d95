"""Generation: determinism, stop tokens, and the streaming callback from Python."""

import signal

import numpy as np
import peftkit
import pytest


def test_greedy_and_sampled_generation(trained_model):
    m = trained_model
    out = m.generate([1, 2, 3], max_new_tokens=10)
    assert out.dtype == np.int32 and out.shape == (10,)
    assert np.array_equal(out, m.generate(np.array([[1, 2, 3]]), max_new_tokens=10))  # [1, n] prompt
    a = m.generate([1, 2, 3], max_new_tokens=20, temperature=1.0, top_k=50, top_p=0.9, seed=11)
    b = m.generate([1, 2, 3], max_new_tokens=20, temperature=1.0, top_k=50, top_p=0.9, seed=11)
    c = m.generate([1, 2, 3], max_new_tokens=20, temperature=1.0, seed=12)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert ((0 <= a) & (a < 256)).all()
    assert m.generate([1, 2, 3], max_new_tokens=0).shape == (0,)


def test_generation_stops_at_max_positions():
    with peftkit.Model.create(max_positions=16) as m:
        assert len(m.generate(list(range(10)), max_new_tokens=100)) == 6


def test_stop_tokens(model):
    full = model.generate([5, 6, 7], max_new_tokens=12, temperature=1.0, seed=3)
    first = int(full[0])
    assert np.array_equal(model.generate([5, 6, 7], max_new_tokens=12, temperature=1.0, seed=3, stop=first),
                          [first])
    k = len(full) // 2
    stop_at = int(full[k])
    want = full[: list(full).index(stop_at) + 1]
    got = model.generate([5, 6, 7], max_new_tokens=12, temperature=1.0, seed=3, stop=[stop_at, stop_at])
    assert np.array_equal(got, want)


def test_streamed_tokens_equal_the_returned_tokens(trained_model):
    streamed = []
    out = trained_model.generate([1, 2, 3], max_new_tokens=15, temperature=0.8, seed=4,
                                 callback=lambda t: streamed.append(t))
    assert len(out) == 15 and streamed == out.tolist()
    assert all(type(t) is int for t in streamed)


def test_callback_returning_true_stops(trained_model):
    streamed = []

    def cb(token):
        streamed.append(token)
        return len(streamed) == 4

    out = trained_model.generate([1, 2, 3], max_new_tokens=20, temperature=1.0, seed=5, callback=cb)
    assert len(out) == 4 and out.tolist() == streamed  # the token that stopped it is kept
    full = trained_model.generate([1, 2, 3], max_new_tokens=20, temperature=1.0, seed=5)
    assert np.array_equal(full[:4], out)


class Boom(Exception):
    pass


def test_exception_in_callback_stops_and_is_reraised(trained_model):
    calls = []

    def cb(token):
        calls.append(token)
        if len(calls) == 3:
            raise Boom(f"stop at {token}")

    with pytest.raises(Boom, match="stop at") as info:
        trained_model.generate([1, 2, 3], max_new_tokens=50, callback=cb)
    assert len(calls) == 3  # generation stopped at the raising call
    assert info.value.__traceback__ is not None
    # The model is intact and usable.
    assert len(trained_model.generate([1, 2, 3], max_new_tokens=5)) == 5
    trained_model.train_step([1, 2, 3, 4])


def test_keyboard_interrupt_in_callback(model):
    with pytest.raises(KeyboardInterrupt):
        model.generate([1], max_new_tokens=50, callback=lambda t: (_ for _ in ()).throw(KeyboardInterrupt()))


def test_ctrl_c_stops_generation(model):
    """SIGINT during generation stops it between two tokens and raises KeyboardInterrupt."""
    seen = []

    def cb(token):
        seen.append(token)
        if len(seen) == 3:
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        model.generate([1], max_new_tokens=200, callback=cb)
    assert 3 <= len(seen) <= 4
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    assert len(model.generate([1], max_new_tokens=3)) == 3


def test_calling_the_model_from_its_own_callback(trained_model):
    m = trained_model

    def cb(token):
        m.forward([1, 2])  # not allowed while this model generates

    with pytest.raises(peftkit.BusyError, match="in use"):
        m.generate([1, 2, 3], max_new_tokens=5, callback=cb)

    def closing(token):
        m.close()

    with pytest.raises(peftkit.StateError, match="close"):
        m.generate([1, 2, 3], max_new_tokens=5, callback=closing)
    assert not m.closed
    assert len(m.generate([1, 2, 3], max_new_tokens=2)) == 2


def test_callback_may_use_another_model(trained_model):
    with peftkit.Model.create(seed=9) as other:
        losses = []
        out = trained_model.generate([1, 2, 3], max_new_tokens=4, callback=lambda t: losses.append(other.loss([t, t])))
        assert len(out) == 4 and len(losses) == 4 and all(np.isfinite(losses))
