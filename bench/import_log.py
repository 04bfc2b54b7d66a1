"""An import that logs every line: a real server, an HTTP upload, then the import's status and
its whole log over HTTP.

    python bench/import_log.py --events 1000000

Every event's ``$time`` has no time zone (as many exports write it), so each line gets a
``naive-time`` warning: the import writes as many log entries as events. Prints the import's
events/s, the latency of a status request once the log is full (its samples of the first errors
and warnings), the rate at which the whole log streams, and the data directory's size.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from ingest import bench_client, free_port, memory_mb, run_server, start_import


def generate(path: Path, events: int) -> None:
    rng = random.Random(3)
    with path.open("wb") as out:
        for i in range(events):
            event = {
                "$time": f"2024-03-{1 + i % 28:02d}T10:00:00",
                "$unique_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "$remote_address": f"8.8.{i % 200}.{i % 250}",
                "$user_agent": "curl/8.5.0",
            }
            out.write(orjson.dumps(event) + b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "naive.ndjson"
        generate(path, args.events)
        os.sync()
        data = Path(tmp) / "data"
        env = {
            **os.environ,
            "EVENTPORT_DATA_DIR": str(data),
            "EVENTPORT_WORKERS": "1",
            "EVENTPORT_LOG_LEVEL": "warning",
        }
        port = free_port()
        server = run_server(env, port)
        try:
            client, package_id = bench_client(env, port)
            started = time.perf_counter()
            import_id = start_import(client, package_id, path)
            while (status := client.get(f"/v2/imports/bench/{import_id}").json())["status"] == (
                "importing"
            ):
                time.sleep(0.2)
            elapsed = time.perf_counter() - started
            print(
                f"events: {args.events:,}, cores: {os.cpu_count()}; import {status['status']}: "
                f"{status['events_successfully_imported']:,} imported, "
                f"{status['warnings_total']:,} warnings, {elapsed:.2f} s = "
                f"{args.events / elapsed:,.0f} events/s"
            )
            latencies = []
            for _ in range(7):
                started = time.perf_counter()
                client.get(f"/v2/imports/bench/{import_id}").raise_for_status()
                latencies.append(time.perf_counter() - started)
            print(
                "status request with a full log: median "
                f"{statistics.median(latencies) * 1000:.0f} ms"
            )
            started = time.perf_counter()
            lines = size = 0
            with client.stream("GET", f"/v2/imports/bench/{import_id}/log") as log:
                for chunk in log.iter_bytes():
                    size += len(chunk)
                    lines += chunk.count(b"\n")
            elapsed = time.perf_counter() - started
            print(
                f"whole log: {lines:,} entries, {size / 1e6:.0f} MB in {elapsed:.2f} s = "
                f"{lines / elapsed:,.0f} entries/s; server peak RSS "
                f"{memory_mb(server.pid)['VmHWM']:.0f} MB"
            )
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
        stored = sum(f.stat().st_size for f in data.rglob("*") if f.is_file())
        print(f"data directory: {stored / 1e6:.0f} MB")
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
