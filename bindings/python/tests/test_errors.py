"""Every failure surfaces as the right PeftKitError subclass, with the library's message."""

import json

import numpy as np
import peftkit
import pytest
from conftest import BATCH, FIXTURES
from peftkit import _capi
from peftkit.errors import ERROR_CLASSES, error_for

IDS = np.array(BATCH, dtype=np.int32)


def test_one_class_per_status_code_with_builtin_bases():
    expected = {
        _capi.PEFTKIT_ERR_INVALID_ARGUMENT: (peftkit.InvalidArgumentError, ValueError),
        _capi.PEFTKIT_ERR_IO: (peftkit.PeftKitIOError, OSError),
        _capi.PEFTKIT_ERR_FORMAT: (peftkit.FormatError, ValueError),
        _capi.PEFTKIT_ERR_UNSUPPORTED: (peftkit.UnsupportedError, peftkit.PeftKitError),
        _capi.PEFTKIT_ERR_NOT_FOUND: (peftkit.NotFoundError, LookupError),
        _capi.PEFTKIT_ERR_NUMERICAL: (peftkit.NumericalError, ArithmeticError),
        _capi.PEFTKIT_ERR_STATE: (peftkit.StateError, RuntimeError),
        _capi.PEFTKIT_ERR_OUT_OF_MEMORY: (peftkit.OutOfMemoryError, MemoryError),
        _capi.PEFTKIT_ERR_BUFFER_TOO_SMALL: (peftkit.BufferTooSmallError, peftkit.PeftKitError),
        _capi.PEFTKIT_ERR_INTERNAL: (peftkit.InternalError, peftkit.PeftKitError),
        _capi.PEFTKIT_ERR_BUSY: (peftkit.BusyError, peftkit.StateError),
        _capi.PEFTKIT_ERR_CANCELLED: (peftkit.CancelledError, peftkit.PeftKitError),
    }
    assert set(ERROR_CLASSES) == set(expected)
    for status, (cls, base) in expected.items():
        e = error_for(status, "peftkit_x: message")
        assert type(e) is cls and isinstance(e, base) and isinstance(e, peftkit.PeftKitError)
        assert e.status == status and e.message == str(e) == "peftkit_x: message"
    unknown = error_for(-99, "later code")
    assert type(unknown) is peftkit.UnknownStatusError and unknown.status == -99 and "-99" in str(unknown)
    assert "later code" in str(unknown)


def _raises(cls, fn, match=None):
    with pytest.raises(cls, match=match) as info:
        fn()
    e = info.value
    assert type(e) is cls, f"{type(e).__name__} instead of {cls.__name__}: {e}"
    assert e.message, "no message"
    return e


# ---- loading -----------------------------------------------------------------------------------------


def test_load_bad_paths(tmp_path):
    e = _raises(peftkit.PeftKitIOError, lambda: peftkit.Model.load(tmp_path / "missing"))
    assert e.message.startswith("peftkit_model_load") and "missing" in e.message
    assert isinstance(e, OSError)
    _raises(peftkit.PeftKitIOError, lambda: peftkit.Model.load(FIXTURES / "gpt2" / "seq_bn" / "adapter"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("not json")
    _raises(peftkit.FormatError, lambda: peftkit.Model.load(tmp_path / "bad"))
    (tmp_path / "t5").mkdir()
    (tmp_path / "t5" / "config.json").write_text(json.dumps({"model_type": "t5", "vocab_size": 10}))
    _raises(peftkit.UnsupportedError, lambda: peftkit.Model.load(tmp_path / "t5"))
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 10}))
    _raises(peftkit.FormatError, lambda: peftkit.Model.load(tmp_path / "bert"))  # no hidden_size
    _raises(peftkit.InvalidArgumentError, lambda: peftkit.Model.load(""))
    _raises(peftkit.InvalidArgumentError, lambda: peftkit.Model.load("a\0b"))
    with pytest.raises(TypeError):
        peftkit.Model.load(42)


def test_load_adapter_errors(model, tmp_path):
    _raises(peftkit.PeftKitIOError, lambda: model.load_adapter(tmp_path / "missing"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "adapter_config.json").write_text("{")
    _raises(peftkit.FormatError, lambda: model.load_adapter(tmp_path / "bad"))
    # An adapter shaped for another model (hidden size 32, this one has 64).
    _raises(peftkit.FormatError, lambda: model.load_adapter(FIXTURES / "gpt2" / "seq_bn" / "adapter"),
            match="hidden size")
    assert model.adapters == []


def test_create_rejects_bad_configs():
    _raises(peftkit.InvalidArgumentError, lambda: peftkit.Model.create(vocab_size=0))
    _raises(peftkit.InvalidArgumentError, lambda: peftkit.Model.create(num_heads=3))  # 64 % 3 != 0
    _raises(peftkit.InvalidArgumentError, lambda: peftkit.Model.create(architecture="t5"))
    # Values that do not fit the C field are refused, never truncated.
    _raises(peftkit.InvalidArgumentError, lambda: peftkit.Model.create(vocab_size=2**32 + 256))
    _raises(peftkit.InvalidArgumentError, lambda: peftkit.Model.create(vocab_size=256.0))
    _raises(peftkit.InvalidArgumentError, lambda: peftkit.Model.create(seed=-1))
    _raises(peftkit.InvalidArgumentError, lambda: peftkit.Model.create(tie_word_embeddings=2))
    with pytest.raises(TypeError):
        peftkit.Model.create(no_such_field=1)
    with pytest.raises(TypeError):
        peftkit.Model()


# ---- adapters ----------------------------------------------------------------------------------------


def test_unknown_adapter(model, tmp_path):
    for call in (lambda: model.set_active_adapter("nope"), lambda: model.remove_adapter("nope"),
                 lambda: model.adapter_num_params("nope"), lambda: model.save_adapter("nope", tmp_path / "x")):
        e = _raises(peftkit.NotFoundError, call)
        assert "nope" in e.message and isinstance(e, LookupError)
    assert not (tmp_path / "x").exists()


def test_duplicate_adapter(model, tmp_path):
    model.attach_adapter("a")
    _raises(peftkit.StateError, lambda: model.attach_adapter("a"))
    model.save_adapter("a", tmp_path / "a")
    _raises(peftkit.StateError, lambda: model.load_adapter(tmp_path / "a"))
    _raises(peftkit.StateError, lambda: model.load_adapter(str(tmp_path / "a"), name="a"))
    assert model.adapters == ["a"]


def test_bad_adapter_options(model):
    # Each failure has the library's one status and message, whatever path the config took.
    _raises(peftkit.FormatError, lambda: model.attach_adapter("a", reduction_factor=0))
    _raises(peftkit.FormatError, lambda: model.attach_adapter("a", leave_out=[0, 1]))
    e = _raises(peftkit.UnsupportedError, lambda: model.attach_adapter("a", non_linearity="tanh"))
    assert "tanh" in e.message
    e = _raises(peftkit.UnsupportedError, lambda: model.attach_adapter("a", {**peftkit.BottleneckConfig().to_dict(), "is_parallel": True}))
    assert "is_parallel" in e.message
    _raises(peftkit.FormatError, lambda: model.attach_adapter("a", {"peft_type": "LORA", "target_modules": ["c_attn"]}))
    _raises(peftkit.UnsupportedError, lambda: model.attach_adapter("a", {"peft_type": "LOHA", "r": 4}))
    _raises(peftkit.InvalidArgumentError, lambda: model.attach_adapter("a", method="dora"))
    _raises(peftkit.InvalidArgumentError, lambda: model.attach_adapter("a", scaling=float("inf")))
    _raises(peftkit.InvalidArgumentError, lambda: model.attach_adapter("a", {"config": "seq_bn"}, method="lora"))
    with pytest.raises(TypeError):
        model.attach_adapter("a", r=8)  # a LoRA field, but the default method is bottleneck
    with pytest.raises(TypeError):
        model.attach_adapter(None)
    with pytest.raises(TypeError):
        model.attach_adapter("a", ["not", "a", "config"])
    assert model.adapters == []


def test_save_to_an_unwritable_place(trained_model, tmp_path):
    (tmp_path / "file").write_text("x")
    _raises(peftkit.PeftKitIOError, lambda: trained_model.save_adapter("task", tmp_path / "file" / "sub"))


# ---- training and forward ----------------------------------------------------------------------------


def test_train_without_an_active_adapter(model):
    e = _raises(peftkit.StateError, lambda: model.train_step(IDS))
    assert e.message.startswith("peftkit_train_step:")
    model.attach_adapter("a")
    _raises(peftkit.StateError, lambda: model.train_step(IDS))  # attached but not active


@pytest.mark.parametrize("call", ["forward", "loss", "train_step"])
def test_bad_shapes_and_ids(trained_model, call):
    fn = getattr(trained_model, call)
    _raises(peftkit.InvalidArgumentError, lambda: fn(np.zeros((1, 2, 3), dtype=np.int32)), match="shape")
    _raises(peftkit.InvalidArgumentError, lambda: fn(np.zeros((2, 0), dtype=np.int32)))
    _raises(peftkit.InvalidArgumentError, lambda: fn([]))
    _raises(peftkit.InvalidArgumentError, lambda: fn([1.5, 2.0]), match="integer")
    _raises(peftkit.InvalidArgumentError, lambda: fn(["a", "b"]))
    e = _raises(peftkit.InvalidArgumentError, lambda: fn([[1, 2, 256]]), match="outside the vocabulary")
    assert e.message.startswith("peftkit_")  # the library's own message
    _raises(peftkit.InvalidArgumentError, lambda: fn([[1, -1, 2]]), match="outside the vocabulary")
    _raises(peftkit.InvalidArgumentError, lambda: fn([1, 2**40]), match="int32")
    _raises(peftkit.InvalidArgumentError, lambda: fn(np.zeros((1, 2000), dtype=np.int32)), match="maximum")
    if call != "forward":
        _raises(peftkit.InvalidArgumentError, lambda: fn(IDS, IDS[:, :4]), match="shape")
        _raises(peftkit.InvalidArgumentError, lambda: fn(IDS, np.full_like(IDS, 300)))
        _raises(peftkit.InvalidArgumentError, lambda: fn(IDS, np.full_like(IDS, -5)))


def test_bad_train_config(trained_model):
    m = trained_model
    for bad in (dict(learning_rate=-1.0), dict(beta1=1.0), dict(eps=0.0), dict(schedule="exponential"),
                dict(warmup_steps=-1), dict(learning_rate="0.1"), dict(micro_batch_size=2**31)):
        _raises(peftkit.InvalidArgumentError, lambda bad=bad: m.train_step(IDS, **bad))
    with pytest.raises(TypeError):
        m.train_step(IDS, lr=1e-3)


def test_numerical_error(trained_model):
    m = trained_model
    ids = IDS
    assert m.train_step(ids).step == 1
    # Finite loss, but the update would blow up the weights: the step is refused and nothing changes.
    e = _raises(peftkit.NumericalError, lambda: m.train_step(ids, learning_rate=3e38, weight_decay=0.0))
    assert isinstance(e, ArithmeticError) and "non-finite" in e.message
    assert m.train_step(ids).step == 2


def test_forward_buffer_too_small(model):
    out = np.empty(2 * 8 * 256 - 1, dtype=np.float32)
    e = _raises(peftkit.BufferTooSmallError, lambda: model.forward(IDS, out=out))
    assert "4096" in e.message
    _raises(peftkit.InvalidArgumentError, lambda: model.forward(IDS, out=np.empty(4096, dtype=np.float64)))
    ro = np.empty(4096, dtype=np.float32)
    ro.flags.writeable = False
    _raises(peftkit.InvalidArgumentError, lambda: model.forward(IDS, out=ro))


def test_generate_argument_errors(model):
    _raises(peftkit.InvalidArgumentError, lambda: model.generate([]))
    _raises(peftkit.InvalidArgumentError, lambda: model.generate(IDS), match="1-D")
    _raises(peftkit.InvalidArgumentError, lambda: model.generate([1, 999]))
    _raises(peftkit.InvalidArgumentError, lambda: model.generate([1] * 1025), match="exceeds")
    _raises(peftkit.InvalidArgumentError, lambda: model.generate([1], top_p=0.0))
    _raises(peftkit.InvalidArgumentError, lambda: model.generate([1], temperature=-1.0))
    _raises(peftkit.InvalidArgumentError, lambda: model.generate([1], top_k=-1))
    _raises(peftkit.InvalidArgumentError, lambda: model.generate([1], max_new_tokens=-1))
    _raises(peftkit.InvalidArgumentError, lambda: model.generate([1], stop=[300]))
    _raises(peftkit.InvalidArgumentError, lambda: model.generate([1], seed=2**64))


def test_error_message_is_per_thread_and_current(model):
    import threading
    _raises(peftkit.NotFoundError, lambda: model.remove_adapter("first"))
    seen = []

    def other():
        try:
            model.remove_adapter("second")
        except peftkit.NotFoundError as e:
            seen.append(e.message)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert "second" in seen[0]
    e = _raises(peftkit.NotFoundError, lambda: model.set_active_adapter("third"))
    assert "third" in e.message and "second" not in e.message


def test_status_strings_and_version_number():
    assert _capi.lib.peftkit_status_string(_capi.PEFTKIT_ERR_BUSY) == b"model in use by another call"
    assert _capi.lib.peftkit_status_string(-12345) == b"unknown status"
    major, minor, patch = (int(x) for x in peftkit.__version__.split("."))
    assert _capi.lib.peftkit_version_number() == major * 10000 + minor * 100 + patch


def test_an_older_library_warns_and_another_major_is_refused_at_import(monkeypatch):
    class Old:
        @staticmethod
        def peftkit_version_number():
            return 100  # 0.1.0
    with pytest.warns(_capi.LibraryVersionWarning, match="older than this peftkit package"):
        _capi._check_version(Old(), "/x/libpeftkit.so")

    class Next:
        @staticmethod
        def peftkit_version_number():
            return 10200  # 1.2.0
    with pytest.raises(_capi.LibraryLoadError, match="another major version"):
        _capi._check_version(Next(), "/x/libpeftkit.so")
    _capi._check_version(_capi.lib, _capi.library_path)  # the loaded one passes
