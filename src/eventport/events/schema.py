"""The one description of an event row, shared by every event store and the import pipeline.

A batch travels as columns: ``dict[column name, list]``, every list the same length, in the
order of :data:`COLUMNS`. Columns the import does not fill yet (enrichment, issue 4) stay None.
Raw IP addresses are stored only if an operator sets ``EVENTPORT_KEEP_IP_ADDRESSES``;
otherwise the pipeline keeps them in memory only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

ColumnType = Literal["text", "bigint", "integer", "double", "boolean", "timestamp"]


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    nullable: bool = True


COLUMNS: tuple[Column, ...] = (
    Column("id", "text", nullable=False),  # $unique_id, or derived from (import id, line)
    Column("owner_id", "text", nullable=False),  # account that owns the package/pixel
    Column("package_id", "text"),
    Column("pixel_id", "text"),
    Column("import_id", "text", nullable=False),
    Column("line", "bigint", nullable=False),  # 1-based line of the import file
    Column("time", "timestamp", nullable=False),  # UTC; the pipeline passes microseconds (int)
    Column("type", "text"),
    Column("version", "text"),
    Column("referer", "text"),
    Column("user_agent", "text"),
    Column("domain", "text"),
    Column("variables", "text"),  # query string key=value&key2=value2
    Column("headers", "text"),  # JSON array of [name, value]
    # Filled by enrichment (issue 4) and read by export (issue 5).
    Column("origin_id", "text"),
    Column("endpoint_id", "text"),
    Column("origin_latitude", "double"),
    Column("origin_longitude", "double"),
    Column("origin_country", "text"),
    Column("origin_state", "text"),
    Column("origin_city", "text"),
    Column("origin_postal", "text"),
    Column("origin_connection_type", "text"),
    Column("origin_company", "text"),
    Column("origin_domain", "text"),
    Column("cloud_provider_name", "text"),
    Column("cloud_provider_domain", "text"),
    Column("platform", "text"),
    Column("client", "text"),
    Column("client_version", "text"),
    Column("dnt", "boolean"),
    Column("excluded", "boolean"),  # flagged as a bot or by an owner's exclusion rule
    Column("confidence", "double"),
    Column("mtc_quota_exceeded", "boolean"),
    # Added by enrichment (issue 4), after the columns above so existing stores just grow.
    Column("client_runtime", "text"),  # e.g. "CPython 3.11.7", where the user agent says
    Column("ci", "text"),  # the CI system a client announced (pip: "ci")
    Column("remote_address", "text"),  # only with EVENTPORT_KEEP_IP_ADDRESSES; else never set
)

COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)

#: Each column type's Arrow type (batches may carry Arrow arrays; exports stream Arrow batches).
ARROW_TYPES: dict[ColumnType, pa.DataType] = {
    "text": pa.string(),
    "bigint": pa.int64(),
    "integer": pa.int32(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}

#: The events table as Arrow: what the import pipeline builds and the stores write.
ARROW_SCHEMA: pa.Schema = pa.schema(
    [pa.field(c.name, ARROW_TYPES[c.type], nullable=c.nullable) for c in COLUMNS]
)

#: A batch of events: an ``events.batch.EventBatch`` (what the import pipeline builds), an
#: Arrow table of ARROW_SCHEMA, or columns as Python lists (or Arrow arrays) by name, times as
#: microseconds since the epoch.
Batch: TypeAlias = Any


@dataclass(frozen=True)
class Checkpoint:
    """Where an import stands, committed in the same transaction as the events it covers.

    ``line`` is the next line to read and ``offset`` its byte offset in the decoded (after
    gzip) stream; ``source_offset`` is the position in the spooled upload, for progress.
    """

    import_id: str
    line: int
    offset: int
    source_offset: int
    events_total: int
    imported: int
    failed: int
    warnings: int
    excluded: int = 0  # events flagged as bots or by the owner's exclusions
    do_not_track: int = 0  # events that asked not to be tracked (DNT / Sec-GPC)


def derived_ids(
    import_ids: str | pa.Array | pa.ChunkedArray, lines: pa.Array | pa.ChunkedArray
) -> pa.Array | pa.ChunkedArray:
    """The id of an event without ``$unique_id``: ``{import id}:{line}`` (``import_ids`` one
    import's id, or each line's), stable per line, so that processing part of a file again
    never doubles an event."""
    texts = pc.cast(lines, pa.string())
    if isinstance(import_ids, str):
        return pc.binary_join_element_wise(f"{import_ids}:", texts, "")
    return pc.binary_join_element_wise(pc.cast(import_ids, pa.string()), texts, ":")


#: :func:`derived_ids` in SQL, of an import id and a line (formatted in).
DERIVED_ID_SQL = "{import_id} || ':' || CAST({line} AS VARCHAR)"


def empty_batch() -> Batch:
    return {name: [] for name in COLUMN_NAMES}


def batch_length(batch: Batch) -> int:
    return len(batch["id"])
