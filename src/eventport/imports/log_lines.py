"""One warning on many lines of an import, held as columns until its entries are stored.

A re-import warns on every line (each event replaces one, ``duplicate-unique-id``), and so do
files whose addresses are not addresses. As :class:`~eventport.imports.records.LogEntry`
objects such a batch's 61,440 warnings took ~18 MB (~290 B each, measured with tracemalloc),
and up to three batches' are alive at once: the one being stored, the one waiting, the one
being built. Here a warning takes the bytes of its line number and of the text its message
names (~50 B), and its log row is made only as it goes into the control store (the logger's
thread, see imports/worker.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyarrow as pa

from eventport.control.imports import LogRow

__all__ = ["LineWarnings"]


class LineWarnings:
    """The warning ``code`` (also its type) on each of ``lines`` (int64), its message made by
    ``message`` from the same row of ``texts`` (one per line; None: the message names
    nothing, and is ``message(None)`` on every line)."""

    __slots__ = ("code", "lines", "message", "texts")

    def __init__(
        self,
        code: str,
        lines: pa.Array,
        message: Callable[[str | None], str],
        texts: pa.Array | None = None,
    ) -> None:
        if texts is not None and len(texts) != len(lines):
            raise ValueError(f"{len(texts)} texts for {len(lines)} lines")
        self.code = code
        self.lines = lines
        self.message = message
        self.texts = texts

    def __len__(self) -> int:
        return len(self.lines)

    def rows(self, start: int = 0, stop: int | None = None) -> Iterator[LogRow]:
        """The log rows of the warnings from ``start`` up to ``stop``, made one by one (short
        rows: a warning here names no package or pixel and has no counts)."""
        count = len(self) if stop is None else min(stop, len(self))
        if start >= count:
            return
        code, message = self.code, self.message
        lines = self.lines.slice(start, count - start).to_pylist()
        if self.texts is None:
            same = message(None)
            for line in lines:
                yield (line, "warning", code, code, same)
            return
        texts = self.texts.slice(start, count - start).to_pylist()
        for line, text in zip(lines, texts, strict=True):
            yield (line, "warning", code, code, message(text))
