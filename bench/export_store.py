"""Benchmark export from the event stores: ``export_batches`` rows/s and ``aggregate`` latency.

Fills each store with ``--events`` synthetic, enriched-looking events (times spread over 2024,
~200 countries, a few companies and clouds, origin ids that repeat, some DNT and bot events, a
package and a pixel) with ``write_batch`` in large batches, then measures, warm:

* ``export_batches`` of a whole year of one owner's events, 24 columns: rows/s consuming the
  Arrow batches, and the same again written as CSV by ``pyarrow.csv`` (an upper bound for a
  CSV export); peak RSS growth of the process while exporting;
* ``aggregate`` latency (median of several runs) of a 31-day daily by-country aggregate, plus a
  few others for comparison.

Only the store calls are timed, not making the data.

    .venv/bin/python bench/export_store.py                      # DuckDB 10M, PostgreSQL 1M
    .venv/bin/python bench/export_store.py --store duckdb --events 1000000
    .venv/bin/python bench/export_store.py --store postgresql --pg-events 10000000
    .venv/bin/python bench/export_store.py --ordered     # batches in time order, like log files
"""

from __future__ import annotations

import argparse
import io
import os
import random
import resource
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv

from eventport.events.duckdb_layout import ROW_GROUP_ROWS
from eventport.events.duckdb_store import DuckDBEventStore
from eventport.events.postgres_store import PostgresEventStore
from eventport.events.schema import COLUMN_NAMES, Batch, Checkpoint
from eventport.events.store import EventStore, libpq_url
from eventport.export.query import EventQuery, Rollup

ADMIN_URL = os.environ.get(
    "EVENTPORT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
START = datetime(2024, 1, 1, tzinfo=UTC)
START_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
YEAR_US = 366 * 24 * 3600 * 1_000_000
OWNER = "0190c8a2-6e4b-7c1d-9f3e-5a2b1c0d9e8f"
PACKAGE = "0190c8a2-0000-7000-8000-00000000beef"
PIXEL = "0190c8a2-0000-7000-8000-00000000f00d"

#: The columns a v2 CSV export carries (24; the internal ones are left out).
EXPORT_COLUMNS = [
    "id", "time", "package_id", "pixel_id", "type", "version", "referer", "user_agent",
    "domain", "variables", "origin_id", "endpoint_id", "origin_latitude", "origin_longitude",
    "origin_country", "origin_state", "origin_city", "origin_postal",
    "origin_connection_type", "origin_company", "origin_domain", "cloud_provider_name",
    "platform", "client",
]  # fmt: skip

COUNTRIES = [f"{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(200)]
COMPANIES = [
    ("Deutsche Telekom AG", "telekom.de", "isp"),
    ("Comcast Cable", "comcast.com", "isp"),
    ("Amazon.com, Inc.", "amazon.com", "hosting"),
    ("Massachusetts Institute of Technology", "mit.edu", "education"),
    ("US Department of Energy", "energy.gov", "government"),
    ("Acme Corp", "acme.example", "business"),
    (None, None, None),
]
CLOUDS = [("AWS", "aws.amazon.com"), ("Google Cloud", "cloud.google.com"), (None, None)]
CLIENTS = [
    ("Linux", "pip", "24.0"),
    ("Linux", "npm", "10.2.4"),
    ("macOS", "Homebrew", "4.2.10"),
    ("Windows", "Chrome", "122.0.0"),
    ("Linux", "curl", "8.5.0"),
    (None, None, None),
]
VERSIONS = ["1.0.0", "1.0.1", "1.1.0", "2.0.0-rc.1", "2.0.0", "2.0.1", "2.1.0", None]
USER_AGENTS = ["pip/24.0 CPython/3.11.8", "npm/10.2.4 node/v20.11.0 linux x64", "curl/8.5.0"]


_COORDINATES: dict[tuple[str, int], tuple[float, float]] = {}


def city_coordinates(country: str, city: int) -> tuple[float, float]:
    """The same made-up coordinates for a city every time."""
    found = _COORDINATES.get((country, city))
    if found is None:
        place = random.Random(f"{country}/{city}")
        found = _COORDINATES[country, city] = (place.uniform(-60, 70), place.uniform(-180, 180))
    return found


def make_batch(
    rnd: random.Random, size: int, first: int, origins: list[str], times: list[int]
) -> Batch:
    """``size`` events numbered from ``first``: one owner, 90% package, 10% pixel events."""
    line = list(range(first, first + size))
    pixel = [rnd.random() < 0.1 for _ in line]
    company = rnd.choices(COMPANIES, k=size)
    cloud = rnd.choices(CLOUDS, weights=[1, 1, 8], k=size)
    client = rnd.choices(CLIENTS, k=size)
    # A place is its city's: coordinates, state and city go together (as in GeoLite data).
    cities = [(c, rnd.randrange(20)) for c in rnd.choices(COUNTRIES, k=size)]
    country = [c for c, _ in cities]
    flags = rnd.choices([(False, False), (True, False), (False, True)], [94, 3, 3], k=size)
    batch: Batch = {
        "id": [str(uuid.UUID(int=rnd.getrandbits(128))) for _ in line],  # as $unique_ids are
        "owner_id": [OWNER] * size,
        "package_id": [None if p else PACKAGE for p in pixel],
        "pixel_id": [PIXEL if p else None for p in pixel],
        "import_id": ["bench-import"] * size,
        "line": line,
        "time": times,
        "type": ["download"] * size,
        "version": rnd.choices(VERSIONS, k=size),
        "referer": rnd.choices([None, None, None, "https://github.com/"], k=size),
        "user_agent": rnd.choices(USER_AGENTS, k=size),
        "domain": rnd.choices(["pkgs.example.com", "get.example.io"], k=size),
        "variables": rnd.choices([None, "os=linux&arch=x64", "os=mac+os&v=%C3%A9"], k=size),
        "origin_id": rnd.choices(origins, k=size),
        "endpoint_id": rnd.choices(origins, k=size),
        "origin_latitude": [city_coordinates(c, i)[0] for c, i in cities],
        "origin_longitude": [city_coordinates(c, i)[1] for c, i in cities],
        "origin_country": country,
        "origin_state": [f"{c}-{i % 5}" for c, i in cities],
        "origin_city": [f"City {c}{i}" for c, i in cities],
        "origin_postal": [None] * size,
        "origin_connection_type": [c[2] for c in company],
        "origin_company": [c[0] for c in company],
        "origin_domain": [c[1] for c in company],
        "cloud_provider_name": [c[0] for c in cloud],
        "cloud_provider_domain": [c[1] for c in cloud],
        "platform": [c[0] for c in client],
        "client": [c[1] for c in client],
        "client_version": [c[2] for c in client],
        "dnt": [f[0] for f in flags],
        "excluded": [f[1] for f in flags],
    }
    for name in COLUMN_NAMES:
        batch.setdefault(name, [None] * size)
    return batch


def fill(store: EventStore, events: int, batch_rows: int, ordered: bool) -> None:
    """Random times over the year in every batch, or (``ordered``) batches in time order, as
    an import of a log file would arrive."""
    rnd = random.Random(5)
    origins = [f"{rnd.getrandbits(128):032x}" for _ in range(max(1, events // 20))]
    written, seconds = 0, 0.0
    while written < events:
        size = min(batch_rows, events - written)
        if ordered:
            low = START_US + YEAR_US * written // events
            high = START_US + YEAR_US * (written + size) // events
            times = sorted(rnd.randrange(low, high) for _ in range(size))
        else:
            times = [START_US + rnd.randrange(YEAR_US) for _ in range(size)]
        batch = make_batch(rnd, size, written + 1, origins, times)
        started = time.perf_counter()
        line = written + size + 1
        store.write_batch(OWNER, batch, Checkpoint("bench-import", line, 0, 0, 0, 0, 0, 0))
        seconds += time.perf_counter() - started
        written += size
    order = "in time order" if ordered else "random times over the year"
    print(f"  filled {written:,} events ({order}): write_batch {written / seconds:,.0f} rows/s")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def query(days: int | None = None) -> EventQuery:
    end = START + timedelta(days=days) if days else START + timedelta(days=366)
    return EventQuery(OWNER, START, end, (PACKAGE,), (PIXEL,), {PIXEL: PACKAGE})


def bench_export(store: EventStore) -> None:
    q = query()
    rss_before = peak_rss_mb()
    started = time.perf_counter()
    rows = batches = 0
    for batch in store.export_batches(q, EXPORT_COLUMNS):
        rows += batch.num_rows
        batches += 1
    seconds = time.perf_counter() - started
    print(
        f"  export_batches, {len(EXPORT_COLUMNS)} columns: {rows:,} rows in {batches} batches, "
        f"{seconds:.1f} s = {rows / seconds:,.0f} rows/s "
        f"(peak RSS grew {peak_rss_mb() - rss_before:,.0f} MB)"
    )

    class Discard(io.RawIOBase):  # counts the CSV bytes, keeps none
        size = 0

        def writable(self) -> bool:
            return True

        def write(self, data: object) -> int:
            n = memoryview(data).nbytes  # type: ignore[arg-type]
            self.size += n
            return n

    started = time.perf_counter()
    sink = Discard()
    batches_iter = store.export_batches(q, EXPORT_COLUMNS)
    first = next(batches_iter)
    with pacsv.CSVWriter(sink, first.schema) as writer:
        writer.write_batch(first)
        for batch in batches_iter:
            writer.write_batch(batch)
    seconds = time.perf_counter() - started
    print(
        f"  export_batches + pyarrow CSV: {rows / seconds:,.0f} rows/s "
        f"({sink.size / seconds / 1e6:,.0f} MB/s of CSV)"
    )


def time_aggregate(store: EventStore, days: int, rollup: Rollup, breakdown: str) -> None:
    q = query(days)
    runs: list[float] = []
    groups = 0
    for _ in range(4):  # the first warms caches; the median of the rest is reported
        started = time.perf_counter()
        groups = sum(1 for _ in store.aggregate(q, rollup, breakdown))
        runs.append(time.perf_counter() - started)
    print(
        f"  aggregate {days:>3} days {rollup:<7} {breakdown:<12}: median "
        f"{statistics.median(runs[1:]) * 1000:7.1f} ms (first {runs[0] * 1000:7.1f} ms, "
        f"{groups:,} rows)"
    )


def bench_store(store: EventStore, events: int, batch_rows: int, ordered: bool) -> None:
    store.setup()
    fill(store, events, batch_rows, ordered)
    time_aggregate(store, 31, "daily", "by-country")
    time_aggregate(store, 31, "daily", "by-total")
    time_aggregate(store, 366, "daily", "by-total")
    time_aggregate(store, 366, "weekly", "by-company")
    time_aggregate(store, 31, "daily", "by-variable")
    bench_export(store)


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
        store = DuckDBEventStore(path, threads=args.duckdb_threads)
        print(f"DuckDB, {args.events:,} events (threads={args.duckdb_threads or 'default'})")
        try:
            bench_store(store, args.events, ROW_GROUP_ROWS, args.ordered)
        finally:
            store.close()


def bench_postgres(args: argparse.Namespace) -> None:
    with temporary_postgres() as url:
        store = PostgresEventStore(url)
        print(f"PostgreSQL, {args.pg_events:,} events")
        try:
            bench_store(store, args.pg_events, 50_000, args.ordered)
        finally:
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark export from the event stores.")
    parser.add_argument("--store", choices=["duckdb", "postgresql", "all"], default="all")
    parser.add_argument("--events", type=int, default=10_000_000, help="DuckDB events")
    parser.add_argument("--pg-events", type=int, default=1_000_000, help="PostgreSQL events")
    parser.add_argument("--duckdb-threads", type=int, default=None)
    parser.add_argument(
        "--ordered", action="store_true", help="batches in time order (default: random times)"
    )
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; pyarrow {pa.__version__}")
    benches: dict[str, Callable[[argparse.Namespace], None]] = {
        "duckdb": bench_duckdb,
        "postgresql": bench_postgres,
    }
    for name, bench in benches.items():
        if args.store in (name, "all"):
            bench(args)


if __name__ == "__main__":
    main()
