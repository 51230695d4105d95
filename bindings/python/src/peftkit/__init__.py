"""PEFTKit for Python: adapter fine-tuning of GPT-2 and Llama models on the CPU, without PyTorch.

A thin, typed layer over the C interface of ``libpeftkit.so`` (``include/peftkit.h``), through ctypes::

    import peftkit

    with peftkit.Model.create(seed=1) as model:            # a tiny random GPT-2, vocab 256
        model.attach_adapter("task", peftkit.BottleneckConfig.double_seq_bn(reduction_factor=8))
        # or a PEFT config's dict: {"peft_type": "LORA", "r": 8, "target_modules": ["c_attn"]}
        model.set_active_adapter("task")
        ids = [[1, 2, 3, 4, 1, 2, 3, 4]]
        for _ in range(10):
            result = model.train_step(ids, learning_rate=1e-2)   # a TrainResult: .loss, .grad_norm, .step
        print(model.generate([1, 2, 3], max_new_tokens=5))
        model.save_adapter("task", "task-adapter")         # AdapterHub's format

Where the library is loaded from: ``$PEFTKIT_LIBRARY`` if set, else the copy installed inside this
package, else ``.build/release/libpeftkit.so`` of the PEFTKit checkout the package sits in, else the
dynamic loader's search path. :data:`library_path` tells which one was used.
"""

from . import _capi
from ._version import __version__
from .configs import (
    ADAPTER_METHODS,
    ActivationMemory,
    Architecture,
    BottleneckConfig,
    EvalResult,
    FinishReason,
    ForwardResult,
    IA3Config,
    LoRAConfig,
    Method,
    ModelConfig,
    PrefixConfig,
    PromptConfig,
    Schedule,
    TrainConfig,
    TrainResult,
)
from ._capi import LibraryLoadError, LibraryVersionWarning
from .errors import (
    BufferTooSmallError,
    CancelledError,
    FormatError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    NumericalError,
    OutOfMemoryError,
    PeftKitError,
    PeftKitIOError,
    StateError,
    BusyError,
    UnknownStatusError,
    UnsupportedError,
)
from .model import Model, ProgressCallback, TokenCallback, set_num_threads
from .streaming import GenerateResult, TextStream, Utf8StreamDecoder

#: Label value that does not count towards the loss.
IGNORE_INDEX: int = _capi.PEFTKIT_IGNORE_INDEX

#: The file libpeftkit.so was loaded from.
library_path: str = _capi.library_path


def library_version() -> str:
    """The version of the loaded libpeftkit.so, "MAJOR.MINOR.PATCH"."""
    version: bytes = _capi.lib.peftkit_version()
    return version.decode("ascii")


__all__ = [
    "ADAPTER_METHODS",
    "IGNORE_INDEX",
    "ActivationMemory",
    "Architecture",
    "BottleneckConfig",
    "BufferTooSmallError",
    "CancelledError",
    "EvalResult",
    "FinishReason",
    "GenerateResult",
    "TextStream",
    "Utf8StreamDecoder",
    "ForwardResult",
    "FormatError",
    "IA3Config",
    "InternalError",
    "InvalidArgumentError",
    "LibraryLoadError",
    "LibraryVersionWarning",
    "LoRAConfig",
    "Method",
    "Model",
    "ModelConfig",
    "NotFoundError",
    "NumericalError",
    "OutOfMemoryError",
    "PeftKitError",
    "PeftKitIOError",
    "PrefixConfig",
    "ProgressCallback",
    "PromptConfig",
    "Schedule",
    "StateError",
    "BusyError",
    "TokenCallback",
    "TrainConfig",
    "TrainResult",
    "UnknownStatusError",
    "UnsupportedError",
    "__version__",
    "library_path",
    "library_version",
    "set_num_threads",
]
