"""Exceptions: one class per PEFTKit status code, all derived from :class:`PeftKitError`.

Each class also derives from the closest built-in exception, so ``except ValueError`` catches an
invalid argument and ``except OSError`` catches a file that could not be read.
"""

from __future__ import annotations

from . import _capi


class PeftKitError(Exception):
    """A PEFTKit call failed.

    Attributes:
        status: the C status code (a negative ``PEFTKIT_ERR_*`` value).
        message: the library's message (``peftkit_last_error()``), or the binding's own for errors
            detected in Python before calling the library.
    """

    status: int = 0

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.message


class InvalidArgumentError(PeftKitError, ValueError):
    """An argument is out of range, of the wrong shape or type, or inconsistent with another."""

    status = _capi.PEFTKIT_ERR_INVALID_ARGUMENT


class PeftKitIOError(PeftKitError, OSError):
    """A file or folder could not be opened, read, written or renamed."""

    status = _capi.PEFTKIT_ERR_IO


class FormatError(PeftKitError, ValueError):
    """A file was read but is malformed, inconsistent, or does not fit this model."""

    status = _capi.PEFTKIT_ERR_FORMAT


class UnsupportedError(PeftKitError):
    """The request is well-formed but not supported by this build or this model."""

    status = _capi.PEFTKIT_ERR_UNSUPPORTED


class NotFoundError(PeftKitError, LookupError):
    """A named thing (an adapter, a tensor in a file) does not exist."""

    status = _capi.PEFTKIT_ERR_NOT_FOUND


class NumericalError(PeftKitError, ArithmeticError):
    """The computation produced NaN or infinity; the adapter weights were not updated."""

    status = _capi.PEFTKIT_ERR_NUMERICAL


class StateError(PeftKitError, RuntimeError):
    """Not allowed in the model's current state: no active adapter, a name already in use, a closed
    model, or a call made on a model from inside its own generation callback."""

    status = _capi.PEFTKIT_ERR_STATE


class BusyError(StateError):
    """The model is in use by another call that is still running (from another thread, or from inside its own
    generation callback): nothing was changed, the call may succeed later. A :class:`StateError`, so code that
    caught the state error this used to be keeps working."""

    status = _capi.PEFTKIT_ERR_BUSY


class OutOfMemoryError(PeftKitError, MemoryError):
    """Memory could not be allocated, or a requested size overflows."""

    status = _capi.PEFTKIT_ERR_OUT_OF_MEMORY


class BufferTooSmallError(PeftKitError):
    """An output buffer is too small; nothing was written."""

    status = _capi.PEFTKIT_ERR_BUFFER_TOO_SMALL


class InternalError(PeftKitError):
    """An unexpected failure inside the library (a bug: please report it)."""

    status = _capi.PEFTKIT_ERR_INTERNAL


class CancelledError(PeftKitError):
    """A progress callback asked to stop (returned False, or raised: the exception is re-raised instead); the call
    changed nothing."""

    status = _capi.PEFTKIT_ERR_CANCELLED


class UnknownStatusError(PeftKitError):
    """The library returned a status code (or an enum value) this package does not know: a newer library. The
    message says which."""


#: status code -> exception class.
ERROR_CLASSES: dict[int, type[PeftKitError]] = {
    cls.status: cls
    for cls in (
        InvalidArgumentError,
        PeftKitIOError,
        FormatError,
        UnsupportedError,
        NotFoundError,
        NumericalError,
        StateError,
        OutOfMemoryError,
        BufferTooSmallError,
        InternalError,
        BusyError,
        CancelledError,
    )
}


def error_for(status: int, message: str) -> PeftKitError:
    """The exception for a status code; a code this package does not know gives an UnknownStatusError."""
    cls = ERROR_CLASSES.get(status)
    if cls is None:
        return UnknownStatusError(f"{message} (status {status}, unknown to this peftkit package)", status)
    return cls(message)


def unknown_value(what: str, value: int) -> UnknownStatusError:
    """The error for an enum value from the library that this package does not know (a newer library)."""
    return UnknownStatusError(f"the library reported {what} {value}, which this peftkit package does not know "
                              "(a newer libpeftkit: upgrade the package)")


def check(status: int) -> None:
    """Raises the exception for a non-OK status, with the calling thread's last error message."""
    if status != _capi.PEFTKIT_OK:
        raise error_for(status, _capi.last_error())
