"""How an embedded store's per-batch work grows with the events it holds.

Fills a DuckDB event store in a temporary directory with batches of new events, a row group
(``ROW_GROUP_ROWS``) each (random UUID ids, the row columns an import writes), and prints, at
the stored sizes asked for, how long the batch's ``existing_ids`` look-up and its
``write_batch`` took: the median of the last 8 batches (single batches jump when DuckDB
checkpoints). Only those two calls are timed, not making the batches.

    .venv/bin/python bench/growing_store.py                        # to 20.4M, 64 MB id filter
    .venv/bin/python bench/growing_store.py --id-filter-mb 128
    .venv/bin/python bench/growing_store.py --id-filter-mb 0        # no filter: the scans
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow as pa

from eventport.events.batch import AGENT_SCHEMA, PLACE_SCHEMA, ROW_SCHEMA, EventBatch
from eventport.events.duckdb_layout import ROW_GROUP_ROWS
from eventport.events.duckdb_store import DuckDBEventStore
from eventport.events.schema import Checkpoint

BATCH = ROW_GROUP_ROWS  # what an import writes
START = 1_700_000_000_000_000  # microseconds


def batch(number: int, rng: random.Random) -> EventBatch:
    first = number * BATCH
    columns: dict[str, pa.Array] = {}
    for field in ROW_SCHEMA:
        name = field.name
        if name == "id":
            values = pa.array([str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(BATCH)])
        elif name in ("owner_id", "import_id", "package_id"):
            values = pa.array(["owner-1" if name == "owner_id" else "x"] * BATCH)
        elif name == "line":
            values = pa.array(range(first + 1, first + BATCH + 1), pa.int64())
        elif name == "time":
            values = pa.array([START + (first + i) * 1_000_000 for i in range(BATCH)], pa.int64())
        elif name in ("origin_id", "endpoint_id"):
            values = pa.array([os.urandom(16).hex() for _ in range(BATCH)])
        elif name in ("dnt", "excluded"):
            values = pa.array([False] * BATCH)
        else:
            values = pa.nulls(BATCH, field.type)
        columns[name] = values.cast(field.type)
    rows = pa.table(columns, schema=ROW_SCHEMA)
    return EventBatch(rows, PLACE_SCHEMA.empty_table(), AGENT_SCHEMA.empty_table())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_500_000)
    parser.add_argument("--report", default="1400000,5400000,10400000,20400000")
    parser.add_argument("--id-filter-mb", type=int, default=64)
    args = parser.parse_args()
    sizes = [int(size) for size in args.report.split(",")]
    rng = random.Random(3)
    print(f"cores: {os.cpu_count()}, id filter: {args.id_filter_mb} MB, batches of {BATCH:,}")
    with tempfile.TemporaryDirectory() as tmp:
        store = DuckDBEventStore(
            Path(tmp) / "events.duckdb", id_filter_bytes=args.id_filter_mb << 20
        )
        store.setup()
        times: list[tuple[float, float]] = []
        try:
            for number in range(-(-args.events // BATCH)):
                events = batch(number, rng)
                started = time.perf_counter()
                store.existing_ids("owner-1", events.rows.column("id").combine_chunks())
                looked = time.perf_counter()
                line = (number + 1) * BATCH + 1
                store.write_batch(
                    "owner-1", events, Checkpoint("import", line, 0, 0, 0, 0, 0, 0, 0, 0)
                )
                written = time.perf_counter()
                times = [*times[-7:], (looked - started, written - looked)]
                stored = number * BATCH
                if any(stored <= size < stored + BATCH for size in sizes):  # its batch
                    look_up = statistics.median(t[0] for t in times)
                    write = statistics.median(t[1] for t in times)
                    print(
                        f"{stored:,} stored: look-up {1000 * look_up:.0f} ms, "
                        f"write {1000 * write:.0f} ms (medians of the last {len(times)} batches)",
                        flush=True,
                    )
        finally:
            store.close()


if __name__ == "__main__":
    main()
