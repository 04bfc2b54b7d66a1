"""A batch of events as the import pipeline hands it to a store: places and agents once each.

Of an event's columns, eleven describe where its address is (location, network owner, cloud)
and five what its user agent is (platform, client, ...). A batch of 61,440 events holds a few
thousand distinct places and a handful of agents, so an :class:`EventBatch` carries each once,
in a table of its own, and every event names its place and agent by a key. Writing a column
costs a store about as much whatever it holds (DuckDB: ~70 ns an event for a low-cardinality
text column), so sixteen columns fewer per event is most of the cost of a write.

Keys are content hashes (BLAKE2b, 63 bits): the same place gets the same key in every batch,
import and process, so a store can keep one row per place and add only the new ones. Stores
that keep events wide (PostgreSQL) use :func:`widen`; batches that arrive wide (tests, tools)
are normalized with :func:`normalize`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from eventport.events.schema import ARROW_SCHEMA, COLUMN_NAMES

#: The columns a place gives (endpoint_id is the address's own, so it stays with the event).
PLACE_FIELDS: Final = (
    "origin_latitude",
    "origin_longitude",
    "origin_country",
    "origin_state",
    "origin_city",
    "origin_postal",
    "origin_connection_type",
    "origin_company",
    "origin_domain",
    "cloud_provider_name",
    "cloud_provider_domain",
)
#: The columns a user agent gives.
AGENT_FIELDS: Final = ("platform", "client", "client_version", "client_runtime", "ci")

#: Fields of a place that the event row carries too: what aggregates group by most (a daily
#: by-country count then reads the rows alone; one low-cardinality column costs a write ~2%).
ROW_PLACE_FIELDS: Final = ("origin_country",)
_DIMENSIONS: Final = (frozenset(PLACE_FIELDS) - frozenset(ROW_PLACE_FIELDS)) | frozenset(
    AGENT_FIELDS
)
#: An event row of a normalized batch: the events table's other columns, then the two keys.
ROW_SCHEMA: Final = pa.schema(
    [field for field in ARROW_SCHEMA if field.name not in _DIMENSIONS]
    + [pa.field("place_key", pa.int64()), pa.field("agent_key", pa.int64())]
)
PLACE_SCHEMA: Final = pa.schema(
    [pa.field("place_key", pa.int64(), nullable=False)]
    + [ARROW_SCHEMA.field(name) for name in PLACE_FIELDS]
)
AGENT_SCHEMA: Final = pa.schema(
    [pa.field("agent_key", pa.int64(), nullable=False)]
    + [ARROW_SCHEMA.field(name) for name in AGENT_FIELDS]
)
_KEY_MASK: Final = (1 << 63) - 1


@dataclass(frozen=True)
class EventBatch:
    """Events (:data:`ROW_SCHEMA`) and the places and agents they name (each key once)."""

    rows: pa.Table
    places: pa.Table
    agents: pa.Table

    @property
    def num_rows(self) -> int:
        return int(self.rows.num_rows)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table``'s columns of ``schema``, in its order and of its types, except that a text
    column may stay dictionary-encoded (each distinct text held once). Raises KeyError for a
    missing column and ArrowInvalid for one that cannot be cast."""
    columns = []
    fields = []
    for field in schema:
        column = table.column(field.name)
        kind = column.type
        if pa.types.is_dictionary(kind) and kind.value_type == field.type == pa.string():
            fields.append(pa.field(field.name, kind, nullable=field.nullable))
        else:
            if kind != field.type:
                column = column.cast(field.type)
            fields.append(field)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def dimension_key(values: Sequence[Any]) -> int | None:
    """The key of a place's or agent's values; None when every value is None (nothing known).

    ``repr`` of floats is exact, so equal keys mean equal values (up to a 63-bit hash)."""
    values = tuple(values)
    if values.count(None) == len(values):
        return None
    digest = hashlib.blake2b(repr(values).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & _KEY_MASK


def widen(batch: EventBatch) -> pa.Table:
    """The batch with every event's place and agent columns (:data:`ARROW_SCHEMA`)."""
    rows = batch.rows
    columns: dict[str, pa.ChunkedArray | pa.Array] = {}
    for keys, table, fields, key in (
        (rows.column("place_key"), batch.places, PLACE_FIELDS, "place_key"),
        (rows.column("agent_key"), batch.agents, AGENT_FIELDS, "agent_key"),
    ):
        at = pc.index_in(keys, value_set=table.column(key))
        for name in fields:
            columns[name] = table.column(name).take(at)
    arrays = [columns[name] if name in columns else rows.column(name) for name in COLUMN_NAMES]
    return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)


def normalize(wide: pa.Table) -> EventBatch:
    """A wide batch (:data:`ARROW_SCHEMA`) as an :class:`EventBatch`."""
    place_keys, places = _dimension(wide, PLACE_FIELDS, PLACE_SCHEMA)
    agent_keys, agents = _dimension(wide, AGENT_FIELDS, AGENT_SCHEMA)
    rows = wide.drop_columns(list(_DIMENSIONS))
    rows = rows.append_column("place_key", place_keys).append_column("agent_key", agent_keys)
    return EventBatch(conform(rows, ROW_SCHEMA), places, agents)


def _dimension(
    wide: pa.Table, fields: Sequence[str], schema: pa.Schema
) -> tuple[pa.Array, pa.Table]:
    """Each row's key, and a table of the distinct value sets (keyed, all-None ones left out)."""
    if wide.num_rows == 0:
        return pa.array([], pa.int64()), schema.empty_table()
    # One text per row stands for its values: distinct texts are distinct value sets.
    texts = pc.binary_join_element_wise(
        *(pc.cast(wide.column(name), pa.string()) for name in fields),
        "\x1f",
        null_handling="replace",
        null_replacement="\x1e",
    )
    distinct = pc.unique(texts)
    first = pc.index_in(distinct, value_set=texts)  # the first row with each value set
    values = wide.select(list(fields)).take(first)
    keys = [dimension_key(tuple(row.values())) for row in values.to_pylist()]
    row_keys = pa.array(keys, pa.int64()).take(pc.index_in(texts, value_set=distinct))
    table = values.filter(pa.array([k is not None for k in keys], pa.bool_()))
    known = pa.array([k for k in keys if k is not None], pa.int64())
    return row_keys, table.add_column(0, schema.names[0], known).cast(schema)
