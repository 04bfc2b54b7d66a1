"""Import workers: claim an import under a lease, process it batch by batch, checkpointing.

Each committed batch carries its checkpoint in the same event-store transaction, so a worker
killed at any point loses nothing and doubles nothing: whoever claims the import next (after the
lease runs out) resumes at the last checkpoint. Log entries are written before their batch and
are idempotent, so a replayed batch adds none twice.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import cast

import pyarrow as pa
from sqlalchemy import select
from sqlalchemy.orm import Session

from eventport.control import imports as control_imports
from eventport.control.database import ControlDatabase, database_unreachable
from eventport.control.event_settings import exclusion_rules
from eventport.control.models import Account, Import, Package, TrackingPixel
from eventport.control.packages import owned_package_for, writes_every_artifact
from eventport.control.pixels import pixel_for
from eventport.control.secrets import ORIGIN_KEY, server_secret
from eventport.domain.access import Access
from eventport.domain.errors import DomainError, no_room
from eventport.enrich.enricher import Enricher, open_enricher, origin_key
from eventport.events.schema import Checkpoint
from eventport.events.store import EventStore, StagedWrites, WriteInterrupted
from eventport.imports.batches import BatchWriter, BuiltBatch, PendingBatch
from eventport.imports.decoding import decode_chunk
from eventport.imports.formats import (
    Chunk,
    InputUnusable,
    check_gzip,
    iter_chunks,
    refuse_pretty_json,
)
from eventport.imports.heartbeat import Heartbeat
from eventport.imports.pipeline import ARTIFACT_NOT_FOUND, Lookups, Target, build_batch
from eventport.imports.records import LogEntry
from eventport.imports.spool import STALE_AFTER, SpoolSweeper
from eventport.settings import Settings
from eventport.threads import name_this_thread

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5  # in a row that commit nothing: then the import fails
# A worker that cannot read an import's upload leaves it to the other workers this long.
UNREADABLE_SKIP_SECONDS = 60.0
# How often, at most, an idle worker looks for the database while it is out of reach.
UNREACHABLE_WAIT_SECONDS = 5.0
ATTEMPT_FAILED = "attempt-failed"  # the log entry of an attempt that an error stopped


# An import none of whose first this many lines (or more: it is looked at after each batch)
# could be imported fails: 3M lines of "{}" each stored an error, ~300 bytes of the control
# database for a 3-byte line (918 MB for a 9 MB upload, a resource hunt), and a file that is not
# one of events (a "time" field where "$time" was meant, another export) took its whole length
# to say so. A single bad line, or a bad part after good ones, still never fails an import.
UNREADABLE_LINES = 100_000


def _refuse_unreadable(submitted: Checkpoint) -> None:
    """:class:`InputUnusable` once :data:`UNREADABLE_LINES` lines or more have been read and
    each failed (``submitted``: the checkpoint of the batch just submitted)."""
    if submitted.imported == 0 and submitted.failed >= UNREADABLE_LINES:
        raise InputUnusable(
            f"none of its first {submitted.failed:,} lines could be imported (the log holds "
            "their errors), so it was stopped rather than logging every line of a file that "
            "holds no event eventport can read"
        )


def slice_lines(batch_lines: int) -> int:
    """Lines per slice: the most, up to SLICE_LINES, that divides ``batch_lines`` evenly, so
    that a batch of clean lines holds exactly ``batch_lines`` events. The DuckDB store keeps a
    table in row groups of its preferred batch (61,440 rows, 3 slices of 20,480): a batch a
    little over that leaves a small row group, and DuckDB merging those later left the file
    twice the size of its data (measured on 1M events with row groups of 122,880: 322 MB, 46%
    of it free blocks, against 175 MB with batches of exactly 122,880; the same write time)."""
    for slices in range(-(-batch_lines // SLICE_LINES), batch_lines + 1):
        if batch_lines % slices == 0:
            return batch_lines // slices
    return 1


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _log_rows(entries: Iterable[LogEntry]) -> Iterator[control_imports.LogRow]:
    """Log rows for the control store (line 0: about the whole import; no counts), made as
    they are stored: an import can have a warning on every line."""
    for e in entries:
        package, pixel = e.package_id, e.tracking_pixel_id
        if package is None and pixel is None:  # as most are: a short row
            yield (e.line or 0, e.level, e.type, e.code, e.message)
        else:
            yield (e.line or 0, e.level, e.type, e.code, e.message, package, pixel, None, None)


# Read and decoded between two looks at the abort flag: at most this many records or lines (see
# slice_lines), and at most 8 MiB.
SLICE_LINES = 20_480
SLICE_BYTES = 8 << 20
LOG_CHUNK = 20_000  # log entries written between two looks at the abort flag
# How often a worker looks whether a newer eventport has migrated the control database.
SCHEMA_CHECK_SECONDS = 10.0
# How long an owner-wide import keeps its answers to who may write which target.
TARGETS_RECHECK_SECONDS = 30.0
# A batch also ends once its decoded events hold this much: the benchmark's 61,440 events hold
# ~13 MB, but events of 16 KB each (a large custom variable) would hold ~1 GB. A 128 MB CSV of
# such events: server peak 465 MB at 32 MiB, 508 MB at 64 MiB, 756 MB with no bound (and
# CSV chunks bounded by rows only).
BATCH_BYTES = 32 << 20


class UploadMissing(Exception):
    """The upload's file is not where the import says (the spool of this process's data dir);
    its text says why that happens, for the import's log and the server's. ``alone``: this
    process is the only one that could read it (the embedded store's), so no other worker
    will: the import fails at once."""

    def __init__(self, path: Path, alone: bool = False) -> None:
        self.alone = alone
        if alone:
            super().__init__(
                f"the upload's file is not in the spool ({path.parent}): it was deleted, or "
                "the data dir was moved without it"
            )
            return
        super().__init__(
            f"the upload's file is not in this worker's spool ({path.parent}): the worker runs "
            "with another EVENTPORT_DATA_DIR than the server that took the upload (workers must "
            "share it, on the same machine or a shared file system), or the file was deleted"
        )


class TargetGone(Exception):
    """The package or pixel an import goes into was deleted after the upload, or the importer
    may no longer import into it: the import fails, saying so (its events would be stored
    where no export finds them)."""

    def __init__(self, row: Import) -> None:
        what = (
            f"package {row.package_id}"
            if row.target == "package"
            else f"tracking pixel {row.pixel_id}"
        )
        super().__init__(
            f"the {what} was deleted after the upload, or its importer may no longer import into it"
        )
        self.entry = LogEntry(
            None,
            "error",
            ARTIFACT_NOT_FOUND,
            ARTIFACT_NOT_FOUND,
            str(self),
            package_id=row.package_id,
            tracking_pixel_id=row.pixel_id,
        )


def _attempt_failed(attempt: int, stalled: int, exc: Exception) -> LogEntry:
    """The log entry of an attempt ``exc`` stopped. Its message is not quoted (it may quote
    input, such as an address), only its type, or the system's words for a full disk."""
    full = no_room(exc)
    kind = type(exc).__name__
    if isinstance(exc, UploadMissing):
        cause = str(exc)
    elif full:
        cause = f"the server could not write ({full}; {kind})"
    else:
        cause = f"an error ({kind})"
    return LogEntry(
        None,
        "warning",
        ATTEMPT_FAILED,
        f"{ATTEMPT_FAILED}-{attempt}",  # one entry each: (import, line 0, code) is unique
        f"attempt {attempt} stopped ({stalled} of {MAX_ATTEMPTS} in a row without a committed "
        f"batch): {cause}; a worker resumes the import from its last committed batch once "
        "this attempt's lease runs out",
    )


def _let_go_of_frames(exc: BaseException) -> None:
    """Clear the locals of the finished frames ``exc`` and the errors it chains hold, once it
    is logged: among them the failed attempt's slices of the upload's mapped file, which kept
    the file (and, deleted on a full disk, its space) until the garbage collector found the
    cycle the error is in (minutes), or for as long as a log handler keeps the record."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        pending += [error.__cause__, error.__context__]


class ImportWorker:
    def __init__(
        self,
        control: ControlDatabase,
        events: EventStore,
        *,
        lease: timedelta,
        name: str | None = None,
        chunk_lines: int | None = None,
        enricher: Enricher | None = None,
        keep_ip_addresses: bool = False,
        spool_dir: Path | None = None,
    ) -> None:
        self.control = control
        self.events = events
        self.spool_dir = spool_dir  # this process's, where a moved data dir's uploads are
        self.enricher = enricher
        self.keep_ip_addresses = keep_ip_addresses
        self.lease = lease
        self.name = name or worker_name()
        # Big enough batches let DuckDB skip its write-ahead log (bench/event_store.py).
        self.chunk_lines = chunk_lines or events.capabilities.preferred_batch_rows
        self.stopping = threading.Event()
        self._unreadable: dict[str, float] = {}  # import id -> monotonic time to claim it again
        self._schema_checked_at = -SCHEMA_CHECK_SECONDS  # time.monotonic() of the last look

    def run(self, stop: threading.Event, wake: threading.Event | None = None) -> None:
        """Work until ``stop`` is set; idle workers look for new imports twice a second.

        While the database is out of reach (a restart, a failover) a worker says so once, in
        one line, looks again less and less often (up to every UNREACHABLE_WAIT_SECONDS), and
        says when it is back: each look logged a full traceback, twice a second a worker,
        ~27,000 lines a minute (an operations hunt)."""
        self.stopping = stop
        unreachable_since: float | None = None
        while not stop.is_set():
            wait = 0.5
            try:
                worked = self.run_once()
            except Exception as exc:
                worked = False
                if not database_unreachable(exc):
                    log.exception("import worker %s: unexpected error", self.name)
                else:
                    if unreachable_since is None:
                        unreachable_since = time.monotonic()
                        log.warning(
                            "import worker %s: the database is out of reach (%s); looking "
                            "again every few seconds",
                            self.name,
                            type(getattr(exc, "orig", None) or exc).__name__,
                        )
                    waited = time.monotonic() - unreachable_since
                    wait = min(UNREACHABLE_WAIT_SECONDS, max(0.5, waited / 2))
            else:
                if unreachable_since is not None:
                    log.info(
                        "import worker %s: the database is back after %.0f s",
                        self.name,
                        time.monotonic() - unreachable_since,
                    )
                    unreachable_since = None
            if not worked:
                if wake is not None:
                    wake.wait(wait)
                    wake.clear()
                else:
                    stop.wait(wait)

    def _check_schema(self) -> None:
        """Every SCHEMA_CHECK_SECONDS: if a newer eventport has migrated the control database
        (an upgrade started beside this process), this process's workers stop (as on shutdown:
        an import is handed back) and claim nothing more. An older version's workers kept
        writing events as its schema wanted, beside the new one's: a rolling upgrade on
        PostgreSQL stored 15,000 $unique_ids twice."""
        now = time.monotonic()
        if now < self._schema_checked_at + SCHEMA_CHECK_SECONDS:
            return
        self._schema_checked_at = now
        try:
            newer = self.control.schema_is_newer()
        except Exception as exc:  # a blip in the control store: the next look decides
            if not database_unreachable(exc):  # (out of reach: run() says so, once)
                log.warning("import worker %s: could not read the schema's version", self.name)
            return
        if newer and not self.stopping.is_set():
            log.error(
                "import worker %s: a newer version of eventport has migrated the control "
                "database; this process's workers stop (restart it with the new version)",
                self.name,
            )
            self.stopping.set()

    def run_once(self) -> bool:
        """Claim and process one import; False when there was nothing to claim."""
        self._check_schema()
        if self.stopping.is_set():
            return False
        now = time.monotonic()
        self._unreadable = {i: until for i, until in self._unreadable.items() if until > now}
        with self.control.session() as s:
            row = control_imports.claim_next(s, self.name, self.lease, self._unreadable)
        if row is None:
            return False
        if row.attempts - row.progress_attempt > MAX_ATTEMPTS:
            with self.control.session() as s:
                self._end_log_at_commit(s, row)
            self._finish(
                row,
                "failed",
                f"gave up after {MAX_ATTEMPTS} attempts in a row that committed nothing "
                "(stopped by errors of the server or by its end; the import's log and the "
                "server's log say more)",
            )
            return True
        try:
            self.process(row)
        except TargetGone as exc:
            self._forget_gone_targets(row)
            self._end_at_commit(row)
            self._log(row.id, _log_rows([exc.entry]))
            self._finish(row, "failed", str(exc))
        except InputUnusable as exc:
            self._end_at_commit(row)  # what it committed before stays, and is counted
            unusable = LogEntry(
                None,
                "error",
                "failed-to-decode",
                "input-unusable",
                f"the import cannot be read: {exc.reason}",
            )
            self._log(row.id, _log_rows([unusable]))
            self._finish(row, "failed", exc.reason)
        except Exception as exc:
            # A store failed mid-import (a full disk, a lost connection) or a bug: the import
            # keeps its lease until that runs out, then a worker resumes it from its last
            # committed batch; after MAX_ATTEMPTS it fails. The server's log has the error;
            # the import's log says that it happened (not the message: it may quote input).
            if isinstance(exc, UploadMissing):  # no traceback: the text says it all
                log.warning("import %s: attempt %d stopped: %s", row.id, row.attempts, exc)
            else:
                log.exception("import %s: attempt %d stopped", row.id, row.attempts)
            try:
                with self.control.session() as s:  # this attempt may have committed batches
                    stalled = control_imports.stalled_attempts(s, row.id)
                self._log(row.id, _log_rows([_attempt_failed(row.attempts, stalled, exc)]))
            except Exception:  # the control store itself may be what failed
                log.warning("import %s: could not log the failed attempt", row.id, exc_info=True)
            _let_go_of_frames(exc)
            if isinstance(exc, UploadMissing) and exc.alone:  # no other worker could read it
                self._finish(row, "failed", str(exc))
            elif isinstance(exc, UploadMissing):
                # Another worker may see the file (this one has another data dir): handed back
                # at once, and left to the others for a while (counted as an attempt all the
                # same, so that an upload no worker can read ends the import in time).
                self._unreadable[row.id] = time.monotonic() + UNREADABLE_SKIP_SECONDS
                with self.control.session() as s:
                    control_imports.release(s, row.id, self.name, failed=True)
        return True

    # --- one import ---------------------------------------------------------------------------

    def process(self, row: Import) -> None:
        """Read and decode in slices, build batches, and commit each on a writer thread while
        the next is built; look for abort between slices."""
        upload = self._upload(row)
        checkpoint = self.events.checkpoint(row.id)
        fresh = checkpoint is None  # no batch of it committed yet
        if checkpoint is not None:  # resuming: the control store may lag the last commit
            self._record(row, checkpoint)
            with self.control.session() as s:  # those past it are made again
                control_imports.drop_log_runs_from(s, row.id, checkpoint.line)
        else:
            checkpoint = Checkpoint(row.id, 1, 0, 0, 0, 0, 0, 0, 0, 0)
        is_csv = row.format == "csv"
        lookups = self._lookups(row)
        if not self._may_write(row):
            raise TargetGone(row)
        batch = PendingBatch()
        first_batch = True
        stages = cast(StagedWrites, self.events)
        # Stopped (aborted, or the lease lost), the batches in flight will not count: a store
        # that stages writes cancels them rather than making the abort wait for them.
        interrupt = (
            (lambda: stages.interrupt_writes(row.owner_id))
            if self.events.capabilities.staged_writes
            else None
        )

        def allowed() -> bool:  # asked with each renewal of the lease
            self._check_schema()  # outdated: the import is handed back, as on shutdown
            # A block set since the last renewal binds the next batch's replacements too.
            lookups.stored_targets = self._stored_targets(row)
            return self._may_write(row)

        with Heartbeat(
            self.control, row.id, self.name, self.lease, interrupt, allowed
        ) as heartbeat:

            def stage(item: BuiltBatch) -> object:
                if heartbeat.stop.is_set():  # stopped: not staged, only to be rolled back
                    raise WriteInterrupted("the import stopped before the batch was staged")
                return stages.stage_batch(row.owner_id, item.batch)

            writer = BatchWriter(
                lambda item, staged: self._write(row, item, heartbeat.stop, staged, interrupt),
                self._discard,
                stage if self.events.capabilities.staged_writes else None,
            )
            lookups.unwritten_batches = writer.unwritten

            # Set when the logger fails: the batch whose entries failed is not written, so no
            # later one is, and the logger stores no later entries (with staged writes it may
            # hold the next batch's entries before the writer has seen the failure).
            log_failed = threading.Event()

            def stopped() -> bool:  # no batch is written any more: their entries are not due
                return (
                    heartbeat.stop.is_set()
                    or writer.lost.is_set()
                    or writer.failed.is_set()
                    or log_failed.is_set()
                )

            def log_batch(item: BuiltBatch) -> bool:
                try:
                    return self._log_batch(row, item, stopped)
                except BaseException:
                    log_failed.set()
                    raise

            # Log entries are stored on a thread of their own, in order, ahead of the writer:
            # a batch's entries go into the control store while the batch before it is written
            # to the event store, and the writer waits for them (BuiltBatch.logged) before it
            # commits the batch, so that a checkpoint never passes entries that are not stored
            # (a batch made again after a crash writes its entries again; those already there
            # are kept). Written by the writer before its batch, 1M entries took it ~4.4 s of a
            # re-import's 7.3 s (a duplicate-unique-id warning for every event) while DuckDB
            # took ~1.3 s and the reading thread ~3.3 s.
            logger = ThreadPoolExecutor(1, "import-logger", initializer=name_this_thread)

            def submit(item: BuiltBatch) -> Checkpoint:
                item.logged = logger.submit(log_batch, item)
                return writer.submit(item)

            slices: Iterator[Chunk] = iter(())
            chunks = slices
            try:
                if row.compression == "gzip" and fresh:
                    # Checked whole before a batch is written, so that an import that fails
                    # because its stream is unusable (truncated, corrupt, a bomb) has stored
                    # nothing, whatever the batch size: before, the batches ahead of the error
                    # stayed, and a retry of the mended file doubled them.
                    check_gzip(
                        upload,
                        stopped=lambda: heartbeat.stop.is_set() or self.stopping.is_set(),
                    )
                slices = chunks = iter_chunks(
                    upload,
                    gzip=row.compression == "gzip",
                    fmt="csv" if is_csv else "ndjson",
                    start_line=checkpoint.line,
                    start_offset=checkpoint.offset,
                    chunk_lines=slice_lines(self.chunk_lines),
                    chunk_bytes=SLICE_BYTES,
                    mapped=True,
                )
                if not is_csv:
                    slices = refuse_pretty_json(slices)
                for chunk in slices:
                    if heartbeat.stop.is_set() or writer.lost.is_set():
                        break
                    if self.stopping.is_set():  # shutting down: hand the import back at once
                        writer.close()
                        logger.shutdown()
                        with self.control.session() as s:
                            control_imports.release(s, row.id, self.name)
                        return
                    decoded = decode_chunk(chunk, csv=is_csv, keep_addresses=self.keep_ip_addresses)
                    batch.add(chunk, *decoded)
                    del chunk, decoded
                    full = batch.size >= self.chunk_lines or batch.bytes >= BATCH_BYTES
                    if full and not heartbeat.stop.is_set():
                        self._recheck_targets(row, lookups)
                        prepared = self._prepare(row, batch, checkpoint, lookups)
                        if first_batch:
                            self._expect_events(row, checkpoint, batch, prepared.new_ids)
                            first_batch = False
                        checkpoint = submit(prepared)
                        del prepared
                        batch = PendingBatch()  # the writer has the last one; let it go here
                        _refuse_unreadable(checkpoint)
                if batch.last is not None and not heartbeat.stop.is_set():
                    self._recheck_targets(row, lookups)
                    submit(self._prepare(row, batch, checkpoint, lookups))
            finally:
                try:
                    writer.close()
                finally:
                    logger.shutdown()
                    # The upload's file and its mapping are let go now, not when the garbage
                    # collector next finds the failed attempt's frames (which hold the reader):
                    # on a full disk the deleted file's space was held for minutes.
                    for reader in (slices, chunks):  # generators
                        getattr(reader, "close", lambda: None)()
            if writer.lost.is_set():  # the lease went to another worker, which carries on
                self._say_lease_lost(row)
                return
        if row.target == "multi":  # lines it wrote into packages or pixels deleted meanwhile
            self._forget_gone_targets(row, lookups.seen_packages, lookups.seen_pixels)
        if heartbeat.stop.is_set() and not self._may_write(row):
            raise TargetGone(row)
        if heartbeat.stop.is_set():
            with self.control.session() as s:
                aborted = control_imports.abort_was_requested(s, row.id)
            if aborted:
                self._end_at_commit(row)
                self._finish(row, "aborted")
            else:  # the heartbeat found the lease gone before a write did
                self._say_lease_lost(row)
            return
        self._finish(row, "done")

    def _say_lease_lost(self, row: Import) -> None:
        log.warning(
            "import %s: worker %s lost its lease (not renewed within %.1f s); the import goes "
            "on from its last committed batch",
            row.id,
            self.name,
            self.lease.total_seconds(),
        )

    def _end_at_commit(self, row: Import) -> None:
        """An import stopped before its upload's end: its log and its counts end where its
        committed events do, whatever the last write answered."""
        with self.control.session() as s:
            committed = self._end_log_at_commit(s, row)
        if committed is not None:
            self._record(row, committed)

    def _end_log_at_commit(self, session: Session, row: Import) -> Checkpoint | None:
        """An import that ends before its upload does (aborted, or given up): its log ends
        where its committed events end. The logger stores a batch's entries before the writer
        commits it, and the batches after the last commit never will be (a live probe saw 100
        errors logged for 50 counted, and 'progress: 100000 events imported' for 50,000).
        The last committed checkpoint, or None."""
        committed = self.events.checkpoint(row.id)
        after = 1 if committed is None else committed.line
        control_imports.drop_log_from(session, row.id, max(after, 1))
        return committed

    def _expect_events(
        self, row: Import, before: Checkpoint, pending: PendingBatch, new_ids: float
    ) -> None:
        """Tell the store how many events with new ids the rest of the upload holds,
        estimated from the bytes its first batch's lines took, with a tenth more for lines that
        vary, and from the share ``new_ids`` of its events whose ids were not stored yet (a
        re-import brings none). Of a gzip upload only the compressed bytes read so far are
        known, read ahead of the lines by up to a block (1 MiB: a few percent of a batch of
        122,880 lines)."""
        last = pending.last
        assert last is not None
        if row.compression == "gzip":
            read = last.source_offset - before.source_offset
            remaining = row.bytes_total - before.source_offset
        else:  # the file's own bytes: exactly those of the batch's lines
            read = last.next_offset - before.offset
            remaining = row.bytes_total - before.offset
        if read > 0 and remaining > 0:
            self.events.expect_events(int(pending.size * new_ids) * remaining * 11 // (read * 10))

    def _prepare(
        self, row: Import, pending: PendingBatch, before: Checkpoint, lookups: Lookups
    ) -> BuiltBatch:
        """The batch built from decoded slices, with its log entries and checkpoint."""
        chunk = pending.last
        assert chunk is not None
        result = build_batch(
            pending.take_events(),
            pending.entries,
            line_warnings=pending.line_warnings,
            import_id=row.id,
            owner_id=row.owner_id,
            target=Target(row.target, row.package_id, row.pixel_id),
            lookups=lookups,
        )
        checkpoint = Checkpoint(
            import_id=row.id,
            line=chunk.next_line,
            offset=chunk.next_offset,
            source_offset=chunk.source_offset,
            events_total=before.events_total + result.imported + result.failed,
            imported=before.imported + result.imported,
            failed=before.failed + result.failed,
            warnings=before.warnings + result.warnings,
            excluded=before.excluded + result.excluded,
            do_not_track=before.do_not_track + result.do_not_track,
        )
        # The store's own preparation too (checks, keys, its form of the rows): here, on the
        # reading thread, not on the writing one, which bounds an import (measured on 5M
        # enriched events: the writer busy ~12 s of ~13, the reader waiting ~2 s for it).
        prepared = self.events.prepare_batch(row.owner_id, result.batch)
        new_ids = 1 - result.replaced / result.imported if result.imported else 1.0
        return BuiltBatch(result.logs, result.line_warnings, checkpoint, prepared, new_ids)

    def _log_batch(self, row: Import, item: BuiltBatch, stop: Callable[[], bool]) -> bool:
        """A batch's log entries, then its progress entry (on the logger's thread). False when
        ``stop()`` came first: the batch is not to be written."""
        checkpoint = item.checkpoint
        line, imported, failed = checkpoint.line - 1, checkpoint.imported, checkpoint.failed
        message = f"{imported} events imported, {failed} failed, up to line {line}"
        progress = (line, "info", "progress", "progress", message, None, None, imported, failed)
        # Stored: let them go before the batch is written.
        logs, item.logs = item.logs, []
        line_warnings, item.line_warnings = item.line_warnings, []
        parts = [
            _log_rows(logs[start : start + LOG_CHUNK]) for start in range(0, len(logs), LOG_CHUNK)
        ]
        del logs
        for part in parts:  # an abort is seen between chunks
            if stop():
                return False
            self._log(row.id, part)
        del parts
        if line_warnings:  # a few rows in all (see imports/log_lines.py)
            if stop():
                return False
            self._log_runs(row.id, [run for group in line_warnings for run in group.runs()])
        del line_warnings
        if stop():
            return False
        self._log(row.id, [progress])
        return True

    def _write(
        self,
        row: Import,
        item: BuiltBatch,
        stop: threading.Event,
        staged: Future[object] | None = None,
        interrupt: Callable[[], None] | None = None,
    ) -> bool:
        """Once the logger has stored the batch's log entries: the events with their
        checkpoint in one transaction, then the progress mirror in the control store. False
        when the lease turned out to be lost. An abort noticed before the write skips it
        altogether. ``staged``: the batch staged by the store (StagedWrites), to commit;
        ``interrupt``: cancels the store's statements in flight (its staging, stopped)."""
        assert item.logged is not None, "submitted to the logger first"
        try:
            stored = item.logged.result()  # the logger's error, if any, is this write's
        except BaseException:
            self._discard(staged)
            raise
        item.logged = None
        if not stored or stop.is_set():
            if stop.is_set() and interrupt is not None:
                # Its staging may have begun after the heartbeat interrupted the writes: a
                # COPY of the whole batch waited for, 0.4-0.6 s of a PostgreSQL abort.
                interrupt()
            self._discard(staged)
            return True
        try:
            if staged is None:
                self.events.write_batch(row.owner_id, item.batch, item.checkpoint)
            else:
                cast(StagedWrites, self.events).commit_staged(staged.result(), item.checkpoint)
        except WriteInterrupted:
            if not stop.is_set():
                raise
            return True  # stopped meanwhile: the batch was rolled back, as a skipped one
        return self._record(row, item.checkpoint, committed=True)

    def _discard(self, staged: Future[object] | None) -> None:
        """Roll back a staged batch that is not to be written (one that failed to stage left
        nothing behind)."""
        if staged is None:
            return
        try:
            held = staged.result()
        except BaseException:
            return
        cast(StagedWrites, self.events).discard_staged(held)

    def _may_write(self, row: Import) -> bool:
        """Whether the import's package or pixel still exists and its importer may still
        write it (asked afresh; an owner-wide import checks each target in its lookups)."""
        if row.target == "multi":
            return True
        find = owned_package_for if row.target == "package" else pixel_for
        ref = row.package_id if row.target == "package" else row.pixel_id
        return ref is not None and self._writable(row, find, ref) is not None

    def _writable(
        self, row: Import, find: Callable[..., Package | TrackingPixel], ref: str
    ) -> Package | TrackingPixel | None:
        """The package or pixel ``ref`` names (``find``: by the control store's own rule),
        if the import's importer may write it: admin access, and the import's owner's."""
        with self.control.session() as s:
            importer = s.get(Account, row.created_by)
            if importer is None:
                return None
            try:
                return find(s, importer, row.owner.name, ref, Access.ADMIN)
            except DomainError:
                return None

    def _forget_gone_targets(
        self, row: Import, packages: Iterable[str] = (), pixels: Iterable[str] = ()
    ) -> None:
        """Delete the events written into packages or pixels that have been deleted: the
        import's own target, and ``packages`` and ``pixels`` (an owner-wide import's). The
        deletion deleted those stored before it; these are the ones written after."""
        packages, pixels = set(packages), set(pixels)
        if row.target == "package" and row.package_id is not None:
            packages.add(row.package_id)
        if row.target == "pixel" and row.pixel_id is not None:
            pixels.add(row.pixel_id)
        alive_packages, alive_pixels = self._existing(packages, pixels)
        gone_packages, gone_pixels = packages - alive_packages, pixels - alive_pixels
        if gone_packages or gone_pixels:
            self.events.delete_events(
                row.owner_id, package_ids=sorted(gone_packages), pixel_ids=sorted(gone_pixels)
            )

    def _existing(self, packages: set[str], pixels: set[str]) -> tuple[set[str], set[str]]:
        """Those of the package and pixel ids that still exist (one query each)."""
        with self.control.session() as s:
            alive_packages = (
                set(s.scalars(select(Package.id).where(Package.id.in_(packages))))
                if packages
                else set()
            )
            alive_pixels = (
                set(s.scalars(select(TrackingPixel.id).where(TrackingPixel.id.in_(pixels))))
                if pixels
                else set()
            )
        return alive_packages, alive_pixels

    def _recheck_targets(self, row: Import, lookups: Lookups) -> None:
        """An owner-wide import, before each batch: a package or pixel deleted since it was
        looked up is no longer written (one query); every TARGETS_RECHECK_SECONDS, every
        target is looked up again (the importer's rights may have changed)."""
        if row.target != "multi" or not (lookups.packages or lookups.pixels):
            return
        now = time.monotonic()
        if not lookups.recheck_at:  # the first batch's look-ups are fresh
            lookups.recheck_at = now + TARGETS_RECHECK_SECONDS
        elif now >= lookups.recheck_at:
            lookups.packages.clear()
            lookups.pixels.clear()
            lookups.recheck_at = now + TARGETS_RECHECK_SECONDS
            return
        alive_packages, alive_pixels = self._existing(
            {found for found in lookups.packages.values() if found is not None},
            {found for found in lookups.pixels.values() if found is not None},
        )
        for cache, alive in ((lookups.packages, alive_packages), (lookups.pixels, alive_pixels)):
            for ref, found in cache.items():
                if found is not None and found not in alive:
                    cache[ref] = None

    def _lookups(self, row: Import) -> Lookups:
        """Who may write where, asked of the control store once per distinct value."""

        pixel_packages: dict[str, str | None] = {}  # each pixel found: its package's id

        def writable(find: Callable[..., Package | TrackingPixel]) -> Callable[[str], str | None]:
            """The control store's own rule: the importer needs admin access to the artifact,
            and it must belong to the import's owner."""

            def look_up(ref: str) -> str | None:
                found = self._writable(row, find, ref)
                if isinstance(found, TrackingPixel):
                    pixel_packages[found.id] = found.package_id
                return None if found is None else found.id

            return look_up

        enrichment = None
        if self.enricher is not None:
            with self.control.session() as s:
                enrichment = self.enricher.for_import(exclusion_rules(s, row.owner_id))
        return Lookups(
            package=writable(owned_package_for),
            pixel=writable(pixel_for),
            pixel_package=pixel_packages.get,
            stored_ids=lambda ids: self.events.stored_ids(row.owner_id, ids),
            stored_targets=self._stored_targets(row),
            enrichment=enrichment,
            keep_ip_addresses=self.keep_ip_addresses,
        )

    def _stored_targets(self, row: Import) -> Callable[[pa.Array], pa.Table] | None:
        """For an importer who may not write all of the owner's artifacts (now: asked again
        at each lease renewal), the look-up of the stored events a batch's ids name, so that a
        line never replaces an event of a package or pixel they may not write; None for one
        who may write them all."""
        with self.control.session() as s:
            importer = s.get(Account, row.created_by)
            if importer is not None and writes_every_artifact(s, importer, row.owner):
                return None
        return lambda ids: self.events.stored_targets(row.owner_id, ids)

    def _log(self, import_id: str, rows: Iterable[control_imports.LogRow]) -> None:
        """Store the log rows ``rows`` (made as they go in) in one transaction."""
        with self.control.session() as s:
            control_imports.write_log_rows(s, import_id, rows)

    def _log_runs(self, import_id: str, runs: Sequence[control_imports.RunRow]) -> None:
        """Store a batch's runs of warnings (see imports/log_lines.py) in one transaction."""
        with self.control.session() as s:
            control_imports.write_log_runs(s, import_id, runs)

    def _record(self, row: Import, checkpoint: Checkpoint, *, committed: bool = False) -> bool:
        """The checkpoint's counts into the control store; ``committed``: by this attempt."""
        progress = control_imports.Progress(
            lines_processed=checkpoint.line - 1,
            bytes_processed=checkpoint.source_offset,
            events_total=checkpoint.events_total,
            imported=checkpoint.imported,
            failed=checkpoint.failed,
            warnings=checkpoint.warnings,
            excluded=checkpoint.excluded,
            do_not_track=checkpoint.do_not_track,
        )
        with self.control.session() as s:
            return control_imports.record_progress(
                s, row.id, self.name, progress, committed=committed
            )

    def _upload(self, row: Import) -> Path:
        """The upload's file: where the import says, or of the same name in this process's
        spool (the data dir was moved since, or mounted elsewhere: an import keeps its
        upload's absolute path)."""
        for path in self._upload_paths(row):
            if path.is_file():
                return path
        raise UploadMissing(Path(row.spool_path), alone=not self.events.capabilities.multi_process)

    def _upload_paths(self, row: Import) -> list[Path]:
        paths = [Path(row.spool_path)]
        if self.spool_dir is not None:
            paths.append(self.spool_dir / paths[0].name)
        return paths

    def _finish(self, row: Import, state: str, reason: str | None = None) -> None:
        with self.control.session() as s:
            finished = control_imports.finish(s, row.id, self.name, state, reason)
        if finished:
            for path in self._upload_paths(row):
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)


class WorkerPool:
    """``count`` worker threads sharing one control store and one event store, and, given the
    spool's directory, its sweeper (imports/spool.py: a process with no workers sweeps too)."""

    def __init__(
        self,
        control: ControlDatabase,
        events: EventStore,
        *,
        count: int,
        lease: timedelta,
        enricher: Enricher | None = None,
        keep_ip_addresses: bool = False,
        spool_dir: Path | None = None,
    ) -> None:
        # The embedded store's process is the only one using its data dir: at its start, no
        # other is receiving an upload, so a file of no import is one cut off (by a kill), and
        # goes at once rather than after STALE_AFTER.
        alone = not events.capabilities.multi_process
        self._sweeper = (
            None
            if spool_dir is None
            else SpoolSweeper(
                control, spool_dir, first_stale_after=timedelta(0) if alone else STALE_AFTER
            )
        )
        self.workers = [
            ImportWorker(
                control,
                events,
                lease=lease,
                enricher=enricher,
                keep_ip_addresses=keep_ip_addresses,
                spool_dir=spool_dir,
            )
            for _ in range(count)
        ]
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    @classmethod
    def from_settings(
        cls, settings: Settings, control: ControlDatabase, events: EventStore, *, count: int
    ) -> WorkerPool:
        """The pool ``eventport serve`` and ``eventport worker`` run, enrichment set up (its
        data loads here, once per process, and only if there are workers to use it)."""
        enricher = None
        if count > 0:
            key = origin_key(settings.origin_secret, lambda: server_secret(control, ORIGIN_KEY))
            enricher = open_enricher(
                enabled=settings.enrichment,
                key=key,
                city_database=settings.geoip_city_database,
                asn_database=settings.geoip_asn_database,
            )
        return cls(
            control,
            events,
            count=count,
            lease=timedelta(seconds=settings.lease_seconds),
            enricher=enricher,
            keep_ip_addresses=settings.keep_ip_addresses,
            spool_dir=settings.spool_dir,
        )

    def start(self) -> None:
        if self._sweeper is not None:
            self._sweeper.start()
        if self.workers:
            # The import keeps many small objects alive per batch; the default thresholds make
            # the cyclic GC run constantly (15-20% of parse time, measured by bench/parse.py).
            gc.set_threshold(50_000, 20, 100)
        for worker in self.workers:
            thread = threading.Thread(
                target=_run_named,
                args=(worker, self._stop, self._wake),
                name=worker.name,
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """A new import is waiting: idle workers look now rather than at their next poll."""
        self._wake.set()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        if self._sweeper is not None:
            self._sweeper.stop()


def _run_named(worker: ImportWorker, stop: threading.Event, wake: threading.Event) -> None:
    """A pool's thread: named "import-worker" for the operating system (it reads, decodes and
    builds an import's batches), then the worker's loop."""
    name_this_thread("import-worker")
    worker.run(stop, wake)
