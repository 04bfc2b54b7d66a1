"""A server whose disk fills: an upload it cannot store is a clear 507 and leaves nothing; an
import whose events no longer fit fails after its attempts, with what was stored counted.

A real ``eventport serve`` process runs with a file size limit (RLIMIT_FSIZE), so its files
stop growing as they would on a full disk: the kernel refuses the write (EFBIG; a full disk
gives ENOSPC, handled alike).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson

from eventport.events.store import open_event_store
from eventport.imports.worker import MAX_ATTEMPTS
from tests.acceptance.test_crash_recovery import Serve, user

LIMIT = 8 << 20
LINE = orjson.dumps({"$time": "2024-05-01T12:00:00Z", "padding": "x" * 200}) + b"\n"


def _body(total: int) -> Iterator[bytes]:
    chunk = LINE * 1000
    for _ in range(-(-total // len(chunk))):
        yield chunk


@contextlib.contextmanager
def full_server(tmp_path: Path, limit: int, **settings: str) -> Iterator[tuple[httpx.Client, str]]:
    """A real server that may write files of at most ``limit`` bytes, and a client of a user
    "full": (client, the import path of their package "w")."""
    env = {
        **os.environ,
        "EVENTPORT_DATA_DIR": str(tmp_path / "data"),
        "EVENTPORT_LOG_LEVEL": "warning",
        **settings,
    }
    env.pop("EVENTPORT_DATABASE_URL", None)
    server = Serve(env, tmp_path / "serve.log", file_size_limit=limit)
    server.start()
    with contextlib.ExitStack() as stack:
        stack.callback(server.stop)
        token = user(env, "full")
        client = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=120
        )
        stack.callback(client.close)
        package = client.post("/v2/packages/full", json={"name": "w", "type": "npm"}).json()
        yield client, f"/v2/packages/full/{package['id']}/import"


def test_an_upload_past_the_room_left_is_a_507_and_leaves_nothing(tmp_path: Path) -> None:
    with full_server(tmp_path, LIMIT, EVENTPORT_WORKERS="0") as (client, path):
        refused = client.post(
            path, content=_body(LIMIT + (4 << 20)), headers={"Content-Type": "application/x-ndjson"}
        )

        assert refused.status_code == 507, refused.text
        assert refused.json()["code"] == "insufficient-storage"
        assert "no room to store the upload" in refused.json()["message"]
        assert "nothing was imported" in refused.json()["message"]
        assert list((tmp_path / "data" / "spool").glob("*")) == []  # the partial spool is gone
        assert client.get("/v2/imports/full").json()["event_imports"] == []

        small = client.post(
            path, content=LINE * 10, headers={"Content-Type": "application/x-ndjson"}
        )
        assert small.status_code == 200, small.text  # the server carries on
        assert small.json()["status"] == "importing"


def _events(count: int) -> bytes:
    """Events that gzip poorly (random ids and addresses): a spool that fits in the limit
    whose events, stored, do not."""
    rng = random.Random(1)
    return b"".join(
        orjson.dumps(
            {
                "$time": 1_717_200_000 + n,
                "$unique_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "$remote_address": f"{rng.randint(1, 223)}.{rng.randint(0, 255)}."
                f"{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                "$user_agent": "pip/24.0",
                "v": rng.random(),
            }
        )
        + b"\n"
        for n in range(count)
    )


def test_an_import_that_fills_the_disk_fails_with_what_was_stored_counted(tmp_path: Path) -> None:
    body = gzip.compress(_events(300_000))
    assert len(body) < 16 << 20  # the spool fits; the stored events (~40 MB) do not
    settings = {"EVENTPORT_WORKERS": "1", "EVENTPORT_LEASE_SECONDS": "1"}
    with full_server(tmp_path, 16 << 20, **settings) as (client, path):
        started = client.post(
            path,
            content=body,
            headers={"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"},
        ).json()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            status = client.get(f"/v2/imports/full/{started['id']}").json()
            if status["status"] != "importing":
                break
            time.sleep(0.2)
        log = client.get(f"/v2/imports/full/{started['id']}/log").content.splitlines()
        assert client.get("/healthz").status_code == 200  # the server carries on

    assert status["status"] == "failed", status
    assert status["failure_reason"].startswith(f"gave up after {MAX_ATTEMPTS} attempts")
    entries = [orjson.loads(line) for line in log]
    attempts = [e["human_friendly_message"] for e in entries if e["type"] == "attempt-failed"]
    # The first attempt committed batches before the disk filled: only the five after it, in
    # a row without a committed batch, count against the import.
    assert len(attempts) == MAX_ATTEMPTS + 1
    assert [m.split(":")[0].split("(")[1] for m in attempts] == [
        f"{n} of {MAX_ATTEMPTS} in a row without a committed batch)"
        for n in range(MAX_ATTEMPTS + 1)
    ]
    assert all("the server could not write (File too large" in m for m in attempts)
    imported = status["events_successfully_imported"]
    assert 0 < imported < 300_000
    assert list((tmp_path / "data" / "spool").glob("*")) == []
    events = open_event_store(None, tmp_path / "data")  # the server has stopped
    try:
        assert events.count(import_id=started["id"]) == imported  # counted as stored
    finally:
        events.close()
