"""Micro-benchmark of the import hot path: reading (formats.py) plus decoding (records.py).

Writes 200,000 NDJSON lines shaped like a pip download to a temporary file, then times
``iter_chunks`` + ``decode_ndjson`` over it (single process, best of a few runs) and prints
lines per second, also for each half on its own, for the gzip-compressed file and for the
same events as CSV.

    .venv/bin/python bench/parse.py [LINES]
"""

from __future__ import annotations

import csv
import gzip
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson

from eventport.imports.decoding import decode_chunk
from eventport.imports.formats import iter_chunks
from eventport.imports.records import decode_csv, decode_ndjson

USER_AGENT = (
    "pip/24.0 "
    + orjson.dumps(
        {
            "ci": None,
            "cpu": "x86_64",
            "distro": {"name": "Ubuntu", "version": "22.04", "id": "jammy"},
            "implementation": {"name": "CPython", "version": "3.11.7"},
            "installer": {"name": "pip", "version": "24.0"},
            "openssl_version": "OpenSSL 3.0.2 15 Mar 2022",
            "python": "3.11.7",
            "system": {"name": "Linux", "release": "5.15.0-105-generic"},
        }
    ).decode()
)


def make_file(path: Path, lines: int) -> None:
    with path.open("wb") as f:
        for i in range(lines):
            second = i // 50  # 50 events per second, sorted by time
            f.write(
                orjson.dumps(
                    {
                        "$time": time.strftime(
                            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(1717459200 + second)
                        ),
                        "$unique_id": str(uuid.uuid4()),
                        "$remote_address": "1.2.3.4",
                        "$user_agent": USER_AGENT,
                        "$version": "1.2.3",
                        "$type": "download",
                        "tag": "x",
                    }
                )
                + b"\n"
            )


def make_csv(source: Path, path: Path) -> None:
    names = ["$time", "$unique_id", "$remote_address", "$user_agent", "$version", "$type", "tag"]
    with source.open("rb") as f, path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(names)
        for line in f:
            obj = orjson.loads(line)
            writer.writerow([obj[name] for name in names])


def best_of(runs: int, fn: Callable[[], int]) -> tuple[float, int]:
    best = float("inf")
    count = 0
    for _ in range(runs):
        start = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - start)
    return best, count


def main() -> None:
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "events.ndjson"
        make_file(plain, lines)
        packed = Path(tmp) / "events.ndjson.gz"
        packed.write_bytes(gzip.compress(plain.read_bytes(), compresslevel=6))
        table = Path(tmp) / "events.csv"
        make_csv(plain, table)
        chunks = list(iter_chunks(plain, gzip=False, fmt="ndjson"))

        def read_only() -> int:
            return sum(len(c.lines) for c in iter_chunks(plain, gzip=False, fmt="ndjson"))

        def decode_only() -> int:
            return sum(len(decode_ndjson(c.lines)[0]) for c in chunks)

        def both(path: Path, packed: bool) -> Callable[[], int]:
            def run() -> int:
                return sum(
                    len(decode_ndjson(c.lines)[0])
                    for c in iter_chunks(path, gzip=packed, fmt="ndjson")
                )

            return run

        def shipped(path: Path, packed: bool) -> Callable[[], int]:
            """What the worker runs: the C scanner for plain lines, records.py for the rest."""

            def run() -> int:
                return sum(
                    decode_chunk(c, csv=False, keep_addresses=False)[0].num_rows
                    for c in iter_chunks(path, gzip=packed, fmt="ndjson")
                )

            return run

        def csv_both() -> int:
            return sum(
                len(decode_csv(c.header, c.rows)[0])
                for c in iter_chunks(table, gzip=False, fmt="csv")
            )

        size = plain.stat().st_size
        print(f"{lines:,} lines, {size / lines:.0f} bytes/line, {size / 2**20:.0f} MiB")
        for name, fn in [
            ("formats.py only (plain)", read_only),
            ("records.py only", decode_only),
            ("formats.py + records.py (plain)", both(plain, False)),
            ("formats.py + records.py (gzip)", both(packed, True)),
            ("formats.py + records.py (CSV)", csv_both),
            ("formats.py + decoding.py (plain)", shipped(plain, False)),
            ("formats.py + decoding.py (gzip)", shipped(packed, True)),
        ]:
            seconds, count = best_of(3, fn)
            assert count == lines, (name, count)
            print(f"{name:34} {count / seconds:>12,.0f} lines/s")


if __name__ == "__main__":
    main()
