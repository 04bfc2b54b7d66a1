"""kill -9 a server in the middle of an import; the restarted server finishes it exactly.

The same file is imported, uninterrupted, for a second owner; both owners must end with the
same counts, the same log and the same stored events: nothing lost, nothing doubled.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from eventport.events.store import is_postgres_url, open_event_store
from tests.acceptance.test_cli import EVENTPORT
from tests.conftest import free_port

LINES = 300_000


def make_file(path: Path) -> None:
    """Valid events with and without $unique_id, reused ids, and broken lines, in one file."""
    rng = random.Random(3)
    with path.open("wb") as out:
        for line in range(1, LINES + 1):
            roll = rng.random()
            if roll < 0.01:
                out.write(b'{"$time": "not a time"}\n')
            elif roll < 0.02:
                out.write(b'{"$time": 1717459200, "$unique_id": "reused-%d"}\n' % (line % 50))
            elif roll < 0.10:
                out.write(b'{"$time": %d, "n": %d}\n' % (1717459200 + line, line))
            else:
                event = {
                    "$time": 1717459200 + line,
                    "$unique_id": f"u{line}",
                    "$version": "1.0",
                    "$remote_address": "10.0.0.1",
                    "plan": rng.choice(["pro", "free"]),
                }
                out.write(orjson.dumps(event) + b"\n")


class Serve:
    """``eventport serve`` as a real process we may kill."""

    def __init__(
        self, env: dict[str, str], log: Path, *, file_size_limit: int | None = None
    ) -> None:
        """``file_size_limit``: the largest file the process may write (RLIMIT_FSIZE), so
        that a write past it fails as on a full disk."""
        self.env, self.log = env, log
        self.file_size_limit = file_size_limit
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [EVENTPORT, "serve", "--port", str(self.port)],
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                preexec_fn=self._limit if self.file_size_limit is not None else None,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"server did not start: {self.log.read_text()[-2000:]}")

    def _limit(self) -> None:  # in the child, before exec
        assert self.file_size_limit is not None
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_size_limit, self.file_size_limit))

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)


@pytest.fixture
def env(tmp_path: Path, backend: str) -> dict[str, str]:
    values = {
        **os.environ,
        "EVENTPORT_DATA_DIR": str(tmp_path / "data"),
        "EVENTPORT_WORKERS": "1",
        "EVENTPORT_LEASE_SECONDS": "2",
        "EVENTPORT_LOG_LEVEL": "warning",
    }
    values.pop("EVENTPORT_DATABASE_URL", None)
    if backend.startswith("postgresql"):
        values["EVENTPORT_DATABASE_URL"] = backend
    return values


@pytest.fixture
def serve(env: dict[str, str], tmp_path: Path) -> Iterator[Serve]:
    server = Serve(env, tmp_path / "serve.log")
    server.start()
    yield server
    server.stop()


def user(env: dict[str, str], name: str) -> str:
    result = subprocess.run(
        [EVENTPORT, "users", "create", name, "--email", f"{name}@example.com"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.split()[-1]


def upload(url: str, token: str, owner: str, path: Path) -> tuple[httpx.Client, str]:
    """A client of ``token``'s user, and the import of ``path`` into a new package of
    ``owner``."""
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
    package = client.post(f"/v2/packages/{owner}", json={"name": "widget", "type": "npm"}).json()
    return client, send(client, owner, package["id"], path)


def send(client: httpx.Client, owner: str, package_id: str, path: Path) -> str:
    """The id of a new import of the NDJSON file ``path`` into the package."""
    with path.open("rb") as body:
        started = client.post(
            f"/v2/packages/{owner}/{package_id}/import",
            content=body,
            headers={"Content-Type": "application/x-ndjson"},
        )
    assert started.status_code == 200, started.text
    import_id: str = started.json()["id"]
    return import_id


def log_codes(client: httpx.Client, owner: str, import_id: str) -> list[tuple[Any, str]]:
    """(line, code) of each entry of an import's log but its progress entries."""
    lines = client.get(f"/v2/imports/{owner}/{import_id}/log").text.splitlines()
    entries = [orjson.loads(line) for line in lines]
    return [(e.get("line"), e["code"]) for e in entries if e["type"] != "progress"]


def stored_events(env: dict[str, str], names: tuple[str, ...]) -> dict[str, list[tuple[Any, ...]]]:
    """Each of ``names``' stored events, as comparable tuples, sorted."""
    store = open_event_store(env.get("EVENTPORT_DATABASE_URL"), Path(env["EVENTPORT_DATA_DIR"]))
    try:
        ids = owner_ids(env, names)
        return {
            name: sorted(
                (
                    r["id"].split(":")[-1] if ":" in r["id"] else r["id"],
                    r["line"],
                    r["time"],
                    r["version"],
                    r["variables"],
                )
                for r in store.rows(ids[name])
            )
            for name in names
        }
    finally:
        store.close()


def wait_done(client: httpx.Client, owner: str, import_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status: dict[str, Any] = client.get(f"/v2/imports/{owner}/{import_id}").json()
        if status["status"] != "importing":
            return status
        time.sleep(0.1)
    raise AssertionError(f"import never finished: {status}")


def comparable(status: dict[str, Any]) -> tuple[int, ...]:
    return (
        status["events_total"],
        status["events_successfully_imported"],
        status["events_failed_to_import"],
        status["warnings_total"],
    )


def test_kill_9_mid_import_then_resume(serve: Serve, env: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "events.ndjson"
    make_file(data)
    victim_token, calm_token = user(env, "victim"), user(env, "calm")

    victim, victim_import = upload(serve.url, victim_token, "victim", data)
    deadline = time.monotonic() + 120
    while True:  # kill once the first batches are committed, well before the end
        status = victim.get(f"/v2/imports/victim/{victim_import}").json()
        if 0 < status["events_total"] < LINES:
            break
        assert status["status"] == "importing", status
        assert time.monotonic() < deadline
        time.sleep(0.01)
    serve.kill()
    victim.close()

    serve.start()  # the same data; the dead worker's lease runs out, and the import resumes
    victim = httpx.Client(
        base_url=serve.url, headers={"Authorization": f"Bearer {victim_token}"}, timeout=120
    )
    resumed = wait_done(victim, "victim", victim_import)
    calm, calm_import = upload(serve.url, calm_token, "calm", data)
    uninterrupted = wait_done(calm, "calm", calm_import)

    assert resumed["status"] == uninterrupted["status"] == "done"
    assert comparable(resumed) == comparable(uninterrupted)
    assert resumed["events_total"] == LINES
    assert log_codes(victim, "victim", victim_import) == log_codes(calm, "calm", calm_import)
    victim.close()
    calm.close()
    serve.stop()

    stored = stored_events(env, ("victim", "calm"))
    assert len(stored["victim"]) == len(stored["calm"]) > 0
    assert stored["victim"] == stored["calm"]


def owner_ids(env: dict[str, str], names: tuple[str, ...]) -> dict[str, str]:
    """The account id of each of ``names``, from the control store of ``env``."""
    from eventport.control.accounts import account_by_name
    from eventport.control.database import ControlDatabase
    from eventport.settings import Settings

    settings = Settings(
        data_dir=Path(env["EVENTPORT_DATA_DIR"]), database_url=env.get("EVENTPORT_DATABASE_URL")
    )
    db = ControlDatabase(settings.resolved_database_url())
    try:
        with db.session() as s:
            result = {}
            for name in names:
                account = account_by_name(s, name)
                assert account is not None
                result[name] = account.id
            return result
    finally:
        db.dispose()


def test_an_upload_cut_off_by_kill_9_is_deleted_once_stale(
    serve: Serve, env: dict[str, str]
) -> None:
    """The server killed while an upload arrives leaves a partial file (raw addresses in it)
    and no import. Restarted, the embedded server deletes it at once (no other process uses
    its data dir); on PostgreSQL a server deletes such a file once nothing has written to it
    for an hour (until then it may be an upload another server process is receiving)."""
    token = user(env, "cutoff")
    client = httpx.Client(
        base_url=serve.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    package = client.post("/v2/packages/cutoff", json={"name": "w", "type": "npm"}).json()
    line = b'{"$time": 1717459200, "$remote_address": "52.94.76.61"}\n'

    def body() -> Iterator[bytes]:
        while True:  # never ends: the server dies first
            yield line * 1000
            time.sleep(0.01)

    def send() -> None:
        with contextlib.suppress(httpx.TransportError):
            client.post(
                f"/v2/packages/cutoff/{package['id']}/import",
                content=body(),
                headers={"Content-Type": "application/x-ndjson"},
            )

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    spool = Path(env["EVENTPORT_DATA_DIR"]) / "spool"
    deadline = time.monotonic() + 30
    while not [p for p in spool.glob("*.upload") if p.stat().st_size > 100_000]:
        assert time.monotonic() < deadline, "the upload never reached the spool"
        time.sleep(0.05)
    serve.kill()
    sender.join(timeout=30)
    client.close()
    (partial,) = spool.glob("*.upload")
    assert b"52.94.76.61" in partial.read_bytes()

    serve.start()
    if not is_postgres_url(env.get("EVENTPORT_DATABASE_URL")):
        assert not partial.exists()
        return
    assert partial.exists()  # too fresh to tell from an upload still arriving: kept
    serve.stop()
    stale = time.time() - 2 * 3600
    os.utime(partial, (stale, stale))
    serve.start()
    assert not partial.exists()
