"""The C scanner of plain NDJSON lines (see _plainline.c)."""

from typing_extensions import Buffer

_Column = tuple[bytes, bytes, bytes]  # Arrow string buffers, or (int32 lines, offsets, data)

def scan(
    buffer: Buffer, max_line_bytes: int, /
) -> tuple[int, int, bytes, bytes, tuple[_Column, ...], bytes, _Column]:
    """(line_count, fast_count, index, time, columns, slow, naive) of the lines of ``buffer``."""

def count_lines(buffer: Buffer, start: int = 0, stop: int = ..., /) -> int:
    """The newlines in ``buffer[start:stop]``."""

def line_end(buffer: Buffer, start: int, n: int, /) -> int:
    """The offset just after the ``n``-th newline from ``start``, or -1 if there are fewer."""
