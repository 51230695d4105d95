"""The C interface of libpeftkit.so, mirrored for ctypes.

Everything that has to agree with ``include/peftkit.h`` lives in this one module: the constants, the
config structs and the prototype of every exported function. The test suite checks each of them
against the header (names, argument counts and kinds, struct sizes and field offsets as a C compiler
sees them), so a header change that is not mirrored here fails a test instead of corrupting memory.

To bind a function that a new header version adds: append its prototype to ``PROTOTYPES`` (and its
struct to the mirrors below, if it has one), then wrap it in the public API.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char,
    c_char_p,
    c_float,
    c_int32,
    c_int64,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path
from typing import Any, TypeVar

# --------------------------------------------------------------------------------------------------
# Constants (values fixed forever by the header)
# --------------------------------------------------------------------------------------------------

PEFTKIT_OK = 0
PEFTKIT_ERR_INVALID_ARGUMENT = -1
PEFTKIT_ERR_IO = -2
PEFTKIT_ERR_FORMAT = -3
PEFTKIT_ERR_UNSUPPORTED = -4
PEFTKIT_ERR_NOT_FOUND = -5
PEFTKIT_ERR_NUMERICAL = -6
PEFTKIT_ERR_STATE = -7
PEFTKIT_ERR_OUT_OF_MEMORY = -8
PEFTKIT_ERR_BUFFER_TOO_SMALL = -9
PEFTKIT_ERR_INTERNAL = -10
PEFTKIT_ERR_BUSY = -11
PEFTKIT_ERR_CANCELLED = -12

PEFTKIT_ARCH_GPT2 = 0
PEFTKIT_ARCH_LLAMA = 1
PEFTKIT_ARCH_BERT = 2

PEFTKIT_METHOD_BOTTLENECK = 0
PEFTKIT_METHOD_LORA = 1
PEFTKIT_METHOD_IA3 = 2
PEFTKIT_METHOD_PREFIX = 3
PEFTKIT_METHOD_PROMPT = 4

PEFTKIT_HEAD_CLASSIFICATION = 1
PEFTKIT_HEAD_REGRESSION = 2
PEFTKIT_HEAD_TOKENS = 3

PEFTKIT_SCHEDULE_CONSTANT = 0
PEFTKIT_SCHEDULE_LINEAR = 1
PEFTKIT_SCHEDULE_COSINE = 2
PEFTKIT_ACTIVATIONS_AUTO = 0
PEFTKIT_ACTIVATIONS_KEEP = 1
PEFTKIT_ACTIVATIONS_RECOMPUTE_ATTENTION = 2
PEFTKIT_ACTIVATIONS_RECOMPUTE_ATTENTION_UP = 3

PEFTKIT_ADAPTER_FORMAT_NATIVE = 0
PEFTKIT_ADAPTER_FORMAT_GGUF = 1
PEFTKIT_ADAPTER_FORMAT_CONVERTED_LORA = 2
PEFTKIT_OBJECTIVE_DPO = 1
PEFTKIT_OBJECTIVE_ORPO = 2
PEFTKIT_PREFERENCE_STATS = 9

PEFTKIT_FINISH_STOP_TOKEN = 1
PEFTKIT_FINISH_STOP_STRING = 2
PEFTKIT_FINISH_LENGTH = 3
PEFTKIT_FINISH_CONTEXT_FULL = 4
PEFTKIT_FINISH_CANCELLED = 5
PEFTKIT_MODEL_FORMAT_HF = 0
PEFTKIT_MODEL_FORMAT_GGUF_F32 = 1
PEFTKIT_MODEL_FORMAT_GGUF_F16 = 2

PEFTKIT_IGNORE_INDEX = -100

PEFTKIT_LOAD_WIDEN = 1

PEFTKIT_LOGITS_ALL = 0
PEFTKIT_LOGITS_LAST = 1
PEFTKIT_LOGITS_NONE = 2

# --------------------------------------------------------------------------------------------------
# Struct mirrors (field order and types exactly as in the header)
# --------------------------------------------------------------------------------------------------


class ModelConfigStruct(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("architecture", c_int32),
        ("vocab_size", c_int32),
        ("hidden_size", c_int32),
        ("num_layers", c_int32),
        ("num_heads", c_int32),
        ("num_kv_heads", c_int32),
        ("head_dim", c_int32),
        ("intermediate_size", c_int32),
        ("max_positions", c_int32),
        ("norm_eps", c_float),
        ("rope_theta", c_float),
        ("tie_word_embeddings", c_int32),
        ("qkv_bias", c_int32),
        ("output_bias", c_int32),
        ("mlp_bias", c_int32),
    ]


class TrainConfigStruct(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("learning_rate", c_float),
        ("beta1", c_float),
        ("beta2", c_float),
        ("eps", c_float),
        ("weight_decay", c_float),
        ("schedule", c_int32),
        ("warmup_steps", c_int32),
        ("total_steps", c_int32),
        ("max_grad_norm", c_float),
        ("micro_batch_size", c_int32),
        ("lora_plus_ratio", c_float),
        ("gradient_checkpointing", c_int32),
        ("activation_memory", c_int32),
    ]


class TrainResultStruct(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("loss", c_float),
        ("grad_norm", c_float),
        ("learning_rate", c_float),
        ("step", c_int64),
        ("tokens", c_int64),
    ]


class GenerateConfigStruct(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("max_new_tokens", c_int32),
        ("temperature", c_float),
        ("top_k", c_int32),
        ("top_p", c_float),
        ("n_stop_tokens", c_int32),
        ("seed", c_uint64),
        ("stop_tokens", POINTER(c_int32)),
        ("repetition_penalty", c_float),
        ("min_p", c_float),
        ("n_stop_strings", c_int32),
        ("reserved0", c_int32),
        ("stop_strings", POINTER(c_char_p)),
    ]


class GenerateResultStruct(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("finish_reason", c_int32),
        ("n_tokens", c_int32),
        ("n_generated", c_int32),
        ("stop_index", c_int32),
        ("stop_byte_offset", c_int32),
    ]


class TokenizerInfoStruct(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("has_tokenizer", c_int32),
        ("has_chat_template", c_int32),
        ("vocab_size", c_int32),
        ("bos_id", c_int32),
        ("eos_id", c_int32),
        ("eot_id", c_int32),
        ("adds_bos", c_int32),
    ]


#: int32_t (*peftkit_progress_callback)(int64_t done, int64_t total, void *user)
PROGRESS_CALLBACK = CFUNCTYPE(c_int32, c_int64, c_int64, c_void_p)


class LoadConfigStruct(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("flags", c_uint32),
        ("progress", PROGRESS_CALLBACK),
        ("progress_user", c_void_p),
    ]


class ForwardOptionsStruct(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("logits_mode", c_int32),
        ("logits", POINTER(c_float)),
        ("logits_capacity", c_size_t),
        ("token_logprobs", POINTER(c_float)),
        ("row_losses", POINTER(c_float)),
        ("row_tokens", POINTER(c_int64)),
    ]


#: C struct name -> its mirror. The layout test compiles the header and compares every entry.
STRUCTS: dict[str, type] = {
    "peftkit_model_config": ModelConfigStruct,
    "peftkit_train_config": TrainConfigStruct,
    "peftkit_train_result": TrainResultStruct,
    "peftkit_generate_config": GenerateConfigStruct,
    "peftkit_generate_result": GenerateResultStruct,
    "peftkit_tokenizer_info": TokenizerInfoStruct,
    "peftkit_load_config": LoadConfigStruct,
    "peftkit_forward_options": ForwardOptionsStruct,
}

# --------------------------------------------------------------------------------------------------
# Function prototypes
# --------------------------------------------------------------------------------------------------

#: int32_t (*peftkit_token_callback)(int32_t token, void *user)
TOKEN_CALLBACK = CFUNCTYPE(c_int32, c_int32, c_void_p)

_status = c_int32
# Arrays of token ids and logits are passed as c_void_p: the caller hands in the address of a numpy
# buffer (an int), which is the cheapest conversion ctypes offers and never copies.
_ids = c_void_p
_model = c_void_p
_buf = POINTER(c_char)

#: name -> (restype, argtypes). One line per function of the header, in header order.
PROTOTYPES: dict[str, tuple[type | None, list[type]]] = {
    "peftkit_version": (c_char_p, []),
    "peftkit_version_number": (c_int32, []),
    "peftkit_status_string": (c_char_p, [_status]),
    "peftkit_last_error": (c_char_p, []),
    "peftkit_set_num_threads": (_status, [c_int32]),
    "peftkit_model_config_init_sized": (_status, [POINTER(ModelConfigStruct), c_size_t]),
    "peftkit_model_create": (_status, [POINTER(ModelConfigStruct), c_uint64, POINTER(c_void_p)]),
    "peftkit_model_load": (_status, [c_char_p, POINTER(c_void_p)]),
    "peftkit_model_load_with": (_status, [c_char_p, c_uint32, POINTER(c_void_p)]),
    "peftkit_load_config_init_sized": (_status, [POINTER(LoadConfigStruct), c_size_t]),
    "peftkit_model_load_ex": (_status, [c_char_p, POINTER(LoadConfigStruct), POINTER(c_void_p)]),
    "peftkit_model_free": (None, [_model]),
    "peftkit_model_get_config": (_status, [_model, POINTER(ModelConfigStruct)]),
    "peftkit_adapter_attach_json": (_status, [_model, c_char_p, c_char_p]),
    "peftkit_adapter_set_active": (_status, [_model, c_char_p]),
    "peftkit_adapter_remove": (_status, [_model, c_char_p]),
    "peftkit_adapter_count": (_status, [_model, POINTER(c_int32)]),
    "peftkit_adapter_name": (_status, [_model, c_int32, _buf, c_size_t, POINTER(c_size_t)]),
    "peftkit_adapter_get_active": (_status, [_model, _buf, c_size_t, POINTER(c_size_t)]),
    "peftkit_adapter_num_params": (_status, [_model, c_char_p, POINTER(c_int64)]),
    "peftkit_adapter_method": (_status, [_model, c_char_p, POINTER(c_int32)]),
    "peftkit_adapter_tensor_count": (_status, [_model, c_char_p, POINTER(c_int32)]),
    "peftkit_adapter_tensor_info": (
        _status,
        [_model, c_char_p, c_int32, _buf, c_size_t, POINTER(c_size_t), POINTER(c_int64), c_int32, POINTER(c_int32),
         POINTER(c_int32)],
    ),
    "peftkit_adapter_tensor_read": (_status, [_model, c_char_p, c_char_p, c_void_p, c_size_t, POINTER(c_size_t)]),
    "peftkit_adapter_tensor_write": (_status, [_model, c_char_p, c_char_p, c_void_p, c_size_t]),
    "peftkit_adapter_merge": (_status, [_model, c_char_p]),
    "peftkit_adapter_unmerge": (_status, [_model, c_char_p]),
    "peftkit_adapter_save": (_status, [_model, c_char_p, c_char_p]),
    "peftkit_adapter_save_as": (_status, [_model, c_char_p, c_char_p, c_int32]),
    "peftkit_adapter_load": (_status, [_model, c_char_p, c_char_p, _buf, c_size_t]),
    "peftkit_model_set_full_finetuning": (_status, [_model, c_int32]),
    "peftkit_model_save": (_status, [_model, c_char_p, c_int32]),
    "peftkit_train_config_init_sized": (_status, [POINTER(TrainConfigStruct), c_size_t]),
    "peftkit_train_step": (
        _status,
        [_model, _ids, _ids, c_int32, c_int32, POINTER(TrainConfigStruct), POINTER(TrainResultStruct)],
    ),
    "peftkit_train_compute_gradients": (
        _status,
        [_model, _ids, _ids, c_int32, c_int32, POINTER(TrainConfigStruct), c_int64, POINTER(c_float), POINTER(c_int64)],
    ),
    "peftkit_train_step_packed": (
        _status,
        [_model, _ids, _ids, _ids, c_int32, c_int32, POINTER(TrainConfigStruct), POINTER(TrainResultStruct)],
    ),
    "peftkit_train_compute_gradients_packed": (
        _status,
        [_model, _ids, _ids, _ids, c_int32, c_int32, POINTER(TrainConfigStruct), c_int64, POINTER(c_float),
         POINTER(c_int64)],
    ),
    "peftkit_forward_packed": (
        _status,
        [_model, _ids, _ids, _ids, c_int32, c_int32, c_void_p, c_size_t, POINTER(c_float), POINTER(c_int64)],
    ),
    "peftkit_train_apply_gradients": (_status, [_model, POINTER(TrainConfigStruct), POINTER(TrainResultStruct)]),
    "peftkit_train_gradients": (_status, [_model, POINTER(POINTER(c_float)), POINTER(c_int64)]),
    "peftkit_train_preference_step": (
        _status,
        [_model, c_int32, c_float, _ids, _ids, _ids, _ids, c_int32, c_int32, POINTER(TrainConfigStruct),
         POINTER(TrainResultStruct), c_void_p, c_int32],
    ),
    "peftkit_model_set_progress_callback": (_status, [_model, PROGRESS_CALLBACK, c_void_p]),
    "peftkit_forward": (
        _status,
        [_model, _ids, _ids, c_int32, c_int32, c_void_p, c_size_t, POINTER(c_float), POINTER(c_int64)],
    ),
    "peftkit_forward_mixed": (
        _status,
        [_model, _ids, _ids, POINTER(c_char_p), c_int32, c_int32, c_void_p, c_size_t, POINTER(c_float),
         POINTER(c_int64)],
    ),
    "peftkit_encoder_hidden_states": (_status, [_model, _ids, _ids, _ids, c_int32, c_int32, c_void_p, c_size_t]),
    "peftkit_encoder_embed": (_status, [_model, _ids, _ids, _ids, c_int32, c_int32, c_int32, c_void_p, c_size_t]),
    "peftkit_head_attach": (_status, [_model, c_int32, c_int32, c_uint64]),
    "peftkit_head_get": (_status, [_model, POINTER(c_int32), POINTER(c_int32)]),
    "peftkit_head_forward": (
        _status,
        [_model, _ids, _ids, _ids, c_int32, c_int32, _ids, c_void_p, c_void_p, c_size_t, POINTER(c_float)],
    ),
    "peftkit_head_train_step": (
        _status,
        [_model, _ids, _ids, _ids, c_int32, c_int32, _ids, c_void_p, POINTER(TrainConfigStruct),
         POINTER(TrainResultStruct)],
    ),
    "peftkit_forward_options_init_sized": (_status, [POINTER(ForwardOptionsStruct), c_size_t]),
    "peftkit_forward_ex": (
        _status,
        [_model, _ids, _ids, c_int32, c_int32, POINTER(ForwardOptionsStruct), POINTER(c_float), POINTER(c_int64)],
    ),
    "peftkit_generate_config_init_sized": (_status, [POINTER(GenerateConfigStruct), c_size_t]),
    "peftkit_generate": (
        _status,
        [_model, _ids, c_int32, POINTER(GenerateConfigStruct), _ids, c_int32, POINTER(c_int32),
         TOKEN_CALLBACK, c_void_p],
    ),
    "peftkit_generate_ex": (
        _status,
        [_model, _ids, c_int32, POINTER(GenerateConfigStruct), _ids, c_int32, POINTER(GenerateResultStruct),
         TOKEN_CALLBACK, c_void_p],
    ),
    "peftkit_generate_mixed": (
        _status,
        [_model, POINTER(POINTER(c_int32)), POINTER(c_int32), POINTER(c_char_p), c_int32,
         POINTER(GenerateConfigStruct), _ids, c_size_t, POINTER(c_int32)],
    ),
    "peftkit_generate_mixed_ex": (
        _status,
        [_model, POINTER(POINTER(c_int32)), POINTER(c_int32), POINTER(c_char_p), c_int32,
         POINTER(GenerateConfigStruct), _ids, c_size_t, POINTER(c_int32), POINTER(c_int32)],
    ),
    "peftkit_token_to_piece": (_status, [_model, c_int32, _buf, c_size_t, POINTER(c_size_t)]),
    "peftkit_checkpoint_save": (_status, [_model, c_char_p, c_char_p]),
    "peftkit_checkpoint_load": (_status, [_model, c_char_p, _buf, c_size_t]),
    "peftkit_tokenizer_get_info": (_status, [_model, POINTER(TokenizerInfoStruct)]),
    "peftkit_tokenizer_issue": (_status, [_model, _buf, c_size_t, POINTER(c_size_t)]),
    "peftkit_tokenizer_load": (_status, [_model, c_char_p]),
    "peftkit_tokenize": (
        _status, [_model, c_char_p, c_size_t, c_int32, c_int32, _ids, c_size_t, POINTER(c_size_t)],
    ),
    "peftkit_detokenize": (_status, [_model, _ids, c_size_t, c_int32, _buf, c_size_t, POINTER(c_size_t)]),
    "peftkit_chat_template_apply": (
        _status, [_model, POINTER(c_char_p), POINTER(c_char_p), c_size_t, c_int32, _buf, c_size_t, POINTER(c_size_t)],
    ),
}

#: struct mirror -> the *_init_sized function that fills it with the library's defaults.
STRUCT_INITS: dict[type[Structure], str] = {
    ModelConfigStruct: "peftkit_model_config_init_sized",
    TrainConfigStruct: "peftkit_train_config_init_sized",
    GenerateConfigStruct: "peftkit_generate_config_init_sized",
    LoadConfigStruct: "peftkit_load_config_init_sized",
    ForwardOptionsStruct: "peftkit_forward_options_init_sized",
}

# --------------------------------------------------------------------------------------------------
# Loading the library
# --------------------------------------------------------------------------------------------------

#: Environment variable naming the library to load (a file, or a folder holding libpeftkit.so).
LIBRARY_ENV = "PEFTKIT_LIBRARY"
LIBRARY_FILE = "libpeftkit.so"


class LibraryLoadError(ImportError):
    """libpeftkit.so could not be found or does not match this package."""


class LibraryVersionWarning(UserWarning):
    """The loaded libpeftkit.so is older than this package (same major version): functions the package added
    since are checked at import; behaviour fixed since may differ."""


def _repo_build_dir() -> Path | None:
    """The repository's SwiftPM release folder, when this package runs from a PEFTKit checkout."""
    package_dir = Path(__file__).resolve().parent
    parents = package_dir.parents
    if len(parents) < 4:
        return None
    repo = parents[3]  # <repo>/bindings/python/src/peftkit
    if (repo / "Package.swift").is_file() and (repo / "include" / "peftkit.h").is_file():
        return repo / ".build" / "release"
    return None


def library_candidates() -> list[tuple[str, str]]:
    """Where the library is looked for, in order, as (description, path or name) pairs.

    1. ``$PEFTKIT_LIBRARY`` when set (and then nothing else: a wrong override is an error, not a
       silent fallback);
    2. ``libpeftkit.so`` inside the installed package;
    3. ``.build/release/libpeftkit.so`` of the PEFTKit checkout this package was imported from;
    4. the dynamic loader's search path (``LD_LIBRARY_PATH``, ``/usr/local/lib``, ...).
    """
    env = os.environ.get(LIBRARY_ENV)
    if env:
        p = Path(env).expanduser()
        if p.is_dir():
            p = p / LIBRARY_FILE
        return [(f"${LIBRARY_ENV}", str(p))]
    found = [("package", str(Path(__file__).resolve().parent / LIBRARY_FILE))]
    build = _repo_build_dir()
    if build is not None:
        found.append(("repository build", str(build / LIBRARY_FILE)))
    found.append(("dynamic loader", LIBRARY_FILE))
    return found


def _bind(lib: ctypes.CDLL, path: str) -> None:
    for name, (restype, argtypes) in PROTOTYPES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise LibraryLoadError(
                f"{path} has no function {name}: it is older than this peftkit package "
                f"(rebuild it, or point {LIBRARY_ENV} at a newer libpeftkit.so)"
            ) from None
        fn.restype = restype
        fn.argtypes = argtypes


def _check_version(lib: Any, path: str) -> None:
    """Compares the library's version with this package's before anything else is bound. Another major version is
    another ABI generation: refused with LibraryLoadError. An older library of the same major version gets a
    LibraryVersionWarning (a function it lacks then fails the import in _bind, naming it). A newer one is fine: its
    ABI only adds, and struct sizes are the caller's (see _check_layouts)."""
    from ._version import __version__

    major, minor, patch = (int(x) for x in __version__.split("."))
    fn = lib.peftkit_version_number
    fn.restype, fn.argtypes = c_int32, []
    got = int(fn())
    gmaj, gmin, gpat = got // 10000, got // 100 % 100, got % 100
    if got < 0 or gmaj != major:
        raise LibraryLoadError(
            f"{path} is libpeftkit {gmaj}.{gmin}.{gpat}, another major version than this peftkit package "
            f"({__version__}): install the matching package, or point {LIBRARY_ENV} at a libpeftkit.so {major}.x"
        )
    if (gmin, gpat) < (minor, patch):
        import warnings

        warnings.warn(
            f"{path} is libpeftkit {gmaj}.{gmin}.{gpat}, older than this peftkit package ({__version__}): "
            f"rebuild it, or point {LIBRARY_ENV} at a newer libpeftkit.so",
            LibraryVersionWarning,
            stacklevel=3,
        )


def _check_layouts(lib: ctypes.CDLL, path: str) -> dict[type[Structure], bytes]:
    """Runs each *_init_sized function with this package's struct size and returns the default bytes of each
    struct. The caller's size is the authority (peftkit.h, "Structs and versions"): a library older or newer than
    this package fills exactly the mirror's bytes, defaulting what it does not know; it refuses a size that is no
    version of its struct."""
    defaults: dict[type[Structure], bytes] = {}
    for cls, init_name in STRUCT_INITS.items():
        size = ctypes.sizeof(cls)
        raw = (c_char * size)()
        status = getattr(lib, init_name)(ctypes.cast(raw, POINTER(cls)), size)
        if status != PEFTKIT_OK:
            raise LibraryLoadError(
                f"{path}: {init_name} refuses the {size}-byte struct of this peftkit package "
                f"({lib.peftkit_last_error().decode('utf-8', 'replace')})"
            )
        defaults[cls] = raw.raw
    return defaults


def load_library() -> tuple[ctypes.CDLL, str, dict[type[Structure], bytes]]:
    """Finds, loads and binds libpeftkit.so. Returns (library, path it was loaded from, struct defaults).

    ctypes.CDLL (not PyDLL) is used on purpose: it releases the GIL for the duration of every call.
    """
    errors = []
    for what, path in library_candidates():
        if what != "dynamic loader" and what != f"${LIBRARY_ENV}" and not os.path.exists(path):
            errors.append(f"  {what}: {path} (no such file)")
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            errors.append(f"  {what}: {path} ({e})")
            if what == f"${LIBRARY_ENV}":
                break
            continue
        _check_version(lib, path)
        _bind(lib, path)
        defaults = _check_layouts(lib, path)
        return lib, getattr(lib, "_name", path), defaults
    raise LibraryLoadError(
        "peftkit could not load libpeftkit.so. Tried:\n" + "\n".join(errors) + "\n"
        f"Build it with `swift build -c release` in the PEFTKit repository and set {LIBRARY_ENV} to "
        "its .build/release/libpeftkit.so, or reinstall the package with `pip install ./bindings/python`."
    )


lib, library_path, struct_defaults = load_library()


S = TypeVar("S", bound=Structure)


def new_struct(cls: type[S]) -> S:
    """A struct mirror holding the library's defaults (as its *_init function writes them)."""
    return cls.from_buffer_copy(struct_defaults[cls])


def last_error() -> str:
    """The calling thread's last PEFTKit error message."""
    msg: bytes | None = lib.peftkit_last_error()
    return msg.decode("utf-8", "replace") if msg else ""
