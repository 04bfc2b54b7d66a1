"""The spool's sweep (imports/spool.py): upload files no import will read are deleted, since
they hold raw IP addresses; files of imports still to run, and uploads perhaps still arriving,
stay. SQLite and PostgreSQL, each test on a control database of its own. A real server killed
mid-upload: tests/acceptance/test_crash_recovery.py."""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from eventport.control.database import ControlDatabase
from eventport.control.models import Import
from eventport.events.store import open_event_store
from eventport.imports.spool import STALE_AFTER, sweep
from eventport.imports.worker import WorkerPool
from tests.integration.test_import_claims import make_import, make_owner


def _file(spool: Path, name: str, *, age: timedelta = timedelta(0)) -> Path:
    path = spool / name
    path.write_bytes(b'{"$time": 1717200000, "$remote_address": "52.94.76.60"}\n')
    if age:
        stamp = time.time() - age.total_seconds()
        os.utime(path, (stamp, stamp))
    return path


def test_the_sweep_deletes_what_no_import_will_read(
    own_control: ControlDatabase, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    ana = make_owner(own_control, "ana")
    waiting_id, running_id, done_id, failed_id, aborted_id = (str(uuid.uuid4()) for _ in range(5))
    kept = {
        "waiting": _file(spool, f"{waiting_id}.upload", age=2 * STALE_AFTER),
        "running": _file(spool, f"{running_id}.upload", age=2 * STALE_AFTER),
        # no import (yet): an upload another server process may still be receiving
        "arriving": _file(spool, f"{uuid.uuid4()}.upload", age=STALE_AFTER / 2),
        "not an upload": _file(spool, "notes.txt", age=2 * STALE_AFTER),
        "not an import's": _file(spool, "backup.upload", age=2 * STALE_AFTER),
    }
    gone = {
        state: _file(spool, f"{import_id}.upload")
        for state, import_id in (("done", done_id), ("failed", failed_id), ("aborted", aborted_id))
    }
    gone["cut off"] = _file(spool, f"{uuid.uuid4()}.upload", age=STALE_AFTER * 1.5)
    ids = {
        "waiting": waiting_id,
        "running": running_id,
        "done": done_id,
        "failed": failed_id,
        "aborted": aborted_id,
    }
    for state, import_id in ids.items():
        made = make_import(own_control, ana, str(spool / f"{import_id}.upload"), import_id)
        assert made == import_id
        with own_control.session() as s:
            s.execute(update(Import).where(Import.id == import_id).values(state=state))

    deleted = sweep(own_control, spool)

    assert sorted(deleted) == sorted(gone.values())
    assert not [name for name, path in gone.items() if path.exists()]
    assert [name for name, path in kept.items() if not path.exists()] == []


def test_the_sweep_of_no_spool_does_nothing(own_control: ControlDatabase, tmp_path: Path) -> None:
    assert sweep(own_control, tmp_path / "spool") == []


def test_an_embedded_servers_start_sweeps_uploads_cut_off_at_once(
    own_control: ControlDatabase, store_database: str | None, tmp_path: Path
) -> None:
    """The embedded store's process is the only one using its data dir: when it starts, a file
    of no import is an upload a kill cut off (with raw addresses in it), and goes at once. It
    stayed for an hour before. A PostgreSQL deployment's other servers may be receiving one."""
    spool = tmp_path / "spool"
    spool.mkdir()
    cut_off = _file(spool, f"{uuid.uuid4()}.upload", age=timedelta(seconds=5))
    events = open_event_store(store_database, tmp_path)
    pool = WorkerPool(own_control, events, count=0, lease=timedelta(seconds=5), spool_dir=spool)
    try:
        pool.start()
        pool.stop()
    finally:
        events.close()
    assert cut_off.exists() is events.capabilities.multi_process
