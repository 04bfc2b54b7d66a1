"""Benchmark the event stores: write_batch and existing_ids throughput.

Writes ``--events`` synthetic events (random UUID ids, realistic user agents, times spread over
a year) in batches of ``--batch`` to each store — DuckDB in a temporary directory, PostgreSQL in
a temporary database created and dropped here — and prints rows/s. Before each batch is written
its ids are looked up with ``existing_ids``, as the import pipeline does for ``$unique_id``
events (none exist: they are fresh UUIDs); at the end, batches that half reuse stored ids are
looked up and written again (the replacement path). Only the store calls are timed, not making
the batches.

    .venv/bin/python bench/event_store.py                 # both stores, 1,000,000 events
    .venv/bin/python bench/event_store.py --store duckdb --events 5000000
    EVENTPORT_TEST_POSTGRES_URL=postgresql://… .venv/bin/python bench/event_store.py
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from eventport.events.duckdb_store import DuckDBEventStore
from eventport.events.postgres_store import PostgresEventStore
from eventport.events.schema import COLUMN_NAMES, Batch, Checkpoint, empty_batch
from eventport.events.store import EventStore, libpq_url

ADMIN_URL = os.environ.get(
    "EVENTPORT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
YEAR_US = 365 * 24 * 3600 * 1_000_000
START_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
OWNER = "0190c8a2-6e4b-7c1d-9f3e-5a2b1c0d9e8f"

USER_AGENTS = [
    "npm/10.2.4 node/v20.11.0 linux x64 workspaces/false",
    "npm/9.8.1 node/v18.19.0 darwin arm64 workspaces/false ci/github-actions",
    'pip/24.0 {"ci":null,"cpu":"x86_64","distro":{"name":"Ubuntu","version":"22.04"},'
    '"implementation":{"name":"CPython","version":"3.11.8"},"python":"3.11.8"}',
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/122.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.3 Safari/605.1.15",
    "docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/6.5.0-1015-azure os/linux arch/amd64 "
    "UpstreamClient(Docker-Client/24.0.7 \\(linux\\))",
    "containerd/1.7.11",
    "Go-http-client/1.1",
    "curl/8.5.0",
    "Homebrew/4.2.10 (Macintosh; arm64 Mac OS X 14.3) curl/8.4.0",
    "Wget/1.21.4",
    "python-requests/2.31.0",
    "Helm/3.14.0",
]
VERSIONS = ["1.0.0", "1.0.1", "1.1.0", "2.0.0-rc.1", "2.0.0", "2.0.1", "2.1.0"]
DOMAINS = ["pkgs.example.com", "get.example.io", "cdn.example.org"]


def make_batch(rnd: random.Random, size: int, owner: str, import_id: str, first_line: int) -> Batch:
    batch = empty_batch()
    batch["id"] = [str(uuid.UUID(int=rnd.getrandbits(128), version=4)) for _ in range(size)]
    batch["owner_id"] = [owner] * size
    batch["package_id"] = ["0190c8a2-0000-7000-8000-00000000beef"] * size
    batch["import_id"] = [import_id] * size
    batch["line"] = list(range(first_line, first_line + size))
    batch["time"] = [START_US + rnd.randrange(YEAR_US) for _ in range(size)]
    batch["type"] = ["download"] * size
    batch["version"] = [rnd.choice(VERSIONS) for _ in range(size)]
    batch["referer"] = [None if rnd.random() < 0.8 else "https://github.com/" for _ in range(size)]
    batch["user_agent"] = [rnd.choice(USER_AGENTS) for _ in range(size)]
    batch["domain"] = [rnd.choice(DOMAINS) for _ in range(size)]
    batch["variables"] = [f"os=linux&arch=x64&v={rnd.randrange(100)}" for _ in range(size)]
    batch["headers"] = ['[["accept","*/*"],["accept-encoding","gzip"]]'] * size
    for name in COLUMN_NAMES:
        if not batch[name]:
            batch[name] = [None] * size
    return batch


@dataclass
class Timings:
    write: list[float] = field(default_factory=list)
    lookup: list[float] = field(default_factory=list)

    def add(self, kind: str, seconds: float) -> None:
        getattr(self, kind).append(seconds)


def run(store: EventStore, events: int, batch_size: int, writers: int) -> None:
    batches = events // batch_size
    timings = Timings()
    lock = threading.Lock()
    kept: list[str] = []  # a sample of written ids, for the replacement round

    def writer(number: int) -> None:
        # Each writer imports for its own owner: one owner's batches take turns in PostgreSQL.
        owner = OWNER if number == 0 else f"{OWNER[:-4]}{number:04d}"
        rnd = random.Random(number)
        import_id = f"bench-import-{number}"
        for i in range(number, batches, writers):
            batch = make_batch(rnd, batch_size, owner, import_id, i * batch_size + 1)
            started = time.perf_counter()
            found = store.existing_ids(owner, batch["id"])
            looked = time.perf_counter()
            line = (i + 1) * batch_size + 1
            store.write_batch(owner, batch, Checkpoint(import_id, line, line * 300, 0, 0, 0, 0, 0))
            done = time.perf_counter()
            assert not found
            with lock:
                timings.add("lookup", looked - started)
                timings.add("write", done - looked)
                if number == 0:
                    kept.extend(batch["id"][: batch_size // 2])

    started = time.perf_counter()
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    stored = store.count()
    assert stored == batches * batch_size, stored

    report("existing_ids (fresh ids)", batch_size, timings.lookup)
    report("write_batch (new events)", batch_size, timings.write)
    both = [a + b for a, b in zip(timings.lookup, timings.write, strict=True)]
    report("existing_ids + write_batch", batch_size, both)
    if writers > 1:
        rate = stored / wall
        print(f"  {writers} writers, wall clock (incl. making batches): {rate:,.0f} events/s")

    # Replacement round: half of each batch reuses stored ids.
    rnd = random.Random(99)
    replace_lookup, replace_write = [], []
    rounds = min(4, len(kept) // (batch_size // 2))
    for i in range(rounds):
        batch = make_batch(rnd, batch_size, OWNER, "bench-replace", i * batch_size + 1)
        reused = rnd.sample(kept, batch_size // 2)
        batch["id"][: len(reused)] = reused
        started = time.perf_counter()
        found = store.existing_ids(OWNER, batch["id"])
        replace_lookup.append(time.perf_counter() - started)
        assert found == set(reused), (len(found), len(reused))
        started = time.perf_counter()
        line = (i + 1) * batch_size + 1
        store.write_batch(OWNER, batch, Checkpoint("bench-replace", line, 0, 0, 0, 0, 0, 0))
        replace_write.append(time.perf_counter() - started)
        used = set(reused)
        kept = [k for k in kept if k not in used]
    assert store.count() == stored + rounds * (batch_size - batch_size // 2)
    report(f"existing_ids (half exist, table of {stored:,})", batch_size, replace_lookup)
    report("write_batch (half replace)", batch_size, replace_write)


def report(label: str, batch_size: int, seconds: list[float]) -> None:
    total = sum(seconds)
    print(
        f"  {label:44s} {batch_size * len(seconds) / total:12,.0f} rows/s"
        f"   (per batch: median {statistics.median(seconds) * 1000:6.1f} ms,"
        f" max {max(seconds) * 1000:6.1f} ms)"
    )


@contextmanager
def temporary_postgres() -> Iterator[str]:
    name = f"eventport_bench_{os.getpid()}"
    admin_url = libpq_url(ADMIN_URL)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_duckdb(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="eventport-bench-") as tmp:
        path = Path(tmp) / "events.duckdb"
        store = DuckDBEventStore(
            path, threads=args.duckdb_threads, checkpoint_threshold=args.duckdb_checkpoint
        )
        print(f"DuckDB ({path}, threads={args.duckdb_threads or 'default'})")
        try:
            store.setup()
            run(store, args.events, args.batch, 1)
        finally:
            store.close()
        print(f"  file size after close: {path.stat().st_size / 1e6:,.0f} MB")


def bench_postgres(args: argparse.Namespace) -> None:
    with temporary_postgres() as url:
        store = PostgresEventStore(url)
        print(f"PostgreSQL ({url})")
        try:
            store.setup()
            run(store, args.events, args.batch, args.writers)
        finally:
            store.close()
        with psycopg.connect(url) as conn:
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        assert size is not None
        print(f"  database size: {size[0] / 1e6:,.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark the event stores.")
    parser.add_argument("--store", choices=["duckdb", "postgresql", "all"], default="all")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--writers", type=int, default=1, help="PostgreSQL writer threads")
    parser.add_argument("--duckdb-threads", type=int, default=None)
    parser.add_argument("--duckdb-checkpoint", default="256MB")
    args = parser.parse_args()
    print(f"{args.events:,} events in batches of {args.batch:,}, {os.cpu_count()} CPUs")
    benches: dict[str, Callable[[argparse.Namespace], None]] = {
        "duckdb": bench_duckdb,
        "postgresql": bench_postgres,
    }
    for name, bench in benches.items():
        if args.store in (name, "all"):
            bench(args)


if __name__ == "__main__":
    main()
