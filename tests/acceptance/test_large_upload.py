"""A large upload streams to the spool as it arrives: never whole in the server's memory.

A real ``eventport serve`` process (no import workers, so the import stays waiting and only
the upload is measured) takes a 1 GiB NDJSON body sent in chunks as it is generated. The
spool then holds every byte, the import says how many, and the server's peak resident memory
grew by far less than the body (a body held in memory would add at least 1 GiB).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson

from tests.acceptance.test_crash_recovery import Serve, user

BODY_BYTES = 1 << 30
CHUNK_LINES = 4096


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc")


def _body(total: int) -> Iterator[bytes]:
    """NDJSON lines, ``total`` bytes or a little more, in chunks of CHUNK_LINES lines (the
    same chunk again and again: the import never runs here, only the upload)."""
    chunk = b"".join(
        orjson.dumps(
            {
                "$time": "2024-05-01T12:00:00Z",
                "$unique_id": f"event-{number:012d}",
                "$user_agent": "pip/24.0",
                "padding": "x" * 150,
            }
        )
        + b"\n"
        for number in range(CHUNK_LINES)
    )
    for _ in range(-(-total // len(chunk))):
        yield chunk


def test_a_one_gib_upload_is_spooled_without_being_held_in_memory(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "EVENTPORT_DATA_DIR": str(tmp_path / "data"),
        "EVENTPORT_WORKERS": "0",
        "EVENTPORT_LOG_LEVEL": "warning",
    }
    env.pop("EVENTPORT_DATABASE_URL", None)
    server = Serve(env, tmp_path / "serve.log")
    server.start()
    try:
        assert server.process is not None
        token = user(env, "big")
        client = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=600
        )
        package = client.post("/v2/packages/big", json={"name": "big", "type": "npm"}).json()
        before = _peak_mb(server.process.pid)
        sizes: list[int] = []

        def counted() -> Iterator[bytes]:
            for chunk in _body(BODY_BYTES):
                sizes.append(len(chunk))
                yield chunk

        started = client.post(
            f"/v2/packages/big/{package['id']}/import",
            content=counted(),
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert started.status_code == 200, started.text
        grown = _peak_mb(server.process.pid) - before
        sent = sum(sizes)
        assert sent >= BODY_BYTES
        imported = started.json()
        assert imported["status"] == "importing"
        assert imported["bytes_total"] == sent
        spooled = list((tmp_path / "data" / "spool").glob(f"{imported['id']}*"))
        assert [p.stat().st_size for p in spooled] == [sent]
        # Held whole it would be >= 1024 MB more; streamed, the server's buffers stay small.
        assert grown < 100, f"the server's peak memory grew {grown:.0f} MB during the upload"
        client.close()
    finally:
        server.stop()
