"""An import's batches between reading and commit: gathered from decoded slices, built, and
committed in order by a writer thread while the next one is read (see imports/worker.py)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

from eventport.events.schema import Checkpoint
from eventport.events.store import PreparedBatch
from eventport.imports.decoding import DECODED_SCHEMA
from eventport.imports.formats import Chunk
from eventport.imports.log_lines import LineWarnings
from eventport.imports.records import LogEntry, failed_line_count
from eventport.threads import name_this_thread


class PendingBatch:
    """Decoded slices waiting to be committed together as one batch."""

    def __init__(self) -> None:
        self.tables: list[pa.Table] = []
        self.rows = 0
        self.bytes = 0  # of the decoded events' Arrow buffers
        self.entries: list[LogEntry] = []
        self.failed = 0  # lines that failed (their entries stand for them)
        self.line_warnings: list[LineWarnings] = []
        self.last: Chunk | None = None

    @property
    def size(self) -> int:
        """What is held against the batch's size: its events and the lines that failed.
        Warnings do not count, neither as entries nor held as columns: a file whose times have
        no zone makes batches as large as any other, whether its lines are read in C (their
        warnings columns) or in Python (entries). Counted, the two ended batches at different
        lines, and a replaced id's message then differed (a line-reader hunt)."""
        return self.rows + self.failed

    def take_events(self) -> pa.Table:
        """The events, handed over (this batch keeps no reference to them)."""
        tables, self.tables = self.tables, []
        return pa.concat_tables(tables) if tables else DECODED_SCHEMA.empty_table()

    def add(
        self,
        chunk: Chunk,
        events: pa.Table,
        entries: list[LogEntry],
        line_warnings: list[LineWarnings],
    ) -> None:
        self.tables.append(events)
        self.rows += events.num_rows
        self.bytes += events.nbytes
        self.entries.extend(entries)
        self.failed += failed_line_count(entries)
        self.line_warnings.extend(line_warnings)
        self.last = chunk


@dataclass
class BuiltBatch:
    """A built batch, its log entries and the checkpoint it takes the import to. The store
    takes the prepared batch's tables from it once (PreparedBatch.take), so this item keeps no
    reference to their memory while they are written (see EventStore.write_batch)."""

    logs: list[LogEntry]
    line_warnings: list[LineWarnings]
    checkpoint: Checkpoint
    batch: PreparedBatch
    new_ids: float  # the share of its events whose ids the store does not hold yet
    # The logger's work on the entries (see ImportWorker.process): True once they are stored,
    # False when it stopped first (an abort, a lost lease, a failed write), or its error.
    logged: Future[bool] | None = None


class BatchWriter:
    """Commits prepared batches in order on a thread of its own, so that the next batch is
    read, decoded and built while one is written (DuckDB and psycopg release the GIL).

    At most one batch is being written and one waits for it: memory holds two batches (three
    with ``stage``, below). A failed write is raised again by :meth:`submit` or
    :meth:`close`; a write that finds the lease lost sets :attr:`lost`, and later batches are
    dropped.

    With ``stage`` (a store with staged writes, see events/store.py StagedWrites), a batch is
    staged on a thread of its own as soon as it is submitted, while the batch before it
    commits: the write gets the staged batch's future, and two batches are in the writer's
    hands (the reading thread builds a third). ``drop`` is given the staged batch's future (or
    None) of a batch that is not written (a lost lease, a failed write before it), to roll it
    back.
    """

    def __init__(
        self,
        write: Callable[[BuiltBatch, Future[object] | None], bool],
        drop: Callable[[Future[object] | None], None],
        stage: Callable[[BuiltBatch], object] | None = None,
    ) -> None:
        self._write, self._drop, self._stage = write, drop, stage
        self._stager = ThreadPoolExecutor(1, "import-stager", initializer=name_this_thread)
        self._queue: queue.Queue[tuple[BuiltBatch, Future[object] | None] | None] = queue.Queue()
        self._slots = 2 if stage else 1
        self._free = threading.Semaphore(self._slots)  # released when a write is done
        self._failure: BaseException | None = None
        self.failed = threading.Event()  # a write failed: later batches are dropped
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name="import-writer", daemon=True)
        self._thread.start()

    @property
    def unwritten(self) -> int:
        """How many batches submitted before the one being built may not be committed yet."""
        return self._slots

    def submit(self, item: BuiltBatch) -> Checkpoint:
        """Queue a batch once there is room for it; its checkpoint."""
        self._free.acquire()
        if self._failure is not None:
            # Nothing is queued, so the writer is idle: give the slot back, or close() would
            # wait for it forever (and the import's heartbeat would keep it "importing").
            self._free.release()
            self._raise()
        staged = None if self._stage is None else self._stager.submit(self._stage, item)
        self._queue.put((item, staged))
        return item.checkpoint

    def close(self) -> None:
        """Wait for the queued batches to be written (or dropped)."""
        try:
            if self._thread.is_alive():
                for _ in range(self._slots):
                    self._free.acquire()
                self._queue.put(None)
                self._thread.join()
        finally:
            self._stager.shutdown()
        self._raise()

    def _raise(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def _run(self) -> None:
        name_this_thread()
        while (entry := self._queue.get()) is not None:
            item, staged = entry
            try:
                if self.failed.is_set() or self.lost.is_set():
                    self._drop(staged)
                elif not self._write(item, staged):
                    self.lost.set()
            except BaseException as exc:  # handed to the import's thread
                if self._failure is None:  # the first failure is the one that matters
                    self._failure = exc
                self.failed.set()
            finally:
                del item, staged, entry
                self._free.release()
