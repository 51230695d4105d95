"""Generation results and text streaming: :class:`GenerateResult`, :class:`Utf8StreamDecoder` (token bytes
to text that never shows a character cut between two tokens) and :class:`TextStream` (what
:meth:`peftkit.Model.generate_stream` returns)."""

from __future__ import annotations

import codecs
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .configs import FinishReason


@dataclass(frozen=True)
class GenerateResult:
    """What :meth:`peftkit.Model.generate_result` returns."""

    #: The new tokens (prompt not included), int32.
    tokens: np.ndarray
    #: Why generation stopped.
    finish_reason: FinishReason
    #: Index of the stop token (STOP_TOKEN) or stop string (STOP_STRING) that ended generation, else None.
    stop_index: int | None = None
    #: With stop strings: the output's text, ending exactly before the stop string (it may hold the
    #: beginning of a token that was dropped from `tokens`). None without stop strings.
    text: str | None = None
    #: With STOP_STRING: the tokens sampled after `tokens` that the stop string dropped.
    dropped_tokens: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int32))
    #: With STOP_STRING: where the stop string starts in the bytes of tokens + dropped_tokens.
    stop_byte_offset: int | None = None


class Utf8StreamDecoder:
    """Turns the raw bytes of tokens (:meth:`peftkit.Model.token_to_piece`) into text as they arrive.

    :meth:`push` returns only complete UTF-8 characters: a character whose bytes are spread over several
    tokens comes out once its last byte has arrived, never as U+FFFD. With `stop_strings`, text that is
    (or may become) the start of a stop string is held back until it is clear it is not one; stop strings
    are matched on every token's bytes, as the library does, also those pushed with ``visible=False``
    (special tokens left out of the text). :meth:`finish` returns the rest, up to byte `end` of the whole
    stream when given (the stop string's offset). Bytes that are not UTF-8 at all become U+FFFD, as in
    :meth:`peftkit.Model.detokenize`.
    """

    def __init__(self, stop_strings: Iterable[str] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = [s.encode("utf-8") for s in stop_strings if s]
        self._held = b""              # bytes not yet given to the UTF-8 decoder (a possible stop string)
        self._shown = bytearray()     # per held byte: 1 if it is part of the text
        self._passed = 0              # bytes of the stream before the held ones

    def _hold_from(self, buf: bytes) -> int:
        """The first position of `buf` where a stop string starts or may start; len(buf) if none."""
        for p in range(len(buf)):
            rest = buf[p:]
            for s in self._stops:
                if rest.startswith(s) or s.startswith(rest):
                    return p
        return len(buf)

    def _release(self, n: int) -> str:
        out = bytes(b for b, v in zip(self._held[:n], self._shown[:n]) if v)
        self._held, self._shown = self._held[n:], self._shown[n:]
        self._passed += n
        return self._decoder.decode(out, final=False)

    def push(self, piece: bytes, visible: bool = True) -> str:
        self._held += piece
        self._shown += bytes([1 if visible else 0]) * len(piece)
        cut = self._hold_from(self._held) if self._stops else len(self._held)
        return self._release(cut)

    def finish(self, end: int | None = None) -> str:
        n = len(self._held) if end is None else min(len(self._held), max(0, end - self._passed))
        text = self._release(n)
        self._held, self._shown = b"", bytearray()
        return text + self._decoder.decode(b"", final=True)


class TextStream:
    """An iterator over the text of a generation, chunk by chunk, as tokens are produced (see
    :meth:`peftkit.Model.generate_stream`). After the last chunk, :attr:`result` holds the
    :class:`GenerateResult`. Leaving the loop early (``break``) or :meth:`close` stops generation.
    """

    def __init__(self, run: Callable[[Callable[[int], bool]], GenerateResult],
                 piece: Callable[[int], tuple[bytes, bool]], stop_strings: Iterable[str]) -> None:
        self._run = run
        self._piece = piece
        self._stops = list(stop_strings)
        self._iter: Iterator[str] | None = None
        #: The result, once the stream is exhausted (None before, and after an early close).
        self.result: GenerateResult | None = None

    def __iter__(self) -> Iterator[str]:
        if self._iter is None:
            self._iter = self._chunks()
        return self._iter

    def __next__(self) -> str:
        return next(iter(self))

    def close(self) -> None:
        """Stops generation (if it runs) and waits for it to end."""
        if self._iter is not None:
            self._iter.close()  # type: ignore[attr-defined]

    @property
    def text(self) -> str:
        """Runs the stream to its end and returns the whole text (chunks not yet read included)."""
        return "".join(self)

    def _chunks(self) -> Iterator[str]:
        events: queue.Queue[tuple[str, object]] = queue.Queue()
        cancel = threading.Event()

        def on_token(token: int) -> bool:
            # Runs on the generating thread, inside the library call; reading the tokenizer is allowed there.
            events.put(("piece", self._piece(token)))
            return cancel.is_set()

        def work() -> None:
            try:
                events.put(("done", self._run(on_token)))
            except BaseException as e:  # handed to the reading thread
                events.put(("error", e))

        worker = threading.Thread(target=work, name="peftkit-generate-stream", daemon=True)
        worker.start()
        decoder = Utf8StreamDecoder(self._stops)
        try:
            while True:
                kind, value = events.get()
                if kind == "piece":
                    piece, visible = value  # type: ignore[misc]
                    text = decoder.push(piece, visible)
                    if text:
                        yield text
                elif kind == "done":
                    assert isinstance(value, GenerateResult)
                    self.result = value
                    tail = decoder.finish(value.stop_byte_offset)
                    if tail:
                        yield tail
                    return
                else:
                    assert isinstance(value, BaseException)
                    raise value
        finally:
            cancel.set()
            worker.join()
