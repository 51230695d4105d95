"""Handles are freed exactly once: by close(), by a with block, or by garbage collection."""

import copy
import gc
import pickle
import weakref

import peftkit
import peftkit.model as model_module
import pytest


@pytest.fixture
def frees(monkeypatch):
    """Counts calls of peftkit_model_free (made through the model's finalizer)."""
    freed = []
    real = model_module._free_model

    def counting(handle):
        freed.append(handle)
        real(handle)

    monkeypatch.setattr(model_module, "_free_model", counting)
    return freed


def test_close_frees_once(frees):
    m = peftkit.Model.create()
    h = m._handle
    assert not m.closed
    m.close()
    assert m.closed and frees == [h]
    m.close()
    m.close()
    del m
    gc.collect()
    assert frees == [h]


def test_use_after_close_raises(frees):
    m = peftkit.Model.create()
    m.attach_adapter("a")
    m.close()
    for call in (lambda: m.forward([1, 2]), lambda: m.adapters, lambda: m.train_step([1, 2]),
                 lambda: m.generate([1]), lambda: m.set_active_adapter("a"), lambda: m.save_adapter("a", "x")):
        with pytest.raises(peftkit.StateError, match="closed"):
            call()
    assert repr(m) == "<peftkit.Model (closed)>"
    assert m.config.vocab_size == 256  # plain data stays readable
    assert len(frees) == 1


def test_context_manager(frees):
    with peftkit.Model.create() as m:
        assert isinstance(m, peftkit.Model) and not m.closed
        h = m._handle
    assert m.closed and frees == [h]
    with pytest.raises(ZeroDivisionError):
        with peftkit.Model.create() as m2:
            h2 = m2._handle
            raise ZeroDivisionError
    assert m2.closed and frees == [h, h2]
    m2.close()
    assert frees == [h, h2]


def test_garbage_collection_frees(frees):
    m = peftkit.Model.create()
    h = m._handle
    ref = weakref.ref(m)
    del m
    gc.collect()
    assert ref() is None and frees == [h]


def test_dropping_the_last_reference_frees_at_once(frees):
    gc.disable()
    try:
        m = peftkit.Model.create()
        m.attach_adapter("a")
        m.generate([1], max_new_tokens=2, callback=lambda t: None)
        h = m._handle
        del m
        assert frees == [h]  # by reference counting, without the cycle collector
    finally:
        gc.enable()


def test_reference_cycle_is_collected(frees):
    m = peftkit.Model.create()
    h = m._handle
    m.cycle = [m]
    del m
    gc.collect()
    assert frees == [h]


def test_many_models_do_not_leak(frees):
    for _ in range(50):
        peftkit.Model.create(num_layers=1)
    gc.collect()
    assert len(frees) == 50


def test_models_cannot_be_copied_or_pickled():
    with peftkit.Model.create() as m:
        for fn in (copy.copy, copy.deepcopy, pickle.dumps):
            with pytest.raises(TypeError, match="cannot be pickled or copied"):
                fn(m)


def test_failed_create_or_load_leaves_nothing(frees, tmp_path):
    with pytest.raises(peftkit.InvalidArgumentError):
        peftkit.Model.create(vocab_size=0)
    with pytest.raises(peftkit.PeftKitIOError):
        peftkit.Model.load(tmp_path)
    gc.collect()
    assert frees == []
