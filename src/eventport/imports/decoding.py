"""From a chunk of the upload to a table of decoded events (Arrow) and log entries.

:mod:`eventport.imports.records` defines what each line means. For NDJSON the plain lines (the
great majority of most imports) are decoded by the C scanner ``_plainline`` straight into Arrow
column buffers, with no Python object per line; every other line goes through
:func:`~eventport.imports.records.decode_ndjson`, one at a time. The two give the same values
for a plain line (tests/unit/test_decoding.py holds them to it on a hostile corpus and on
generated lines), so where the scanner could not be compiled everything goes to Python,
slower and otherwise the same. CSV rows always go through :func:`records.decode_csv`.

The table has the columns of :data:`DECODED_SCHEMA`, one row per event, ordered by line.
``headers`` is the stored form of ``$headers`` (JSON pairs, with the headers that carry an
address dropped unless addresses are kept) and ``dnt`` whether they asked not to be tracked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from eventport.domain.text import without_any_addresses
from eventport.enrich.enricher import do_not_track, header_name
from eventport.imports.formats import Chunk
from eventport.imports.log_lines import LineWarnings
from eventport.imports.records import (
    Code,
    LogEntry,
    ParsedEvent,
    decode_csv,
    decode_ndjson,
)

try:
    from eventport.imports import _plainline
except ImportError:  # not compiled: every line takes the Python decoder
    _plainline = None  # type: ignore[assignment]

#: What a decoded event carries, before targets, ids and enrichment.
DECODED_SCHEMA: Final = pa.schema(
    [
        ("line", pa.int64()),
        ("time", pa.int64()),  # microseconds since the epoch, UTC
        ("unique_id", pa.string()),
        ("package", pa.string()),
        ("pixel", pa.string()),
        ("version", pa.string()),
        ("type", pa.string()),
        ("remote_address", pa.string()),
        ("user_agent", pa.string()),
        ("domain", pa.string()),
        ("referer", pa.string()),
        ("variables", pa.string()),
        ("headers", pa.string()),
        ("dnt", pa.bool_()),
    ]
)
# The scanner's string columns, in its order.
_SCANNED: Final = (
    "unique_id",
    "package",
    "pixel",
    "version",
    "type",
    "remote_address",
    "user_agent",
    "domain",
    "referer",
    "variables",
)

# Request headers that carry a client's address: not stored unless addresses are kept. Names
# are compared as header_name() gives them. Other headers keep their values with any address
# in them shown as <address> (a list of names alone would miss a proxy's own header).
ADDRESS_HEADERS: Final = frozenset(
    {
        "x-forwarded-for",
        "x-forwarded",
        "forwarded-for",
        "forwarded",
        "x-original-forwarded-for",
        "x-vercel-forwarded-for",
        "x-real-ip",
        "cf-connecting-ip",
        "cf-connecting-ipv6",
        "true-client-ip",
        "client-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "fastly-client-ip",
        "fly-client-ip",
        "x-azure-clientip",
        "x-azure-socketip",
        "x-appengine-user-ip",
        "x-envoy-external-address",
        "x-originating-ip",
        "remote-addr",
        "x-remote-addr",
        "x-proxyuser-ip",
        "wl-proxy-client-ip",
        "proxy-client-ip",
    }
)


def scanner_available() -> bool:
    """Whether the C scanner is compiled in (else all lines take the Python decoder)."""
    return _plainline is not None


def headers_text(headers: Sequence[tuple[str, str]], keep_addresses: bool) -> str | None:
    """``$headers`` as stored: JSON ``[[name, value], ...]``, None when nothing is left.

    Unless addresses are kept, the headers that carry a client's address are left out, and
    any address in another header's name or value is shown as ``<address>``."""
    if not keep_addresses:
        headers = [
            (without_any_addresses(name), without_any_addresses(value))
            for name, value in headers
            if header_name(name) not in ADDRESS_HEADERS
        ]
    return orjson.dumps(headers).decode() if headers else None


def parsed_table(events: Sequence[ParsedEvent], keep_addresses: bool) -> pa.Table:
    """Events decoded by records.py as a table of :data:`DECODED_SCHEMA`."""
    columns: dict[str, list[object]] = {
        "line": [e.line for e in events],
        "time": [e.time_us for e in events],
    }
    for name in _SCANNED:
        columns[name] = [getattr(e, name) for e in events]
    dnt: list[object] = [do_not_track(e.headers) for e in events]
    columns["headers"] = [
        # A request that asked not to be tracked keeps no address, whatever the setting.
        headers_text(e.headers, keep_addresses and not private) if e.headers else None
        for e, private in zip(events, dnt, strict=True)
    ]
    columns["dnt"] = dnt
    return pa.Table.from_pydict(columns, schema=DECODED_SCHEMA)


Decoded = tuple[pa.Table, list[LogEntry], list[LineWarnings]]


def decode_chunk(chunk: Chunk, *, csv: bool, keep_addresses: bool) -> Decoded:
    """The events of a chunk as a table ordered by line, and the log entries of its lines:
    entries (in line order), and the scanner's warnings of times without a zone, held as
    columns (a file of such times warns on every line)."""
    if csv:
        events, entries = decode_csv(chunk.header, chunk.rows)
        return parsed_table(events, keep_addresses), entries, []
    if _plainline is None:
        events, entries = decode_ndjson(chunk.lines, max_line_bytes=chunk.max_line_bytes)
        return parsed_table(events, keep_addresses), entries, []
    return _decode_ndjson(chunk, keep_addresses)


def _decode_ndjson(chunk: Chunk, keep_addresses: bool) -> Decoded:
    block, first, limit = chunk.block, chunk.first_line, chunk.max_line_bytes
    count, fast, index, time, columns, slow, naive = _plainline.scan(block, limit)
    if count != chunk.line_count:
        raise RuntimeError(f"the scanner read {count} lines of a {chunk.line_count}-line chunk")
    arrays = {
        "line": _line_numbers(index, first),
        "time": pa.Array.from_buffers(pa.int64(), fast, [None, pa.py_buffer(time)]),
    }
    for name, (validity, offsets, data) in zip(_SCANNED, columns, strict=True):
        arrays[name] = pa.Array.from_buffers(
            pa.string(),
            fast,
            [pa.py_buffer(validity), pa.py_buffer(offsets), pa.py_buffer(data)],
        )
    arrays["headers"] = pa.nulls(fast, pa.string())
    arrays["dnt"] = pa.repeat(pa.scalar(False), fast)
    table = pa.Table.from_pydict(arrays, schema=DECODED_SCHEMA)
    naive_times = _naive_times(first, *naive)
    if not slow:
        return table, [], naive_times
    triples = memoryview(slow).cast("q")
    dropped = chunk.dropped
    others: list[tuple[int, bytes | None]] = []
    for k in range(0, len(triples), 3):
        i, start, end = triples[k], triples[k + 1], triples[k + 2]
        raw = None if i in dropped or end - start > limit else bytes(block[start:end])
        others.append((first + i, raw))
    events, slow_entries = decode_ndjson(others, max_line_bytes=limit)
    if events:
        table = pa.concat_tables([table, parsed_table(events, keep_addresses)])
        table = table.sort_by("line")
    return table, slow_entries, naive_times


def _naive_times(first: int, index: bytes, offsets: bytes, data: bytes) -> list[LineWarnings]:
    """The warnings of the scanned lines whose time had no zone (its text, as Python says it)."""
    if not index:
        return []
    lines = _line_numbers(index, first)
    texts = pa.Array.from_buffers(
        pa.string(), len(lines), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    return [LineWarnings(Code.NAIVE_TIME.value, lines, texts)]


def _line_numbers(index: bytes, first: int) -> pa.Array:
    """The line numbers (int64) of the scanner's int32 line indexes in a chunk whose first
    line is ``first``."""
    indexes = pa.Array.from_buffers(pa.int32(), len(index) // 4, [None, pa.py_buffer(index)])
    return pc.add(indexes.cast(pa.int64()), first)
