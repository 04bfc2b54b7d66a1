"""Which import a worker claims: one owner's imports one at a time, in upload order; different
owners' side by side; a dead worker's import first again. On SQLite and PostgreSQL, each test
on a control database of its own (no other server's workers may claim its imports)."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text, update

from eventport.control import accounts, models
from eventport.control import imports as control_imports
from eventport.control.database import ControlDatabase
from eventport.control.models import Account, Import
from eventport.events.store import open_event_store
from eventport.imports.worker import ImportWorker

LEASE = timedelta(seconds=30)


def make_owner(db: ControlDatabase, name: str) -> Account:
    with db.session() as s:
        account, _ = accounts.create_user(s, name, f"{name}@example.com")
        s.expunge(account)
        return account


def make_import(
    db: ControlDatabase,
    owner: Account,
    spool_path: str = "/nonexistent",
    import_id: str | None = None,
) -> str:
    """A waiting import of ``owner`` whose upload is at ``spool_path``; its id."""
    new = control_imports.NewImport(
        id=import_id or str(uuid.uuid4()),
        owner=owner,
        target="multi",
        package_id=None,
        pixel_id=None,
        format="ndjson",
        compression="identity",
        spool_path=spool_path,
        bytes_total=0,
    )
    with db.session() as s:
        return control_imports.create_import(s, owner, new, limit=15).id


def _claim(db: ControlDatabase, worker: str) -> str | None:
    with db.session() as s:
        row = control_imports.claim_next(s, worker, LEASE)
        return None if row is None else row.id


def _finish(db: ControlDatabase, import_id: str, worker: str, state: str = "done") -> None:
    with db.session() as s:
        assert control_imports.finish(s, import_id, worker, state)


def test_one_owners_imports_are_claimed_one_at_a_time_in_upload_order(
    own_control: ControlDatabase,
) -> None:
    ana, ben = make_owner(own_control, "ana"), make_owner(own_control, "ben")
    ana_first, ana_second, ben_first, ana_third = (
        make_import(own_control, ana),
        make_import(own_control, ana),
        make_import(own_control, ben),
        make_import(own_control, ana),
    )
    assert _claim(own_control, "w1") == ana_first
    assert _claim(own_control, "w2") == ben_first  # another owner's runs beside it
    assert _claim(own_control, "w3") is None  # ana's second waits for her first
    _finish(own_control, ana_first, "w1")
    assert _claim(own_control, "w3") == ana_second
    _finish(own_control, ana_second, "w3", "failed")  # a failed import lets the next go too
    assert _claim(own_control, "w1") == ana_third
    assert _claim(own_control, "w2") is None


def test_a_dead_workers_import_is_resumed_before_the_owners_next(
    own_control: ControlDatabase,
) -> None:
    ana = make_owner(own_control, "ana")
    first, second = make_import(own_control, ana), make_import(own_control, ana)
    assert _claim(own_control, "w1") == first
    assert _claim(own_control, "w2") is None
    with own_control.session() as s:  # w1 died: its lease ran out
        s.execute(
            update(Import)
            .where(Import.id == first)
            .values(lease_expires_at=control_imports.utcnow() - timedelta(seconds=1))
        )
    assert _claim(own_control, "w2") == first
    assert _claim(own_control, "w3") is None
    _finish(own_control, first, "w2")
    assert _claim(own_control, "w3") == second


def test_an_aborted_waiting_import_lets_the_next_one_go(own_control: ControlDatabase) -> None:
    ana = make_owner(own_control, "ana")
    first, second = make_import(own_control, ana), make_import(own_control, ana)
    with own_control.session() as s:
        control_imports.request_abort(s, ana, "ana", first)
    assert _claim(own_control, "w1") == second


def test_an_abort_racing_a_claim_leaves_the_import_to_its_worker(
    own_control: ControlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker claims the import between the abort's read of it (waiting) and its write: the
    worker keeps it and is told to stop, and the caller is not told to delete its upload.
    Written from the row read, the claim was overwritten (aborted, the worker's lease kept)
    and the API deleted the upload the worker was reading (an import-lifecycle hunt)."""
    ana = make_owner(own_control, "ana")
    import_id = make_import(own_control, ana)
    read = control_imports.import_for

    def read_then_claimed(session: Any, *args: Any) -> Import:
        row = read(session, *args)
        assert row.state == "waiting"
        assert _claim(own_control, "w1") == import_id  # a worker, in between
        return row

    monkeypatch.setattr(control_imports, "import_for", read_then_claimed)
    with own_control.session() as s:
        row, at_once = control_imports.request_abort(s, ana, "ana", import_id)
        assert at_once is False
        assert (row.state, row.lease_owner, row.abort_requested) == ("running", "w1", True)
    with own_control.session() as s:
        assert control_imports.still_wanted(s, import_id, "w1") is False  # it stops


def test_an_abort_asked_as_the_import_ends_ends_it_aborted(own_control: ControlDatabase) -> None:
    """The worker's last look at the abort flag came before the abort, its finish after: the
    import ends aborted, everything it committed counted (it ended done: the abort, answered
    204, was dropped)."""
    ana = make_owner(own_control, "ana")
    import_id, other = make_import(own_control, ana), make_import(own_control, ana)
    assert _claim(own_control, "w1") == import_id
    with own_control.session() as s:
        _, at_once = control_imports.request_abort(s, ana, "ana", import_id)
    assert at_once is False
    with own_control.session() as s:
        assert control_imports.finish(s, import_id, "w1", "done") is True
    with own_control.session() as s:
        row = s.get(Import, import_id)
        assert row is not None
        assert (row.state, row.lease_owner) == ("aborted", None)
        assert row.finished_at is not None
        assert row.bytes_processed == row.bytes_total
    assert _claim(own_control, "w2") == other  # and the owner's next goes
    with own_control.session() as s:
        assert control_imports.finish(s, other, "w2", "done") is True
        ended = s.get(Import, other)
        assert ended is not None
        assert ended.state == "done"


def test_on_postgresql_the_database_clock_orders_imports_and_times_leases(
    own_control: ControlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """API and worker processes on hosts whose clocks differ: an upload taken by a host an hour
    behind still runs after the one before it, and a lease taken by such a host does not look
    run out to the others (before, each process stamped imports and leases with its own
    clock)."""
    if own_control.engine.dialect.name != "postgresql":
        pytest.skip("an embedded (SQLite) store serves one host")
    ana, ben = make_owner(own_control, "ana"), make_owner(own_control, "ben")
    first = make_import(own_control, ana)
    behind = models.utcnow() - timedelta(hours=1)
    with monkeypatch.context() as slow:
        slow.setattr(control_imports, "utcnow", lambda: behind)
        slow.setattr(models, "utcnow", lambda: behind)
        second = make_import(own_control, ana)
        bens = make_import(own_control, ben)
        assert _claim(own_control, "slow-worker") == first
        assert _claim(own_control, "slow-worker") == bens
    with own_control.session() as s:
        listed = [row.id for row in s.query(Import).order_by(Import.created_at, Import.id)]
    assert listed == [first, second, bens]
    # Both leases are live by the database's clock: no other worker takes either.
    assert _claim(own_control, "w2") is None


def test_on_postgresql_an_imports_rate_and_updates_go_by_the_database_clock(
    own_control: ControlDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An API host whose clock is 5 s behind the database's measured a running import's rate
    against its own clock: 1e11 events/s and an ETA of 0 (a clock ahead: too slow a rate);
    and a worker on such a host stamped updated_at before the import's created_at."""
    if own_control.engine.dialect.name != "postgresql":
        pytest.skip("an embedded (SQLite) store serves one host")
    from eventport.api.v2 import imports as api_imports

    ana = make_owner(own_control, "ana")
    import_id = make_import(own_control, ana)
    assert _claim(own_control, "w1") == import_id
    time.sleep(0.05)  # so that 1000 events take at least that long
    behind = models.utcnow() - timedelta(seconds=5)
    with monkeypatch.context() as slow:
        for module in (control_imports, models, api_imports):
            # (raising=False: the API has no utcnow of its own now; one added back is slowed)
            slow.setattr(module, "utcnow", lambda: behind, raising=False)
        with own_control.session() as s:
            s.execute(update(Import).where(Import.id == import_id).values(events_total=1000))
            control_imports.release(s, import_id, "w1")
        with own_control.session() as s:
            row = s.get(Import, import_id)
            assert row is not None
            assert row.updated_at >= row.created_at
            row.state = "running"  # as claimed again, the start kept
            s.flush()
            body = api_imports.event_import(s, row)
        with own_control.session() as s:
            aborted, _ = control_imports.request_abort(s, ana, "ana", import_id)
            assert aborted.updated_at >= aborted.created_at
    assert body["events_per_second"] < 1_000_000, body  # 1000 events over >= ~0 s, not 1 us


def test_workers_stop_once_a_newer_version_has_migrated_the_database(
    own_control: ControlDatabase, store_database: str | None, tmp_path: Path
) -> None:
    """An upgrade's process started beside this one migrates the database: this process's
    workers claim nothing more (an older version's went on writing events as its schema
    wanted, beside the new one's: a rolling upgrade on PostgreSQL stored ids twice)."""
    ana = make_owner(own_control, "ana")
    import_id = make_import(own_control, ana)
    assert own_control.schema_is_newer() is False
    with own_control.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_a_later_version'"))
    assert own_control.schema_is_newer() is True
    events = open_event_store(store_database, tmp_path)
    try:
        worker = ImportWorker(own_control, events, lease=timedelta(seconds=5))
        assert worker.run_once() is False
        assert worker.stopping.is_set()
    finally:
        events.close()
    with own_control.session() as s:
        row = s.get(Import, import_id)
        assert row is not None
        assert row.state == "waiting"
