"""The embedded store's DuckDB memory limit: lower while only imports write, full while a read runs.

DuckDB keeps the blocks it writes cached up to its memory limit, so an import fills the whole
buffer pool (at 128 MB: ~64 MB of the table's blocks, written and kept, beside the ~54 MB of the
batch being inserted) although nothing reads those blocks again. Exports and aggregates need
the pool: a year-long by-variable aggregate of 10M events does not fit in 64 MB. So the limit
is the full one while any read runs and the lower write limit otherwise (measured on 5M enriched
events, interleaved runs: server peak 580-594 MB at 64 MB against 640-655 at 128, at
the same speed; 569 MB at 32).

The limit is lowered only by a write, under the store's write lock, before its transaction
begins, and only when no read runs (if DuckDB cannot lower it, say because an import's look-up
holds more than that, it stays as it is until the next write); a read raises it on its own
cursor before it reads anything, and no write can lower it until every read has ended. If a
write still runs out of memory at the write limit (rows far wider than usual), the store keeps
the full limit from then on (:meth:`PoolLimit.widen`) and writes the batch again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import duckdb

log = logging.getLogger(__name__)

_SIZES = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4}
_SIZES |= {"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}


def size_bytes(text: str) -> int:
    """Bytes of a DuckDB memory size such as ``128MB`` (as DuckDB reads it: MB is 1000**2,
    MiB 1024**2)."""
    cleaned = text.strip().upper().replace(" ", "")
    digits = cleaned.rstrip("KMGTIB")
    try:
        size = float(digits) * _SIZES[cleaned[len(digits) :]]
    except (KeyError, ValueError):
        raise ValueError(f"not a memory size: {text!r}") from None
    return int(size)


def set_memory_limit(cursor: duckdb.DuckDBPyConnection, limit: str) -> None:
    size_bytes(limit)  # only a size goes into the statement
    cursor.execute(f"SET memory_limit = '{limit}'").fetchall()


class PoolLimit:
    """Which memory limit a DuckDB database has now: ``full`` while reads run, ``writing`` (if
    lower) otherwise. Shared by the store objects of one file (one DuckDB database)."""

    def __init__(self, full: str, writing: str | None) -> None:
        self.full = full
        lower = writing is not None and size_bytes(writing) < size_bytes(full)
        self.writing: str | None = writing if lower else None
        self._lock = threading.Lock()
        self._readers = 0
        self._now = full  # the database is opened with the full limit

    @property
    def now(self) -> str:
        return self._now

    def read_started(self, cursor: duckdb.DuckDBPyConnection) -> None:
        """A read is about to run on ``cursor`` (its own): the full limit until it ends."""
        with self._lock:
            self._readers += 1
            try:
                self._set(self.full, lambda limit: set_memory_limit(cursor, limit))
            except BaseException:
                self._readers -= 1
                raise

    def read_ended(self) -> None:
        with self._lock:
            self._readers -= 1

    def before_write(self, set_limit: Callable[[str], None]) -> None:
        """Called under the store's write lock before a write's transaction: the write limit,
        unless a read runs."""
        with self._lock:
            if self._readers == 0 and self.writing is not None:
                try:
                    self._set(self.writing, set_limit)
                except duckdb.Error as exc:  # e.g. more pinned than the lower limit allows
                    log.info("the event store's memory limit stays %s: %s", self._now, exc)

    def widen(self, set_limit: Callable[[str], None]) -> bool:
        """A write ran out of memory: the full limit from now on. Whether it was lower (and so
        whether writing again can help)."""
        with self._lock:
            if self._now == self.full:
                return False
            log.warning(
                "a write needed more memory than the write limit (%s); the event store keeps "
                "its full limit (%s) from now on",
                self.writing,
                self.full,
            )
            self.writing = None
            self._set(self.full, set_limit)
            return True

    def _set(self, limit: str, set_limit: Callable[[str], None]) -> None:
        if self._now != limit:
            set_limit(limit)
            self._now = limit


# How DuckDB 2.0 words a commit that ran out of memory, which it raises as a
# TransactionException: "Failed to commit: failed to pin block of size 980.0 KiB (37.8 MiB/38.1
# MiB used)", or "... could not allocate block of size 1.0 MiB (37.3 MiB/38.1 MiB used)".
_COMMIT_OUT_OF_MEMORY = ("failed to pin block", "could not allocate block", "out of memory")


def ran_out_of_memory(exc: BaseException) -> bool:
    """Whether DuckDB failed for want of memory: an out-of-memory error, or a commit that ran
    out (see _COMMIT_OUT_OF_MEMORY)."""
    if isinstance(exc, duckdb.OutOfMemoryException):
        return True
    text = str(exc).lower()
    return isinstance(exc, duckdb.TransactionException) and any(
        words in text for words in _COMMIT_OUT_OF_MEMORY
    )
