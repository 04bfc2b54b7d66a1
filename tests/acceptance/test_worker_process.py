"""`eventport worker` as a process of its own: the way to scale out on PostgreSQL."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from tests.acceptance.test_cli import EVENTPORT
from tests.acceptance.test_crash_recovery import Serve, upload, user, wait_done


def test_separate_worker_processes_share_the_work(pg_env: dict[str, str], tmp_path: Path) -> None:
    serve = Serve({**pg_env, "EVENTPORT_WORKERS": "0"}, tmp_path / "serve.log")
    serve.start()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        token = user(pg_env, "wendy")
        data = tmp_path / "events.ndjson"
        data.write_bytes(
            b"".join(b'{"$time":%d,"$unique_id":"e%d"}\n' % (i, i) for i in range(1, 20_001))
        )
        client, first = upload(serve.url, token, "wendy", data)
        time.sleep(1)
        waiting = client.get(f"/v2/imports/wendy/{first}").json()
        assert waiting["state"] == "waiting"  # the server itself runs no worker
        with (tmp_path / "workers.log").open("ab") as output:
            for _ in range(2):
                workers.append(
                    subprocess.Popen(
                        [EVENTPORT, "worker", "--workers", "1"],
                        env=pg_env,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                    )
                )
        done = wait_done(client, "wendy", first)
        assert (done["status"], done["events_successfully_imported"]) == ("done", 20_000)
        client.close()
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        for process in workers:
            assert process.wait(timeout=30) == 0
        serve.stop()
    log = (tmp_path / "workers.log").read_text()
    assert log.count("import worker(s) running") == 2


def test_a_worker_stopped_while_it_starts_exits_cleanly(pg_env: dict[str, str]) -> None:
    """SIGTERM before the workers run (while the enrichment data loads) is a clean stop."""
    process = subprocess.Popen(
        [EVENTPORT, "worker", "--workers", "1"],
        env=pg_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"starting import workers\n"  # data not loaded yet
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output.decode()
    assert b"import worker(s) running" in output  # it did start, then stopped
