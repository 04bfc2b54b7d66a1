"""From decoded events to an event batch: targets, identity, replacement, enrichment.

Column at a time on Arrow tables, with no Python work per event: each distinct package or
pixel reference, address, user agent and (address, agent) pair is resolved once in Python and
the event columns are taken from those answers by index (C++). Python loops only over the lines
that get a log entry. The worker hands in the look-ups that need the stores (who may write
where, which ids exist already) as callables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from eventport.domain.text import quoted
from eventport.enrich.enricher import NO_PLACE, ImportEnrichment, canonical_addresses
from eventport.events.batch import (
    AGENT_SCHEMA,
    PLACE_FIELDS,
    PLACE_SCHEMA,
    ROW_PLACE_FIELDS,
    ROW_SCHEMA,
    EventBatch,
    conform,
)
from eventport.events.schema import derived_ids
from eventport.imports.log_lines import (
    DUPLICATE_UNIQUE_ID,
    INVALID_REMOTE_ADDRESS,
    OTHER_TARGET,
    LineWarnings,
    replaced_message,
)
from eventport.imports.records import LogEntry, failed_line_count
from eventport.positions import (
    RememberedTexts,
    distinct,
    has_repeats,
    index_of,
    not_at,
    text_hashes,
)

ARTIFACT_NOT_FOUND = "artifact-not-found"
# The code of an artifact-not-found error for a line whose $unique_id names a stored event of
# a package or pixel the importer may not write: it would have replaced (deleted) that event.
UNIQUE_ID_NOT_WRITABLE = "unique-id-not-writable"
# Remembered per import (~90 B an address in Arrow columns); cleared when full. An address
# book holds at least a batch's addresses (a batch's events at most).
# Addresses are what costs (~15 us each to resolve): 500,000 (~45 MB) keep a 1M-event import
# with half its events from distinct addresses from resolving any twice (with 250,000 it
# resolved 780,000 for 432,600 distinct, and took 1.5x as long).
_BOOK_MAX = 500_000  # distinct raw $remote_address texts
_NO_PLACE: tuple[tuple[object, ...], int | None] = (NO_PLACE[1:], None)  # values, key
_PAIR_SHIFT = 31  # a batch's origin pair: address row << 31 | the agent's place in the batch
# Decoded columns that go on to the batch as they are (or to what builds it).
_CARRIED = (
    "line",
    "time",
    "type",
    "version",
    "referer",
    "user_agent",
    "domain",
    "variables",
    "headers",
    "dnt",
    "unique_id",
    "remote_address",
)


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
    stored_ids: Callable[[pa.Array], pa.Array]  # those of the ids stored for this owner
    # For an importer who may not write every package and pixel of the owner: the stored
    # events the ids name, with their package and pixel (EventStore.stored_targets), so that a
    # line never replaces an event the importer may not change. None: they may write them all.
    stored_targets: Callable[[pa.Array], pa.Table] | None = None
    # Location, client and ids (None: events are stored as imported, with no enrichment).
    enrichment: ImportEnrichment | None = None
    keep_ip_addresses: bool = False
    # A pixel's id (one ``pixel`` found) -> the id of the package it is attached to (None:
    # free-standing): known once the pixel was looked up, so no look-up of its own.
    pixel_package: Callable[[str], str | None] = lambda _pixel_id: None
    packages: dict[str, str | None] = field(default_factory=dict)
    pixels: dict[str, str | None] = field(default_factory=dict)
    # Every package and pixel id found (an owner-wide import's targets), and when the worker
    # next asks all of them afresh (time.monotonic(); see worker.py _recheck_targets).
    seen_packages: set[str] = field(default_factory=set)
    seen_pixels: set[str] = field(default_factory=set)
    recheck_at: float = 0.0
    # $unique_ids of the batches built before this one that may not be committed yet (the
    # worker writes a batch while it builds the next; with a store's staged writes, two), so
    # the store may not show them yet: their ids and text_hashes, one pair a batch, the last
    # ``unwritten_batches``.
    unwritten_batches: int = 1
    recent_ids: list[tuple[pa.Array, pa.Array]] = field(default_factory=list)
    addresses: AddressBook = field(init=False)

    def __post_init__(self) -> None:
        self.addresses = AddressBook(self.enrichment)

    def built(self, ids: pa.Array, hashes: pa.Array) -> None:
        """A batch with these ids (and hashes) was built: it may not be committed for a while."""
        self.recent_ids = [*self.recent_ids, (ids, hashes)][-self.unwritten_batches :]

    def resolve_package(self, ref: str) -> str | None:
        if ref not in self.packages:
            found = self.packages[ref] = self.package(ref)
            if found is not None:
                self.seen_packages.add(found)
        return self.packages[ref]

    def resolve_pixel(self, ref: str) -> str | None:
        if ref not in self.pixels:
            found = self.pixels[ref] = self.pixel(ref)
            if found is not None:
                self.seen_pixels.add(found)
        return self.pixels[ref]


@dataclass
class BatchResult:
    batch: EventBatch
    logs: list[LogEntry]
    imported: int
    failed: int
    warnings: int
    excluded: int = 0
    do_not_track: int = 0
    # Warnings on many lines (bad addresses, ids stored before), held as columns; counted in
    # ``warnings`` too.
    line_warnings: list[LineWarnings] = field(default_factory=list)
    replaced: int = 0  # events whose id was stored before (or in the batch before)


class AddressBook:
    """One import's distinct raw ``$remote_address`` texts, each resolved once, as columns.

    A row per raw text: its canonical form (null: not an address) and, with enrichment, its
    endpoint id, place key and the place fields events carry, plus the import's places (each
    key once). A batch finds its addresses' rows with one look-up in a table that lasts
    (:class:`~eventport.positions.RememberedTexts`: its cost grows with the batch, not the
    book), resolves only the texts it is the first to bring, and takes every event's columns
    from the book by row (C++): no Python per address already seen, however many batches
    repeat it.

    Origin ids are hashed once per batch for each distinct (address, agent) pair: not
    remembered from batch to batch. Remembering them (a table of the import's pairs, ~30 MB
    at a million pairs) saved less than it cost once a pair's hash took ~0.15 us (measured on
    5M enriched events, the benchmark's million pairs each met ~5 times: the same speed, a
    peak 475-483 MB against 495-501). Everything is cleared when full (see ``_BOOK_MAX``).
    """

    def __init__(self, enrichment: ImportEnrichment | None) -> None:
        self.enrichment = enrichment
        self._clear()

    def _clear(self) -> None:
        self._raw = RememberedTexts()
        self.canonical = pa.array([], pa.string())
        self.endpoint = pa.array([], pa.string())
        self.place_key = pa.array([], pa.int64())
        self.fields = {name: pa.array([], pa.string()) for name in ROW_PLACE_FIELDS}
        self.places = PLACE_SCHEMA.empty_table()
        self._place_keys: set[int] = set()  # those of self.places

    def rows(self, values: pa.Array) -> pa.Array:
        """The book's row (int32) of each of ``values`` (distinct raw addresses; null stays
        null), resolving the new ones."""
        at = self._raw.find(values)
        new = pc.and_(pc.is_null(at), pc.is_valid(values))
        if not pc.any(new).as_py():
            return at
        if len(self._raw) + int(pc.sum(new).as_py()) > _BOOK_MAX:
            self._clear()
            new = pc.is_valid(values)
        first = len(self._raw)
        self._add(pc.filter(values, new))
        return _appended_at(new, first, at)

    @property
    def raw(self) -> pa.Array:
        """The raw texts, by row."""
        return self._raw.texts

    def _add(self, new: pa.Array) -> None:
        texts = new.to_pylist()
        canonicals = canonical_addresses(texts)
        self._raw.add(new)
        self.canonical = _extended(self.canonical, canonicals)
        if self.enrichment is None:
            return
        distinct = list(dict.fromkeys(c for c in canonicals if c is not None))
        endpoints, located = self.enrichment.located(distinct)
        if len(distinct) < len(canonicals):  # not every text an address, or one twice
            answers = dict(zip(distinct, zip(endpoints, located, strict=True), strict=True))
            found = [answers.get(c) if c is not None else None for c in canonicals]
            endpoints = [None if f is None else f[0] for f in found]
            located = [_NO_PLACE if f is None else f[1] for f in found]
        self.endpoint = _extended(self.endpoint, endpoints)
        self.place_key = _extended(self.place_key, [key for _, key in located])
        for name in ROW_PLACE_FIELDS:
            at = PLACE_FIELDS.index(name)
            self.fields[name] = _extended(self.fields[name], [v[at] for v, _ in located])
        new_places = {
            key: values
            for values, key in located
            if key is not None and key not in self._place_keys
        }
        if new_places:
            table = _dimension_table(PLACE_SCHEMA, list(new_places), list(new_places.values()))
            self.places = pa.concat_tables([self.places, table])
            self._place_keys.update(new_places)

    def places_of(self, keys: pa.Array) -> pa.Table:
        """The places named by ``keys`` (a batch's), each once."""
        return self.places.filter(pc.is_in(self.places.column("place_key"), value_set=keys))

    def origins(self, rows: pa.Array, agents: list[str | None], agent_at: pa.Array) -> pa.Array:
        """The origin id of each event's (address row, user agent ``agents[agent_at]``); null
        where the row is. Each distinct pair of the batch is hashed once, and held once (the
        column is dictionary-encoded over the pairs)."""
        enrichment = self.enrichment
        assert enrichment is not None, "origins are an enrichment's"
        texts = pa.array([agent or "" for agent in agents], pa.string())  # none: hashes as ""
        at = pc.cast(agent_at, pa.int64())
        pair_key = pc.add(pc.shift_left(pc.cast(rows, pa.int64()), _PAIR_SHIFT), at)
        pairs = distinct(pair_key)  # nulls (no address row) left out
        origins = enrichment.origin_ids_of(
            self.canonical,
            pc.shift_right(pairs, _PAIR_SHIFT),
            texts,
            pc.bit_wise_and(pairs, (1 << _PAIR_SHIFT) - 1),
        )
        return pa.DictionaryArray.from_arrays(index_of(pair_key, pairs), origins)


def _by_row(column: pa.Array, rows: pa.Array) -> pa.DictionaryArray:
    """``column[rows[i]]`` for every event (null where ``rows`` is), dictionary-encoded over
    the rows the batch names: each text is held once, not copied for every event (the store
    turns these ids into numbers once per distinct text; see events/keys.py spelled_keys)."""
    rows = pc.cast(rows, pa.int64())
    used = distinct(rows)
    return pa.DictionaryArray.from_arrays(index_of(rows, used), column.take(used))


def _appended_at(new: pa.Array, first: int, at: pa.Array) -> pa.Array:
    """Positions after appending the values where ``new`` is true, in order, from ``first``:
    those get ``first``, ``first + 1``, ...; the others keep ``at`` (int32, null for null)."""
    appended = pc.add(pc.cumulative_sum(pc.cast(new, pa.int32())), first - 1)
    return pc.if_else(new, appended, at)


def _extended(column: pa.Array, values: Sequence[Any]) -> pa.Array:
    return pa.concat_arrays([column, pa.array(values, column.type)])


def _encode(column: pa.ChunkedArray | pa.Array, *, nulls: bool) -> tuple[pa.Array, pa.Array]:
    """The distinct values of a column in the order first seen, and each row's int32 index
    into them: one hash pass over the texts (``pc.unique`` then ``pc.index_in`` took two, twice
    the time). With ``nulls``, null is one of the values; otherwise a null row's index is
    null."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = pc.dictionary_encode(column, null_encoding="encode" if nulls else "mask")
    return encoded.dictionary, encoded.indices


def _distinct(column: pa.ChunkedArray | pa.Array) -> tuple[list[Any], pa.Array]:
    """The distinct values of a column (Python list, None among them) and each row's index
    into them."""
    values, at = _encode(column, nulls=True)
    return values.to_pylist(), at


def _encoded(index: pa.Array, answers: Sequence[Any]) -> pa.Array:
    """``answers[index[i]]`` for every row as a dictionary-encoded text column: each distinct
    text is held once (the stores take it as text)."""
    index = pc.cast(index, pa.int32())
    if isinstance(index, pa.ChunkedArray):  # from_arrays would read it value by value
        index = index.combine_chunks()
    return pa.DictionaryArray.from_arrays(index, pa.array(answers, pa.string()))


def _constant(text: str | None, rows: int) -> pa.Array:
    """The same text (or null) in every row, held once."""
    if text is None:
        return pa.nulls(rows, pa.string())
    return _encoded(pa.repeat(pa.scalar(0, pa.int32()), rows), [text])


def _mapped(index: pa.Array, answers: Sequence[Any], type_: pa.DataType) -> pa.Array:
    """``answers[index[i]]`` for every row, as an Arrow array (null where index is null)."""
    return pa.array(answers, type_).take(index)


def build_batch(
    events: pa.Table,
    logs: Sequence[LogEntry],
    *,
    line_warnings: Sequence[LineWarnings] = (),
    import_id: str,
    owner_id: str,
    target: Target,
    lookups: Lookups,
) -> BatchResult:
    """The events table's columns for ``events`` (a table of decoding.DECODED_SCHEMA, ordered
    by line), plus every log entry for these lines: the decoder's ``logs`` and
    ``line_warnings`` with those of the batch's own checks."""
    undecodable = failed_line_count(logs)  # a line with several errors fails once
    total = events.num_rows
    not_found: list[LogEntry] = []
    stored: pa.Array | None = None  # the batch's stored ids, when already asked for
    if lookups.stored_targets is not None:
        events, not_found, stored = _held_by_others(events, lookups, lookups.stored_targets)
    others = None
    if target.kind == "multi":
        events, unresolved = _resolve_targets(events, lookups)
        not_found += unresolved
        package_ids, pixel_ids = events.column("package_id"), events.column("pixel_id")
    else:
        package_ids = _constant(target.package_id, events.num_rows)
        pixel_ids = _constant(target.pixel_id, events.num_rows)
        others = _other_targets(events, target, lookups)
    lines = events.column("line")
    unique_ids = events.column("unique_id")
    # Without $unique_id the id is stable per (import, line): a replayed line never doubles.
    ids = unique_ids
    if unique_ids.null_count:
        ids = pc.coalesce(unique_ids, derived_ids(import_id, lines))

    raw = events.column("remote_address")
    dnt = events.column("dnt")
    if pc.any(dnt).as_py():
        # A request that asked not to be tracked gets no look-up of its address at all (so no
        # address row, no place and no ids: _columns need not take them away again).
        raw = pc.if_else(pc.fill_null(dnt, False), pa.scalar(None, raw.type), raw)
    values, raw_at = _encode(raw, nulls=False)
    book = lookups.addresses
    book_at = book.rows(values).take(raw_at)
    invalid = pc.is_null(book.canonical).take(book_at)
    invalid = pc.fill_null(invalid, True)  # no address
    bad_addresses = pc.filter(lines, pc.and_(invalid, pc.is_valid(raw))).combine_chunks()
    # Each event's address row, where it has an address (the book's canonical is not null).
    address_at = pc.if_else(invalid, pa.scalar(None, pa.int32()), book_at)

    # One row per id: a later line with the same $unique_id replaces the earlier one.
    in_file: list[LogEntry] = []
    keep = None
    id_hashes = text_hashes(ids)
    if total and has_repeats(id_hashes):
        keep, in_file = _last_of_each_id(ids, lines, id_hashes)
    columns: dict[str, Any] = {
        "id": ids,
        "package_id": package_ids,
        "pixel_id": pixel_ids,
        "address_at": address_at,
    }
    for name in _CARRIED:
        columns[name] = events.column(name)
    table = pa.table(columns)
    if keep is not None:
        table = table.filter(keep)

    line_warnings = list(line_warnings)
    if others is not None:
        line_warnings.append(others)
    if len(bad_addresses):
        line_warnings.append(LineWarnings(INVALID_REMOTE_ADDRESS, bad_addresses))
    table = table.append_column("id_hash", id_hashes if keep is None else id_hashes.filter(keep))
    with_unique_id = table.select(["id", "line", "id_hash"])
    if table.column("unique_id").null_count:
        with_unique_id = with_unique_id.filter(pc.is_valid(table.column("unique_id")))
    unique = with_unique_id.column("id").combine_chunks()
    unique_hashes = with_unique_id.column("id_hash").combine_chunks()
    replaced = 0
    if with_unique_id.num_rows:
        if stored is None:
            found = lookups.stored_ids(unique)
        else:  # asked with the targets: the ids still in the batch (not held, not refused)
            found = pc.filter(stored, pc.is_in(stored, value_set=unique.cast(stored.type)))
        # Each recent batch asked apart: their ids are not copied into one array a batch.
        also = [_also_in(unique, unique_hashes, *recent) for recent in lookups.recent_ids]
        if len(found) or any(len(a) for a in also):
            known = pa.concat_arrays([found.cast(unique.type), *also])  # also: unique's
            hit = with_unique_id.filter(pc.is_in(with_unique_id.column("id"), value_set=known))
            replaced = hit.num_rows
            if keep is not None:  # an id may have earlier lines in the batch than the one kept
                hit = _first_lines(ids, lines, hit.column("id").combine_chunks())
            line_warnings.append(
                LineWarnings(
                    DUPLICATE_UNIQUE_ID,
                    hit.column("line").combine_chunks(),
                    hit.column("id").combine_chunks(),
                )
            )

    lookups.built(unique, unique_hashes)
    batch, excluded, dnt_count = _columns(table, owner_id, import_id, lookups)
    if keep is not None:  # lines replaced within the batch are counted as every line is
        replaced_excluded, replaced_dnt = _flagged(events.filter(pc.invert(keep)), lookups)
        excluded += replaced_excluded
        dnt_count += replaced_dnt
    entries = sorted([*logs, *not_found, *in_file], key=lambda entry: entry.line or 0)
    warnings = sum(1 for entry in entries if entry.level == "warning")
    warnings += sum(len(group) for group in line_warnings)
    # A line replaced later in the same file was still imported (and then replaced).
    return BatchResult(
        batch,
        entries,
        total - len(not_found),
        undecodable + len(not_found),
        warnings,
        excluded,
        dnt_count,
        line_warnings,
        replaced,
    )


def _other_targets(events: pa.Table, target: Target, lookups: Lookups) -> LineWarnings | None:
    """A warning for each line of a one-artifact import that names another artifact of the
    import's kind ($package in a package's import, $tracking_pixel in a pixel's): it goes
    into the import's own, and the line's is ignored, which the line's author should hear."""
    field, column, resolve, own = (
        ("$package", "package", lookups.resolve_package, target.package_id)
        if target.kind == "package"
        else ("$tracking_pixel", "pixel", lookups.resolve_pixel, target.pixel_id)
    )
    named = events.column(column)
    if named.null_count == len(named):
        return None
    refs, at = _distinct(named)
    texts = [
        None if ref is None or resolve(ref) == own else f"{field} {quoted(ref)}" for ref in refs
    ]
    if all(text is None for text in texts):
        return None
    per_line = _encoded(at, texts)
    warned = pc.is_valid(per_line)
    lines = pc.filter(events.column("line").combine_chunks(), warned)
    return LineWarnings(OTHER_TARGET, lines, pc.filter(per_line, warned).cast(pa.string()))


def _resolve_targets(events: pa.Table, lookups: Lookups) -> tuple[pa.Table, list[LogEntry]]:
    """A multi-artifact import's rows with their package and pixel ids, and an entry for every
    line that names none the importer may write."""
    packages, package_at = _distinct(events.column("package"))
    pixels, pixel_at = _distinct(events.column("pixel"))
    package_ids = [None if p is None else lookups.resolve_package(p) for p in packages]
    pixel_ids = [None if p is None else lookups.resolve_pixel(p) for p in pixels]
    package_id = _encoded(package_at, package_ids)
    pixel_id = _encoded(pixel_at, pixel_ids)
    package, pixel = events.column("package"), events.column("pixel")
    bad = pc.or_(
        pc.and_(pc.is_null(package), pc.is_null(pixel)),
        pc.or_(
            pc.and_(pc.is_valid(package), pc.is_null(package_id)),
            pc.and_(pc.is_valid(pixel), pc.is_null(pixel_id)),
        ),
    )
    # A pixel attached to one package, or to none, named beside another package: which
    # artifact the event counts under would depend on who asks (an export counts a package's
    # own events and its pixels'; a pixel's export shows its events with their package, to
    # people the package may block), so such a line is refused.
    if pc.any(pc.and_(pc.is_valid(package_id), pc.is_valid(pixel_id))).as_py():
        pixels_package = [None if p is None else lookups.pixel_package(p) for p in pixel_ids]
        elsewhere = pc.not_equal(
            pc.fill_null(_encoded(pixel_at, pixels_package).cast(pa.string()), ""),
            package_id.cast(pa.string()),
        )
        bad = pc.or_(bad, pc.and_(pc.is_valid(pixel_id), pc.fill_null(elsewhere, False)))
    entries: list[LogEntry] = []
    if pc.any(bad).as_py():
        rejected = events.filter(bad)
        for line, ref, pixel_ref in zip(
            rejected.column("line").to_pylist(),
            rejected.column("package").to_pylist(),
            rejected.column("pixel").to_pylist(),
            strict=True,
        ):
            entries.append(_not_found(line, ref, pixel_ref, lookups))
    events = events.append_column("package_id", package_id).append_column("pixel_id", pixel_id)
    return (events.filter(pc.invert(bad)) if entries else events), entries


def _held_by_others(
    events: pa.Table, lookups: Lookups, stored_targets: Callable[[pa.Array], pa.Table]
) -> tuple[pa.Table, list[LogEntry], pa.Array]:
    """The lines whose ``$unique_id`` names a stored event the importer may not write (of a
    package or pixel of the owner they may not import into, or of none left), taken out with
    an error each: replacing that event would delete it from where it counts. (The error tells
    that the id is in use, as a ``duplicate-unique-id`` warning would; not where.) Also the
    stored ids the importer may replace: the batch's look-up of stored ids, made here."""
    unique = events.column("unique_id")
    if unique.null_count == len(unique):
        return events, [], pa.array([], pa.string())
    stored = stored_targets(pc.unique(unique.combine_chunks()).drop_null().cast(pa.string()))

    def writable(package_id: str | None, pixel_id: str | None) -> bool:
        if package_id is None and pixel_id is None:
            return False
        return (package_id is None or lookups.resolve_package(package_id) is not None) and (
            pixel_id is None or lookups.resolve_pixel(pixel_id) is not None
        )

    mine = pa.array(
        [
            writable(package_id, pixel_id)
            for package_id, pixel_id in zip(
                stored.column("package_id").to_pylist(),
                stored.column("pixel_id").to_pylist(),
                strict=True,
            )
        ],
        pa.bool_(),
    )
    ids = stored.column("id").combine_chunks()
    held = pc.filter(ids, pc.invert(mine))
    if not len(held):
        return events, [], ids
    refused = pc.fill_null(pc.is_in(unique, value_set=held), False)
    rejected = events.filter(refused)
    entries = [
        LogEntry(
            line=line,
            level="error",
            type=ARTIFACT_NOT_FOUND,
            code=UNIQUE_ID_NOT_WRITABLE,
            message=(
                f"$unique_id {quoted(event_id)} names an event of a package or tracking pixel "
                "you may not import into: the line would replace it, so it is not imported"
            ),
        )
        for line, event_id in zip(
            rejected.column("line").to_pylist(),
            rejected.column("unique_id").to_pylist(),
            strict=True,
        )
    ]
    return events.filter(pc.invert(refused)), entries, pc.filter(ids, mine)


def _not_found(line: int, package: str | None, pixel: str | None, lookups: Lookups) -> LogEntry:
    if package is None and pixel is None:
        message = "the line names no $package or $tracking_pixel"
    elif package is not None and lookups.resolve_package(package) is None:
        message = f"package {quoted(package)} not found, or you may not import into it"
    elif package is not None and (pixel_id := lookups.resolve_pixel(str(pixel))) is not None:
        owned_by = (
            "belongs to another package than"
            if lookups.pixel_package(pixel_id) is not None
            else "belongs to no package, so it cannot count for"
        )
        message = (
            f"tracking pixel {quoted(str(pixel))} {owned_by} {quoted(package)}: name the "
            "pixel's own package, or no $package"
        )
    else:
        message = f"tracking pixel {quoted(str(pixel))} not found, or you may not import into it"
    return LogEntry(
        line=line,
        level="error",
        type=ARTIFACT_NOT_FOUND,
        code=ARTIFACT_NOT_FOUND,
        message=message,
        package_id=package,
        tracking_pixel_id=pixel,
    )


def _also_in(ids: pa.Array, hashes: pa.Array, others: pa.Array, other_hashes: pa.Array) -> pa.Array:
    """The ``ids`` that are also among ``others`` (each array with its text_hashes), in the
    order of ``ids``."""
    none = pa.array([], pa.string())
    if not len(others):
        return none
    candidates = pc.is_valid(index_of(hashes, other_hashes))
    if not pc.any(candidates).as_py():
        return none
    maybe = pc.filter(ids, candidates)
    theirs = pc.filter(others, pc.is_in(other_hashes, value_set=pc.filter(hashes, candidates)))
    return pc.filter(maybe, pc.is_in(maybe, value_set=theirs))


def _first_lines(ids: pa.Array, lines: pa.Array, hit_ids: pa.Array) -> pa.Table:
    """Each of ``hit_ids`` (ids already stored) with its first line in the batch: that line
    replaced the stored event, so it is the one warned about that; each later line of the id
    replaced the line before it, warned by :func:`_last_of_each_id`. (Before, the kept last
    line was warned twice and the first not at all.)"""
    rows = pa.table({"id": ids, "line": lines}).filter(pc.is_in(ids, value_set=hit_ids))
    firsts = rows.group_by("id", use_threads=False).aggregate([("line", "min")])
    firsts = firsts.sort_by("line_min")
    return pa.table({"id": firsts.column("id"), "line": firsts.column("line_min")})


def _last_of_each_id(
    ids: pa.Array, lines: pa.Array, hashes: pa.Array
) -> tuple[pa.Array, list[LogEntry]]:
    """Which rows to keep (the last of each id) and a warning for each line that replaced an
    earlier one of the same file. Python looks only at the ids whose hash repeats."""
    counts = pc.value_counts(hashes)
    repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    mask = pc.is_in(hashes, value_set=repeated)
    rows = pc.indices_nonzero(mask).to_pylist()
    previous: dict[str, tuple[int, int]] = {}  # id -> (row, line) of its latest line so far
    dropped: list[int] = []
    entries: list[LogEntry] = []
    for row, event_id, line in zip(
        rows, pc.filter(ids, mask).to_pylist(), pc.filter(lines, mask).to_pylist(), strict=True
    ):
        if event_id in previous:
            earlier_row, earlier_line = previous[event_id]
            entries.append(
                _replaced(line, event_id, f"the event from line {earlier_line} of this file")
            )
            dropped.append(earlier_row)
        previous[event_id] = (row, line)
    return not_at(len(ids), pa.array(dropped, pa.int64())), entries


def _flagged(events: pa.Table, lookups: Lookups) -> tuple[int, int]:
    """How many of ``events`` (lines a later line of the batch replaced, so not written) are
    excluded and do-not-track: the import's counters count every line, as they do a line
    replaced by one of a later batch (before, only the lines kept were counted, so the counts
    depended on where the batches began: they differed between the backends)."""
    dnt = int(pc.sum(events.column("dnt")).as_py() or 0)
    enrichment = lookups.enrichment
    if enrichment is None:
        return 0, dnt
    agents, agent_at = _distinct(events.column("user_agent"))  # each agent once, as _enrich
    excluded = _mapped(agent_at, [enrichment.agent(a)[1] for a in agents], pa.bool_())
    return int(pc.sum(excluded).as_py() or 0), dnt


def _columns(
    table: pa.Table, owner_id: str, import_id: str, lookups: Lookups
) -> tuple[EventBatch, int, int]:
    """The batch, normalized (events/batch.py); how many events are excluded and DNT."""
    rows = table.num_rows
    dnt = table.column("dnt")
    dnt_count = int(pc.sum(dnt).as_py() or 0)
    address_at = table.column("address_at")  # none for do-not-track events (build_batch)
    columns: dict[str, Any] = {
        "id": table.column("id"),
        "owner_id": _constant(owner_id, rows),
        "package_id": table.column("package_id"),
        "pixel_id": table.column("pixel_id"),
        "import_id": _constant(import_id, rows),
        "line": table.column("line"),
        "time": pc.cast(table.column("time"), pa.int64()),
        "dnt": dnt,
    }
    for name in ("type", "version", "referer", "user_agent", "domain", "variables", "headers"):
        columns[name] = table.column(name)
    enrichment = lookups.enrichment
    excluded = 0
    places, agents = PLACE_SCHEMA.empty_table(), AGENT_SCHEMA.empty_table()
    if enrichment is not None and rows:
        excluded, places, agents = _enrich(
            columns, table, address_at, enrichment, lookups.addresses
        )
    if lookups.keep_ip_addresses:  # kept as given, except where the event asked not to be
        raw = table.column("remote_address")
        columns["remote_address"] = pc.if_else(dnt, pa.scalar(None, pa.string()), raw)
    filled = {
        field.name: columns.get(field.name, pa.nulls(rows, field.type)) for field in ROW_SCHEMA
    }
    batch = EventBatch(conform(pa.table(filled), ROW_SCHEMA), places, agents)
    return batch, excluded, dnt_count


def _enrich(
    columns: dict[str, Any],
    table: pa.Table,
    address_at: pa.Array,
    enrichment: ImportEnrichment,
    book: AddressBook,
) -> tuple[int, pa.Table, pa.Table]:
    """Fill the enrichment columns from the address book (each event's row ``address_at``,
    null: no place) and the batch's distinct agents: the number excluded, and the places and
    agents the events name by key."""
    columns["endpoint_id"] = _by_row(book.endpoint, address_at)
    columns["place_key"] = book.place_key.take(address_at)
    for name in ROW_PLACE_FIELDS:  # the place's fields the row carries too (texts)
        columns[name] = book.fields[name].take(address_at)
    places = book.places_of(distinct(columns["place_key"]))

    agents, agent_at = _distinct(table.column("user_agent"))
    columns["user_agent"] = _encoded(agent_at, agents)
    readings = [enrichment.agent(a) for a in agents]
    agent_keys = [enrichment.agent_key(a) for a in agents]
    columns["agent_key"] = _mapped(agent_at, agent_keys, pa.int64())
    agent_table = _dimension_table(AGENT_SCHEMA, agent_keys, [values for values, _ in readings])
    columns["excluded"] = _mapped(agent_at, [excluded for _, excluded in readings], pa.bool_())
    columns["origin_id"] = book.origins(address_at, agents, agent_at)
    return int(pc.sum(columns["excluded"]).as_py() or 0), places, agent_table


def _dimension_table(
    schema: pa.Schema, keys: Sequence[int | None], values: Sequence[Sequence[object]]
) -> pa.Table:
    """The distinct keyed value sets as a table of ``schema`` (key first)."""
    unique = {key: row for key, row in zip(keys, values, strict=True) if key is not None}
    columns = [list(unique)] + [list(column) for column in zip(*unique.values(), strict=True)]
    if not unique:
        return schema.empty_table()
    return pa.Table.from_arrays(
        [pa.array(c, field.type) for c, field in zip(columns, schema, strict=True)],
        schema=schema,
    )


def _replaced(line: int, unique_id: str, what: str) -> LogEntry:
    return LogEntry(
        line=line,
        level="warning",
        type=DUPLICATE_UNIQUE_ID,
        code=DUPLICATE_UNIQUE_ID,
        message=replaced_message(unique_id, what),
    )
