"""From decoded lines to an event batch: targets, identity, replacement — once per batch.

Plain Python with no HTTP or database: the worker hands in the two look-ups that need the
stores (who may write where, which ids exist already) as callables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import add, itemgetter, mul

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from eventport.enrich.enricher import (
    NO_PLACE,
    PLACE_COLUMNS,
    ImportEnrichment,
    canonical_address,
    do_not_track,
)
from eventport.events.schema import ARROW_TYPES, COLUMN_NAMES, COLUMNS, Batch
from eventport.imports.records import LogEntry, ParsedEvent, failed_line_count

ARTIFACT_NOT_FOUND = "artifact-not-found"


@dataclass(frozen=True)
class Target:
    """Where an import's events go: one package, one pixel, or named by each line (multi)."""

    kind: str  # package | pixel | multi
    package_id: str | None = None
    pixel_id: str | None = None


@dataclass
class Lookups:
    """Per-import caches, so each distinct value is looked up once for the whole import."""

    package: Callable[[str], str | None]  # $package as given -> package id the importer may write
    pixel: Callable[[str], str | None]  # $tracking_pixel -> pixel id the importer may write
    existing_ids: Callable[[Sequence[str]], set[str]]  # ids already stored for this owner
    # Location, client and ids (None: events are stored as imported, with no enrichment).
    enrichment: ImportEnrichment | None = None
    keep_ip_addresses: bool = False
    packages: dict[str, str | None] = field(default_factory=dict)
    pixels: dict[str, str | None] = field(default_factory=dict)

    def resolve_package(self, ref: str) -> str | None:
        if ref not in self.packages:
            self.packages[ref] = self.package(ref)
        return self.packages[ref]

    def resolve_pixel(self, ref: str) -> str | None:
        if ref not in self.pixels:
            self.pixels[ref] = self.pixel(ref)
        return self.pixels[ref]


@dataclass
class BatchResult:
    batch: Batch
    logs: list[LogEntry]
    imported: int
    failed: int
    warnings: int
    excluded: int = 0
    do_not_track: int = 0


def _not_found(event: ParsedEvent, message: str) -> LogEntry:
    return LogEntry(
        line=event.line,
        level="error",
        type=ARTIFACT_NOT_FOUND,
        code=ARTIFACT_NOT_FOUND,
        message=message,
        package_id=event.package,
        tracking_pixel_id=event.pixel,
    )


def _targets(event: ParsedEvent, lookups: Lookups) -> tuple[str | None, ...] | LogEntry:
    """A multi-artifact line's package and pixel, or why it names none we may write."""
    if event.package is None and event.pixel is None:
        return _not_found(event, "the line names no $package or $tracking_pixel")
    package = lookups.resolve_package(event.package) if event.package is not None else None
    if event.package is not None and package is None:
        return _not_found(
            event, f"package {event.package[:80]!r} not found, or you may not import into it"
        )
    pixel = lookups.resolve_pixel(event.pixel) if event.pixel is not None else None
    if event.pixel is not None and pixel is None:
        return _not_found(
            event, f"tracking pixel {event.pixel[:80]!r} not found, or you may not import into it"
        )
    return package, pixel


def build_batch(
    events: list[ParsedEvent],
    logs: list[LogEntry],
    *,
    import_id: str,
    owner_id: str,
    target: Target,
    lookups: Lookups,
) -> BatchResult:
    """Columns for the event store, plus every log entry for these lines. ``events`` is
    handed over: the caller keeps no reference, so the decoded events are freed mid-way.

    The per-event loop only resolves targets and ids. Enrichment works on columns afterwards:
    each distinct address, user agent and (address, agent) pair of the batch is resolved once in
    Python, and the event columns are filled from those answers by C-level ``map`` calls.
    """
    logs = list(logs)
    undecodable = failed_line_count(logs)  # a line with several errors fails once
    not_found = dnt_count = 0
    enrichment = lookups.enrichment
    # Each distinct address once: canonical form (None: not an address).
    addresses = {e.remote_address for e in events if e.remote_address is not None}
    canonical = enrichment.canonical if enrichment is not None else canonical_address
    canonical_of = {a: canonical(a) for a in addresses}
    invalid = {a for a, canonical in canonical_of.items() if canonical is None}
    # One row per event id: a later line with the same $unique_id replaces the earlier one.
    kept: dict[str, tuple[object, ...]] = {}
    lines: dict[str, int] = {}
    unique: set[str] = set()
    fixed = target.kind != "multi"
    for event in events:
        if fixed:
            package_id, pixel_id = target.package_id, target.pixel_id
        else:
            resolved = _targets(event, lookups)
            if isinstance(resolved, LogEntry):
                logs.append(resolved)
                not_found += 1
                continue
            package_id, pixel_id = resolved
        address = event.remote_address
        headers = event.headers
        unique_id = event.unique_id
        line = event.line
        # Without $unique_id the id is stable per (import, line): a replayed line never doubles.
        if unique_id is None:
            event_id = f"{import_id}:{line}"
        else:
            event_id = unique_id
            unique.add(unique_id)
        if event_id in kept:
            earlier = f"the event from line {lines[event_id]} of this file"
            logs.append(_replaced(line, event_id, earlier))
            del kept[event_id]
        lines[event_id] = line
        if invalid and address in invalid:
            logs.append(_bad_address(line))
        dnt = headers is not None and do_not_track(headers)
        dnt_count += dnt
        kept[event_id] = (
            event_id,
            owner_id,
            package_id,
            pixel_id,
            import_id,
            line,
            event.time_us,
            event.type,
            event.version,
            event.referer,
            event.user_agent,
            event.domain,
            event.variables,
            _headers_text(headers, lookups.keep_ip_addresses) if headers else None,
            dnt,
            address,
        )
    total = len(events)
    del events  # the caller hands the list over: its events go now, before the columns exist
    replaced = lookups.existing_ids([i for i in kept if i in unique])
    for event_id in replaced:
        logs.append(_replaced(lines[event_id], event_id, "an event imported earlier"))
    rows = list(kept.values())
    del kept, lines
    batch: Batch = {name: list(map(itemgetter(i), rows)) for i, name in enumerate(_ROW)}
    del rows
    excluded = 0
    if enrichment is not None and batch["id"]:
        excluded = _enrich(batch, enrichment, canonical_of)
    else:
        for name in _ENRICHED:
            batch[name] = [None] * len(batch["id"])
    if not lookups.keep_ip_addresses:
        batch["remote_address"] = [None] * len(batch["id"])
    elif dnt_count:  # kept, except where the event asked not to be tracked
        pairs = zip(batch["remote_address"], batch["dnt"], strict=True)
        batch["remote_address"] = [None if dnt else address for address, dnt in pairs]
    for name in _UNFILLED:
        batch[name] = [None] * len(batch["id"])
    logs.sort(key=lambda entry: entry.line or 0)
    warnings = sum(1 for entry in logs if entry.level == "warning")
    # A line replaced later in the same file was still imported (and then replaced).
    return BatchResult(
        batch,
        logs,
        total - not_found,
        undecodable + not_found,
        warnings,
        excluded,
        dnt_count,
    )


def _enrich(batch: Batch, enrichment: ImportEnrichment, canonical_of: dict[str, str | None]) -> int:
    """Fill the enrichment columns from the batch's distinct values; the number excluded.

    The place and agent columns are Arrow arrays taken (in C++) from a small table of the
    batch's distinct answers: no per-event Python work, and nothing left to convert for the
    store.
    """
    enrichment.prepare(c for c in canonical_of.values() if c is not None)
    canonical_of[None] = None  # type: ignore[index]  # events without an address
    canonicals = list(map(canonical_of.__getitem__, batch["remote_address"]))
    if any(batch["dnt"]):  # do-not-track events: no look-up and no ids
        canonicals = [None if dnt else c for c, dnt in zip(canonicals, batch["dnt"], strict=True)]
    # Each distinct address and agent gets an index; columns are taken through the indexes.
    addresses = list(dict.fromkeys(canonicals))
    address_at = list(map({c: i for i, c in enumerate(addresses)}.__getitem__, canonicals))
    places = [NO_PLACE if c is None else enrichment.place(c) for c in addresses]
    _take(batch, PLACE_COLUMNS, places, address_at)
    agents = list(dict.fromkeys(batch["user_agent"]))
    agent_at = list(map({a: i for i, a in enumerate(agents)}.__getitem__, batch["user_agent"]))
    answers = [(*values, excluded) for values, excluded in map(enrichment.agent, agents)]
    _take(batch, (*_AGENT_COLUMNS, "excluded"), answers, agent_at)
    # Origins: each distinct (address, agent) pair, keyed by one int, hashed once.
    width = len(agents)
    pairs = list(map(add, map(mul, address_at, repeat(width)), agent_at))
    origin_of = {}
    for pair in set(pairs):
        address = addresses[pair // width]
        origin_of[pair] = (
            None if address is None else enrichment.origin(address, agents[pair % width])
        )
    batch["origin_id"] = pa.array(list(map(origin_of.__getitem__, pairs)), pa.string())
    return int(pc.sum(batch["excluded"]).as_py() or 0)


def _take(
    batch: Batch, names: Sequence[str], answers: list[tuple[object, ...]], at: list[int]
) -> None:
    """Columns ``names`` of the events: ``answers[at[i]]`` for event i, as Arrow arrays."""
    indexes = pa.array(at, pa.int32())
    for name, values in zip(names, zip(*answers, strict=True), strict=True):
        batch[name] = pa.array(values, _ARROW_TYPE_OF[name]).take(indexes)


_ARROW_TYPE_OF = {column.name: ARROW_TYPES[column.type] for column in COLUMNS}


# What each row carries, in order; the enrichment columns are filled from them afterwards.
_ROW = (*COLUMN_NAMES[:14], "dnt", "remote_address")
_AGENT_COLUMNS = ("platform", "client", "client_version", "client_runtime", "ci")
_ENRICHED = ("origin_id", *PLACE_COLUMNS, *_AGENT_COLUMNS, "excluded")
_UNFILLED = ("confidence", "mtc_quota_exceeded")


# Request headers that carry a client's address: not stored unless addresses are kept.
ADDRESS_HEADERS = frozenset(
    {
        "x-forwarded-for",
        "x-real-ip",
        "forwarded",
        "cf-connecting-ip",
        "true-client-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "fastly-client-ip",
        "x-originating-ip",
    }
)


def _headers_text(headers: list[tuple[str, str]], keep_addresses: bool) -> str | None:
    if not keep_addresses:
        headers = [h for h in headers if h[0].lower() not in ADDRESS_HEADERS]
    return orjson.dumps(headers).decode() if headers else None


def _bad_address(line: int) -> LogEntry:
    # The value is not repeated: a log must not keep what could be someone's address.
    return LogEntry(
        line=line,
        level="warning",
        type="invalid-remote-address",
        code="invalid-remote-address",
        message="$remote_address is not an IP address; the event is imported without location",
    )


def _replaced(line: int, unique_id: str, what: str) -> LogEntry:
    return LogEntry(
        line=line,
        level="warning",
        type="duplicate-unique-id",
        code="duplicate-unique-id",
        message=f"$unique_id {unique_id[:80]!r} was used before: this event replaces {what}",
    )


if {*_ROW, *_ENRICHED, *_UNFILLED} != set(COLUMN_NAMES):  # every column filled, only those
    raise RuntimeError("build_batch's columns are out of step with events.schema")
