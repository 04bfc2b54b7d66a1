"""CSV export from Arrow record batches: column layouts, escaping, formats. Parsed back with
Python's csv module, as a user's tooling would read the file."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest

from eventport.events.schema import COLUMN_NAMES, COLUMNS
from eventport.export.csv import (
    V1_COLUMNS,
    V1_LAYOUT,
    V2_COLUMNS,
    CsvLayout,
    csv_chunks,
    v2_layout,
)

V2_HEADER = [
    "id",
    "type",
    "package",
    "pixel",
    "version",
    "time",
    "referer",
    "user_agent",
    "platform",
    "variables",
    "origin_id",
    "origin_latitude",
    "origin_longitude",
    "origin_country",
    "origin_city",
    "origin_postal",
    "origin_connection_type",
    "origin_company",
    "origin_domain",
    "dnt",
    "confidence",
    "endpoint_id",
    "origin_state",
    "mtc_quota_exceeded",
]
V2_EXTRA = [
    "client",
    "client_version",
    "client_runtime",
    "ci",
    "cloud_provider_name",
    "cloud_provider_domain",
    "excluded",
    "import_id",
    "remote_address",
]
# Scarf's v1 documentation lists these, in this order, first.
V1_SEED = [
    "type",
    "package",
    "version",
    "time",
    "referer",
    "user_agent",
    "variables",
    "origin_id",
    "origin_latitude",
    "origin_longitude",
    "origin_country",
    "origin_city",
    "origin_postal",
    "origin_company",
    "origin_domain",
    "origin_connection_type",
]
V1_HEADER = [
    *V1_SEED,
    *[
        "id",
        "pixel",
        "platform",
        "dnt",
        "confidence",
        "endpoint_id",
        "origin_state",
        "mtc_quota_exceeded",
    ],
    *["client", "client_version", "cloud_provider", "import_id"],
]

ARROW_TYPES = {
    "text": pa.string(),
    "bigint": pa.int64(),
    "integer": pa.int32(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
TYPES = {c.name: ARROW_TYPES[c.type] for c in COLUMNS}
BASE: dict[str, Any] = {
    "id": "e1",
    "owner_id": "o1",
    "import_id": "i1",
    "line": 1,
    "time": datetime(2024, 6, 4, tzinfo=UTC),
}


def batch(*rows: dict[str, Any], columns: Iterable[str] = COLUMN_NAMES) -> pa.RecordBatch:
    """A record batch as a store answers it: the columns asked for, with their Arrow types."""
    names = list(columns)
    full = [{**BASE, **row} for row in rows]
    return pa.record_batch(
        [pa.array([row.get(n) for row in full], TYPES[n]) for n in names], names=names
    )


def written(
    layout: CsvLayout, *batches: pa.RecordBatch, names: dict[str, str] | None = None
) -> str:
    return b"".join(csv_chunks(batches, layout, names)).decode()


def parsed(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def one(layout: CsvLayout, names: dict[str, str] | None = None, **row: Any) -> dict[str, str]:
    rows = parsed(written(layout, batch(row), names=names))
    assert len(rows) == 1
    return rows[0]


# --- layouts ------------------------------------------------------------------------------------


def test_v2_columns_are_scarfs_in_order() -> None:
    assert written(v2_layout(), batch()).splitlines()[0].split(",") == V2_HEADER
    assert [c.header for c in V2_COLUMNS] == V2_HEADER


def test_v2_extra_columns_follow_scarfs() -> None:
    layout = v2_layout(extra_columns=True)
    assert written(layout, batch()).splitlines()[0].split(",") == V2_HEADER + V2_EXTRA


def test_v1_starts_with_the_documented_columns() -> None:
    header = written(V1_LAYOUT, batch()).splitlines()[0].split(",")
    assert header == V1_HEADER
    assert header[: len(V1_SEED)] == V1_SEED
    assert [c.header for c in V1_COLUMNS] == V1_HEADER
    # Every v2 column is in the v1 file too (v1's package is the name, cloud_provider its name).
    assert set(V2_HEADER) <= set(header)


def test_the_store_is_asked_for_each_source_column_once() -> None:
    assert len(V1_LAYOUT.sources) == len(set(V1_LAYOUT.sources)) == len(V1_HEADER)
    assert set(V1_LAYOUT.sources) <= set(COLUMN_NAMES)
    assert set(v2_layout(extra_columns=True).sources) <= set(COLUMN_NAMES)


def test_only_the_layouts_columns_are_read() -> None:
    layout = v2_layout()
    rows = parsed(written(layout, batch({"id": "x"}, columns=layout.sources)))
    assert rows[0]["id"] == "x"


def test_v2_package_and_pixel_are_ids() -> None:
    row = one(v2_layout(), package_id="p-1", pixel_id="px-1")
    assert (row["package"], row["pixel"]) == ("p-1", "px-1")


def test_v1_package_is_the_name() -> None:
    names = {"p-1": "widget", "p-2": "other"}
    rows = parsed(
        written(
            V1_LAYOUT,
            batch({"package_id": "p-1"}, {"package_id": "p-2"}, {"pixel_id": "px"}),
            batch({"package_id": "unknown"}),
            names=names,
        )
    )
    assert [r["package"] for r in rows] == ["widget", "other", "", ""]
    assert rows[2]["pixel"] == "px"


def test_v1_cloud_provider_is_its_name() -> None:
    row = one(V1_LAYOUT, cloud_provider_name="Google Cloud", cloud_provider_domain="x")
    assert row["cloud_provider"] == "Google Cloud"


# --- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2024, 6, 4, tzinfo=UTC), "2024-06-04T00:00:00Z"),
        (datetime(2024, 6, 4, 13, 5, 9, tzinfo=UTC), "2024-06-04T13:05:09Z"),
        (datetime(2024, 6, 4, 13, 5, 9, 250000, tzinfo=UTC), "2024-06-04T13:05:09.250000Z"),
        (datetime(2024, 6, 4, 0, 0, 0, 1, tzinfo=UTC), "2024-06-04T00:00:00.000001Z"),
        (datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "1969-12-31T23:59:59.999999Z"),
        (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00Z"),
    ],
)
def test_times_are_iso_8601_utc(moment: datetime, text: str) -> None:
    assert one(v2_layout(), time=moment)["time"] == text


def test_times_of_other_zones_and_units_are_written_in_utc() -> None:
    layout = CsvLayout(V2_COLUMNS[5:6])  # time
    local = pa.array([datetime(2024, 6, 4, 2, tzinfo=UTC)], pa.timestamp("ms", tz="+02:00"))
    naive = pa.array([datetime(2024, 6, 4, 2)], pa.timestamp("s"))
    text = written(layout, pa.record_batch([local], ["time"]), pa.record_batch([naive], ["time"]))
    assert text.splitlines()[1:] == ['"2024-06-04T02:00:00Z"'] * 2


def test_booleans_and_nulls() -> None:
    rows = parsed(
        written(
            v2_layout(extra_columns=True),
            batch(
                {"dnt": True, "mtc_quota_exceeded": False, "excluded": False},
                {"dnt": False, "mtc_quota_exceeded": None, "excluded": True},
            ),
        )
    )
    assert [(r["dnt"], r["mtc_quota_exceeded"], r["excluded"]) for r in rows] == [
        ("true", "false", "false"),
        ("false", "", "true"),
    ]


def test_null_is_empty_and_empty_text_is_quoted() -> None:
    text = written(CsvLayout(V2_COLUMNS[4:5]), batch({"version": None}, {"version": ""}))
    assert text.splitlines()[1:] == ["", '""']


def test_numbers() -> None:
    row = one(v2_layout(), origin_latitude=45.8696, origin_longitude=-119.688, confidence=1.0)
    assert float(row["origin_latitude"]) == 45.8696
    assert float(row["origin_longitude"]) == -119.688  # a number, so not escaped
    assert float(row["confidence"]) == 1.0


@pytest.mark.parametrize(
    "text",
    [
        "a,b",
        'say "hi"',
        "two\nlines",
        "carriage\r\nreturn",
        "tab\tinside",
        "ünïcödé ✓",
        "'quoted already",
        "",
    ],
)
def test_text_reads_back_unchanged(text: str) -> None:
    row = one(v2_layout(), referer=text, user_agent=text, variables=text)
    assert (row["referer"], row["user_agent"], row["variables"]) == (text, text, text)


# --- formula injection ------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["=", "+", "-", "@", "\t", "\r"])
def test_text_that_starts_a_formula_is_escaped(first: str) -> None:
    text = f'{first}HYPERLINK("http://evil.example","x")'
    row = one(
        v2_layout(extra_columns=True),
        user_agent=text,
        referer=text,
        version=text,
        type=text,
        variables=text,
        origin_company=text,
        client=text,
        id=text,
    )
    for column in ("user_agent", "referer", "version", "type", "variables", "origin_company"):
        assert row[column] == "'" + text, column
    assert (row["client"], row["id"]) == ("'" + text, "'" + text)


@pytest.mark.parametrize(
    "text",
    ["curl/8.4.0", " =1+1", "a=b", "1-2", "x@y", "'=already", "\n=1", "Mozilla/5.0 (X11)"],
)
def test_safe_text_is_untouched(text: str) -> None:
    assert one(v2_layout(), user_agent=text)["user_agent"] == text


def test_v1_escapes_package_names_and_every_text_column() -> None:
    row = one(
        V1_LAYOUT,
        {"p-1": "@scope/widget"},
        package_id="p-1",
        user_agent="=1",
        cloud_provider_name="+x",
    )
    assert (row["package"], row["user_agent"], row["cloud_provider"]) == (
        "'@scope/widget",
        "'=1",
        "'+x",
    )


# --- streaming --------------------------------------------------------------------------------


def test_header_once_and_one_chunk_per_non_empty_batch() -> None:
    layout = v2_layout()
    empty = batch()
    empty = empty.slice(0, 0)
    chunks = list(csv_chunks([batch({"id": "a"}), empty, batch({"id": "b"}, {"id": "c"})], layout))
    assert len(chunks) == 3
    assert chunks[0] == (",".join(V2_HEADER) + "\n").encode()
    assert [r["id"] for r in parsed(b"".join(chunks).decode())] == ["a", "b", "c"]


def test_no_batches_is_the_header_alone() -> None:
    assert written(v2_layout()) == ",".join(V2_HEADER) + "\n"


def test_batches_are_consumed_lazily() -> None:
    consumed = []

    def batches() -> Any:
        for name in ("a", "b"):
            consumed.append(name)
            yield batch({"id": name})

    chunks = csv_chunks(batches(), v2_layout())
    next(chunks)  # the header
    assert consumed == []
    next(chunks)
    assert consumed == ["a"]
