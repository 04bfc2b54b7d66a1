"""Scale-out on PostgreSQL under failure: `eventport worker` processes killed with SIGKILL while
they hold imports of several owners at once, twice; the survivors and replacements finish every
import exactly: the same counts, log and stored events as an import nothing interrupted.

Each kill picks the process that holds a lease on an import that is part-way through (the
lease's owner names its process id), so every kill interrupts real work.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import create_engine, text

from eventport.settings import normalize_database_url
from tests.acceptance.test_cli import EVENTPORT
from tests.acceptance.test_crash_recovery import (
    LINES,
    Serve,
    comparable,
    log_codes,
    make_file,
    send,
    stored_events,
    upload,
    user,
    wait_done,
)

OWNERS = ("chaos-a", "chaos-b", "chaos-c", "chaos-d")  # imported at once, under fire
CALM = "chaos-calm"  # the same file afterwards, nothing killed


class Workers:
    """`eventport worker --workers 2` processes, started and killed at will."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.running: dict[int, subprocess.Popen[bytes]] = {}
        self.killed = 0

    def start(self) -> None:
        with self.log.open("ab") as output:
            process = subprocess.Popen(
                [EVENTPORT, "worker", "--workers", "2"],
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.running[process.pid] = process

    def kill(self, pid: int) -> None:
        process = self.running.pop(pid)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        self.killed += 1

    def stop(self) -> list[int]:
        for process in self.running.values():
            process.send_signal(signal.SIGTERM)
        return [process.wait(timeout=60) for process in self.running.values()]


@pytest.fixture
def workers(pg_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(pg_env, tmp_path / "workers.log")
    yield pool
    for process in pool.running.values():  # a failed test's survivors
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def _leases(url: str, import_ids: list[str]) -> list[tuple[str, int, int]]:
    """(import id, pid of the lease's owner, lines processed) of each running import named."""
    engine = create_engine(normalize_database_url(url))
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT id, lease_owner, lines_processed FROM imports "
                    "WHERE state = 'running' AND lease_owner IS NOT NULL"
                )
            ).all()
    finally:
        engine.dispose()
    # worker names are host:pid:suffix (imports/worker.py worker_name)
    return [(i, int(owner.split(":")[1]), lines) for i, owner, lines in rows if i in import_ids]


def _attempts(url: str, import_ids: list[str]) -> dict[str, int]:
    engine = create_engine(normalize_database_url(url))
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT id, attempts FROM imports")).all()
    finally:
        engine.dispose()
    return {i: attempts for i, attempts in rows if i in import_ids}


def _kill_one_mid_import(workers: Workers, url: str, import_ids: list[str]) -> str:
    """SIGKILL the worker process holding an import that is part-way through; its id."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for import_id, pid, lines in _leases(url, import_ids):
            if 0 < lines < LINES and pid in workers.running:
                workers.kill(pid)
                return import_id
        time.sleep(0.02)
    raise AssertionError("no import was part-way through a worker that could be killed")


def test_worker_processes_killed_mid_import_lose_and_double_nothing(
    pg_env: dict[str, str], workers: Workers, tmp_path: Path
) -> None:
    data = tmp_path / "events.ndjson"
    make_file(data)
    url = pg_env["EVENTPORT_DATABASE_URL"]
    serve = Serve({**pg_env, "EVENTPORT_WORKERS": "0"}, tmp_path / "serve.log")
    serve.start()
    try:
        tokens = {name: user(pg_env, name) for name in (*OWNERS, CALM)}
        imports = {name: upload(serve.url, tokens[name], name, data) for name in OWNERS}
        import_ids = [import_id for _, import_id in imports.values()]
        workers.start()
        workers.start()  # two processes of two workers: all four imports run at once

        first = _kill_one_mid_import(workers, url, import_ids)
        workers.start()
        second = _kill_one_mid_import(workers, url, import_ids)
        workers.start()

        finished = {name: wait_done(client, name, i) for name, (client, i) in imports.items()}
        calm_client, calm_import = upload(serve.url, tokens[CALM], CALM, data)
        reference = wait_done(calm_client, CALM, calm_import)
        assert reference["status"] == "done"
        assert reference["events_total"] == LINES

        attempts = _attempts(url, import_ids)
        assert attempts[first] >= 2, attempts  # resumed after its worker died
        assert attempts[second] >= 2, attempts
        assert workers.killed == 2
        for name, status in finished.items():
            assert status["status"] == "done", (name, status)
            assert comparable(status) == comparable(reference), name
        reference_log = log_codes(calm_client, CALM, calm_import)
        for name, (client, import_id) in imports.items():
            assert log_codes(client, name, import_id) == reference_log, name
            client.close()
        calm_client.close()
    finally:
        codes = workers.stop()
        serve.stop()
    assert codes == [0, 0]  # the survivors stop cleanly on SIGTERM

    stored = stored_events(pg_env, (*OWNERS, CALM))
    assert len(stored[CALM]) > 0
    for name in OWNERS:
        assert stored[name] == stored[CALM], name


def test_one_owners_imports_run_in_upload_order_on_any_number_of_workers(
    pg_env: dict[str, str], workers: Workers, tmp_path: Path
) -> None:
    """Two imports of one owner, uploaded before two worker processes start, share half their
    ``$unique_id``s: the second runs once the first is done (run side by side, each looked up
    the stored ids before the other wrote and no replacement was warned about), so each id is
    stored once, the second import's event of it kept, and each shared id warned about once."""
    lines, shared = 60_000, 30_000
    first, second = tmp_path / "first.ndjson", tmp_path / "second.ndjson"
    for path, ids in ((first, range(lines)), (second, range(lines - shared, 2 * lines - shared))):
        path.write_bytes(
            b"".join(
                orjson.dumps({"$time": 1717459200 + n, "$unique_id": f"s{n}", "n": n}) + b"\n"
                for n in ids
            )
        )
    serve = Serve({**pg_env, "EVENTPORT_WORKERS": "0"}, tmp_path / "serve.log")
    serve.start()
    try:
        token = user(pg_env, "chaos-one")
        client, first_import = upload(serve.url, token, "chaos-one", first)
        (package,) = client.get("/v2/packages/chaos-one").json()["results"]
        second_import = send(client, "chaos-one", package["id"], second)
        workers.start()
        workers.start()
        done = [wait_done(client, "chaos-one", i) for i in (first_import, second_import)]
        client.close()
    finally:
        codes = workers.stop()
        serve.stop()
    assert codes == [0, 0]
    assert [status["status"] for status in done] == ["done", "done"]
    assert [status["events_successfully_imported"] for status in done] == [lines, lines]
    assert done[1]["started_at"] >= done[0]["finished_at"]
    assert [status["warnings_total"] for status in done] == [0, shared]  # duplicate-unique-id
    stored = stored_events(pg_env, ("chaos-one",))["chaos-one"]
    assert sorted(row[0] for row in stored) == sorted(f"s{n}" for n in range(2 * lines - shared))
    lines_of = {row[0]: row[1] for row in stored}
    assert lines_of[f"s{lines - shared}"] == 1  # the second file's first line replaced it
    assert lines_of[f"s{lines - 1}"] == shared
