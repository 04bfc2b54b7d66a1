"""One warning on many lines of an import: held as columns, stored as runs, read back in order.

A re-import warns on every line (each event replaces one, ``duplicate-unique-id``), and so do
files whose addresses are not addresses or whose times have no zone. As
:class:`~eventport.imports.records.LogEntry` objects such a batch's 61,440 warnings took ~18 MB
(~290 B each, measured with tracemalloc), and up to three batches' are alive at once. Here a
warning takes the bytes of its line number and of the text its message names (~50 B).

Stored one row each, such warnings took ~420 bytes an entry in the control store (2.1 GB for a
5M-line re-import) and bounded the re-import's time (SQLite's insert into the log table and its
two indexes). They are stored as runs instead (``ImportLogRun``): up to :data:`RUN_ENTRIES`
warnings of one code in one row, their line steps and texts as a zstd-compressed Arrow IPC
stream. Messages are made when the log is read, from the code (:data:`MESSAGES`) and the text.

:func:`log_entries` and :func:`log_sample` give the whole log, or its first warnings or errors,
in (line, code) order: the single entries (``ImportLog``) merged with the runs'.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy.orm import Session

from eventport.control import imports as control_imports
from eventport.control.imports import RunRow
from eventport.domain.text import quoted
from eventport.imports.records import Code, naive_time_message

__all__ = [
    "DUPLICATE_UNIQUE_ID",
    "INVALID_REMOTE_ADDRESS",
    "OTHER_TARGET",
    "LineWarnings",
    "log_entries",
    "log_sample",
    "replaced_message",
]

DUPLICATE_UNIQUE_ID = "duplicate-unique-id"
INVALID_REMOTE_ADDRESS = "invalid-remote-address"
OTHER_TARGET = "other-target"

# Warnings in one stored run at most: a run is read whole when any of its entries is wanted (a
# status request's sample reads the first), ~0.4 MB compressed for 20,000 ids.
RUN_ENTRIES = 20_000
# Entries in each part of a run's body (an Arrow record batch, compressed by itself): ~5% more
# bytes for random UUIDs than one part, and a sample decodes ~36 KB instead of ~0.7 MB.
RUN_PART = 1_000
# Runs whose place in the log (not their body) one query reads.
RUN_HEADS = 1_000

# A log entry as the API shows it: line, level, type, code, message, package_id,
# tracking_pixel_id, events_count, failed_events_count (control.imports._LOG_FIELDS).
Entry = Sequence[Any]
Sessions = Callable[[], AbstractContextManager[Session]]


def replaced_message(unique_id: str, what: str) -> str:
    return f"$unique_id {quoted(unique_id)} was used before: this event replaces {what}"


def _replaced_earlier(unique_id: str | None) -> str:
    return replaced_message(
        str(unique_id),
        "an event stored before (by an earlier import, or from further up this file)",
    )


def _bad_address(_: str | None) -> str:
    # The value is not repeated: a log must not keep what could be someone's address.
    return "$remote_address is not an IP address; the event is imported without location"


def _other_target(named: str | None) -> str:
    # ``named``: the field and the value, e.g. "$package 'left-pad'" (addresses left out).
    return (
        f"the line's {named} is not the id of what this import goes into, so it was ignored: "
        "the event was imported into the import's own package or pixel"
    )


# The message of each code held as runs, made from the run's text for the line (or None).
MESSAGES: dict[str, Callable[[str | None], str]] = {
    DUPLICATE_UNIQUE_ID: _replaced_earlier,
    INVALID_REMOTE_ADDRESS: _bad_address,
    OTHER_TARGET: _other_target,
    Code.NAIVE_TIME.value: naive_time_message,
}

# The codes whose runs keep a text for each line. Runs are stored compressed, where a search of
# the data directory for raw addresses (tests/integration/test_enrichment.py) cannot see them:
# a warning about an address never keeps it (its message does not repeat it either).
_KEEPS_TEXT = frozenset({DUPLICATE_UNIQUE_ID, OTHER_TARGET, Code.NAIVE_TIME.value})

_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")


class LineWarnings:
    """The warning ``code`` (also its type; one of :data:`MESSAGES`) on each of ``lines``
    (int64, ascending), its message made from the same row of ``texts`` (one per line; None:
    the message names nothing)."""

    __slots__ = ("code", "lines", "texts")

    def __init__(self, code: str, lines: pa.Array, texts: pa.Array | None = None) -> None:
        if code not in MESSAGES:
            raise ValueError(f"no message for {code!r}")
        if texts is not None and code not in _KEEPS_TEXT:
            raise ValueError(f"{code!r} keeps no text")
        if texts is not None and len(texts) != len(lines):
            raise ValueError(f"{len(texts)} texts for {len(lines)} lines")
        self.code = code
        self.lines = lines
        self.texts = texts

    def __len__(self) -> int:
        return len(self.lines)

    def runs(self, size: int = RUN_ENTRIES) -> Iterator[RunRow]:
        """The warnings as stored runs of up to ``size`` entries each (made one by one)."""
        for start in range(0, len(self), size):
            lines = self.lines.slice(start, size)
            first, last = lines[0].as_py(), lines[-1].as_py()
            steps = pc.fill_null(pc.pairwise_diff(lines), 0).cast(pa.int32())
            columns = {"step": steps}
            if self.texts is not None:
                columns["text"] = self.texts.slice(start, size)
            batch = pa.record_batch(columns)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, batch.schema, options=_WRITE_OPTIONS) as stream:
                for part in range(0, batch.num_rows, RUN_PART):  # each read by itself
                    stream.write_batch(batch.slice(part, RUN_PART))
            yield (self.code, first, last, len(lines), sink.getvalue().to_pybytes())

    def entries(self) -> Iterator[Entry]:
        """The log entries, as a log read gives them from the stored runs."""
        for code, first, _, _, body in self.runs():
            yield from _run_entries(code, first, body)


def _run_entries(code: str, first_line: int, body: bytes) -> Iterator[Entry]:
    """A stored run's log entries, in line order, read a part (:data:`RUN_PART`) at a time: a
    status request's sample decodes the first part only."""
    message = MESSAGES[code]
    same = message(None)
    line = first_line  # before the first part: its first step is 0
    for part in pa.ipc.open_stream(body):
        lines = pc.add(pc.cumulative_sum(part.column(0).cast(pa.int64())), line).to_pylist()
        line = lines[-1]
        if part.num_columns == 1:  # no texts: one message for every line
            for number in lines:
                yield (number, "warning", code, code, same, None, None, None, None)
            continue
        for number, text in zip(lines, part.column(1).to_pylist(), strict=True):
            yield (number, "warning", code, code, message(text), None, None, None, None)


def _paged(
    sessions: Sessions,
    read: Callable[[Session, tuple[int, str] | None], Sequence[Any]],
    key: Callable[[Any], tuple[int, str]],
) -> Iterator[Any]:
    """The rows ``read`` gives a page at a time, each page in a session of its own and seeking
    past the ``key`` of the last row of the one before (None: from the start)."""
    after: tuple[int, str] | None = None
    while True:
        with sessions() as s:
            page = read(s, after)
        if not page:
            return
        yield from page
        after = key(page[-1])


def _stored_runs(sessions: Sessions, import_id: str) -> Iterator[Entry]:
    """Every run's entries, merged in (line, code) order. Runs are read in the order they
    start and opened only once the entries before their first line are given: runs of
    different codes may interleave (a batch's duplicate ids and bad addresses), runs of one
    code do not, so few are open at once."""
    heads = _paged(
        sessions,
        lambda s, after: control_imports.run_heads(s, import_id, after, RUN_HEADS),
        lambda head: (head.first_line, head.code),
    )
    open_runs: list[tuple[int, str, int, Entry, Iterator[Entry]]] = []
    order = itertools.count()
    waiting = next(heads, None)  # the next run not opened yet
    while True:
        # Every run that starts on or before the next entry's line (lines order alike in SQL
        # and here; codes might not, under another collation).
        while waiting is not None and (not open_runs or waiting.first_line <= open_runs[0][0]):
            with sessions() as s:
                body = control_imports.run_body(s, waiting.id)
            entries = _run_entries(waiting.code, waiting.first_line, body)
            entry = next(entries, None)
            if entry is not None:
                heapq.heappush(open_runs, (entry[0], entry[3], next(order), entry, entries))
            waiting = next(heads, None)
        if not open_runs:
            return
        _, _, _, entry, entries = open_runs[0]
        yield entry
        following = next(entries, None)
        if following is None:
            heapq.heappop(open_runs)
        else:
            heapq.heapreplace(
                open_runs, (following[0], following[3], next(order), following, entries)
            )


def _single_entries(sessions: Sessions, import_id: str) -> Iterator[Entry]:
    """The entries stored one row each, a page at a time."""
    return _paged(
        sessions,
        lambda s, after: control_imports.log_page(s, import_id, after),
        lambda entry: (entry.line, entry.code),
    )


def _merged(singles: Iterator[Entry], runs: Iterator[Entry]) -> Iterator[Entry]:
    """Both in (line, code) order; an entry of a run on a (line, code) that has a single entry
    already, or that an earlier run gave, is left out (one entry per line and code, as the
    single entries' unique key keeps). The codes seen are kept for the current line, so this
    holds even where the database orders a line's codes otherwise than Python."""
    line: int | None = None
    codes: set[str] = set()
    for entry in heapq.merge(singles, runs, key=lambda e: (e[0], e[3])):
        if entry[0] != line:
            line, codes = entry[0], set()
        if entry[3] not in codes:
            codes.add(entry[3])
            yield entry


def log_entries(sessions: Sessions, import_id: str) -> Iterator[Entry]:
    """The whole log in (line, code) order, read a page or a run at a time, each in a session
    of its own (``sessions()``): never the whole log in memory."""
    return _merged(_single_entries(sessions, import_id), _stored_runs(sessions, import_id))


def log_sample(session: Session, import_id: str, level: str) -> list[Entry]:
    """The first entries of ``level`` (at most control_imports.LOG_SAMPLE)."""
    singles = iter(control_imports.log_sample(session, import_id, level))
    if level != "warning":  # runs hold warnings only
        return list(singles)
    runs = _stored_runs(lambda: nullcontext(session), import_id)
    return list(itertools.islice(_merged(singles, runs), control_imports.LOG_SAMPLE))
