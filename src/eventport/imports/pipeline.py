"""From decoded lines to an event batch: targets, identity, replacement — once per batch.

Plain Python with no HTTP or database: the worker hands in the two look-ups that need the
stores (who may write where, which ids exist already) as callables.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

import orjson

from eventport.enrich.enricher import NO_PLACE, PLACE_COLUMNS, ImportEnrichment, do_not_track
from eventport.events.schema import COLUMN_NAMES, Batch
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
    addresses: dict[str, bool] = field(default_factory=dict)

    def resolve_package(self, ref: str) -> str | None:
        if ref not in self.packages:
            self.packages[ref] = self.package(ref)
        return self.packages[ref]

    def resolve_pixel(self, ref: str) -> str | None:
        if ref not in self.pixels:
            self.pixels[ref] = self.pixel(ref)
        return self.pixels[ref]

    def valid_address(self, address: str) -> bool:
        """Whether an address parses (remembered: imports repeat their addresses)."""
        known = self.addresses.get(address)
        if known is None:
            try:
                ipaddress.ip_address(address.strip())
                known = True
            except ValueError:
                known = False
            if len(self.addresses) < 1_000_000:
                self.addresses[address] = known
        return known


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
    """Columns for the event store, plus every log entry for these lines."""
    logs = list(logs)
    undecodable = failed_line_count(logs)  # a line with several errors fails once
    not_found = excluded = dnt_count = 0
    # One row per event id: a later line with the same $unique_id replaces the earlier one.
    kept: dict[str, tuple[object, ...]] = {}
    lines: dict[str, ParsedEvent] = {}
    enrichment = lookups.enrichment
    keep_ips = lookups.keep_ip_addresses
    if enrichment is not None:  # each distinct address of the batch, looked up at once
        distinct = {e.remote_address for e in events if e.remote_address is not None}
        enrichment.prepare(c for c in map(enrichment.canonical, distinct) if c is not None)
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
        # Without $unique_id the id is stable per (import, line): a replayed line never doubles.
        event_id = unique_id if unique_id is not None else f"{import_id}:{event.line}"
        if event_id in kept:
            logs.append(
                _replaced(event, f"the event from line {lines[event_id].line} of this file")
            )
            del kept[event_id]
        lines[event_id] = event
        row: tuple[object, ...] = (
            event_id,
            owner_id,
            package_id,
            pixel_id,
            import_id,
            event.line,
            event.time_us,
            event.type,
            event.version,
            event.referer,
            event.user_agent,
            event.domain,
            event.variables,
            orjson.dumps(headers).decode() if headers else None,
        )
        if enrichment is None:
            if address is not None and not lookups.valid_address(address):
                logs.append(_bad_address(event.line))
            kept[event_id] = row + _UNENRICHED + (address if keep_ips else None,)
            continue
        canonical_ip = enrichment.canonical(address) if address is not None else None
        if address is not None and canonical_ip is None:
            logs.append(_bad_address(event.line))
        agent_head, agent_tail, flagged = enrichment.agent(event.user_agent)
        dnt = do_not_track(headers)
        if dnt:  # no look-up and no ids: only the flag
            dnt_count += 1
            origin: tuple[object, ...] = (None, *NO_PLACE)
        elif canonical_ip is None:
            origin = (None, *NO_PLACE)
        else:
            origin = (
                enrichment.origin(canonical_ip, event.user_agent),
                *enrichment.place(canonical_ip),
            )
        if flagged:
            excluded += 1
        kept[event_id] = (
            row
            + origin
            + agent_head
            + (dnt, flagged, None, None)
            + agent_tail
            + (address if keep_ips else None,)
        )
    replaced = lookups.existing_ids([i for i in kept if lines[i].unique_id is not None])
    for event_id in replaced:
        logs.append(_replaced(lines[event_id], "an event imported earlier"))
    batch = _columns(list(kept.values()))
    logs.sort(key=lambda entry: entry.line or 0)
    warnings = sum(1 for entry in logs if entry.level == "warning")
    # A line replaced later in the same file was still imported (and then replaced).
    return BatchResult(
        batch,
        logs,
        len(events) - not_found,
        undecodable + not_found,
        warnings,
        excluded,
        dnt_count,
    )


# The columns after the fourteen every import fills, as build_batch appends them per event.
_ENRICHED_LAYOUT = (
    "origin_id",
    *PLACE_COLUMNS,
    "platform",
    "client",
    "client_version",
    "dnt",
    "excluded",
    "confidence",
    "mtc_quota_exceeded",
    "client_runtime",
    "ci",
    "remote_address",
)
_UNENRICHED = (None,) * (len(_ENRICHED_LAYOUT) - 1)


def _columns(rows: list[tuple[object, ...]]) -> Batch:
    """Rows to columns (map/itemgetter run in C)."""
    return {name: list(map(itemgetter(index), rows)) for index, name in enumerate(COLUMN_NAMES)}


def _bad_address(line: int) -> LogEntry:
    # The value is not repeated: a log must not keep what could be someone's address.
    return LogEntry(
        line=line,
        level="warning",
        type="invalid-remote-address",
        code="invalid-remote-address",
        message="$remote_address is not an IP address; the event is imported without location",
    )


def _replaced(event: ParsedEvent, what: str) -> LogEntry:
    return LogEntry(
        line=event.line,
        level="warning",
        type="duplicate-unique-id",
        code="duplicate-unique-id",
        message=f"$unique_id {str(event.unique_id)[:80]!r} was used before: this event replaces "
        f"{what}",
    )


if COLUMN_NAMES[14:] != _ENRICHED_LAYOUT:  # the layout above must follow the schema
    raise RuntimeError("build_batch's column layout is out of step with events.schema")
