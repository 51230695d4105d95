"""Host capabilities: adapter tensors, forward outputs, progress and cancellation, disable_adapter, the
TrainResult of train_step, the version check at import, and errors for values the package does not know."""

import ctypes

import numpy as np
import pytest

import peftkit
from peftkit import _capi, errors
from peftkit import model as model_module

from conftest import FIXTURES
from safetensors_np import read_safetensors

LORA = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["c_attn"], "seed": 3}
IDS = np.array([[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8]], dtype=np.int32)


@pytest.fixture
def lora_model():
    with peftkit.Model.create(seed=5) as m:
        m.attach_adapter("l", LORA)
        m.set_active_adapter("l")
        yield m


def test_adapter_tensors_round_trip_through_the_saved_file(lora_model, tmp_path):
    m = lora_model
    m.train_step(IDS, learning_rate=1e-2)
    tensors = m.adapter_tensors("l")
    assert list(tensors) == sorted(tensors) and len(tensors) == 4
    assert all(k.startswith("base_model.model.transformer.h.") for k in tensors)
    m.save_adapter("l", tmp_path / "a")
    saved = read_safetensors(tmp_path / "a" / "adapter_model.safetensors")
    assert set(saved) == set(tensors)
    for k, v in tensors.items():
        assert v.dtype == np.float32 and v.shape == saved[k].shape
        np.testing.assert_array_equal(v, saved[k])
    # Written values land in the next save, and change what the model computes.
    before = m.forward(IDS)
    rng = np.random.default_rng(0)
    new = {k: rng.normal(0, 0.05, v.shape).astype(np.float32) for k, v in tensors.items()}
    for k, v in new.items():
        m.set_adapter_tensor("l", k, v)
    assert not np.allclose(before, m.forward(IDS))
    m.save_adapter("l", tmp_path / "b")
    saved = read_safetensors(tmp_path / "b" / "adapter_model.safetensors")
    for k, v in new.items():
        np.testing.assert_array_equal(saved[k], v)
        np.testing.assert_array_equal(m.adapter_tensors("l")[k], v)
    assert m.adapter_tensor_shapes("l") == {k: v.shape for k, v in new.items()}


def test_bad_tensor_writes_change_nothing(lora_model):
    m = lora_model
    name, v = next(iter(m.adapter_tensors("l").items()))
    with pytest.raises(peftkit.InvalidArgumentError):
        m.set_adapter_tensor("l", name, np.zeros(v.shape[::-1] if v.shape[0] != v.shape[1] else (1,)))
    bad = np.ones_like(v)
    bad.flat[2] = np.nan
    with pytest.raises(peftkit.InvalidArgumentError, match="finite"):
        m.set_adapter_tensor("l", name, bad)
    with pytest.raises(peftkit.InvalidArgumentError):
        m.set_adapter_tensor("l", name, np.full(v.shape, 1e39))  # overflows float32 to infinity
    with pytest.raises(peftkit.NotFoundError):
        m.set_adapter_tensor("l", "no.such.tensor", v)
    with pytest.raises(peftkit.NotFoundError):
        m.adapter_tensors("missing")
    np.testing.assert_array_equal(m.adapter_tensors("l")[name], v)


def _log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def test_forward_outputs_against_log_softmax_of_the_full_logits(lora_model):
    m = lora_model
    labels = IDS.copy()
    labels[0, 3] = peftkit.IGNORE_INDEX
    full = m.forward(IDS)
    r = m.forward(IDS, labels, logits="last", return_logprobs=True)
    assert isinstance(r, peftkit.ForwardResult)
    lsm = _log_softmax(full)
    want = np.zeros(IDS.shape)
    for b in range(2):
        for t in range(1, IDS.shape[1]):
            if labels[b, t] != peftkit.IGNORE_INDEX:
                want[b, t] = lsm[b, t - 1, labels[b, t]]
    np.testing.assert_allclose(r.token_logprobs, want, rtol=0, atol=1e-5)
    assert r.token_logprobs[0, 3] == 0 and (r.token_logprobs[:, 0] == 0).all()
    assert r.row_tokens.tolist() == [6, 7] and r.tokens == 13
    np.testing.assert_allclose(r.row_losses, -r.token_logprobs.sum(axis=1) / r.row_tokens, rtol=1e-5)
    ev = m.evaluate(IDS, labels)
    assert r.loss == ev.loss
    assert abs(float((r.row_losses * r.row_tokens).sum() / r.tokens) - ev.loss) < 1e-5
    assert r.logits.shape == (2, 256)
    np.testing.assert_allclose(r.logits, full[:, -1], rtol=0, atol=1e-6)
    fast = m.forward(IDS, logits="last", return_loss=False)
    assert fast.loss is None and fast.row_losses is None and fast.tokens == 14
    np.testing.assert_allclose(fast.logits, full[:, -1], rtol=0, atol=1e-6)
    none = m.forward(IDS, logits="none")
    assert none.logits is None and none.token_logprobs is None and none.loss == pytest.approx(m.loss(IDS))
    with pytest.raises(peftkit.InvalidArgumentError):
        m.forward(IDS, logits="first")


def test_disable_adapter_restores_the_active_adapter(lora_model):
    m = lora_model
    m.set_adapter_tensor("l", next(iter(m.adapter_tensor_shapes("l"))), np.full((4, 64), 0.1, dtype=np.float32))
    m.set_adapter_tensor("l", [k for k in m.adapter_tensor_shapes("l") if "lora_B" in k][0],
                         np.full((192, 4), 0.1, dtype=np.float32))
    with_adapter = m.forward(IDS)
    with m.disable_adapter():
        assert m.active_adapter is None
        base = m.forward(IDS)
    assert m.active_adapter == "l"
    assert not np.allclose(base, with_adapter)
    m.set_active_adapter(None)
    np.testing.assert_array_equal(base, m.forward(IDS))
    m.set_active_adapter("l")
    with pytest.raises(KeyError):
        with m.disable_adapter():
            raise KeyError("inside")
    assert m.active_adapter == "l"


def test_train_step_returns_its_result_and_last_train_result_is_deprecated(lora_model):
    r = lora_model.train_step(IDS, learning_rate=1e-2)
    assert isinstance(r, peftkit.TrainResult) and r.step == 1 and r.tokens == 14 and r.loss > 0
    with pytest.warns(DeprecationWarning):
        assert lora_model.last_train_result == r


def test_train_progress_and_cancellation_change_nothing(lora_model):
    m = lora_model
    m.train_step(IDS, learning_rate=1e-2)
    seen = []
    m.set_progress(lambda done, total: seen.append((done, total)))
    m.train_step(IDS, learning_rate=1e-2)
    assert seen == [(1, 3), (2, 3), (3, 3)]
    weights = m.adapter_tensors("l")
    m.set_progress(lambda done, total: done < 2)
    with pytest.raises(peftkit.CancelledError):
        m.train_step(IDS, learning_rate=1e-2)

    class Stop(Exception):
        pass

    def boom(done, total):
        raise Stop

    m.set_progress(boom)
    with pytest.raises(Stop):
        m.compute_gradients(IDS, learning_rate=1e-2)
    with pytest.raises(peftkit.StateError):
        m.apply_gradients(learning_rate=1e-2)
    for k, v in m.adapter_tensors("l").items():
        np.testing.assert_array_equal(v, weights[k])

    m.set_progress(None)
    assert m.train_step(IDS, learning_rate=1e-2).step == 3


def test_progress_callback_calling_the_model_gets_busy(lora_model):
    m = lora_model
    statuses = []

    def reenter(done, total):
        n = ctypes.c_int32()
        statuses.append(_capi.lib.peftkit_adapter_tensor_count(m._handle, b"l", ctypes.byref(n)))

    m.set_progress(reenter)
    m.train_step(IDS, learning_rate=1e-2)
    assert statuses and set(statuses) == {_capi.PEFTKIT_ERR_BUSY}


def test_load_progress_and_cancellation():
    path = FIXTURES / "gpt2" / "model"
    seen = []
    with peftkit.Model.load(path, progress=lambda d, t: seen.append((d, t))) as m:
        assert m.config.vocab_size > 0
    assert seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
    with pytest.raises(peftkit.CancelledError):
        peftkit.Model.load(path, progress=lambda d, t: d < 2)
    with pytest.raises(ZeroDivisionError):
        peftkit.Model.load(path, progress=lambda d, t: 1 / 0)


def test_unknown_status_and_enum_values_are_peftkit_errors(lora_model, monkeypatch):
    e = errors.error_for(-99, "something new")
    assert isinstance(e, peftkit.UnknownStatusError) and isinstance(e, peftkit.PeftKitError) and e.status == -99

    def fake_method(h, n, out):
        out._obj.value = 77
        return 0

    monkeypatch.setattr(model_module._lib, "peftkit_adapter_method", fake_method)
    with pytest.raises(peftkit.UnknownStatusError, match="77"):
        lora_model.adapter_method("l")

    def fake_status(h, n, out):
        return -42

    monkeypatch.setattr(model_module._lib, "peftkit_adapter_method", fake_status)
    with pytest.raises(peftkit.UnknownStatusError, match="-42"):
        lora_model.adapter_method("l")


class _FakeLib:
    def __init__(self, number):
        class Fn:
            def __call__(self_inner):
                return number
        self.peftkit_version_number = Fn()


def test_version_check_at_import(recwarn):
    major, minor, patch = (int(x) for x in peftkit.__version__.split("."))
    own = major * 10000 + minor * 100 + patch
    _capi._check_version(_FakeLib(own), "same")
    _capi._check_version(_FakeLib(own + 100), "newer minor")
    assert not [w for w in recwarn if issubclass(w.category, _capi.LibraryVersionWarning)]
    with pytest.raises(peftkit.LibraryLoadError, match="major"):
        _capi._check_version(_FakeLib(own + 10000), "newer major")
    if own >= 10000:
        with pytest.raises(peftkit.LibraryLoadError, match="major"):
            _capi._check_version(_FakeLib(own - 10000), "older major")
    if minor > 0 or patch > 0:
        older = own - 100 if minor > 0 else own - 1
        with pytest.warns(peftkit.LibraryVersionWarning):
            _capi._check_version(_FakeLib(older), "older minor")
