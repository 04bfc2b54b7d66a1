"""An event store that fails mid-import: the worker gives the import up without hanging, and the
next attempt resumes from the last committed batch, nothing lost and nothing doubled.

The failure is injected into the real store of the test server (DuckDB or PostgreSQL): its
second ``write_batch`` raises, as a dropped connection would (tests/acceptance/test_disk_full.py
fills a real disk).
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from gzip import compress
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select, update

from eventport.control.imports import RunRow
from eventport.control.models import Account, Import
from eventport.events.store import EventStore, WriteInterrupted
from eventport.imports import worker as worker_module
from eventport.imports.worker import MAX_ATTEMPTS, ImportWorker
from tests.conftest import Server
from tests.importing import (
    WrappedStore,
    counts,
    full_log,
    setup_package,
    start,
    wait_finished,
)

EVENTS = 500
BATCH = 100


def open_files() -> set[str]:
    """The files this process holds open, or has mapped."""
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            held.add(os.readlink(f"/proc/self/fd/{fd}").removesuffix(" (deleted)"))
    with open("/proc/self/maps") as maps:
        held.update(
            line.split(None, 5)[5].strip().removesuffix(" (deleted)")
            for line in maps
            if len(line.split(None, 5)) == 6
        )
    return held


class InjectedFailure(OSError):
    pass


class FailingStore(WrappedStore):
    """The real store, except that its ``fail_on``-th write raises :class:`InjectedFailure`
    (see WrappedStore: a failed write leaves nothing of its batch, as the real store's does)."""

    def __init__(self, store: EventStore, fail_on: int) -> None:
        super().__init__(store)
        self._fail_on = fail_on
        self.writes = 0

    def before_write(self) -> None:
        self.writes += 1
        if self.writes == self._fail_on:
            raise InjectedFailure("the store broke at 10.1.2.3 (injected)")


def run_in_thread(worker: ImportWorker, timeout: float) -> tuple[bool, BaseException | None]:
    """Run one claim of ``worker``; (whether it finished within ``timeout``, what it raised)."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            worker.run_once()
        except BaseException as exc:  # handed to the test
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive(), raised[0] if raised else None


def test_a_failed_write_neither_hangs_nor_loses_or_doubles_events(server: Server) -> None:
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    body = b"".join(
        orjson.dumps({"$time": 1_717_200_000 + n, "$unique_id": f"e-{n}", "n": n}) + b"\n"
        for n in range(EVENTS)
    )
    started = start(alice, f"/v2/packages/alice/{package_id}/import", body)
    store = server.app.state.events
    failing = FailingStore(store, fail_on=2)
    lease = timedelta(seconds=1)
    first = ImportWorker(server.control, failing, lease=lease, chunk_lines=BATCH)

    gc.disable()  # the failed attempt's frames are not collected meanwhile
    try:
        finished, raised = run_in_thread(first, timeout=60)
        # The attempt let go of the upload's file: a disk filled by the import had its space
        # held until the garbage collector next ran (minutes, seen by a live probe).
        with server.control.session() as s:
            upload = s.scalar(select(Import.spool_path).where(Import.id == started["id"]))
        assert upload is not None
        assert upload not in open_files()
    finally:
        gc.enable()

    assert finished, "the worker hung after a failed write"
    assert raised is None  # the worker carries on with other imports
    assert failing.writes == 2  # nothing written after the failure
    assert store.count(import_id=started["id"]) == BATCH  # the first batch stays committed
    status = alice.get(f"/v2/imports/alice/{started['id']}").json()
    assert status["status"] == "importing"  # to be tried again once the lease runs out
    (entry,) = [e for e in full_log(alice, "alice", started["id"]) if e["type"] != "progress"]
    assert entry["type"] == "attempt-failed"
    assert entry["class"] == "warning"
    # It committed a batch: no attempt in a row without one counts against the import.
    assert (
        "attempt 1 stopped (0 of 5 in a row without a committed batch)"
        in entry["human_friendly_message"]
    )
    assert "an error (InjectedFailure)" in entry["human_friendly_message"]
    assert "10.1.2.3" not in entry["human_friendly_message"]  # the server log has the text

    second = ImportWorker(server.control, store, lease=lease, chunk_lines=BATCH)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not second.run_once():
        time.sleep(0.2)  # the failed worker's lease has not run out yet
    done = wait_finished(alice, "alice", started["id"])

    assert done["status"] == "done"
    assert counts(done) == (EVENTS, EVENTS, 0)
    with server.control.session() as s:
        owner_id = s.scalar(select(Account.id).where(Account.name == "alice"))
    assert sorted(row["id"] for row in store.rows(owner_id)) == sorted(
        f"e-{n}" for n in range(EVENTS)
    )


def started_import(server: Server) -> tuple[Any, dict[str, Any]]:
    """alice, and her waiting import of EVENTS events (ids e-0, e-1, …) into a package."""
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    body = b"".join(
        orjson.dumps({"$time": 1_717_200_000 + n, "$unique_id": f"e-{n}"}) + b"\n"
        for n in range(EVENTS)
    )
    return alice, start(alice, f"/v2/packages/alice/{package_id}/import", body)


class LeaseTakingStore(WrappedStore):
    """The real store, except that before its second write another worker takes the import
    over (as one does once a frozen worker's lease has run out). ``noticed_by`` "the write":
    the write goes on, and recording its checkpoint finds the lease gone; "the heartbeat":
    the write waits until the heartbeat has seen it and is then cut off, as the heartbeat's
    interruption of the store's statements cuts a real one off."""

    def __init__(self, store: EventStore, control: Any, import_id: str, noticed_by: str) -> None:
        super().__init__(store)
        self._control, self._import_id, self._noticed_by = control, import_id, noticed_by
        self.writes = 0

    def before_write(self) -> None:
        self.writes += 1
        if self.writes != 2:
            return
        with self._control.session() as s:
            s.execute(
                update(Import)
                .where(Import.id == self._import_id)
                .values(lease_owner="another-host:1:worker-0")
            )
        if self._noticed_by == "the heartbeat":
            time.sleep(1.0)  # the heartbeat looks every 0.25 s
            raise WriteInterrupted("cancelled by the heartbeat (injected)")


@pytest.mark.parametrize("noticed_by", ["the write", "the heartbeat"])
def test_a_worker_that_lost_its_lease_says_so_and_leaves_the_import_to_its_taker(
    server: Server, caplog: pytest.LogCaptureFixture, noticed_by: str
) -> None:
    _, started = started_import(server)
    store = LeaseTakingStore(server.app.state.events, server.control, started["id"], noticed_by)
    worker = ImportWorker(server.control, store, lease=timedelta(seconds=30), chunk_lines=BATCH)
    with caplog.at_level("WARNING", logger="eventport"):
        finished, raised = run_in_thread(worker, timeout=60)
    assert finished
    assert raised is None
    (said,) = [r.getMessage() for r in caplog.records if "lost its lease" in r.getMessage()]
    assert said.startswith(f"import {started['id']}: worker {worker.name} lost its lease")
    assert "goes on from its last committed batch" in said
    with server.control.session() as s:
        row = s.get(Import, started["id"])
        assert row is not None
        assert (row.state, row.lease_owner) == ("running", "another-host:1:worker-0")
        assert row.finished_at is None  # left to the worker that took it over
    # The write that found the lease gone was the last: its batch, committed with its
    # checkpoint, is where the taker resumes (the same derived ids, so nothing doubles); one
    # the heartbeat cut off was rolled back.
    written = 2 if noticed_by == "the write" else 1
    assert store.count(import_id=started["id"]) == written * BATCH


def test_an_import_that_no_attempt_can_finish_fails_with_a_reason(server: Server) -> None:
    alice, started = started_import(server)
    store = FailingStore(server.app.state.events, fail_on=1)
    lease = timedelta(seconds=0.5)
    attempts = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        store.writes = 0  # every attempt's first write fails
        worker = ImportWorker(server.control, store, lease=lease, chunk_lines=BATCH)
        finished, raised = run_in_thread(worker, timeout=30)
        assert finished
        assert raised is None
        if store.writes:
            attempts += 1
        if alice.get(f"/v2/imports/alice/{started['id']}").json()["status"] != "importing":
            break
        time.sleep(0.1)
    done = wait_finished(alice, "alice", started["id"])

    assert attempts == MAX_ATTEMPTS
    assert done["status"] == "failed"
    assert done["failure_reason"].startswith(f"gave up after {MAX_ATTEMPTS} attempts")
    assert counts(done) == (0, 0, 0)
    assert server.app.state.events.count(import_id=started["id"]) == 0
    log = full_log(alice, "alice", started["id"])
    logged = [e for e in log if e["type"] == "attempt-failed"]
    assert [e["human_friendly_message"].split(":")[0] for e in logged] == [
        f"attempt {n} stopped ({n} of {MAX_ATTEMPTS} in a row without a committed batch)"
        for n in range(1, MAX_ATTEMPTS + 1)
    ]
    # Nothing was committed, so nothing of the lines is logged (a progress entry of the batch
    # whose write failed said it was imported).
    assert [e for e in log if e["type"] != "attempt-failed"] == []


def test_an_upload_missing_from_the_spool_is_named_in_the_log(server: Server) -> None:
    """A worker that does not see the upload's file (it runs with another data dir than the
    server that took the upload, or the file was deleted) says so, not just "an error"."""
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    started = start(alice, f"/v2/packages/alice/{package_id}/import", b'{"$time": 1717200000}\n')
    (server.settings.spool_dir / f"{started['id']}.upload").unlink()
    store = server.app.state.events
    worker = ImportWorker(server.control, store, lease=timedelta(seconds=30), chunk_lines=BATCH)

    finished, raised = run_in_thread(worker, timeout=30)

    assert finished
    assert raised is None
    status = alice.get(f"/v2/imports/alice/{started['id']}").json()
    (entry,) = [e for e in full_log(alice, "alice", started["id"]) if e["type"] != "progress"]
    assert entry["type"] == "attempt-failed"
    message = entry["human_friendly_message"]
    assert str(server.settings.spool_dir) in message
    if not store.capabilities.multi_process:
        # No other process uses the embedded store's data dir: no other worker could read
        # the file, so the import fails at once (it held the owner's later imports behind it
        # for five attempts, ~5 minutes).
        assert status["status"] == "failed"
        assert "it was deleted, or the data dir was moved without it" in status["failure_reason"]
        return
    assert status["status"] == "importing"  # another worker may see it, once the lease ends
    assert message.startswith(
        "attempt 1 stopped (1 of 5 in a row without a committed batch): the upload's file is "
        "not in this worker"
    )
    assert "EVENTPORT_DATA_DIR" in message


class ExpectingStore:
    """The real store, noting what each ``expect_events`` call expected."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self.expected: list[int] = []

    def expect_events(self, count: int) -> None:
        self.expected.append(count)
        self._store.expect_events(count)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def expectations(server: Server, prefix: str, sent_times: int, gzip: bool = False) -> list[int]:
    """What the worker told the store to expect at each of ``sent_times`` imports of the same
    ``LINES``-line file (each import's events counted as they should be)."""
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    body = b"".join(
        orjson.dumps({"$time": 1_717_200_000 + n, "$unique_id": f"{prefix}-{n:06}"}) + b"\n"
        for n in range(LINES)
    )
    sent, headers = (compress(body), {"Content-Encoding": "gzip"}) if gzip else (body, {})
    store = ExpectingStore(server.app.state.events)
    expected: list[int] = []
    for _ in range(sent_times):
        started = start(alice, f"/v2/packages/alice/{package_id}/import", sent, **headers)
        worker = ImportWorker(
            server.control, store, lease=timedelta(seconds=30), chunk_lines=10_000
        )
        finished, raised = run_in_thread(worker, timeout=60)
        assert finished
        assert raised is None
        assert counts(wait_finished(alice, "alice", started["id"])) == (LINES, LINES, 0)
        (once,) = store.expected[len(expected) :]  # once, at the first batch
        expected.append(once)
    return expected


LINES = 40_000


@pytest.mark.parametrize("gzip", [False, True])
def test_an_import_tells_the_store_how_many_events_it_brings(server: Server, gzip: bool) -> None:
    """After its first batch the worker estimates the upload's events from the bytes that
    batch took (plain: exactly; gzip: the compressed bytes read, ahead by up to a block)."""
    (expected,) = expectations(server, "e", 1, gzip)
    if gzip:
        assert LINES // 4 <= expected <= LINES * 11 // 10  # read ahead of the lines
    else:
        assert expected == LINES * 11 // 10  # equal lines: exact, plus a tenth


def test_a_reimport_tells_the_store_it_brings_no_new_ids(server: Server) -> None:
    """The estimate counts only the events whose ids are new: importing a file again (every
    id stored) expects none, so the store reserves no room for them."""
    assert expectations(server, "r", 2) == [LINES * 11 // 10, 0]


def test_warnings_on_every_line_do_not_shrink_the_batches(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file whose times have no zone warns on every line; its batches still hold as many
    events as any other's (the warnings, held as columns, do not count against a batch)."""
    monkeypatch.setattr(worker_module, "SLICE_LINES", 100)
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    batch = 200  # read in two slices
    body = b"".join(  # no time zone: a naive-time warning on every line
        orjson.dumps({"$time": f"2024-06-01T00:00:{n % 60:02d}", "$unique_id": f"z-{n}"}) + b"\n"
        for n in range(2 * batch)
    )
    started = start(alice, f"/v2/packages/alice/{package_id}/import", body)
    store = server.app.state.events
    worker = ImportWorker(server.control, store, lease=timedelta(seconds=30), chunk_lines=batch)
    finished, raised = run_in_thread(worker, timeout=120)
    assert finished
    assert raised is None
    done = wait_finished(alice, "alice", started["id"])
    assert counts(done) == (2 * batch, 2 * batch, 0)
    assert done["warnings_total"] == 2 * batch
    log = full_log(alice, "alice", started["id"])
    progress = [(e["line"], e["events_count"]) for e in log if e["type"] == "progress"]
    assert progress == [(batch, batch), (2 * batch, 2 * batch)]  # two batches, both full


class FailingLogWorker(ImportWorker):
    """A worker whose control store fails to take the ``fail_on``-th batch's log entries."""

    def __init__(self, *args: Any, fail_on: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fail_on = fail_on
        self.batches_logged = 0

    def _log_runs(self, import_id: str, runs: Sequence[RunRow]) -> None:
        if runs and runs[0][0] == "naive-time":  # a run's code
            self.batches_logged += 1
            if self.batches_logged == self._fail_on:
                raise InjectedFailure("the control store broke (injected)")
        super()._log_runs(import_id, runs)


def test_a_batch_is_written_only_once_its_log_entries_are_stored(server: Server) -> None:
    """Log entries are stored on a thread of their own, ahead of the events: when a batch's
    entries cannot be stored, the batch is not written (its checkpoint would pass them), and
    the next attempt stores both, once."""
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    body = b"".join(  # no time zone: a naive-time warning on every line
        orjson.dumps({"$time": f"2024-06-01T00:00:{n % 60:02d}", "$unique_id": f"e-{n}"}) + b"\n"
        for n in range(EVENTS)
    )
    started = start(alice, f"/v2/packages/alice/{package_id}/import", body)
    store = server.app.state.events
    lease = timedelta(seconds=1)
    first = FailingLogWorker(server.control, store, lease=lease, chunk_lines=BATCH, fail_on=2)

    finished, raised = run_in_thread(first, timeout=60)

    assert finished, "the worker hung after a failed log write"
    assert raised is None
    assert store.count(import_id=started["id"]) == BATCH  # the first batch only
    warned = [e for e in full_log(alice, "alice", started["id"]) if e["type"] == "naive-time"]
    assert [e["line"] for e in warned] == list(range(1, BATCH + 1))

    second = ImportWorker(server.control, store, lease=lease, chunk_lines=BATCH)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not second.run_once():
        time.sleep(0.2)
    done = wait_finished(alice, "alice", started["id"])

    assert done["status"] == "done"
    assert counts(done) == (EVENTS, EVENTS, 0)
    assert store.count(import_id=started["id"]) == EVENTS
    log = full_log(alice, "alice", started["id"])
    warned = [e["line"] for e in log if e["type"] == "naive-time"]
    assert warned == list(range(1, EVENTS + 1))  # each line's entry once, in order
    assert [e["type"] for e in log].count("attempt-failed") == 1


@pytest.mark.parametrize(
    ("case", "mend"),
    [
        ("data after the end", lambda body: body + b"GARBAGE"),
        ("a cut trailer", lambda body: body[:-8]),
    ],
)
def test_a_gzip_stream_found_unusable_late_leaves_nothing_stored(
    server: Server, case: str, mend: Any
) -> None:
    """The stream's error comes after several batches' worth of good lines: the import fails
    and has stored none of them (before, the batches ahead of the error stayed, and a retry of
    the mended file doubled them: without $unique_id their ids come from the import)."""
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    # ~2 MB decoded from ~1 MB: the error is met blocks after the first batches were handed out.
    lines = b"".join(
        b'{"$time": %d, "pad": "%s"}\n' % (1717200000 + n, os.urandom(2000).hex().encode())
        for n in range(EVENTS)
    )
    body = mend(compress(lines))
    path = f"/v2/packages/alice/{package_id}/import"
    started = start(alice, path, body, **{"Content-Encoding": "gzip"})
    store = server.app.state.events
    worker = ImportWorker(server.control, store, lease=timedelta(seconds=30), chunk_lines=BATCH)

    finished, raised = run_in_thread(worker, timeout=30)

    assert (finished, raised) == (True, None)
    failed = wait_finished(alice, "alice", started["id"])
    assert failed["status"] == "failed", case
    assert "gzip stream" in failed["failure_reason"]
    assert counts(failed)[1] == 0
    with server.control.session() as s:
        owner_id = s.scalar(select(Account.id).where(Account.name == "alice"))
    assert server.app.state.events.rows(owner_id) == []
    # The mended file then imports once, whole.
    retried = start(alice, path, compress(lines), **{"Content-Encoding": "gzip"})
    finished, raised = run_in_thread(worker, timeout=30)
    assert (finished, raised) == (True, None)
    assert counts(wait_finished(alice, "alice", retried["id"])) == (EVENTS, EVENTS, 0)
    assert len(server.app.state.events.rows(owner_id)) == EVENTS


def test_a_batch_of_wide_events_ends_at_its_byte_bound(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wide events end a batch before its row count does (BATCH_BYTES), so a batch never holds
    ~1 GB of 16 KB events; nothing is lost or doubled across the extra batches."""
    monkeypatch.setattr(worker_module, "SLICE_BYTES", 64 << 10)
    monkeypatch.setattr(worker_module, "BATCH_BYTES", 256 << 10)
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    body = b"".join(
        orjson.dumps({"$time": 1_717_200_000 + n, "$unique_id": f"w-{n}", "pad": "y" * 4000})
        + b"\n"
        for n in range(EVENTS)
    )  # ~2 MB of events, one batch by their count
    started = start(alice, f"/v2/packages/alice/{package_id}/import", body)
    counting = FailingStore(server.app.state.events, fail_on=0)  # fails no write: counts them
    worker = ImportWorker(server.control, counting, lease=timedelta(seconds=30), chunk_lines=EVENTS)

    finished, raised = run_in_thread(worker, timeout=60)

    assert (finished, raised) == (True, None)
    assert counts(wait_finished(alice, "alice", started["id"])) == (EVENTS, EVENTS, 0)
    assert counting.writes >= 5  # ~2 MB in batches of ~256 KiB (one without the bound)
    with server.control.session() as s:
        owner_id = s.scalar(select(Account.id).where(Account.name == "alice"))
    stored = sorted(row["id"] for row in server.app.state.events.rows(owner_id))
    assert stored == sorted(f"w-{n}" for n in range(EVENTS))


class StoppingAfterEachWrite(WrappedStore):
    """The real store; after each batch it writes, the worker is asked to stop (as a SIGTERM
    would): the worker hands the import back at its next look."""

    def __init__(self, store: EventStore) -> None:
        super().__init__(store)
        self.worker: ImportWorker | None = None

    def write_batch(self, owner_id: str, batch: Any, checkpoint: Any) -> None:
        super().write_batch(owner_id, batch, checkpoint)
        assert self.worker is not None
        self.worker.stopping.set()

    def commit_staged(self, staged: object, checkpoint: Any) -> None:
        super().commit_staged(staged, checkpoint)
        assert self.worker is not None
        self.worker.stopping.set()


def test_clean_hand_backs_and_attempts_that_commit_do_not_fail_an_import(server: Server) -> None:
    """Only attempts in a row that commit nothing count against an import: handed back cleanly
    after every batch or two (more often than MAX_ATTEMPTS), it still finishes, whole (before,
    every claim counted, and the sixth failed the import)."""
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    events = BATCH * 4 * MAX_ATTEMPTS  # a claim commits a batch or two before it hands back
    body = b"".join(
        b'{"$time": %d, "$unique_id": "h-%d"}\n' % (1717200000 + n, n) for n in range(events)
    )
    started = start(alice, f"/v2/packages/alice/{package_id}/import", body)
    store = StoppingAfterEachWrite(server.app.state.events)
    worker = ImportWorker(server.control, store, lease=timedelta(seconds=30), chunk_lines=BATCH)
    store.worker = worker
    claims = 0
    while alice.get(f"/v2/imports/alice/{started['id']}").json()["status"] == "importing":
        assert claims < 4 * MAX_ATTEMPTS, "the import is not progressing"
        worker.stopping.clear()
        finished, raised = run_in_thread(worker, timeout=30)
        assert (finished, raised) == (True, None)
        claims += 1
    done = wait_finished(alice, "alice", started["id"])
    assert done["status"] == "done", done.get("failure_reason")
    assert counts(done) == (events, events, 0)
    assert claims > MAX_ATTEMPTS
    assert server.app.state.events.count(import_id=started["id"]) == events


def test_a_worker_that_cannot_read_an_upload_leaves_it_to_the_others(server: Server) -> None:
    """Handed back at once (not held until its lease runs out) and not claimed again by that
    worker for a while: a worker that can read the upload takes it. (PostgreSQL: any number
    of processes share it, each with its data dir.)"""
    if not server.app.state.events.capabilities.multi_process:
        pytest.skip("the embedded store's process is the only one that could read the upload")
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    started = start(alice, f"/v2/packages/alice/{package_id}/import", b'{"$time": 1717200000}\n')
    spooled = server.settings.spool_dir / f"{started['id']}.upload"
    hidden = spooled.with_suffix(".away")
    spooled.rename(hidden)  # as for a worker with another data dir
    store = server.app.state.events
    blind = ImportWorker(server.control, store, lease=timedelta(seconds=30), chunk_lines=BATCH)
    assert blind.run_once() is True
    assert blind.run_once() is False  # left to the others, not claimed again at once
    hidden.rename(spooled)
    seeing = ImportWorker(server.control, store, lease=timedelta(seconds=30), chunk_lines=BATCH)
    assert seeing.run_once() is True  # at once: no lease to wait out
    done = wait_finished(alice, "alice", started["id"])
    assert (done["status"], counts(done)) == ("done", (1, 1, 0))


class FailingEverySecondWrite(WrappedStore):
    """The real store, whose every second write fails (and leaves nothing of its batch)."""

    def __init__(self, store: EventStore) -> None:
        super().__init__(store)
        self.writes = 0

    def before_write(self) -> None:
        self.writes += 1
        if self.writes % 2 == 0:
            raise InjectedFailure("every second write fails (injected)")


def test_attempts_that_fail_after_committing_do_not_fail_an_import(server: Server) -> None:
    """Each attempt commits a batch and then fails: more attempts than MAX_ATTEMPTS, yet each
    made progress, so the import finishes, whole."""
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    events = BATCH * (MAX_ATTEMPTS + 2)
    body = b"".join(
        b'{"$time": %d, "$unique_id": "f-%d"}\n' % (1717200000 + n, n) for n in range(events)
    )
    started = start(alice, f"/v2/packages/alice/{package_id}/import", body)
    store = FailingEverySecondWrite(server.app.state.events)
    lease = timedelta(seconds=0.3)
    claims = 0
    while alice.get(f"/v2/imports/alice/{started['id']}").json()["status"] == "importing":
        assert claims < 4 * MAX_ATTEMPTS, "the import is not progressing"
        worker = ImportWorker(server.control, store, lease=lease, chunk_lines=BATCH)
        if worker.run_once():
            claims += 1
        else:
            time.sleep(0.1)  # the failed attempt's lease runs out
    done = wait_finished(alice, "alice", started["id"])
    assert done["status"] == "done", done.get("failure_reason")
    assert counts(done) == (events, events, 0)
    assert claims > MAX_ATTEMPTS
    assert server.app.state.events.count(import_id=started["id"]) == events


def test_a_moved_data_dirs_uploads_are_found_in_its_spool(server: Server, tmp_path: Path) -> None:
    """An import keeps its upload's absolute path: after the data dir moved (or is mounted
    elsewhere), a worker finds the upload in its own spool (before, the import failed after
    five attempts, and the sweeper then deleted the upload)."""
    alice = server.user("alice")
    package_id = setup_package(alice, "alice")
    started = start(alice, f"/v2/packages/alice/{package_id}/import", b'{"$time": 1717200000}\n')
    moved = tmp_path / "moved-spool"
    moved.mkdir()
    spooled = server.settings.spool_dir / f"{started['id']}.upload"
    spooled.rename(moved / spooled.name)
    store = server.app.state.events
    worker = ImportWorker(
        server.control, store, lease=timedelta(seconds=30), chunk_lines=BATCH, spool_dir=moved
    )
    assert worker.run_once() is True
    done = wait_finished(alice, "alice", started["id"])
    assert (done["status"], counts(done)) == ("done", (1, 1, 0))
    assert not (moved / spooled.name).exists()  # deleted when the import ended
