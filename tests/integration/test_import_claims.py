"""Which import a worker claims: one owner's imports one at a time, in upload order; different
owners' side by side; a dead worker's import first again. On SQLite and PostgreSQL, each test
on a control database of its own (no other server's workers may claim its imports)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from eventport.control import accounts
from eventport.control import imports as control_imports
from eventport.control.database import ControlDatabase
from eventport.control.models import Account, Import
from tests.conftest import postgres_database

LEASE = timedelta(seconds=30)


@pytest.fixture
def control(backend: str, tmp_path: Path) -> Iterator[ControlDatabase]:
    urls = (
        iter([f"sqlite:///{tmp_path / 'control.sqlite3'}"])
        if backend.startswith("sqlite")
        else postgres_database()
    )
    for url in urls:
        db = ControlDatabase(url)
        db.migrate()
        try:
            yield db
        finally:
            db.dispose()


def _owner(db: ControlDatabase, name: str) -> Account:
    with db.session() as s:
        account, _ = accounts.create_user(s, name, f"{name}@example.com")
        s.expunge(account)
        return account


def _upload(db: ControlDatabase, owner: Account) -> str:
    new = control_imports.NewImport(
        id=str(uuid.uuid4()),
        owner=owner,
        target="multi",
        package_id=None,
        pixel_id=None,
        format="ndjson",
        compression="identity",
        spool_path="/nonexistent",
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
    control: ControlDatabase,
) -> None:
    ana, ben = _owner(control, "ana"), _owner(control, "ben")
    ana_first, ana_second, ben_first, ana_third = (
        _upload(control, ana),
        _upload(control, ana),
        _upload(control, ben),
        _upload(control, ana),
    )
    assert _claim(control, "w1") == ana_first
    assert _claim(control, "w2") == ben_first  # another owner's runs beside it
    assert _claim(control, "w3") is None  # ana's second waits for her first
    _finish(control, ana_first, "w1")
    assert _claim(control, "w3") == ana_second
    _finish(control, ana_second, "w3", "failed")  # a failed import lets the next go too
    assert _claim(control, "w1") == ana_third
    assert _claim(control, "w2") is None


def test_a_dead_workers_import_is_resumed_before_the_owners_next(
    control: ControlDatabase,
) -> None:
    ana = _owner(control, "ana")
    first, second = _upload(control, ana), _upload(control, ana)
    assert _claim(control, "w1") == first
    assert _claim(control, "w2") is None
    with control.session() as s:  # w1 died: its lease ran out
        s.execute(
            update(Import)
            .where(Import.id == first)
            .values(lease_expires_at=control_imports.utcnow() - timedelta(seconds=1))
        )
    assert _claim(control, "w2") == first
    assert _claim(control, "w3") is None
    _finish(control, first, "w2")
    assert _claim(control, "w3") == second


def test_an_aborted_waiting_import_lets_the_next_one_go(control: ControlDatabase) -> None:
    ana = _owner(control, "ana")
    first, second = _upload(control, ana), _upload(control, ana)
    with control.session() as s:
        control_imports.request_abort(s, ana, "ana", first)
    assert _claim(control, "w1") == second
