"""Streaming readers over a spooled upload: NDJSON or CSV, plain or gzip, resumable.

The upload (possibly gigabytes) is read in blocks of :data:`BLOCK_SIZE` decoded bytes and
handed out as :class:`Chunk` s of at most ``chunk_lines`` lines (NDJSON) or records (CSV).
Memory stays bounded by a few blocks plus ``max_line_bytes``, whatever the file size. A plain
NDJSON file may instead be read through a memory mapping (``mapped``; the import worker does),
which copies nothing and keeps about two chunks of the file's pages mapped in.

Offsets. ``Chunk.next_offset`` is a byte offset in the *decoded* stream (the plain file, or
the gzip stream's content) just after the chunk's last line, counted from the very first byte
of that stream, a UTF-8 byte order mark included: a BOM at offset 0 is skipped (its three
bytes are never part of a line) but still counted, so offsets always mean the same thing
whether or not the file starts with one. Resuming with ``(start_line, start_offset) =
(chunk.next_line, chunk.next_offset)`` gives exactly the lines an uninterrupted read would have
given after that chunk: a plain file is seeked to the offset, a gzip stream is decompressed
from its start and everything before the offset discarded.

Lines end at ``\\n`` (so ``\\r\\n`` too; the ``\\r`` stays on the NDJSON line, where it is JSON
whitespace, and is dropped by the CSV reader); a last line without a newline counts. Line
numbers are 1-based. A line (NDJSON) or record (CSV) longer than ``max_line_bytes`` is handed
out as ``None`` (CSV: :data:`Code.LINE_TOO_LONG`) and is never held whole in memory.

CSV follows Python's ``csv`` excel dialect (comma, ``"`` quotes, doubled quotes inside
quotes). A quoted field may contain newlines, so a record can span lines: it is numbered by
the line it starts on, and chunks end on record boundaries. The first record that is not blank
is the header; it is re-read from the start of the stream on every resume. A header that
cannot be read (too long, not UTF-8, not CSV) makes the whole input unusable. Records that
cannot be read arrive as their :class:`~eventport.imports.records.Code` instead of cells. The
``csv`` module's per-field size limit is raised (process-wide) to ``max_line_bytes`` when it
is lower, since records up to that size are accepted.

gzip. Concatenated members are read one after another (as ``gzip -d`` does), and NUL padding
after a member is ignored. :class:`InputUnusable` is raised for a stream that is empty, not
gzip, corrupt (bad data or checksum) or truncated (ends before its end marker), and for a
likely decompression bomb: once more than ``ratio_grace_bytes`` (1 MiB) have been decoded,
the decoded size may not exceed ``max_ratio`` (100) times the compressed bytes consumed so far;
the check runs after every decompression step of at most one block, so a bomb is stopped
after about one block past the grace. Because the stream is checked as it is read, the error
can come after some chunks were already handed out; those chunks are correct, and the caller
decides what to do with them.
"""

from __future__ import annotations

import csv
import mmap
import os
import re
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final, Literal

import orjson

from eventport.domain.text import without_addresses
from eventport.imports.records import MAX_LINE_BYTES, Code, CsvCells, SpanProblem, parse_time


def count_lines_py(buffer: bytes, start: int = 0, stop: int = -1, /) -> int:
    """The newlines in ``buffer[start:stop]`` (``stop`` -1: to the end)."""
    return buffer.count(b"\n", start, stop if stop >= 0 else len(buffer))


def line_end_py(buffer: bytes | memoryview, start: int, n: int, /) -> int:
    """The offset just after the ``n``-th newline from ``start``, or -1 if there are fewer."""
    if isinstance(buffer, memoryview):
        buffer = bytes(buffer)
    end = start - 1
    for _ in range(n):
        end = buffer.find(b"\n", end + 1)
        if end < 0:
            return -1
    return end + 1


try:  # memchr in C, where bytes.count compares byte by byte and a find loop is Python
    from eventport.imports._plainline import count_lines as _count_lines
    from eventport.imports._plainline import line_end as _line_end
except ImportError:
    _count_lines = count_lines_py  # type: ignore[assignment]
    _line_end = line_end_py  # type: ignore[assignment]


__all__ = [
    "BLOCK_SIZE",
    "BOM",
    "MAX_RATIO",
    "RATIO_GRACE_BYTES",
    "Chunk",
    "InputUnusable",
    "iter_chunks",
    "refuse_pretty_json",
]

BLOCK_SIZE: Final = 1 << 20  # decoded bytes per read
CHUNK_BYTES: Final = 8 << 20  # an NDJSON chunk ends at the first line end past this size
INPUT_BLOCK: Final = 1 << 20  # compressed bytes per read (1 MiB: 1.7x the speed of 64 KiB)
BOM: Final = b"\xef\xbb\xbf"
GZIP_MAGIC: Final = b"\x1f\x8b"
MAX_RATIO: Final = 100
RATIO_GRACE_BYTES: Final = 1 << 20
GZIP_CHECK_BYTES: Final = 1 << 20  # decoded bytes per read of check_gzip (then let go)

Format = Literal["ndjson", "csv"]


class InputUnusable(Exception):
    """The input as a whole cannot be read; ``reason`` says why, for a person."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class Chunk:
    """Consecutive lines (NDJSON) or records (CSV) of an upload.

    NDJSON: ``block`` holds ``line_count`` whole lines from line ``first_line`` on, each ended
    by ``\n`` but perhaps the last line of the stream (bytes, or a view of a mapped file); a
    line longer than ``max_line_bytes`` that was dropped while it was read is an empty
    placeholder line whose index (from 0) is in ``dropped``. ``lines`` gives them as
    ``(line number, raw bytes, or None if too long)``.
    CSV: ``header`` cells and ``rows``, ``(line where the record starts, cells or an error
    Code)``. ``next_line``/``next_offset``: where to resume after this chunk.
    ``source_offset``: bytes of the spool file read so far (for progress).
    """

    next_line: int
    next_offset: int
    source_offset: int
    first_line: int = 1
    line_count: int = 0
    block: bytes | memoryview = b""
    dropped: frozenset[int] = frozenset()
    max_line_bytes: int = MAX_LINE_BYTES
    header: list[str] = field(default_factory=list)
    rows: list[tuple[int, CsvCells]] = field(default_factory=list)

    @property
    def lines(self) -> list[tuple[int, bytes | None]]:
        """The NDJSON lines one by one (a copy of each: for tests and the slow path)."""
        if not self.line_count:
            return []
        if isinstance(self.block, memoryview):  # a mapped file's: copy only what is handed out
            return self._viewed_lines(self.block)
        parts = self.block.split(b"\n")
        if len(parts) > self.line_count:
            parts.pop()  # after the last newline
        limit, dropped = self.max_line_bytes, self.dropped
        return [
            (self.first_line + i, None if i in dropped or len(part) > limit else part)
            for i, part in enumerate(parts)
        ]

    def _viewed_lines(self, view: memoryview) -> list[tuple[int, bytes | None]]:
        found: list[tuple[int, bytes | None]] = []
        pos = 0
        for i in range(self.line_count):
            end = _line_end(view, pos, 1)
            stop = len(view) if end < 0 else end - 1
            too_long = i in self.dropped or stop - pos > self.max_line_bytes
            found.append((self.first_line + i, None if too_long else view[pos:stop].tobytes()))
            pos = len(view) if end < 0 else end
        return found

    def __len__(self) -> int:
        return self.line_count + len(self.rows)


# --- decoded byte streams ---------------------------------------------------------------------


class _Gunzip:
    """Decompresses a gzip file in bounded steps, checking the ratio as it goes."""

    def __init__(self, f: BinaryIO, max_ratio: int, grace: int) -> None:
        self._f = f
        self._d = zlib.decompressobj(wbits=31)
        self._read = 0  # compressed bytes read from the file
        self._out = 0  # decoded bytes produced
        self._max_ratio = max_ratio
        self._grace = grace
        self._members = 0  # gzip members finished
        self._head = b""  # first bytes given to the current member
        self._done = False

    @property
    def consumed(self) -> int:
        return self._read

    def _input(self) -> bytes:
        data = self._f.read(INPUT_BLOCK)
        self._read += len(data)
        return data

    def read(self, size: int) -> bytes:
        """Up to ``size`` decoded bytes (fewer only at the end); b"" at the end."""
        parts: list[bytes] = []
        got = 0
        while got < size and not self._done:
            d = self._d
            if d.eof:
                data = d.unused_data.lstrip(b"\x00")
                while not data:
                    data = self._input()
                    if not data:
                        self._done = True
                        break
                    data = data.lstrip(b"\x00")
                if self._done:
                    break
                self._d = d = zlib.decompressobj(wbits=31)
                self._members += 1
                self._head = data[:2]
            elif d.unconsumed_tail:
                data = d.unconsumed_tail
            else:
                data = self._input()
                if not data:
                    if self._read == 0:
                        raise InputUnusable("The file is empty, so it is not a gzip stream.")
                    raise InputUnusable(
                        "The gzip stream is truncated: the file ends (after "
                        f"{self._read:,} bytes) before the end of the compressed data."
                    )
                if len(self._head) < 2:
                    self._head = (self._head + data)[:2]
            try:
                piece = d.decompress(data, size - got)
            except zlib.error as exc:
                if self._head != GZIP_MAGIC[: len(self._head)]:
                    if self._members == 0:
                        raise InputUnusable("The file is not a gzip stream.") from None
                    raise InputUnusable(
                        "The gzip stream is corrupt: data after the end of the compressed "
                        f"stream (at byte {self._read - len(data):,} or later) is not gzip."
                    ) from None
                raise InputUnusable(
                    f"The gzip stream is corrupt after {self._out:,} decoded bytes ({exc})."
                ) from None
            if piece:
                parts.append(piece)
                got += len(piece)
                self._out += len(piece)
                if self._out > self._grace:
                    pending = len(self._d.unconsumed_tail) + len(self._d.unused_data)
                    compressed = max(self._read - pending, 1)
                    if self._out > self._max_ratio * compressed:
                        raise InputUnusable(
                            f"The gzip stream expands more than {self._max_ratio}:1 "
                            f"({compressed:,} compressed bytes gave over {self._out:,} bytes), "
                            "which looks like a decompression bomb; it was not imported."
                        )
        return b"".join(parts)


class _Stream:
    """Decoded blocks of a file from a given offset, with the BOM handled at offset 0."""

    def __init__(
        self,
        f: BinaryIO,
        *,
        gzip: bool,
        start_offset: int,
        block_size: int,
        max_ratio: int,
        ratio_grace_bytes: int,
    ) -> None:
        self._f = f
        self._gz = _Gunzip(f, max_ratio, ratio_grace_bytes) if gzip else None
        self._block = block_size
        self.start = start_offset  # decoded offset of the first byte handed out
        if self._gz is None:
            f.seek(start_offset)
            first = f.read(block_size)
        else:
            pos = 0
            while True:
                first = self._gz.read(block_size)
                if not first or pos + len(first) > start_offset:
                    first = first[start_offset - pos :] if first else b""
                    break
                pos += len(first)
        if start_offset == 0:
            read = f.read if self._gz is None else self._gz.read
            while 0 < len(first) < len(BOM):  # tiny blocks: make sure a BOM is seen whole
                more = read(block_size)
                if not more:
                    break
                first += more
        if start_offset == 0 and first.startswith(BOM):
            first = first[len(BOM) :]
            self.start = len(BOM)
        self._first: bytes | None = first

    @property
    def consumed(self) -> int:
        return self._f.tell() if self._gz is None else self._gz.consumed

    def blocks(self) -> Iterator[bytes]:
        first = self._first
        self._first = None
        if first:
            yield first
        read = self._f.read if self._gz is None else self._gz.read
        while block := read(self._block):
            yield block


# --- NDJSON -----------------------------------------------------------------------------------


def _ndjson_chunks(
    stream: _Stream, start_line: int, chunk_lines: int, chunk_bytes: int, max_line: int
) -> Iterator[Chunk]:
    """Chunks of whole lines, with few copies: each block is searched for its last newline
    only, lines are counted (``count_lines``) without being split, and a block's whole lines
    are held as a view of it until they are copied once, into their chunk.

    (Appended to one growing buffer instead, every byte was copied three times, and each
    chunk's buffer was a fresh allocation whose pages the kernel faulted in: nearly two fifths
    of a 5M-event import's page faults. 5M enriched over HTTP, six interleaved pairs: 13.3-14.6
    s against 14.0-15.3, ~1 s less CPU.)

    A line that grows over the limit before its newline arrives is dropped as it is read and
    stands in the chunk as an empty placeholder line; ``dropped`` remembers how many more bytes
    of the stream it was, so offsets stay those of the stream.
    """
    line_no = start_line  # number of the first held line
    base = stream.start  # decoded offset of the first held line
    # Whole lines (each with its newline, but the stream's last), in order, and how many a
    # part holds.
    parts: deque[tuple[bytes | memoryview, int]] = deque()
    held = 0  # bytes in parts
    count = 0  # lines in parts
    dropped: dict[int, int] = {}  # placeholder index among the held lines -> extra stream bytes
    carry = b""  # the line being read
    discarding = 0  # bytes of a line over the limit dropped so far (0: not dropping)

    def hold(part: bytes | memoryview, lines: int) -> None:
        nonlocal held, count
        parts.append((part, lines))
        held += len(part)
        count += lines

    def take(lines: int) -> bytes:
        """The first ``lines`` held lines, as one bytes object."""
        taken: list[bytes | memoryview] = []
        while lines:
            part, n = parts[0]
            if n <= lines:
                parts.popleft()
                taken.append(part)
                lines -= n
            else:  # the part holds more: split it after its lines-th newline
                end = _line_end(part, 0, lines)
                taken.append(part[:end])
                parts[0] = (part[end:], n - lines)
                lines = 0
        if len(taken) == 1 and type(taken[0]) is bytes:
            return taken[0]
        return b"".join(taken)

    def chunk(lines: int) -> Chunk:
        """The first ``lines`` held lines as a chunk."""
        nonlocal held, count, dropped, line_no, base
        block = take(lines)
        size = len(block)
        held -= size
        count -= lines
        gone = {i: extra for i, extra in dropped.items() if i < lines}
        dropped = {i - lines: extra for i, extra in dropped.items() if i >= lines}
        stream_size = size + sum(gone.values())
        made = Chunk(
            line_no + lines,
            base + stream_size,
            stream.consumed,
            first_line=line_no,
            line_count=lines,
            block=block,
            dropped=frozenset(gone),
            max_line_bytes=max_line,
        )
        line_no += lines
        base += stream_size
        return made

    def drop(length: int) -> None:
        """A placeholder for a dropped line of ``length`` stream bytes (its newline included)."""
        dropped[count] = length - 1
        hold(b"\n", 1)

    def ready(final: bool) -> Iterator[Chunk]:
        while count >= chunk_lines:
            yield chunk(chunk_lines)
        if count and (final or held >= chunk_bytes):
            yield chunk(count)

    for block in stream.blocks():
        if discarding:
            i = block.find(b"\n")
            if i < 0:
                discarding += len(block)
                continue
            drop(discarding + i + 1)
            discarding = 0
            block = block[i + 1 :]
        last = block.rfind(b"\n")
        if last < 0:
            carry += block
        else:
            rest = 0  # where the block's own whole lines start
            if carry:  # the line the block ends: copied (once) with its start
                rest = block.find(b"\n") + 1
                hold(carry + block[:rest], 1)
            if rest <= last:
                hold(memoryview(block)[rest : last + 1], _count_lines(block, rest, last + 1))
            carry = block[last + 1 :]
        if len(carry) > max_line:
            discarding = len(carry)
            carry = b""
        yield from ready(False)

    if discarding:
        drop(discarding)  # the last line: no newline of its own, the placeholder's stands in
    elif carry:
        hold(carry, 1)
    yield from ready(True)


# --- CSV --------------------------------------------------------------------------------------

# Kinds of the pieces _physical_lines hands out.
_LINE = 0  # a whole line, ended by "\n" (not included)
_PIECE = 1  # part of a line over the limit; more of the same line follows
_LAST = 2  # the last line, ended by the end of the stream

# Quote states of the CSV scanner, mirroring Python's csv reader (excel dialect).
_FIELD_START = 0  # outside quotes, at the start of a field
_IN_FIELD = 1  # outside quotes, inside a field (a quote here is just a character)
_IN_QUOTES = 2  # inside a quoted field
_QUOTE_IN_QUOTES = 3  # inside a quoted field, just after a quote: closing, or half of ""

_QUOTE: Final = 0x22
_COMMA: Final = 0x2C
# A line that is a whole record by itself (ends outside quotes), once every "" pair is removed
# (bytes.replace, left to right). Removing the pairs never changes where csv's quoted parts end:
# in a run of quotes, csv pairs them from the left too (after the opening one, which stays the
# run's last quote when the run is odd); so the remaining quotes are single, and the pattern
# needs no alternation inside quotes. Possessive, so linear time.
_FIELD_RE: Final = rb'(?:"[^"]*+"[^,]*+|[^,"][^,]*+|)'
_WHOLE_RECORD = re.compile(_FIELD_RE + rb"(?:," + _FIELD_RE + rb")*+")


def _scan(seg: bytes, state: int) -> int:
    """The quote state after ``seg`` (no newlines in it), starting from ``state``."""
    n = len(seg)
    i = 0
    if not n:
        return state
    while True:
        if state == _QUOTE_IN_QUOTES:
            if seg[i] == _QUOTE:  # "" inside quotes: a literal quote
                state = _IN_QUOTES
                i += 1
                if i >= n:
                    return state
            else:
                state = _IN_FIELD  # the quote closed the quoted part
        if state == _IN_QUOTES:
            j = seg.find(b'"', i)
            if j < 0:
                return _IN_QUOTES
            if j + 1 >= n:
                return _QUOTE_IN_QUOTES
            if seg[j + 1] == _QUOTE:
                i = j + 2
                if i >= n:
                    return _IN_QUOTES
                continue
            state = _IN_FIELD
            i = j + 1
        # outside quotes at position i (< n)
        j = seg.find(b'"', i)
        if j < 0:
            return _FIELD_START if seg[n - 1] == _COMMA else _IN_FIELD
        if (state == _FIELD_START and j == i) or (j > i and seg[j - 1] == _COMMA):
            state = _IN_QUOTES
        else:
            state = _IN_FIELD
        i = j + 1
        if i >= n:
            return state


def _physical_lines(blocks: Iterator[bytes], max_line: int) -> Iterator[tuple[bytes, int]]:
    carry = b""
    in_long = False
    for block in blocks:
        data = carry + block if carry else block
        parts = data.split(b"\n")
        carry = parts.pop()
        for part in parts:
            yield part, _LINE
        in_long = in_long and not parts
        if len(carry) > max_line:
            yield carry, _PIECE
            carry = b""
            in_long = True
    if carry or in_long:
        yield carry, _LAST


# A record (bytes), or why it has none: too long (one line), or a problem of a record that a
# quoted value stretched over several lines.
CsvRecord = bytes | Literal[Code.LINE_TOO_LONG] | SpanProblem


def _csv_records(
    stream: _Stream, start_line: int, max_line: int
) -> Iterator[tuple[int, CsvRecord, int, int]]:
    """(line where the record starts, the record, next line, next offset).

    A record that a quoted value stretches over lines and that cannot be read (the file ends
    inside the quotes, or it runs past ``max_line``) is a :class:`SpanProblem` naming the
    lines it took: a stray quote takes the lines after it into one value, which a CSV reader
    cannot tell from a real one until the quotes fail to close. (Before, a record the file
    ended inside was read as if closed, with no word of the lines it took. Reading those lines
    again as rows of their own was tried: a re-read of the rest of the file for each stray
    quote, quadratic in a file with many.)"""
    line_no = start_line
    pos = stream.start
    state = -1  # no record open
    parts: list[bytes] = []
    size = 0
    too_long = False
    rec_line = 0
    whole = _WHOLE_RECORD.fullmatch
    for data, kind in _physical_lines(stream.blocks(), max_line):
        pos += len(data) + (kind == _LINE)
        if state < 0:
            if (
                kind != _PIECE
                and len(data) <= max_line
                and (b'"' not in data or whole(data.replace(b'""', b"")))
            ):
                line_no += 1
                yield line_no - 1, data, line_no, pos
                continue
            rec_line = line_no
            state = _FIELD_START
            parts = []
            size = -1
            too_long = False
        state = _scan(data, state)
        if not too_long:
            size += len(data) + 1
            if size > max_line:
                too_long = True
                parts = []
            else:
                parts.append(data)
        if kind == _PIECE:
            continue
        line_no += 1
        if kind == _LINE and state == _IN_QUOTES:
            continue  # the quoted field goes on on the next line
        record: CsvRecord
        if state == _IN_QUOTES:  # the last line, without a newline, ends inside quotes
            record = SpanProblem(Code.UNCLOSED_QUOTE, line_no - 1)
        elif too_long and line_no - rec_line > 1:
            record = SpanProblem(Code.LINE_TOO_LONG, line_no - 1)
        elif too_long:
            record = Code.LINE_TOO_LONG
        else:
            record = b"\n".join(parts)
        yield rec_line, record, line_no, pos
        state = -1
    if state >= 0:  # the stream ended after a newline inside quotes
        yield rec_line, SpanProblem(Code.UNCLOSED_QUOTE, line_no - 1), line_no, pos


def _parse_records(texts: list[str]) -> list[list[str] | Code]:
    """Cells of each record (one text per record), INVALID_CSV where csv refuses one."""
    out: list[list[str] | Code] = []
    reader = csv.reader(texts)
    aligned = True
    while True:
        try:
            row: list[str] | Code = next(reader)
        except StopIteration:
            break
        except csv.Error:
            row = Code.INVALID_CSV
        out.append(row)
        if reader.line_num != len(out):
            aligned = False  # csv saw a record boundary elsewhere: parse each text on its own
            break
    if aligned and len(out) == len(texts):
        return out
    out = []
    for text in texts:
        try:
            out.append(next(csv.reader((text,)), []))
        except csv.Error:
            out.append(Code.INVALID_CSV)
    return out


def _cells(records: list[tuple[int, CsvRecord]]) -> list[tuple[int, CsvCells]]:
    texts: list[str] = []
    where: list[int] = []
    rows: list[tuple[int, CsvCells]] = []
    for line, raw in records:
        if not isinstance(raw, bytes):
            rows.append((line, raw))
            continue
        try:
            texts.append(raw.decode())
        except UnicodeDecodeError:
            rows.append((line, Code.INVALID_UTF8))
            continue
        where.append(len(rows))
        rows.append((line, []))
    for index, cells in zip(where, _parse_records(texts), strict=True):
        rows[index] = (rows[index][0], cells)
    return rows


def _is_blank(raw: CsvRecord) -> bool:
    return isinstance(raw, bytes) and not raw.replace(b",", b"").strip()


TIME_FIELD: Final = "$time"  # the one column a CSV header must have


def _header(line: int, raw: CsvRecord, max_line: int) -> list[str]:
    if raw == Code.LINE_TOO_LONG:
        raise InputUnusable(
            f"The CSV header (line {line}) is longer than {max_line:,} bytes, "
            "so the file cannot be read."
        )
    if isinstance(raw, SpanProblem):
        raise InputUnusable(
            f"The CSV header (line {line}) has a quoted name that runs over lines {line} to "
            f"{raw.last_line} (never closed, or past the limit), so the file cannot be read."
        )
    row = _cells([(line, raw)])[0][1]
    if row == Code.INVALID_UTF8:
        raise InputUnusable(f"The CSV header (line {line}) is not valid UTF-8 text.")
    if not isinstance(row, list):
        raise InputUnusable(f"The CSV header (line {line}) is not valid CSV.")
    names = [name.strip() for name in row]
    if TIME_FIELD not in names:
        raise InputUnusable(_no_time_column(line, row))
    _refuse_repeated_names(line, names)
    return row


def _refuse_repeated_names(line: int, names: list[str]) -> None:
    """A header naming a field twice makes the file unusable: which of the two cells is the
    event's? (Before, the last one not empty, with no word: a $version of 1.0 beside 2.0 was
    dropped, a bad $time overridden by another column.)"""
    columns: dict[str, list[int]] = {}
    for column, name in enumerate(names, start=1):
        if name:
            columns.setdefault(name, []).append(column)
    repeated = [(name, at) for name, at in columns.items() if len(at) > 1]
    if repeated:
        name, at = repeated[0]
        shown = without_addresses(repr(name[:80]))
        raise InputUnusable(
            f"The CSV header (line {line}) names {shown} more than once (columns "
            f"{', '.join(map(str, at))}), so no row could say which value is the event's: name "
            "each field once."
        )


def _no_time_column(line: int, header: list[str]) -> str:
    """Why a CSV header without a ``$time`` column makes the file unusable (no line of it
    could be imported), and what the header looks like instead. The header is quoted without
    addresses: a file without a header has an event's values there."""
    problem = f'The CSV header (line {line}) has no "$time" column, which every event needs'
    for separator, name in ((";", "semicolons"), ("\t", "tabs")):
        if any(TIME_FIELD in cell.split(separator) for cell in header if separator in cell):
            return (
                f"{problem}: its names are separated by {name}, and eventport reads "
                'comma-separated values (a header such as "$time,$unique_id,$package").'
            )
    if any(parse_time(cell.strip()) is not None for cell in header):
        return (
            f"{problem}: its first row looks like an event, not a header of field names "
            '(such as "$time,$unique_id,$package").'
        )
    listed = without_addresses(", ".join(repr(cell) for cell in header))
    if len(listed) > 200:
        listed = listed[:199] + "…"
    return f"{problem} (its columns: {listed})."


def _csv_chunks(
    stream: _Stream,
    header_stream: _Stream | None,
    start_line: int,
    chunk_lines: int,
    chunk_bytes: int,
    max_line: int,
) -> Iterator[Chunk]:
    """Chunks of ``chunk_lines`` records, or fewer: a chunk also ends at the first record
    past ``chunk_bytes`` of them (records of 16 KB held 20,480 at a time made a CSV import's
    memory ~3.6 times its file)."""
    header: list[str] | None = None
    if header_stream is not None:
        for line, raw, _, _ in _csv_records(header_stream, 1, max_line):
            if not _is_blank(raw):
                header = _header(line, raw, max_line)
                break
        if header is None:
            return
    pending: list[tuple[int, CsvRecord]] = []
    held = 0  # bytes of the pending records
    handed = False  # a chunk with rows was handed out
    next_line, next_offset = start_line, stream.start
    for line, raw, next_line, next_offset in _csv_records(stream, start_line, max_line):
        if header is None:
            if not _is_blank(raw):
                header = _header(line, raw, max_line)
            continue
        pending.append((line, raw))
        held += len(raw) if isinstance(raw, bytes) else 0
        if len(pending) >= chunk_lines or held >= chunk_bytes:
            yield Chunk(
                next_line, next_offset, stream.consumed, header=header, rows=_cells(pending)
            )
            pending, held = [], 0
            handed = True
    if pending and header is not None:
        yield Chunk(next_line, next_offset, stream.consumed, header=header, rows=_cells(pending))
    elif not handed and next_line > start_line:
        # Only a header, or blank lines: no rows, but the lines were read (lines_processed
        # says so, as for an NDJSON file of blank lines).
        yield Chunk(next_line, next_offset, stream.consumed, header=header or [], rows=[])


# An NDJSON upload whose first line that is not blank is a lone "[" or "{" is pretty-printed
# JSON: an array (json.dump(events, indent=2), say) or objects one after another (jq without
# -c). Every one of its lines would fail by itself, millions of errors for a large file, so the
# import fails at once and says why. An array or object on one line is that line's, as before.
_JSON_OPENED: Final = re.compile(rb"(?:\xef\xbb\xbf)?[ \t\r\n]*([\[{])[ \t\r]*(?:\n|\Z)")
_LOOK: Final = 64 << 10  # bytes looked at: blank lines before the bracket are not expected
_SPREAD_OVER_LINES: Final = {
    b"[": "The upload is a JSON array spread over lines, not NDJSON: eventport reads one JSON "
    "object a line (`jq -c '.[]'` turns such an array into NDJSON), and no line of it could be "
    "imported.",
    b"{": "The upload holds JSON objects spread over lines (pretty-printed), not NDJSON: "
    "eventport reads one JSON object a line (`jq -c .` writes them so), and no line of it "
    "could be imported.",
}


def check_gzip(
    path: Path,
    *,
    stopped: Callable[[], bool] = lambda: False,
    max_ratio: int = MAX_RATIO,
    ratio_grace_bytes: int = RATIO_GRACE_BYTES,
) -> bool:
    """Decompress the gzip file at ``path`` whole, keeping nothing, to learn before an import
    writes anything whether the stream is usable: :class:`InputUnusable` (truncated, corrupt,
    data after its end, a decompression bomb) as :func:`iter_chunks` would raise it, but
    possibly only after it had handed out chunks. False when ``stopped()`` (asked between
    reads) ended it first, True when the stream is whole."""
    with path.open("rb") as f:
        stream = _Gunzip(f, max_ratio, ratio_grace_bytes)
        while stream.read(GZIP_CHECK_BYTES):
            if stopped():
                return False
    return True


def refuse_pretty_json(chunks: Iterator[Chunk]) -> Iterator[Chunk]:
    """An import's NDJSON ``chunks`` (:func:`iter_chunks`), unless the upload opens as
    pretty-printed JSON (above): then :class:`InputUnusable`. A policy of the import, kept out
    of the reading itself, which hands out whatever lines there are."""
    first = next(chunks, None)  # only the first chunk can start the file
    if first is None:
        return
    head = first.block[:_LOOK]
    opened = _JSON_OPENED.match(head) if first.first_line == 1 else None
    if opened and not _one_object_a_line(bytes(head[opened.end() :])):
        raise InputUnusable(_SPREAD_OVER_LINES[opened[1]])
    yield first
    yield from chunks


def _one_object_a_line(after: bytes) -> bool:
    """Whether the (up to) two lines with something on them after a file's opening bracket are
    JSON objects whole: then the bracket is a stray line of an NDJSON file (an error of its
    own), not the start of JSON spread over lines, whose lines are members, items followed by
    commas, or the closing bracket."""
    seen = 0
    for line in after.split(b"\n"):
        if not line.strip():
            continue
        try:
            if not isinstance(orjson.loads(line), dict):
                return False
        except orjson.JSONDecodeError:
            return False
        seen += 1
        if seen == 2:
            break
    return seen > 0


# --- entry point ------------------------------------------------------------------------------


def iter_chunks(
    path: Path,
    *,
    gzip: bool,
    fmt: Format,
    start_line: int = 1,
    start_offset: int = 0,
    chunk_lines: int = 50_000,
    chunk_bytes: int = CHUNK_BYTES,
    max_line_bytes: int = MAX_LINE_BYTES,
    block_size: int = BLOCK_SIZE,
    max_ratio: int = MAX_RATIO,
    ratio_grace_bytes: int = RATIO_GRACE_BYTES,
    mapped: bool = False,
) -> Iterator[Chunk]:
    """Chunks of the upload at ``path``, from ``(start_line, start_offset)`` on.

    Raises :class:`InputUnusable` (possibly after some chunks) when the input as a whole
    cannot be read. An empty input gives no chunks; a CSV of only a header or blank lines, one
    chunk without rows. ``mapped``:
    a plain NDJSON file is read through a memory mapping (:func:`_mapped_ndjson`; chunks'
    blocks are then views of it, and ``block_size`` does not apply).
    """
    if min(chunk_lines, chunk_bytes, max_line_bytes, block_size) < 1:
        raise ValueError("chunk_lines, chunk_bytes, max_line_bytes and block_size must be positive")
    # Mapped only where the line helpers are C's (Python's would copy the mapping per call).
    if mapped and fmt == "ndjson" and not gzip and _line_end is not line_end_py:
        yield from _mapped_ndjson(
            path, start_line, start_offset, chunk_lines, chunk_bytes, max_line_bytes
        )
        return

    def open_stream(f: BinaryIO, offset: int) -> _Stream:
        return _Stream(
            f,
            gzip=gzip,
            start_offset=offset,
            block_size=block_size,
            max_ratio=max_ratio,
            ratio_grace_bytes=ratio_grace_bytes,
        )

    with path.open("rb") as f:
        stream = open_stream(f, start_offset)
        if fmt == "ndjson":
            yield from _ndjson_chunks(stream, start_line, chunk_lines, chunk_bytes, max_line_bytes)
            return
        if fmt != "csv":
            raise ValueError(f"unknown format {fmt!r}")
        if csv.field_size_limit() < max_line_bytes:
            csv.field_size_limit(max_line_bytes)
        if start_offset == 0:
            yield from _csv_chunks(
                stream, None, start_line, chunk_lines, chunk_bytes, max_line_bytes
            )
            return
        with path.open("rb") as hf:  # the header, from the start of the stream
            header_stream = open_stream(hf, 0)
            yield from _csv_chunks(
                stream, header_stream, start_line, chunk_lines, chunk_bytes, max_line_bytes
            )


# --- NDJSON of a plain file, mapped -----------------------------------------------------------


def _mapped_ndjson(
    path: Path,
    start_line: int,
    start_offset: int,
    chunk_lines: int,
    chunk_bytes: int,
    max_line: int,
) -> Iterator[Chunk]:
    """:func:`iter_chunks` of a plain (not gzip) NDJSON file that is mapped into memory: each
    chunk's block is a view of the mapping, so the file's bytes are neither read into buffers
    nor copied into chunks (the scanner reads them from the page cache). The same lines and
    offsets as the streamed read; a chunk ends after ``chunk_lines`` lines or at the first line
    end past ``chunk_bytes``. A line over ``max_line`` stays in its block (it costs no memory of
    ours) and reads as too long, as a dropped one does.

    What the chunks before the one being read took of the mapping is given back
    (``MADV_DONTNEED``: the kernel unmaps those pages, which stay in the page cache), so the
    file's pages counted in the process stay about two chunks whatever its size (a line of
    gigabytes, read as too long, is searched in place: the pages it spans count until the next
    chunk is asked for, as clean page cache the kernel can take back). The mapping itself goes
    when the last chunk does. The file must not shrink while it is read (a spooled
    upload is never changed).

    Measured in `bench/ingest.py` (5M enriched, four interleaved pairs against the streamed
    read): 11.25-11.75 s against 11.89-12.67, anonymous memory ~340 MB against ~355, mapped
    files ~150 MB against ~140.
    """
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size <= start_offset:
            return
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    advise = getattr(mapping, "madvise", None)  # not on every platform
    if advise is not None:
        advise(mmap.MADV_SEQUENTIAL)
    view = memoryview(mapping)
    pos = start_offset
    if pos == 0 and view[: len(BOM)].tobytes() == BOM:
        pos = len(BOM)
    line_no = start_line
    given_back = 0  # the mapping's pages before this offset have been given back
    while pos < size:
        end = _line_end(view, pos, chunk_lines)
        count = chunk_lines  # known as the lines are found; counted only for a cut chunk
        if end < 0:  # fewer lines left: all of them
            end, count = size, 0
        if end - pos > chunk_bytes:
            cut = _line_end(view, pos + chunk_bytes - 1, 1)
            if 0 <= cut < end:
                end, count = cut, 0
        if not count:  # the newlines, and the stream's last line if it has none
            count = _count_lines(view, pos, end) + (0 if view[end - 1] == _NEWLINE else 1)
        yield Chunk(
            line_no + count,
            end,
            end,
            first_line=line_no,
            line_count=count,
            block=view[pos:end],
            max_line_bytes=max_line,
        )
        line_no += count
        done = pos // _PAGE * _PAGE  # asked for the next chunk: the ones before this are done
        if advise is not None and done > given_back:
            advise(mmap.MADV_DONTNEED, given_back, done - given_back)
            given_back = done
        pos = end


_PAGE: Final = mmap.PAGESIZE
_NEWLINE: Final = 0x0A
