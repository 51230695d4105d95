"""Token-id arrays in and out of the library: int32, C-contiguous, passed by address without a copy
when the caller's array already has that layout."""

from __future__ import annotations

import ctypes
from typing import Union

import numpy as np
import numpy.typing as npt

from .configs import INT32_MAX, INT32_MIN
from .errors import InvalidArgumentError

#: Anything accepted where token ids are expected: a numpy int32 array (passed without a copy when C-contiguous),
#: another integer array, or (nested) lists / tuples of ints.
TokenArray = Union[npt.NDArray[np.int32], npt.ArrayLike]


_addressof = ctypes.addressof
_char_from_buffer = ctypes.c_char.from_buffer
_INT32 = np.dtype(np.int32)


def address(a: np.ndarray) -> int:
    """The address of an array's first element. The array must stay alive while the address is used.

    Reading it through a ctypes view of the buffer is several times cheaper than ``a.ctypes.data``
    (which builds a helper object per call); read-only and empty arrays take the general path.
    """
    try:
        return _addressof(_char_from_buffer(a))  # type: ignore[arg-type]
    except (TypeError, ValueError, BufferError):
        return a.ctypes.data


def int32_tokens(x: TokenArray, what: str) -> np.ndarray:
    """`x` as a C-contiguous native int32 array: `x` itself when it already is one (zero-copy), else a
    converted copy. Integer values outside int32 are rejected rather than wrapped."""
    if type(x) is np.ndarray and (x.dtype is _INT32 or x.dtype == _INT32) and x.flags.c_contiguous:
        return x
    a = np.asarray(x)
    if a.dtype == np.int32:
        return np.ascontiguousarray(a)
    if a.size == 0:
        return np.ascontiguousarray(a, dtype=np.int32)
    if a.dtype.kind not in "iu":
        raise InvalidArgumentError(f"{what} must hold integer token ids, got dtype {a.dtype}")
    lo, hi = int(a.min()), int(a.max())
    if lo < INT32_MIN or hi > INT32_MAX:
        bad = lo if lo < INT32_MIN else hi
        raise InvalidArgumentError(f"{what} holds {bad}, which is not an int32 token id")
    return np.ascontiguousarray(a, dtype=np.int32)


def batch_shape(a: np.ndarray, what: str) -> tuple[int, int]:
    """(batch, seq_len) of a 1-D (batch 1) or 2-D token array."""
    if a.ndim == 1:
        b, t = 1, a.shape[0]
    elif a.ndim == 2:
        b, t = a.shape
    else:
        raise InvalidArgumentError(f"{what} must be 1-D [seq_len] or 2-D [batch, seq_len], got shape {a.shape}")
    if b > INT32_MAX or t > INT32_MAX:
        raise InvalidArgumentError(f"{what} shape {a.shape} exceeds the int32 range")
    return b, t


def batch_arrays(input_ids: TokenArray, labels: TokenArray | None) -> tuple[np.ndarray, np.ndarray | None, int, int]:
    """input_ids and labels (or None) as int32 arrays of one [batch, seq_len] shape."""
    ids = int32_tokens(input_ids, "input_ids")
    b, t = batch_shape(ids, "input_ids")
    if labels is None:
        return ids, None, b, t
    lab = int32_tokens(labels, "labels")
    if lab.size != ids.size or batch_shape(lab, "labels") != (b, t):
        raise InvalidArgumentError(f"labels shape {lab.shape} does not match input_ids shape {ids.shape}")
    return ids, lab, b, t
