"""`Model`: a frozen base model plus named adapters, driven through libpeftkit.so."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import threading
import weakref
import warnings
from collections.abc import Iterable, Iterator, Mapping
from ctypes import byref, c_char, c_float, c_int32, c_int64, c_size_t, c_void_p
from typing import Any, Callable, Optional, Union

import numpy as np
import numpy.typing as npt

from . import _capi
from ._arrays import TokenArray, address, batch_arrays, batch_shape, int32_tokens
from .configs import (
    FinishReason,
    INT32_MAX,
    UINT64_MAX,
    AdapterConfig,
    EvalResult,
    ForwardResult,
    Method,
    ModelConfig,
    TrainConfig,
    TrainResult,
    _float,
    _int,
    _make,
    Architecture,
    adapter_config_dict,
    int32_array,
    library_enum,
)
from .errors import InvalidArgumentError, StateError, check, error_for
from .streaming import GenerateResult, TextStream

_lib = _capi.lib

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

#: Called with each generated token id; a truthy return value stops generation (that token is kept).
TokenCallback = Callable[[int], Optional[bool]]

#: Called with (done, total) during a long call; returning False cancels it (None or True goes on).
ProgressCallback = Callable[[int, int], Optional[bool]]

_LOGITS_MODES = {"all": _capi.PEFTKIT_LOGITS_ALL, "last": _capi.PEFTKIT_LOGITS_LAST, "none": _capi.PEFTKIT_LOGITS_NONE}


class _Progress:
    """A Python progress callable as a C callback: False cancels; an exception cancels too and is kept, to be
    re-raised once the library has returned (raising inside a ctypes callback would only print it)."""

    __slots__ = ("fn", "raised", "c_callback")

    def __init__(self, fn: ProgressCallback) -> None:
        if not callable(fn):
            raise TypeError(f"progress must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.raised: BaseException | None = None

        def trampoline(done: int, total: int, _user: Any) -> int:
            if self.raised is not None:
                return 0
            try:
                return 0 if self.fn(int(done), int(total)) is False else 1
            except BaseException as e:  # re-raised after the C call returns
                self.raised = e
                return 0

        self.c_callback = _capi.PROGRESS_CALLBACK(trampoline)

    def check(self, status: int) -> None:
        """Re-raises the callback's exception, if it raised; else raises for a failed status."""
        e, self.raised = self.raised, None
        if e is not None:
            raise e
        check(status)

# Name buffers start at this size and grow to what the library says it needs.
_NAME_CAP = 256


def _free_model(handle: int) -> None:
    """Frees a model handle. Only ever called by the model's finalizer, which runs at most once."""
    _lib.peftkit_model_free(handle)


def _c_string(value: Any, what: str) -> bytes:
    """A str (UTF-8) or bytes argument as NUL-free bytes."""
    if isinstance(value, str):
        b = value.encode("utf-8", "surrogatepass")
    elif isinstance(value, bytes):
        b = value
    else:
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if b"\0" in b:
        raise InvalidArgumentError(f"{what} contains a NUL character")
    return b


def _c_path(path: PathLike, what: str = "path") -> bytes:
    try:
        p = os.fsencode(path)
    except TypeError:
        raise TypeError(f"{what} must be a str, bytes or os.PathLike, got {type(path).__name__}") from None
    if b"\0" in p:
        raise InvalidArgumentError(f"{what} contains a NUL character")
    return p


class _Handle:
    """A model's native handle, and the guard of every library call on it: `with handle as h:`
    serialises calls from different Python threads (a second thread waits instead of getting
    PEFTKIT_ERR_BUSY), refuses calls once the model is closed, and counts calls in progress so that
    `close()` never frees a model in use. It holds no reference to its Model, so a Model that is no
    longer referenced is freed at once, without waiting for the cycle collector."""

    __slots__ = ("value", "lock", "calls")

    def __init__(self, value: int) -> None:
        self.value: int | None = value
        self.lock = threading.RLock()
        self.calls = 0

    def __enter__(self) -> int:
        self.lock.acquire()
        if self.value is None:
            self.lock.release()
            raise StateError("the model is closed")
        self.calls += 1
        return self.value

    def __exit__(self, *exc: Any) -> None:
        self.calls -= 1
        self.lock.release()


class Model:
    """A decoder model (GPT-2 or Llama shape): frozen base weights plus any number of named adapters,
    at most one of them active.

    Create one with :meth:`Model.create` (random weights) or :meth:`Model.load` (a Hugging Face
    folder). The model owns native memory: release it with :meth:`close` or a ``with`` block; garbage
    collection releases it too. Methods release the GIL while the library computes, so other Python
    threads keep running; calls on one model from several threads are serialised.

    Token ids are numpy int32 arrays (any integer array or nested list is converted), shaped
    ``[batch, seq_len]``; a 1-D array is one sequence (batch 1). C-contiguous int32 arrays are passed
    to the library without a copy.
    """

    _call: _Handle
    _config: ModelConfig
    _finalizer: weakref.finalize[[int], Model]
    _last_train_result: TrainResult | None
    _progress: _Progress | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("use peftkit.Model.create(...) or peftkit.Model.load(...) to make a Model")

    @classmethod
    def _adopt(cls, handle: int | None) -> Model:
        """Wraps a handle the library just returned; from here on the model owns it."""
        if not handle:
            raise error_for(_capi.PEFTKIT_ERR_INTERNAL, "the library returned PEFTKIT_OK but no model")
        self = cls.__new__(cls)
        self._call = _Handle(handle)
        self._finalizer = weakref.finalize(self, _free_model, handle)
        cfg = _capi.new_struct(_capi.ModelConfigStruct)
        check(_lib.peftkit_model_get_config(handle, byref(cfg)))
        self._config = ModelConfig._from_struct(cfg)
        self._last_train_result = None
        self._progress = None
        return self

    # ------------------------------------------------------------------------------------------------
    # Construction and lifetime
    # ------------------------------------------------------------------------------------------------

    @classmethod
    def create(cls, config: ModelConfig | Mapping[str, Any] | None = None, seed: int = 0,
               **fields: Any) -> Model:
        """A model with random weights (GPT-2-style init, N(0, 0.02)) drawn from `seed`.

        Args:
            config: a :class:`ModelConfig`, a mapping of its fields, or None for the defaults (a tiny
                GPT-2 with vocab 256).
            seed: equal configs and seeds give bit-identical weights.
            **fields: :class:`ModelConfig` fields that override `config`, e.g. ``vocab_size=97``.

        Raises:
            InvalidArgumentError: a field is out of range or inconsistent.
            OutOfMemoryError: the weights do not fit in memory.
        """
        cfg = _make(ModelConfig, config, fields)
        s = cfg._to_struct()
        out = c_void_p()
        check(_lib.peftkit_model_create(byref(s), _int(seed, "seed", 0, UINT64_MAX), byref(out)))
        return cls._adopt(out.value)

    @classmethod
    def load(cls, path: PathLike, widen: bool = False, *, progress: ProgressCallback | None = None) -> Model:
        """Loads a Hugging Face model folder: ``config.json`` plus ``model.safetensors`` (or a sharded
        index), or a ``.gguf`` file (Llama architecture). F32, F16 and BF16 weights are read. A GGUF file's
        linear weights and token embedding stay in their quantized blocks (memory-mapped) unless `widen`
        is true: adapters train and generate over them, but :meth:`merge_adapter` and full fine-tuning
        need ``widen=True`` (fp32 copies). The tokenizer and chat template come along when the files carry
        them (see :meth:`tokenize`, :meth:`apply_chat_template`).

        `progress` (optional) is called as ``progress(done, total)`` after each weight tensor is read, on the
        calling thread; returning False cancels the load (:class:`CancelledError`), and an exception it raises
        cancels the load and is re-raised. Nothing is kept of a cancelled load.

        Raises:
            PeftKitIOError: the folder or a file in it cannot be read.
            FormatError: a file is malformed or inconsistent.
            UnsupportedError: an architecture or weight type this build does not run.
            CancelledError: `progress` returned False.
        """
        out = c_void_p()
        lc = _capi.new_struct(_capi.LoadConfigStruct)
        lc.flags = _capi.PEFTKIT_LOAD_WIDEN if widen else 0
        p = None if progress is None else _Progress(progress)
        if p is not None:
            lc.progress = p.c_callback
        status = _lib.peftkit_model_load_ex(_c_path(path), byref(lc), byref(out))
        if p is not None:
            p.check(status)
        check(status)
        return cls._adopt(out.value)

    def close(self) -> None:
        """Frees the model and its adapters. Safe to call more than once. Waits for a call running on
        another thread to finish.

        Raises:
            StateError: called from inside this model's own :meth:`generate` callback.
        """
        c = self._call
        with c.lock:
            if c.calls:
                raise StateError("cannot close a model from inside a call on it (a generate callback)")
            c.value = None
            self._finalizer()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._call.value is None

    @property
    def _handle(self) -> int | None:
        """The native handle (None once closed), for tests and benchmarks that call the C API directly."""
        return self._call.value

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("a peftkit.Model cannot be pickled or copied; save its adapters instead")

    def __repr__(self) -> str:
        if self.closed:
            return "<peftkit.Model (closed)>"
        c = self._config
        try:
            adapters, active = self.adapters, self.active_adapter
        except StateError:  # in use by another call
            return f"<peftkit.Model {c.architecture.name.lower()} vocab={c.vocab_size} busy>"
        return (f"<peftkit.Model {c.architecture.name.lower()} vocab={c.vocab_size} hidden={c.hidden_size} "
                f"layers={c.num_layers} adapters={adapters} active={active!r}>")

    @property
    def config(self) -> ModelConfig:
        """The model's shape, with concrete values (no None placeholders)."""
        return self._config

    # ------------------------------------------------------------------------------------------------
    # Adapters
    # ------------------------------------------------------------------------------------------------

    def attach_adapter(self, name: str, config: AdapterConfig | Mapping[str, Any] | None = None, *,
                       method: str | None = None, **options: Any) -> None:
        """Attaches a new adapter called `name`. It is not made active: see :meth:`set_active_adapter`.

        Args:
            name: a non-empty name, unique within this model.
            config: a dict in the ecosystem's ``adapter_config.json`` schema (Hugging Face PEFT's for
                LoRA, IA3, prefix and prompt tuning, so ``peft.LoraConfig(...).to_dict()`` works
                without PEFT installed; AdapterHub's for bottleneck adapters, e.g.
                ``{"config": "seq_bn"}``), or an adapter config (:class:`BottleneckConfig`,
                :class:`LoRAConfig`, :class:`IA3Config`, :class:`PrefixConfig`,
                :class:`PromptConfig`). A LoRA or IA3 config without ``target_modules`` gets PEFT's
                default for the model's architecture.
            method: the adapter method, when `config` is not given: ``"bottleneck"`` (default,
                AdapterHub's ``seq_bn``), ``"lora"``, ``"ia3"``, ``"prefix"`` or ``"prompt"``.
            **options: fields of the method's config (or keys of the dict), overriding `config`, e.g.
                ``method="lora", r=4, target_modules=["c_attn"]``.

        Raises:
            StateError: the name is already used (or a TEXT prompt init on a model without tokenizer).
            UnsupportedError: a method or key PEFTKit does not implement; the message names the key.
            FormatError: a key of the wrong type, or a value that cannot be right.
            InvalidArgumentError: a value out of range, or targets that match nothing.
        """
        d = adapter_config_dict(config, method, options)
        try:
            text = json.dumps(d, allow_nan=False).encode()
        except ValueError as e:  # NaN or infinity: JSON has no spelling for them
            raise InvalidArgumentError(f"adapter config: {e}") from None
        n = _c_string(name, "name")
        with self._call as h:
            check(_lib.peftkit_adapter_attach_json(h, n, text))

    def set_active_adapter(self, name: str | None) -> None:
        """Makes adapter `name` the one used by training, forward passes and generation; None makes
        the model the bare base model.

        Raises:
            NotFoundError: no adapter has that name.
        """
        n = None if name is None else _c_string(name, "name")
        with self._call as h:
            check(_lib.peftkit_adapter_set_active(h, n))

    def set_full_fine_tuning(self, enabled: bool = True) -> None:
        """Full fine-tuning on or off. While on, :meth:`train_step` trains every base weight
        (embeddings, norms, linear weights and biases) with AdamW, and no adapter may be active. Turning
        it on copies the base weights into memory owned by the model and allocates their gradients and
        AdamW moments (about 4x the model's fp32 size); turning it off frees those and keeps the trained
        weights.

        Raises:
            StateError: an adapter is merged.
        """
        with self._call as h:
            check(_lib.peftkit_model_set_full_finetuning(h, 1 if enabled else 0))

    @property
    def active_adapter(self) -> str | None:
        """The active adapter's name, or None when the bare base model is active."""
        with self._call as h:
            name = self._read_name(lambda buf, cap, n: _lib.peftkit_adapter_get_active(h, buf, cap, n))
        return name or None

    @property
    def adapters(self) -> list[str]:
        """The names of the attached adapters, in attach order."""
        with self._call as h:
            count = c_int32()
            check(_lib.peftkit_adapter_count(h, byref(count)))
            return [self._adapter_name(h, i) for i in range(count.value)]

    def __contains__(self, name: object) -> bool:
        """``"task" in model``: whether an adapter of that name is attached."""
        return name in self.adapters

    def remove_adapter(self, name: str) -> None:
        """Removes adapter `name` with its weights and optimiser state. If it was active, the bare base
        model is active afterwards.

        Raises:
            NotFoundError: no adapter has that name.
        """
        n = _c_string(name, "name")
        with self._call as h:
            check(_lib.peftkit_adapter_remove(h, n))

    def adapter_num_params(self, name: str) -> int:
        """The number of trainable parameters of adapter `name`.

        Raises:
            NotFoundError: no adapter has that name.
        """
        n = _c_string(name, "name")
        out = c_int64()
        with self._call as h:
            check(_lib.peftkit_adapter_num_params(h, n, byref(out)))
        return out.value

    def save_adapter(self, name: str, path: PathLike, format: str = "native") -> None:
        """Writes adapter `name` to `path`.

        ``format="native"`` (the default): into folder `path` (created if missing), each file replaced
        atomically: bottleneck adapters as AdapterHub does (``adapter_config.json`` + ``adapter.safetensors``),
        LoRA, IA3, prefix and prompt adapters as Hugging Face PEFT does (``adapter_config.json`` +
        ``adapter_model.safetensors``; ``peft.PeftModel.from_pretrained`` loads them).

        ``format="gguf"``: one file in llama.cpp's GGUF LoRA adapter format (LoRA on Llama models), which
        ``llama-cli -m base.gguf --lora x.gguf`` and :meth:`load_adapter` read.

        ``format="converted-lora"``: a LoRA adapter initialised with ``init_lora_weights`` ``"pissa"`` or
        ``"olora"`` (which runs over the residual base weight while attached) as a plain LoRA of the original
        base, rank 2r, in PEFT's folder format (PEFT's ``path_initial_model_for_weight_conversion``); any other
        adapter as ``"native"``.

        Raises:
            NotFoundError: no adapter has that name.
            UnsupportedError: ``"gguf"`` for an adapter other than LoRA on a Llama model.
            InvalidArgumentError: an unknown format.
            PeftKitIOError: the folder or file cannot be written.
        """
        formats = {"native": _capi.PEFTKIT_ADAPTER_FORMAT_NATIVE, "gguf": _capi.PEFTKIT_ADAPTER_FORMAT_GGUF,
                   "converted-lora": _capi.PEFTKIT_ADAPTER_FORMAT_CONVERTED_LORA}
        if format not in formats:
            raise InvalidArgumentError(f"format must be one of {sorted(formats)}, got {format!r}")
        n = _c_string(name, "name")
        p = _c_path(path)
        with self._call as h:
            check(_lib.peftkit_adapter_save_as(h, n, p, formats[format]))

    def save_model(self, path: PathLike, format: str = "hf", dtype: str = "f32") -> None:
        """Writes the whole model as it computes with no adapter active: merged adapters (:meth:`merge_adapter`)
        and fully fine-tuned weights (:meth:`set_full_fine_tuning`) included. Weights kept in GGUF blocks are
        widened to fp32 as they are written.

        ``format="hf"`` (the default): a Hugging Face folder at `path` (``config.json`` + ``model.safetensors``,
        F32, plus the tokenizer files of the folder the model was loaded from) that
        ``transformers.AutoModelForCausalLM.from_pretrained`` and :meth:`Model.load` read. Only ``dtype="f32"``.

        ``format="gguf"``: one GGUF file at `path` (Llama models) that llama.cpp and :meth:`Model.load` read,
        matrices in ``dtype`` ``"f32"`` or ``"f16"``, with the tokenizer metadata of the GGUF file the model was
        loaded from.

        Raises:
            InvalidArgumentError: an unknown format or dtype; a weight beyond F16's range.
            StateError: an adapter is active but not merged.
            UnsupportedError: GGUF for a model that is not Llama, or whose tokenizer came from Hugging Face files.
            PeftKitIOError: the path cannot be written (nothing is left behind).
        """
        codes = {("hf", "f32"): _capi.PEFTKIT_MODEL_FORMAT_HF, ("gguf", "f32"): _capi.PEFTKIT_MODEL_FORMAT_GGUF_F32,
                 ("gguf", "f16"): _capi.PEFTKIT_MODEL_FORMAT_GGUF_F16}
        if (format, dtype) not in codes:
            raise InvalidArgumentError(f"format/dtype must be one of {sorted(codes)}, got {(format, dtype)!r}")
        p = _c_path(path)
        with self._call as h:
            check(_lib.peftkit_model_save(h, p, codes[(format, dtype)]))

    def load_adapter(self, path: PathLike, name: str | None = None) -> str:
        """Reads an adapter folder (written by :meth:`save_adapter`, by AdapterHub or by Hugging Face
        PEFT), or a llama.cpp GGUF LoRA adapter (a file ending in ``.gguf``), and attaches it, not active. Returns the name it was attached under: `name`, or the name
        stored in the folder (AdapterHub), or ``"default"`` (PEFT).

        Raises:
            PeftKitIOError: the folder cannot be read.
            FormatError: the files are malformed or shaped for another model.
            StateError: the name is already used.
        """
        p = _c_path(path)
        n = None if name is None else _c_string(name, "name")
        cap = _NAME_CAP if n is None else max(_NAME_CAP, len(n) + 1)
        buf = (c_char * cap)()
        with self._call as h:
            status = _lib.peftkit_adapter_load(h, p, n, buf, cap)
            if status == _capi.PEFTKIT_ERR_BUFFER_TOO_SMALL and n is None:
                # The stored name is longer than the buffer; the library attached nothing. Load again
                # without asking for the name and read it back as the last adapter (attach order).
                check(_lib.peftkit_adapter_load(h, p, None, None, 0))
                count = c_int32()
                check(_lib.peftkit_adapter_count(h, byref(count)))
                return self._read_name(
                    lambda b, c, ln: _lib.peftkit_adapter_name(h, count.value - 1, b, c, ln))
            check(status)
        return buf.value.decode("utf-8", "surrogateescape")

    def _adapter_name(self, h: int, index: int) -> str:
        return self._read_name(lambda buf, cap, n: _lib.peftkit_adapter_name(h, index, buf, cap, n))

    @staticmethod
    def _read_name(call: Callable[[Any, int, Any], int]) -> str:
        """Runs a `(buf, cap, len_out)` name getter, growing the buffer if the library asks for more."""
        cap = _NAME_CAP
        length = c_size_t()
        for _ in range(2):
            buf = (c_char * cap)()
            status = call(buf, cap, byref(length))
            if status == _capi.PEFTKIT_ERR_BUFFER_TOO_SMALL and length.value + 1 > cap:
                cap = length.value + 1
                continue
            check(status)
            return buf.raw[: length.value].decode("utf-8", "surrogateescape")
        raise error_for(_capi.PEFTKIT_ERR_INTERNAL, "adapter name changed size while being read")

    def adapter_method(self, name: str) -> Method:
        """The method of adapter `name` (:class:`Method`).

        Raises:
            NotFoundError: no adapter has that name.
        """
        n = _c_string(name, "name")
        out = c_int32()
        with self._call as h:
            check(_lib.peftkit_adapter_method(h, n, byref(out)))
        return library_enum(Method, out.value, "adapter method")

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Runs the block on the bare base model, as PEFT's ``with model.disable_adapter():``; the adapter
        active before is active again afterwards, also when the block raises (unless the block removed it)."""
        previous = self.active_adapter
        self.set_active_adapter(None)
        try:
            yield
        finally:
            if previous is not None and previous in self.adapters:
                self.set_active_adapter(previous)

    # ------------------------------------------------------------------------------------------------
    # Tensor access
    # ------------------------------------------------------------------------------------------------

    def _tensor_infos(self, h: int, n: bytes) -> list[tuple[str, tuple[int, ...], bool]]:
        count = c_int32()
        check(_lib.peftkit_adapter_tensor_count(h, n, byref(count)))
        out = []
        shape = (c_int64 * 4)()
        ndim, writable = c_int32(), c_int32()
        for i in range(count.value):
            name = self._read_name(lambda buf, cap, ln: _lib.peftkit_adapter_tensor_info(
                h, n, i, buf, cap, ln, shape, 4, byref(ndim), byref(writable)))
            out.append((name, tuple(int(shape[k]) for k in range(ndim.value)), bool(writable.value)))
        return out

    def adapter_tensor_shapes(self, name: str) -> dict[str, tuple[int, ...]]:
        """The tensors of adapter `name` as its saved file names them (PEFT's ``base_model.model.….lora_A.weight``,
        AdapterHub's ``….adapter_down.0.weight``), with their shapes, in the file's order."""
        n = _c_string(name, "name")
        with self._call as h:
            return {t: shape for t, shape, _ in self._tensor_infos(h, n)}

    def adapter_tensors(self, name: str) -> dict[str, npt.NDArray[np.float32]]:
        """The tensors of adapter `name` as its saved file would hold them now: name -> float32 array (a copy).

        Raises:
            NotFoundError: no adapter has that name.
            UnsupportedError: the method has no file format.
        """
        n = _c_string(name, "name")
        out: dict[str, npt.NDArray[np.float32]] = {}
        with self._call as h:
            for t, shape, _ in self._tensor_infos(h, n):
                a = np.empty(shape, dtype=np.float32)
                check(_lib.peftkit_adapter_tensor_read(h, n, t.encode("utf-8", "surrogateescape"),
                                                       address(a) if a.size else None, a.size, None))
                out[t] = a
        return out

    def set_adapter_tensor(self, name: str, tensor_name: str, array: npt.ArrayLike) -> None:
        """Replaces tensor `tensor_name` of adapter `name` (see :meth:`adapter_tensors`) with `array`, of the
        tensor's shape, converted to float32. Forward passes, generation and saves see the new values at once; the
        optimiser moments are kept.

        Raises:
            InvalidArgumentError: a shape other than the tensor's, or a NaN or infinite value (nothing changes).
            NotFoundError: no such adapter or tensor.
            StateError: the adapter is merged.
            UnsupportedError: a derived tensor (a projected prefix's output).
        """
        n = _c_string(name, "name")
        t = _c_string(tensor_name, "tensor_name")
        a = np.asarray(array)
        if a.dtype.kind not in "fiub":
            raise InvalidArgumentError(f"tensor values must be numbers, got dtype {a.dtype}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # overflow to inf: refused by the library below
            a = np.ascontiguousarray(a, dtype=np.float32)
        with self._call as h:
            shapes = {k: shape for k, shape, _ in self._tensor_infos(h, n)}
            key = t.decode("utf-8", "surrogateescape")
            if key in shapes and a.shape != shapes[key]:
                raise InvalidArgumentError(f"tensor '{key}' has shape {shapes[key]}, got an array of shape {a.shape}")
            check(_lib.peftkit_adapter_tensor_write(h, n, t, address(a) if a.size else None, a.size))

    def merge_adapter(self, name: str) -> None:
        """Folds LoRA or IA3 adapter `name` into (copies of) the base weights; the base model then
        computes what the adapter did. :meth:`unmerge_adapter` restores the base bit for bit.

        Raises:
            NotFoundError: no adapter has that name.
            StateError: already merged.
            UnsupportedError: the adapter's method cannot be merged.
        """
        n = _c_string(name, "name")
        with self._call as h:
            check(_lib.peftkit_adapter_merge(h, n))

    def unmerge_adapter(self, name: str) -> None:
        """Undoes :meth:`merge_adapter` (merges undo in reverse order).

        Raises:
            StateError: not merged, or another adapter was merged after it.
        """
        n = _c_string(name, "name")
        with self._call as h:
            check(_lib.peftkit_adapter_unmerge(h, n))

    def save_checkpoint(self, name: str, path: PathLike) -> None:
        """Writes a training checkpoint of adapter `name` (weights, AdamW moments, step, random state)
        into folder `path`; :meth:`load_checkpoint` resumes it with bit-identical training."""
        n = _c_string(name, "name")
        p = _c_path(path)
        with self._call as h:
            check(_lib.peftkit_checkpoint_save(h, n, p))

    def load_checkpoint(self, path: PathLike) -> str:
        """Attaches the adapter of a checkpoint folder with its optimiser state; returns its name."""
        p = _c_path(path)
        buf = (c_char * _NAME_CAP)()
        with self._call as h:
            check(_lib.peftkit_checkpoint_load(h, p, buf, _NAME_CAP))
        return buf.value.decode("utf-8", "surrogateescape")

    # ------------------------------------------------------------------------------------------------
    # Training and evaluation
    # ------------------------------------------------------------------------------------------------

    def train_step(self, input_ids: TokenArray, labels: TokenArray | None = None,
                   config: TrainConfig | Mapping[str, Any] | None = None, *, segment_ids: TokenArray | None = None,
                   **train_options: Any) -> TrainResult:
        """One AdamW step of the active adapter on a batch; the base weights never change, except under
        full fine-tuning (:meth:`set_full_fine_tuning`), which trains them.

        Args:
            input_ids: token ids, ``[batch, seq_len]`` or ``[seq_len]``.
            labels: same shape; token ids or :data:`IGNORE_INDEX` (-100). None = `input_ids`. Position
                t is scored against label t+1 (shifted inside, as in transformers).
            config: a :class:`TrainConfig` or a mapping of its fields; None = the defaults.
            segment_ids: packed rows (several records per row), same shape as `input_ids`: a record starts
                at position 0 and wherever the id differs from the previous position's. Each record attends
                only to itself, its positions start at 0 and nothing is predicted across a boundary: the
                step equals training on the records one by one. Not with prompt or prefix tuning
                (UnsupportedError). None = one record per row.
            **train_options: :class:`TrainConfig` fields overriding `config`, e.g.
                ``learning_rate=1e-2``.

        Returns:
            The :class:`TrainResult`: the loss before the update (``.loss``), the gradient norm, learning
            rate, step count and counted tokens.

        Raises:
            StateError: no adapter is active.
            CancelledError: the progress callback (:meth:`set_progress`) returned False; nothing changed.
            InvalidArgumentError: bad shapes, ids or labels out of range, a bad config value.
            NumericalError: NaN or infinity in the loss or gradient (nothing was updated).
        """
        tc = _make(TrainConfig, config, train_options)
        s = tc._to_struct()
        ids, lab, b, t = batch_arrays(input_ids, labels)
        seg = _segments(ids, segment_ids)
        r = _capi.TrainResultStruct()
        r.struct_size = ctypes.sizeof(r)
        with self._call as h:
            if seg is None:
                status = _lib.peftkit_train_step(h, address(ids), None if lab is None else address(lab),
                                                 b, t, byref(s), byref(r))
            else:
                status = _lib.peftkit_train_step_packed(h, address(ids), None if lab is None else address(lab),
                                                        address(seg), b, t, byref(s), byref(r))
            self._check_progress(status)
            result = TrainResult(r.loss, r.grad_norm, r.learning_rate, r.step, r.tokens)
            self._last_train_result = result
        return result

    @property
    def last_train_result(self) -> TrainResult | None:
        """Deprecated: use the :class:`TrainResult` that :meth:`train_step` returns. The result of the last
        successful :meth:`train_step` on this model (None before the first); another thread's step may have
        replaced it by the time it is read."""
        warnings.warn("Model.last_train_result is deprecated: train_step returns the TrainResult",
                      DeprecationWarning, stacklevel=2)
        return self._last_train_result

    def _check_progress(self, status: int) -> None:
        p = self._progress
        if p is not None:
            p.check(status)
        check(status)

    def set_progress(self, callback: ProgressCallback | None) -> None:
        """Sets the callable told the progress of :meth:`train_step` and :meth:`compute_gradients` (None removes
        it): ``callback(done, total)`` after each micro-batch's forward pass and after the backward pass through
        each layer, on the calling thread. Returning False cancels the call (:class:`CancelledError`); an
        exception it raises cancels the call and is re-raised. A cancelled call leaves the adapter's weights,
        optimiser moments and step count unchanged. The callback must not call this model (it is in use:
        :class:`BusyError`)."""
        p = None if callback is None else _Progress(callback)
        with self._call as h:
            cb = _capi.PROGRESS_CALLBACK() if p is None else p.c_callback  # PROGRESS_CALLBACK(): NULL
            check(_lib.peftkit_model_set_progress_callback(h, cb, None))
            self._progress = p  # keeps the C callback alive while the library holds it

    #: Names of :meth:`preference_step`'s statistics, in the order of ``peftkit_train_preference_step``'s `stats`.
    PREFERENCE_STATS = ("loss", "chosen_reward", "rejected_reward", "reward_margin", "accuracy", "chosen_logp",
                        "rejected_logp", "nll", "log_odds_ratio")

    def preference_step(self, chosen: TokenArray, chosen_mask: TokenArray, rejected: TokenArray,
                        rejected_mask: TokenArray, *, objective: str = "dpo", beta: float = 0.1,
                        config: TrainConfig | Mapping[str, Any] | None = None, **train_options: Any) -> dict[str, float]:
        """One AdamW step of the active adapter on preference pairs (DPO or ORPO).

        Args:
            chosen, rejected: token ids ``[pairs, seq_len]`` (prompt then response, padded on the right).
            chosen_mask, rejected_mask: same shape, 1 on response tokens (their log-probability counts), 0 on
                prompt and padding.
            objective: ``"dpo"`` (reference = the model with the adapter turned off) or ``"orpo"``.
            beta: DPO's beta, or ORPO's lambda (TRL calls both ``beta``).
            config, **train_options: as for :meth:`train_step` (``micro_batch_size`` counts pairs).

        Returns:
            The step's statistics (means over the pairs, before the update), keyed by :attr:`PREFERENCE_STATS`:
            loss, chosen/rejected reward (DPO: beta * (log p - log p_ref); ORPO: lambda * mean log p), reward
            margin, accuracy, the policy's summed log-probabilities, and ORPO's NLL and log sigmoid(log odds
            ratio); plus the update's ``grad_norm``, ``learning_rate``, ``step`` and ``tokens`` (response tokens
            counted), as in :class:`TrainResult`.

        Raises:
            InvalidArgumentError: shapes, ids, masks other than 0/1, a row without a response token, objective,
                beta or config out of range.
            StateError: no active adapter.
            NumericalError: NaN or infinity (nothing was updated).
        """
        codes = {"dpo": _capi.PEFTKIT_OBJECTIVE_DPO, "orpo": _capi.PEFTKIT_OBJECTIVE_ORPO}
        if objective not in codes:
            raise InvalidArgumentError(f"objective must be 'dpo' or 'orpo', got {objective!r}")
        tc = _make(TrainConfig, config, train_options)
        s = tc._to_struct()
        chosen_mask, rejected_mask = (np.asarray(x, dtype=np.int32) if np.asarray(x).dtype == np.bool_ else x
                                      for x in (chosen_mask, rejected_mask))
        c, cm, p, t = batch_arrays(chosen, chosen_mask)
        r_, rm, p2, t2 = batch_arrays(rejected, rejected_mask)
        if cm is None or rm is None or (p2, t2) != (p, t):
            raise InvalidArgumentError(f"rejected shape {r_.shape} does not match chosen shape {c.shape}")
        res = _capi.TrainResultStruct()
        res.struct_size = ctypes.sizeof(res)
        stats = (c_float * _capi.PEFTKIT_PREFERENCE_STATS)()
        with self._call as h:
            check(_lib.peftkit_train_preference_step(h, codes[objective], float(beta), address(c), address(cm),
                                                     address(r_), address(rm), p, t, byref(s), byref(res),
                                                     ctypes.addressof(stats), _capi.PEFTKIT_PREFERENCE_STATS))
            self._last_train_result = TrainResult(res.loss, res.grad_norm, res.learning_rate, res.step, res.tokens)
        out = dict(zip(self.PREFERENCE_STATS, (float(v) for v in stats)))
        out.update(grad_norm=float(res.grad_norm), learning_rate=float(res.learning_rate), step=int(res.step),
                   tokens=int(res.tokens))
        return out

    def compute_gradients(self, input_ids: TokenArray, labels: TokenArray | None = None,
                          config: TrainConfig | Mapping[str, Any] | None = None, *, loss_divisor: int | None = None,
                          segment_ids: TokenArray | None = None, **train_options: Any) -> tuple[float, int]:
        """The first half of :meth:`train_step`, for data parallelism with the host's own communicator
        (mpi4py, torch.distributed): forward, loss and backward, leaving the gradient of the summed loss
        divided by `loss_divisor` (default: this batch's counted tokens) in :meth:`gradients`. Ranks pass the
        global token count, sum the gradient buffers (all-reduce), then call :meth:`apply_gradients`.
        `segment_ids`: packed rows, as in :meth:`train_step`.

        Returns:
            (this batch's summed loss / loss_divisor, tokens counted in this batch).
        """
        tc = _make(TrainConfig, config, train_options)
        s = tc._to_struct()
        ids, lab, b, t = batch_arrays(input_ids, labels)
        seg = _segments(ids, segment_ids)
        loss = ctypes.c_float()
        tokens = ctypes.c_int64()
        if loss_divisor is not None and loss_divisor <= 0:
            raise InvalidArgumentError(f"loss_divisor must be positive, got {loss_divisor}")
        with self._call as h:
            if seg is None:
                status = _lib.peftkit_train_compute_gradients(
                    h, address(ids), None if lab is None else address(lab), b, t, byref(s), loss_divisor or 0,
                    byref(loss), byref(tokens))
            else:
                status = _lib.peftkit_train_compute_gradients_packed(
                    h, address(ids), None if lab is None else address(lab), address(seg), b, t, byref(s),
                    loss_divisor or 0, byref(loss), byref(tokens))
            self._check_progress(status)
        return float(loss.value), int(tokens.value)

    def apply_gradients(self, config: TrainConfig | Mapping[str, Any] | None = None,
                        **train_options: Any) -> TrainResult:
        """The second half of :meth:`train_step`: clipping, schedule and AdamW on :meth:`gradients` as
        they are now (refusing non-finite values: nothing changes). Raises StateError without a
        preceding :meth:`compute_gradients` for the adapter being trained."""
        tc = _make(TrainConfig, config, train_options)
        s = tc._to_struct()
        r = _capi.TrainResultStruct()
        r.struct_size = ctypes.sizeof(r)
        with self._call as h:
            check(_lib.peftkit_train_apply_gradients(h, byref(s), byref(r)))
        return TrainResult(r.loss, r.grad_norm, r.learning_rate, r.step, r.tokens)

    def gradients(self) -> npt.NDArray[np.float32]:
        """A float32 numpy view (no copy) of the flat gradient buffer of what :meth:`train_step` trains,
        to read or change in place between :meth:`compute_gradients` and :meth:`apply_gradients`. Valid
        until that adapter is removed or given a task head, full fine-tuning is switched, or the model is
        closed."""
        data = ctypes.POINTER(ctypes.c_float)()
        count = ctypes.c_int64()
        with self._call as h:
            check(_lib.peftkit_train_gradients(h, byref(data), byref(count)))
        return np.ctypeslib.as_array(data, shape=(int(count.value),))

    def forward(self, input_ids: TokenArray, labels: TokenArray | None = None, *, logits: str = "all",
                return_logprobs: bool = False, return_loss: bool = True,
                out: npt.NDArray[np.float32] | None = None,
                adapters: Iterable[str | None] | None = None,
                segment_ids: TokenArray | None = None) -> npt.NDArray[np.float32] | ForwardResult:
        """A forward pass with the active adapter (or the base model); nothing changes.

        Called as ``forward(input_ids)`` it returns the logits array. Given `labels`, ``logits="last"`` or
        ``"none"``, or ``return_logprobs=True``, it returns a :class:`ForwardResult`: the logits asked for, the
        per-row losses and token counts, the mean loss, and with `return_logprobs` the log-probability of each
        label (to score candidates without the ``[batch, seq_len, vocab]`` logits).

        Args:
            input_ids: token ids, ``[batch, seq_len]`` or ``[seq_len]`` (batch 1).
            labels: same shape, or None for `input_ids`; -100 marks positions that do not count.
            logits: ``"all"`` (every position), ``"last"`` (each row's last position, ``[batch, vocab]``), or
                ``"none"``.
            return_logprobs: also return ``token_logprobs`` ``[batch, seq_len]``.
            return_loss: compute the loss outputs (``loss``, ``row_losses``, ``row_tokens``). With False (and no
                `return_logprobs`) they are None and, for ``logits="last"``, the LM head runs on each row's last
                position only: the cheap way to read next-token distributions of long rows.
            adapters: optional, one adapter name (or None = base model) per batch row: row b runs with
                adapters[b], as it would alone (mixed-task batches; plain form only). The active adapter is
                unchanged.
            out: optional C-contiguous float32 array to write the logits into (its first elements); saves an
                allocation per call.
            segment_ids: packed rows, as in :meth:`train_step` (plain form only, not with `adapters`): each
                record's logits are those it gets alone.

        Returns:
            float32 array ``[batch, seq_len, vocab_size]`` (a view of `out` when given) in the plain form, else a
            :class:`ForwardResult`.

        Raises:
            InvalidArgumentError: bad shape, ids out of range, an unknown `logits`.
            BufferTooSmallError: `out` has fewer elements than the logits.
        """
        if logits not in _LOGITS_MODES:
            raise InvalidArgumentError(f"logits must be one of {sorted(_LOGITS_MODES)}, got {logits!r}")
        plain = labels is None and logits == "all" and not return_logprobs and return_loss
        ids, lab, b, t = batch_arrays(input_ids, labels)
        seg = _segments(ids, segment_ids)
        if seg is not None and (not plain or adapters is not None):
            raise InvalidArgumentError("segment_ids is only taken by the plain form forward(input_ids, segment_ids=...)")
        v = self._config.vocab_size
        shape = {"all": (b, t, v), "last": (b, v), "none": None}[logits]
        if shape is None:
            lg = None
            if out is not None:
                raise InvalidArgumentError("out is given but logits='none'")
        elif out is None:
            lg = np.empty(shape, dtype=np.float32)
        else:
            if not isinstance(out, np.ndarray) or out.dtype != np.float32 or not out.flags.c_contiguous \
                    or not out.flags.writeable:
                raise InvalidArgumentError("out must be a writeable, C-contiguous float32 numpy array")
            lg = out
        if plain:
            assert lg is not None
            if adapters is not None:
                names = [None if a is None else _c_string(a, "adapters[]") for a in adapters]
                if len(names) != b:
                    raise InvalidArgumentError(f"adapters has {len(names)} entries for a batch of {b}")
                arr = (ctypes.c_char_p * b)(*names)
                with self._call as h:
                    check(_lib.peftkit_forward_mixed(h, address(ids), None, arr, b, t, address(lg), lg.size,
                                                     None, None))
            elif seg is not None:
                with self._call as h:
                    check(_lib.peftkit_forward_packed(h, address(ids), None, address(seg), b, t, address(lg), lg.size,
                                                      None, None))
            else:
                with self._call as h:
                    check(_lib.peftkit_forward(h, address(ids), None, b, t, address(lg), lg.size, None, None))
            if out is None or out.shape == (b, t, v):
                return lg
            return out.reshape(-1)[: b * t * v].reshape(b, t, v)
        if adapters is not None:
            raise InvalidArgumentError("adapters= is only taken by the plain form forward(input_ids, adapters=...)")
        lp = np.zeros((b, t), dtype=np.float32) if return_logprobs else None
        wants_loss = return_loss or return_logprobs
        rl = np.zeros(b, dtype=np.float32) if wants_loss else None
        rt = np.zeros(b, dtype=np.int64) if wants_loss else None
        o = _capi.new_struct(_capi.ForwardOptionsStruct)
        o.logits_mode = _LOGITS_MODES[logits]
        f32, i64 = ctypes.POINTER(c_float), ctypes.POINTER(c_int64)
        o.logits = None if lg is None else lg.ctypes.data_as(f32)
        o.logits_capacity = 0 if lg is None else lg.size
        o.token_logprobs = None if lp is None else lp.ctypes.data_as(f32)
        o.row_losses = None if rl is None else rl.ctypes.data_as(f32)
        o.row_tokens = None if rt is None else rt.ctypes.data_as(i64)
        loss, tokens = c_float(), c_int64()
        with self._call as h:
            check(_lib.peftkit_forward_ex(h, address(ids), None if lab is None else address(lab), b, t, byref(o),
                                          byref(loss) if wants_loss else None, byref(tokens)))
        if lg is not None and out is not None and shape is not None and lg.shape != shape:
            lg = out.reshape(-1)[: int(np.prod(shape))].reshape(shape)
        return ForwardResult(logits=lg, token_logprobs=lp, row_losses=rl, row_tokens=rt,
                             loss=float(loss.value) if wants_loss else None, tokens=int(tokens.value))

    def evaluate(self, input_ids: TokenArray, labels: TokenArray | None = None, *,
                 segment_ids: TokenArray | None = None) -> EvalResult:
        """The loss of a forward pass, without computing logits for the caller or changing anything.

        Args:
            input_ids: token ids, ``[batch, seq_len]`` or ``[seq_len]``.
            labels: same shape, or None for `input_ids`; -100 marks positions that do not count.
            segment_ids: packed rows, as in :meth:`train_step`.

        Returns:
            :class:`EvalResult` with the mean loss and the number of counted positions.
        """
        ids, lab, b, t = batch_arrays(input_ids, labels)
        seg = _segments(ids, segment_ids)
        loss, tokens = c_float(), c_int64()
        with self._call as h:
            check(_lib.peftkit_forward_packed(h, address(ids), None if lab is None else address(lab),
                                              None if seg is None else address(seg), b, t,
                                              None, 0, byref(loss), byref(tokens)))
        return EvalResult(loss.value, tokens.value)

    # ------------------------------------------------------------------------------------------------
    # Encoders (BERT)
    # ------------------------------------------------------------------------------------------------

    def _encoder_arrays(self, input_ids: TokenArray, attention_mask: TokenArray | None,
                        token_type_ids: TokenArray | None) -> tuple[np.ndarray, Any, Any, int, int]:
        ids = int32_tokens(input_ids, "input_ids")
        b, t = batch_shape(ids, "input_ids")
        extra = []
        for x, what in ((attention_mask, "attention_mask"), (token_type_ids, "token_type_ids")):
            if x is None:
                extra.append(None)
                continue
            a = int32_tokens(x, what)
            if a.size != ids.size or batch_shape(a, what) != (b, t):
                raise InvalidArgumentError(f"{what} shape {a.shape} does not match input_ids shape {ids.shape}")
            extra.append(a)
        return ids, extra[0], extra[1], b, t

    def hidden_states(self, input_ids: TokenArray, attention_mask: TokenArray | None = None,
                      token_type_ids: TokenArray | None = None) -> np.ndarray:
        """An encoder's (BERT) last hidden states with the active adapter, float32 ``[batch, seq_len, hidden]``.

        `attention_mask` (1 = token, 0 = padding) and `token_type_ids` have the shape of `input_ids`; None =
        no padding / type 0. Padding changes nothing in the real positions.
        """
        ids, mask, types, b, t = self._encoder_arrays(input_ids, attention_mask, token_type_ids)
        out = np.empty((b, t, self._config.hidden_size), dtype=np.float32)
        with self._call as h:
            check(_lib.peftkit_encoder_hidden_states(h, address(ids), None if types is None else address(types),
                                                     None if mask is None else address(mask), b, t, address(out),
                                                     out.size))
        return out

    def embed(self, input_ids: TokenArray, attention_mask: TokenArray | None = None,
              token_type_ids: TokenArray | None = None, normalize: bool = True) -> np.ndarray:
        """Sentence embeddings, float32 ``[batch, hidden]``: the mean of the hidden states over the mask, L2
        normalised when `normalize` (sentence-transformers' all-MiniLM-L6-v2 embedding)."""
        ids, mask, types, b, t = self._encoder_arrays(input_ids, attention_mask, token_type_ids)
        out = np.empty((b, self._config.hidden_size), dtype=np.float32)
        with self._call as h:
            check(_lib.peftkit_encoder_embed(h, address(ids), None if types is None else address(types),
                                             None if mask is None else address(mask), b, t, 1 if normalize else 0,
                                             address(out), out.size))
        return out

    _HEADS = {"classification": _capi.PEFTKIT_HEAD_CLASSIFICATION, "regression": _capi.PEFTKIT_HEAD_REGRESSION,
              "tokens": _capi.PEFTKIT_HEAD_TOKENS}

    def attach_head(self, kind: str, outputs: int, seed: int = 0) -> None:
        """Gives the active adapter a task head: ``"classification"`` (pooler or mean pooling + linear,
        cross-entropy), ``"regression"`` (same features, mean squared error) or ``"tokens"`` (a linear layer
        per position, cross-entropy). It trains with the adapter (:meth:`head_train_step`) in one optimiser
        state, and belongs to it (PEFT's ``modules_to_save``)."""
        if kind not in self._HEADS:
            raise InvalidArgumentError(f"kind must be one of {sorted(self._HEADS)}, got {kind!r}")
        with self._call as h:
            check(_lib.peftkit_head_attach(h, self._HEADS[kind], _int(outputs, "outputs"), _int(seed, "seed", 0, 2**64 - 1)))

    @property
    def head(self) -> tuple[str, int] | None:
        """The active adapter's head as (kind, outputs), or None."""
        kind, outputs = c_int32(), c_int32()
        with self._call as h:
            check(_lib.peftkit_head_get(h, byref(kind), byref(outputs)))
        names = {v: k for k, v in self._HEADS.items()}
        return (names[kind.value], outputs.value) if kind.value in names else None

    def _head_targets(self, labels: TokenArray | None, targets: Any, b: int, t: int) -> tuple[Any, Any, int]:
        info = self.head
        if info is None:
            raise StateError("the active adapter has no task head (attach_head)")
        kind, k = info
        lab = tg = None
        if labels is not None:
            lab = int32_tokens(labels, "labels")
            want = b * t if kind == "tokens" else b
            if lab.size != want:
                raise InvalidArgumentError(f"labels has {lab.size} entries, the {kind} head needs {want}")
        if targets is not None:
            tg = np.ascontiguousarray(targets, dtype=np.float32)
            if tg.size != b * k:
                raise InvalidArgumentError(f"targets has {tg.size} entries, the regression head needs {b * k}")
        rows = b * t if kind == "tokens" else b
        return lab, tg, rows * k

    def head_forward(self, input_ids: TokenArray, attention_mask: TokenArray | None = None,
                     token_type_ids: TokenArray | None = None, *, labels: TokenArray | None = None,
                     targets: Any = None) -> tuple[np.ndarray, float | None]:
        """The active adapter's head outputs and, with `labels` (classification ``[batch]``, tokens
        ``[batch, seq_len]``, -100 ignored) or `targets` (regression ``[batch, outputs]``), the mean loss.
        Outputs are float32 ``[batch, outputs]`` or ``[batch, seq_len, outputs]`` (tokens)."""
        ids, mask, types, b, t = self._encoder_arrays(input_ids, attention_mask, token_type_ids)
        lab, tg, n = self._head_targets(labels, targets, b, t)
        kind, k = self.head or ("", 0)
        out = np.empty((b, t, k) if kind == "tokens" else (b, k), dtype=np.float32)
        loss = c_float(float("nan"))
        with self._call as h:
            check(_lib.peftkit_head_forward(h, address(ids), None if types is None else address(types),
                                            None if mask is None else address(mask), b, t,
                                            None if lab is None else address(lab), None if tg is None else address(tg),
                                            address(out), n, byref(loss)))
        return out, (None if lab is None and tg is None else float(loss.value))

    def classify(self, input_ids: TokenArray, attention_mask: TokenArray | None = None,
                 token_type_ids: TokenArray | None = None) -> np.ndarray:
        """The active adapter's head outputs (:meth:`head_forward` without a loss)."""
        return self.head_forward(input_ids, attention_mask, token_type_ids)[0]

    def head_train_step(self, input_ids: TokenArray, attention_mask: TokenArray | None = None,
                        token_type_ids: TokenArray | None = None, *, labels: TokenArray | None = None,
                        targets: Any = None, config: TrainConfig | Mapping[str, Any] | None = None,
                        **train_options: Any) -> TrainResult:
        """One AdamW step of the active adapter and its head on `labels` or `targets` (as
        :meth:`head_forward`). Returns the :class:`TrainResult`: the loss before the update (``.loss``), the
        gradient norm, learning rate, step, and in ``tokens`` the labels (or rows) that counted."""
        tc = _make(TrainConfig, config, train_options)
        s = tc._to_struct()
        ids, mask, types, b, t = self._encoder_arrays(input_ids, attention_mask, token_type_ids)
        lab, tg, _ = self._head_targets(labels, targets, b, t)
        r = _capi.TrainResultStruct()
        r.struct_size = ctypes.sizeof(r)
        with self._call as h:
            check(_lib.peftkit_head_train_step(h, address(ids), None if types is None else address(types),
                                               None if mask is None else address(mask), b, t,
                                               None if lab is None else address(lab),
                                               None if tg is None else address(tg), byref(s), byref(r)))
            result = TrainResult(r.loss, r.grad_norm, r.learning_rate, r.step, r.tokens)
            self._last_train_result = result
        return result

    def loss(self, input_ids: TokenArray, labels: TokenArray | None = None) -> float:
        """The mean cross-entropy loss of a forward pass (see :meth:`evaluate`)."""
        return self.evaluate(input_ids, labels).loss

    # ------------------------------------------------------------------------------------------------
    # Generation
    # ------------------------------------------------------------------------------------------------

    def generate(self, prompt_ids: TokenArray, *, max_new_tokens: int = 32, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int = 0, stop: int | Iterable[int] | None = None,
                 repetition_penalty: float = 1.0, min_p: float = 0.0, stop_strings: Iterable[str] | None = None,
                 callback: TokenCallback | None = None) -> npt.NDArray[np.int32]:
        """Generates tokens after `prompt_ids` with the active adapter (or the base model), using a KV
        cache. :meth:`generate_result` also says why generation stopped; :meth:`generate_stream` yields
        the text as it comes.

        Args:
            prompt_ids: the prompt, ``[n]`` or ``[1, n]``, n >= 1.
            max_new_tokens: at most this many new tokens (fewer when the model's ``max_positions`` is
                reached).
            temperature: 0 = greedy; otherwise logits / temperature are sampled.
            top_k: keep the k most likely tokens (0 = off).
            top_p: keep the smallest set reaching probability top_p (1 = off).
            seed: sampler seed; equal seeds give equal outputs.
            stop: a token id or ids that end generation; the stop token is included in the output.
            repetition_penalty: > 0, 1 = off. Before sampling (greedy too), the logit of every token
                already in the prompt or the output is divided by it when positive and multiplied by it
                when negative (transformers' ``repetition_penalty``; the window is the whole context).
            min_p: in [0, 1], 0 = off: drop tokens less likely than min_p times the most likely one
                (after temperature, top_k and top_p).
            stop_strings: strings that end generation when the new tokens' text contains one; the output
                ends before it (the token in which it starts is dropped). Needs the model's tokenizer.
            callback: called with each new token id as it is produced; return a truthy value to stop
                (that token is kept). An exception raised by the callback stops generation and is
                re-raised once the library has returned. The callback must not call this model.

        Returns:
            int32 array of the new tokens (prompt not included).

        Ctrl-C stops generation between two tokens and raises KeyboardInterrupt (in the main thread).
        """
        return self.generate_result(prompt_ids, max_new_tokens=max_new_tokens, temperature=temperature,
                                    top_k=top_k, top_p=top_p, seed=seed, stop=stop,
                                    repetition_penalty=repetition_penalty, min_p=min_p, stop_strings=stop_strings,
                                    callback=callback).tokens

    def generate_result(self, prompt_ids: TokenArray, *, max_new_tokens: int = 32, temperature: float = 0.0,
                        top_k: int = 0, top_p: float = 1.0, seed: int = 0, stop: int | Iterable[int] | None = None,
                        repetition_penalty: float = 1.0, min_p: float = 0.0,
                        stop_strings: Iterable[str] | None = None,
                        callback: TokenCallback | None = None) -> GenerateResult:
        """:meth:`generate` that returns a :class:`GenerateResult`: the tokens, the
        :class:`FinishReason` (stop token, stop string, length, context full, cancelled) and, with stop
        strings, the text before the stop string. The callback sees every sampled token, also those a
        stop string then drops."""
        prompt = _prompt_array(prompt_ids)
        g, keep = _generate_struct(max_new_tokens, temperature, top_k, top_p, seed, stop, repetition_penalty,
                                   min_p, stop_strings)
        return self._generate(prompt, g, keep, callback, catch_sigint=True)

    def generate_stream(self, prompt_ids: TokenArray, *, max_new_tokens: int = 32, temperature: float = 0.0,
                        top_k: int = 0, top_p: float = 1.0, seed: int = 0, stop: int | Iterable[int] | None = None,
                        repetition_penalty: float = 1.0, min_p: float = 0.0,
                        stop_strings: Iterable[str] | None = None, skip_special: bool = True) -> TextStream:
        """Generates as :meth:`generate`, giving the text chunk by chunk as tokens are produced::

            stream = model.generate_stream(ids, max_new_tokens=64, stop_strings=["\\n\\n"])
            for chunk in stream:
                print(chunk, end="", flush=True)
            print(stream.result.finish_reason)

        Chunks are valid text: a character whose bytes are split over tokens comes out whole once its
        last token arrives (never as U+FFFD), and text that may be the start of a stop string is held
        back until it is known not to be one, so the chunks join to ``stream.result.text`` exactly.
        Special tokens (end of turn...) are left out of the text with `skip_special`. Generation runs on
        another thread; leaving the loop early stops it. Needs the model's tokenizer.
        """
        prompt = _prompt_array(prompt_ids)
        stops = [] if stop_strings is None else list(stop_strings)
        g, keep = _generate_struct(max_new_tokens, temperature, top_k, top_p, seed, stop, repetition_penalty,
                                   min_p, stops)
        if not self.has_tokenizer:
            raise StateError("generate_stream needs the model's tokenizer (load one with load_tokenizer)")
        special: dict[int, bool] = {}

        def piece(token: int) -> tuple[bytes, bool]:
            visible = True
            if skip_special:
                if token not in special:  # a special token's text is empty when skipped; any other's is not
                    special[token] = self.detokenize([token], skip_special=True) == ""
                visible = not special[token]
            return self.token_to_piece(token), visible

        return TextStream(lambda cb: self._generate(prompt, g, keep, cb, catch_sigint=False), piece, stops)

    def _generate(self, prompt: np.ndarray, g: _capi.GenerateConfigStruct, keep: Any,
                  callback: TokenCallback | None, catch_sigint: bool) -> GenerateResult:
        """Runs peftkit_generate_ex; `keep` holds the arrays `g` points into."""
        n_new = g.max_new_tokens
        out = np.empty(max(n_new, 0), dtype=np.int32)
        res = _capi.GenerateResultStruct()
        res.struct_size = ctypes.sizeof(res)

        # The trampoline runs for every token, even without a user callback. While it runs, a SIGINT
        # handler of ours is installed (main thread only, and only over Python's default handler): it
        # just records Ctrl-C, and the trampoline then stops generation. A handler that raised would
        # raise inside the ctypes callback, where the exception would be printed and lost.
        raised: list[BaseException] = []
        interrupted: list[bool] = []

        def trampoline(token: int, _user: Any) -> int:
            if interrupted:
                return 1
            if callback is None:
                return 0
            try:
                return 1 if callback(token) else 0
            except BaseException as e:  # re-raised after the C call returns
                raised.append(e)
                return 1

        def on_sigint(signum: int, frame: Any) -> None:
            interrupted.append(True)

        cb = _capi.TOKEN_CALLBACK(trampoline)
        catch_sigint = (catch_sigint and threading.current_thread() is threading.main_thread()
                        and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        previous = signal.signal(signal.SIGINT, on_sigint) if catch_sigint else None
        try:
            with self._call as h:
                status = _lib.peftkit_generate_ex(h, address(prompt), prompt.shape[0], byref(g), address(out),
                                                  out.shape[0], byref(res), cb, None)
        finally:
            if catch_sigint:
                signal.signal(signal.SIGINT, previous)
        if raised:
            raise raised[0]
        check(status)
        if interrupted:
            raise KeyboardInterrupt
        tokens = out[: res.n_tokens].copy()
        dropped = out[res.n_tokens: res.n_generated].copy()
        reason = library_enum(FinishReason, res.finish_reason, "finish reason")
        text = None
        if g.n_stop_strings > 0:
            raw = b"".join(self.token_to_piece(int(t)) for t in out[: res.n_generated])
            if res.stop_byte_offset >= 0:
                raw = raw[: res.stop_byte_offset]
            text = raw.decode("utf-8", errors="replace")
        return GenerateResult(tokens=tokens, finish_reason=reason,
                              stop_index=None if res.stop_index < 0 else res.stop_index, text=text,
                              dropped_tokens=dropped,
                              stop_byte_offset=None if res.stop_byte_offset < 0 else res.stop_byte_offset)

    def generate_mixed(self, prompts: Iterable[TokenArray], adapters: Iterable[str | None], *,
                       max_new_tokens: int = 32, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                       seed: int = 0, stop: int | Iterable[int] | None = None, repetition_penalty: float = 1.0,
                       min_p: float = 0.0, stop_strings: Iterable[str] | None = None) -> list[npt.NDArray[np.int32]]:
        """Generates for several prompts, prompt i with adapter ``adapters[i]`` (None = the base model);
        each result equals :meth:`generate` for that prompt alone with that adapter active. Prompts with the
        same adapter and the same length are decoded together (one forward pass per step for the group),
        faster than one prompt after another (``bench/generate_batch.py``). Options as :meth:`generate`. Returns
        one int32 array of new tokens per prompt (:meth:`generate_mixed_results` also gives each row's
        finish reason)."""
        return [r.tokens for r in self.generate_mixed_results(
            prompts, adapters, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            seed=seed, stop=stop, repetition_penalty=repetition_penalty, min_p=min_p, stop_strings=stop_strings)]

    def generate_mixed_results(self, prompts: Iterable[TokenArray], adapters: Iterable[str | None], *,
                               max_new_tokens: int = 32, temperature: float = 0.0, top_k: int = 0,
                               top_p: float = 1.0, seed: int = 0, stop: int | Iterable[int] | None = None,
                               repetition_penalty: float = 1.0, min_p: float = 0.0,
                               stop_strings: Iterable[str] | None = None) -> list[GenerateResult]:
        """:meth:`generate_mixed` with a :class:`GenerateResult` per prompt (tokens and finish reason)."""
        rows = []
        for i, p in enumerate(prompts):
            a = int32_tokens(p, f"prompts[{i}]").reshape(-1)
            if a.size == 0:
                raise InvalidArgumentError(f"prompts[{i}] is empty")
            rows.append(np.ascontiguousarray(a))
        names = [None if a is None else _c_string(a, "adapters[]") for a in adapters]
        if len(names) != len(rows) or not rows:
            raise InvalidArgumentError(f"{len(names)} adapter choices for {len(rows)} prompts (need >= 1 each)")
        g, keep = _generate_struct(max_new_tokens, temperature, top_k, top_p, seed, stop, repetition_penalty,
                                   min_p, stop_strings)
        b, n_new = len(rows), max(g.max_new_tokens, 0)
        ptrs = (ctypes.POINTER(c_int32) * b)(*[r.ctypes.data_as(ctypes.POINTER(c_int32)) for r in rows])
        lens = (c_int32 * b)(*[r.size for r in rows])
        arr = (ctypes.c_char_p * b)(*names)
        out = np.empty(max(b * n_new, 1), dtype=np.int32)
        n_out = (c_int32 * b)()
        reasons = (c_int32 * b)()
        with self._call as h:
            check(_lib.peftkit_generate_mixed_ex(h, ptrs, lens, arr, b, byref(g), address(out), out.size, n_out,
                                                 reasons))
        return [GenerateResult(tokens=out[i * n_new: i * n_new + n_out[i]].copy(),
                               finish_reason=library_enum(FinishReason, reasons[i], "finish reason")) for i in range(b)]

    # ------------------------------------------------------------------------------------------------
    # Tokenization
    # ------------------------------------------------------------------------------------------------

    def _tokenizer_info(self) -> _capi.TokenizerInfoStruct:
        info = _capi.TokenizerInfoStruct()
        info.struct_size = ctypes.sizeof(info)
        with self._call as h:
            check(_lib.peftkit_tokenizer_get_info(h, byref(info)))
        return info

    @property
    def has_tokenizer(self) -> bool:
        """True when the model carries a tokenizer (read by :meth:`load` from a GGUF file's metadata or a
        folder's ``tokenizer.json``, or attached with :meth:`load_tokenizer`)."""
        return bool(self._tokenizer_info().has_tokenizer)

    @property
    def has_chat_template(self) -> bool:
        """True when :meth:`apply_chat_template` can be used."""
        return bool(self._tokenizer_info().has_chat_template)

    @property
    def bos_token_id(self) -> int | None:
        """The beginning-of-sequence token id, or None."""
        v = self._tokenizer_info().bos_id
        return None if v < 0 else v

    @property
    def eos_token_id(self) -> int | None:
        """The end-of-sequence token id, or None."""
        v = self._tokenizer_info().eos_id
        return None if v < 0 else v

    @property
    def eot_token_id(self) -> int | None:
        """The token that ends a chat turn (ChatML ``<|im_end|>``), or None."""
        v = self._tokenizer_info().eot_id
        return None if v < 0 else v

    @property
    def adds_bos(self) -> bool:
        """True when :meth:`tokenize` with ``add_special=True`` puts the BOS token first."""
        return bool(self._tokenizer_info().adds_bos)

    @property
    def stop_token_ids(self) -> list[int]:
        """The ids a chat reply should stop on (EOS and end of turn, without duplicates), for
        ``generate(..., stop=model.stop_token_ids)``. Empty without a tokenizer."""
        info = self._tokenizer_info()
        out: list[int] = []
        for v in (info.eos_id, info.eot_id):
            if v >= 0 and v not in out:
                out.append(v)
        return out

    @property
    def tokenizer_issue(self) -> str | None:
        """Why the model has no tokenizer or chat template although its files carry one (e.g. a
        SentencePiece vocabulary, or a template outside the Jinja subset PEFTKit renders), or None."""
        with self._call as h:
            text = self._read_name(lambda buf, cap, n: _lib.peftkit_tokenizer_issue(h, buf, cap, n))
        return text or None

    def load_tokenizer(self, path: PathLike) -> None:
        """Reads a tokenizer and chat template from `path` (a ``.gguf`` file, a ``tokenizer.json`` file,
        or a model folder) and attaches them, replacing the model's.

        Raises:
            NotFoundError: `path` holds no tokenizer.
            FormatError: the files are malformed, or the tokenizer's ids exceed the model's vocabulary.
            UnsupportedError: a tokenizer type PEFTKit does not implement (only byte-level BPE).
            PeftKitIOError: `path` cannot be read.
        """
        with self._call as h:
            check(_lib.peftkit_tokenizer_load(h, _c_path(path)))

    @staticmethod
    def _grow(call: Callable[[Any, int, Any], int], make: Callable[[int], Any], guess: int) -> tuple[Any, int]:
        """Runs a two-call output function `(buf, cap, n_out)`: with a buffer of `guess` elements, then,
        if the library says it needs more, with one of the size it reported."""
        n = c_size_t()
        cap = max(guess, 1)
        for _ in range(3):
            buf = make(cap)
            status = call(buf, cap, byref(n))
            if status == _capi.PEFTKIT_ERR_BUFFER_TOO_SMALL and n.value + 1 > cap:
                cap = n.value + 1
                continue
            check(status)
            return buf, n.value
        raise error_for(_capi.PEFTKIT_ERR_INTERNAL, "output size changed between two calls")

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> npt.NDArray[np.int32]:
        """The token ids of `text`, as a 1-D int32 array.

        Args:
            text: the text (a str, or UTF-8 bytes).
            add_special: add the tokens the tokenizer puts around a text (the BOS token when
                :attr:`adds_bos`), as transformers' ``add_special_tokens``.
            parse_special: special tokens written in the text (``"<|im_start|>"``) become their ids;
                when False they are tokenized as plain text.

        Raises:
            StateError: the model has no tokenizer.
            InvalidArgumentError: `text` is not valid UTF-8 (lone surrogates).
        """
        if isinstance(text, str):
            b = text.encode("utf-8", "surrogatepass")
        elif isinstance(text, bytes):
            b = text
        else:
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        add, parse = int(bool(add_special)), int(bool(parse_special))
        with self._call as h:
            ids, n = self._grow(
                lambda buf, cap, n_out: _lib.peftkit_tokenize(h, b, len(b), add, parse, address(buf), cap, n_out),
                lambda cap: np.empty(cap, dtype=np.int32), len(b) + 8)
        return ids[:n].copy()

    def detokenize(self, ids: TokenArray, *, skip_special: bool = False) -> str:
        """The text of token ids (1-D). Invalid UTF-8 (a character cut off at the end) becomes U+FFFD.

        Args:
            skip_special: leave special tokens (BOS, EOS, ``<|im_end|>``...) out of the text.

        Raises:
            StateError: the model has no tokenizer.
            InvalidArgumentError: an id outside the tokenizer's vocabulary.
        """
        arr = int32_tokens(ids, "ids")
        if arr.ndim != 1:
            raise InvalidArgumentError(f"ids must be 1-D, got shape {arr.shape}")
        skip = int(bool(skip_special))
        with self._call as h:
            buf, n = self._grow(
                lambda b, cap, n_out: _lib.peftkit_detokenize(h, address(arr), arr.shape[0], skip, b, cap, n_out),
                lambda cap: (c_char * cap)(), 4 * arr.shape[0] + 16)
        return buf.raw[:n].decode("utf-8")

    def token_to_piece(self, token: int) -> bytes:
        """The raw bytes of one token: for byte-level BPE a piece of UTF-8 that may start or end inside
        a character (join pieces before decoding, or use :class:`Utf8StreamDecoder`).

        Raises:
            StateError: the model has no tokenizer.
            InvalidArgumentError: an id outside the tokenizer's vocabulary.
        """
        t = _int(token, "token", -(2**31), 2**31 - 1)
        with self._call as h:
            buf, n = self._grow(lambda b, cap, n_out: _lib.peftkit_token_to_piece(h, t, b, cap, n_out),
                                lambda cap: (c_char * cap)(), 32)
        return buf.raw[:n]

    def apply_chat_template(self, messages: Iterable[Mapping[str, str]], *,
                            add_generation_prompt: bool = True) -> str:
        """Renders a conversation with the model's chat template, as transformers'
        ``apply_chat_template(messages, tokenize=False)``. Tokenize the result with
        ``tokenize(text, add_special=model.adds_bos)``.

        Args:
            messages: dicts with ``"role"`` and ``"content"`` strings.
            add_generation_prompt: end with the opening of an assistant turn.

        Raises:
            StateError: the model has no chat template.
        """
        roles: list[bytes] = []
        contents: list[bytes] = []
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
                raise InvalidArgumentError(f"messages[{i}] must be a mapping with 'role' and 'content'")
            roles.append(_c_string(m["role"], f"messages[{i}]['role']"))
            contents.append(_c_string(m["content"], f"messages[{i}]['content']"))
        n = len(roles)
        role_arr = (ctypes.c_char_p * max(n, 1))(*roles)
        content_arr = (ctypes.c_char_p * max(n, 1))(*contents)
        gen = int(bool(add_generation_prompt))
        guess = sum(len(r) + len(c) for r, c in zip(roles, contents)) + 32 * n + 256
        with self._call as h:
            buf, length = self._grow(
                lambda b, cap, n_out: _lib.peftkit_chat_template_apply(h, role_arr, content_arr, n, gen, b, cap, n_out),
                lambda cap: (c_char * cap)(), guess)
        return buf.raw[:length].decode("utf-8")


def _prompt_array(prompt_ids: TokenArray) -> np.ndarray:
    """A prompt as a 1-D int32 array (``[n]`` or ``[1, n]`` accepted)."""
    prompt = int32_tokens(prompt_ids, "prompt_ids")
    if prompt.ndim == 2 and prompt.shape[0] == 1:
        prompt = prompt[0]
    if prompt.ndim != 1:
        raise InvalidArgumentError(f"prompt_ids must be 1-D [n] or [1, n], got shape {prompt.shape}")
    if prompt.shape[0] > INT32_MAX:
        raise InvalidArgumentError("prompt_ids is longer than the int32 range")
    return np.ascontiguousarray(prompt)


def _generate_struct(max_new_tokens: Any, temperature: Any, top_k: Any, top_p: Any, seed: Any, stop: Any,
                     repetition_penalty: Any = 1.0, min_p: Any = 0.0,
                     stop_strings: Iterable[str] | None = None) -> tuple[_capi.GenerateConfigStruct, Any]:
    """The C generate config, and the arrays it points into (keep them alive during the call)."""
    stops = int32_array(stop, "stop")
    g = _capi.new_struct(_capi.GenerateConfigStruct)
    g.max_new_tokens = _int(max_new_tokens, "max_new_tokens")
    g.temperature = _float(temperature, "temperature")
    g.top_k = _int(top_k, "top_k")
    g.top_p = _float(top_p, "top_p")
    g.seed = _int(seed, "seed", 0, UINT64_MAX)
    g.n_stop_tokens = 0 if stops is None else len(stops)
    g.stop_tokens = None if stops is None or len(stops) == 0 else stops.ctypes.data_as(ctypes.POINTER(c_int32))
    g.repetition_penalty = _float(repetition_penalty, "repetition_penalty")
    if g.repetition_penalty == 0:
        raise InvalidArgumentError("repetition_penalty must be > 0 (1 = off)")
    g.min_p = _float(min_p, "min_p")
    texts = None
    if stop_strings is not None:
        if isinstance(stop_strings, (str, bytes)):
            stop_strings = [stop_strings]  # type: ignore[list-item]
        encoded = []
        for i, s in enumerate(stop_strings):
            if not isinstance(s, str):
                raise InvalidArgumentError(f"stop_strings[{i}] must be a str, got {type(s).__name__}")
            encoded.append(_c_string(s, f"stop_strings[{i}]"))
        if encoded:
            texts = (ctypes.c_char_p * len(encoded))(*encoded)
            g.n_stop_strings = len(encoded)
            g.stop_strings = ctypes.cast(texts, ctypes.POINTER(ctypes.c_char_p))
    return g, (stops, texts)


def set_num_threads(n: int) -> None:
    """Sets the number of threads of PEFTKit's pool (its loops and matrix products) for the whole process.
    ``n <= 0`` restores the default, the number of online cores; values above 1024 are clamped."""
    v = _int(n, "n", -(2**63), 2**63 - 1)
    _lib.peftkit_set_num_threads(max(-1, min(v, 1024)))


def _segments(ids: np.ndarray, segment_ids: TokenArray | None) -> np.ndarray | None:
    """segment_ids as an int32 array of input_ids' shape, or None."""
    if segment_ids is None:
        return None
    seg = np.ascontiguousarray(np.asarray(segment_ids))
    if seg.dtype.kind not in "iu":
        raise InvalidArgumentError(f"segment_ids must be integers, got {seg.dtype}")
    if seg.size != ids.size:
        raise InvalidArgumentError(f"segment_ids shape {seg.shape} does not match input_ids shape {ids.shape}")
    if seg.size and (seg.min() < np.iinfo(np.int32).min or seg.max() > np.iinfo(np.int32).max):
        raise InvalidArgumentError("segment_ids do not fit in int32")
    return np.ascontiguousarray(seg.astype(np.int32, copy=False)).reshape(-1)
