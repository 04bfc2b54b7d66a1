"""The windows of one export computed on several DuckDB cursors at once, handed on in order.

One DuckDB query runs on as many threads as the store's ``threads`` setting allows, and that
setting is global (imports share it); queries on different cursors run side by side, each on
its caller's thread. So an export that has a few cursors on one snapshot (see
``DuckDBEventStore._snapshot_readers``) runs a job per window on each, in threads of its own,
while its consumer hands on the window finished before them. At most one job runs per cursor,
so memory holds the windows running plus the one being handed on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

import duckdb

from eventport.threads import name_this_thread

T = TypeVar("T")
Cursor = duckdb.DuckDBPyConnection


class WindowPipeline(Generic[T]):
    """Jobs ``job(cursor, *args)`` started in order on free cursors; results in that order."""

    def __init__(self, cursors: Sequence[Cursor]) -> None:
        if not cursors:
            raise ValueError("a pipeline needs at least one cursor")
        self._free: deque[Cursor] = deque(cursors)
        self._running: deque[tuple[Future[T], Cursor]] = deque()
        self._pool = ThreadPoolExecutor(
            len(cursors), "eventport-export", initializer=name_this_thread
        )

    @property
    def full(self) -> bool:
        """Every cursor has a job whose result has not been taken."""
        return not self._free

    @property
    def running(self) -> bool:
        return bool(self._running)

    def submit(self, job: Callable[..., T], *args: object) -> None:
        """Start ``job`` on a free cursor (raises when :attr:`full`)."""
        if not self._free:
            raise RuntimeError("every cursor is busy: take a result first")
        cursor = self._free.popleft()
        self._running.append((self._pool.submit(job, cursor, *args), cursor))

    def take_oldest(self) -> T:
        """Wait for the oldest job and return its result (raising its error); its cursor is
        free again."""
        future, cursor = self._running[0]
        result = future.result()
        self._running.popleft()
        self._free.append(cursor)
        return result

    def stop(self) -> None:
        """Cancel the jobs not started, interrupt those running and wait for the threads.
        For a stream closed early or failed; harmless once every result was taken."""
        for future, cursor in self._running:
            if not future.cancel():
                cursor.interrupt()
        self._running.clear()
        self._pool.shutdown(wait=True)
