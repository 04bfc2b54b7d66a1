"""End-to-end export benchmark: a real server, exports over HTTP.

    python bench/export.py --events 10000000             # embedded default (SQLite + DuckDB)
    python bench/export.py --events 1000000 --postgres   # PostgreSQL (a temporary database)
    python bench/export.py --data-dir /tmp/bench-10m      # fill once, reuse on later runs

Makes a user and a package through a real server, fills the event store with ``--events``
enriched-looking events of that package spread over 2024 (``write_batch`` straight into the
store while the server is stopped: importing them over HTTP would take far longer than the
export being measured), starts the server again and prints:

* CSV export rows/s of a 31-day ``GET /v2/packages/{owner}/{package_id}/events`` (and MB/s);
* the server's resident memory before, and its peak during a 1-day, a 10-day and the 31-day
  export (sampled every 20 ms): bounded memory stops growing once an export is larger than
  the few windows it reads at a time;
* the latency of a 31-day daily by-country ``GET /v2/packages/{owner}/aggregates`` (median of
  five, after one warm-up).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import export_store  # the event generator shared with the store benchmark
from ingest import bench_client, cli_token, client_with, free_port, memory_mb, run_server

from eventport.control.accounts import account_by_name
from eventport.control.database import ControlDatabase
from eventport.events.store import open_event_store
from eventport.settings import Settings


@contextlib.contextmanager
def serving(env: dict[str, str]) -> Iterator[tuple[int, int]]:
    port = free_port()
    server = run_server(env, port)
    try:
        yield port, server.pid
    finally:
        server.terminate()
        server.wait(timeout=60)


def sampled_peak(pid: int, stop: threading.Event, peak: list[float]) -> None:
    while not stop.wait(0.02):
        rss = memory_mb(pid).get("RssAnon", 0.0) + memory_mb(pid).get("RssFile", 0.0)
        peak[0] = max(peak[0], rss)


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def export_csv(
    client: httpx.Client, pid: int, package_id: str, end_date: str
) -> tuple[int, int, float, float, float]:
    """One CSV export from 2024-06-01 to ``end_date``: (rows, bytes, seconds, peak MB, server
    CPU seconds)."""
    stop, peak = threading.Event(), [0.0]
    watcher = threading.Thread(target=sampled_peak, args=(pid, stop, peak), daemon=True)
    watcher.start()
    rows = size = 0
    cpu = cpu_seconds(pid)
    started = time.perf_counter()
    with client.stream(
        "GET",
        f"/v2/packages/bench/{package_id}/events",
        params={"start_date": "2024-06-01", "end_date": end_date},
    ) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes(1 << 20):
            size += len(chunk)
            rows += chunk.count(b"\n")
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu
    stop.set()
    watcher.join()
    return rows - 1, size, elapsed, peak[0], cpu  # rows: less the header


def fill(env: dict[str, str], args: argparse.Namespace) -> str:
    """A user "bench" with a package, and ``args.events`` events of it; the package's id."""
    with serving(env) as (port, _):
        client, package_id = bench_client(env, port)
        client.close()
    settings = Settings(
        data_dir=Path(env["EVENTPORT_DATA_DIR"]),
        database_url=env.get("EVENTPORT_DATABASE_URL"),
    )
    control = ControlDatabase(settings.resolved_database_url())
    with control.session() as s:
        owner = account_by_name(s, "bench")
        assert owner is not None
        export_store.OWNER, export_store.PACKAGE = owner.id, package_id
    control.dispose()
    store = open_event_store(settings.database_url, settings.data_dir)
    started = time.perf_counter()
    # Embedded: whole DuckDB row groups (4 x 122,880), as imports write them (worker.slice_lines).
    batch_rows = 491_520 if not args.postgres else 100_000
    export_store.fill(store, args.events, batch_rows, not args.random_order)
    store.close()
    print(f"  (filled in {time.perf_counter() - started:.0f} s)")
    return package_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="embedded only: fill this directory once and reuse it on later runs",
    )
    parser.add_argument("--runs", type=int, default=1, help="31-day CSV exports to time")
    parser.add_argument(
        "--random-order",
        action="store_true",
        help="every batch holds times from all over the year (default: batches in time order)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        data_dir = args.data_dir if args.data_dir and not args.postgres else Path(tmp) / "data"
        env = {
            **os.environ,
            "EVENTPORT_DATA_DIR": str(data_dir),
            "EVENTPORT_WORKERS": "0",
            "EVENTPORT_LOG_LEVEL": "warning",
        }
        if args.postgres:
            from ingest import temporary_database

            env["EVENTPORT_DATABASE_URL"] = stack.enter_context(temporary_database(args.pg_admin))
        filled = data_dir / "bench-filled.json"
        wanted = {"events": args.events, "random_order": args.random_order}
        known = json.loads(filled.read_text()) if filled.exists() else {}
        if known and {name: known.get(name) for name in wanted} == wanted:
            package_id = known["package_id"]
        else:
            package_id = fill(env, args)
            if args.data_dir and not args.postgres:
                filled.write_text(json.dumps(wanted | {"package_id": package_id}))
        print(
            f"events: {args.events:,} over 2024 "
            f"({'in random order' if args.random_order else 'in time order'}), store: "
            f"{'postgresql' if args.postgres else 'embedded'}, cores: {os.cpu_count()}"
        )

        with serving(env) as (port, pid):
            client = client_with(cli_token(env, "tokens", "create", "bench"), port)
            before = memory_mb(pid)
            print(f"server resident {before['RssAnon'] + before['RssFile']:.0f} MB before")
            for days, end_date in ((1, "2024-06-02"), (10, "2024-06-11")):
                rows, size, elapsed, peak, cpu = export_csv(client, pid, package_id, end_date)
                print(
                    f"{days}-day CSV export: {rows:,} rows, {size / 1e6:.0f} MB in {elapsed:.2f} "
                    f"s; server peak {peak:.0f} MB during"
                )
            for _ in range(args.runs):
                rows, size, elapsed, peak, cpu = export_csv(client, pid, package_id, "2024-07-02")
                print(
                    f"31-day CSV export: {rows:,} rows, {size / 1e6:.0f} MB in {elapsed:.2f} s "
                    f"= {rows / elapsed:,.0f} rows/s ({size / 1e6 / elapsed:.0f} MB/s); server "
                    f"peak {peak:.0f} MB during, server CPU {cpu:.2f} s"
                )
            latencies = []
            params = {
                "start_date": "2024-06-01",
                "end_date": "2024-07-02",
                "rollup": "daily",
                "breakdown": "by-country",
            }
            for attempt in range(6):
                started = time.perf_counter()
                response = client.get("/v2/packages/bench/aggregates", params=params)
                response.raise_for_status()
                if attempt:
                    latencies.append(time.perf_counter() - started)
            lines = response.text.count("\n")
            print(
                "31-day daily by-country aggregate: median "
                f"{statistics.median(latencies) * 1000:.0f} ms over HTTP ({lines:,} lines)"
            )


if __name__ == "__main__":
    main()
