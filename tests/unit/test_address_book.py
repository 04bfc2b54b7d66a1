"""The import pipeline's address book: each address resolved once per import, origins hashed
once per pair, and the same answers after the book is cleared for being full."""

from __future__ import annotations

import random
from typing import Any

import pyarrow as pa
import pytest

from eventport.domain.exclusions import ExclusionRules
from eventport.enrich.enricher import (
    PLACE_COLUMNS,
    Enricher,
    ImportEnrichment,
    canonical_address,
    open_enricher,
)
from eventport.imports import pipeline
from eventport.imports.decoding import parsed_table
from eventport.imports.pipeline import AddressBook
from eventport.imports.records import decode_ndjson

KEY = bytes(range(32))
RAW = ["8.8.8.8", " 8.8.8.8 ", "::ffff:8.8.8.8", "152.241.796.177", "10.0.0.1", "2001:db8::1"]


@pytest.fixture(scope="module")
def enricher() -> Enricher:
    made = open_enricher(enabled=True, key=KEY)
    assert made is not None
    return made


class CountingEnrichment(ImportEnrichment):
    """The real enrichment, counting the addresses it is asked to look up."""

    asked: list[str]

    def located(self, addresses: Any) -> Any:
        self.asked.extend(addresses)
        return super().located(addresses)


@pytest.fixture
def run(enricher: Enricher) -> CountingEnrichment:
    counting = CountingEnrichment(enricher, ExclusionRules())
    counting.asked = []
    return counting


def resolved(book: AddressBook, raw: list[str | None]) -> list[tuple[Any, ...]]:
    """Per raw text: (canonical, endpoint id, place key, country) as the book holds them."""
    rows = book.rows(pa.array(raw, pa.string()))
    return list(
        zip(
            book.canonical.take(rows).to_pylist(),
            book.endpoint.take(rows).to_pylist(),
            book.place_key.take(rows).to_pylist(),
            book.fields["origin_country"].take(rows).to_pylist(),
            strict=True,
        )
    )


def test_addresses_resolve_once_per_import(run: CountingEnrichment) -> None:
    book = AddressBook(run)
    first = resolved(book, [*RAW, None])
    assert sorted(run.asked) == ["10.0.0.1", "2001:db8::1", "8.8.8.8"]  # canonical, once each
    google = run.place("8.8.8.8")
    assert first[0] == ("8.8.8.8", google[0], first[0][2], "US")
    assert first[1] == first[2] == first[0]  # other spellings of the same address
    assert first[3] == (None, None, None, None)  # not an address
    assert first[6] == (None, None, None, None)  # no address
    assert first[4][1] is not None
    assert first[4][3] is None
    run.asked.clear()
    again = resolved(book, ["8.8.8.8", "1.1.1.1", "10.0.0.1"])
    assert run.asked == ["1.1.1.1"]  # only the new one
    assert again[0] == first[0]
    assert again[2] == first[4]
    keys = pa.array([first[0][2]], pa.int64())
    place = book.places_of(keys).to_pylist()
    assert len(place) == 1
    assert place[0]["origin_country"] == "US"
    assert (
        place[0]["cloud_provider_name"]
        == dict(zip(PLACE_COLUMNS, google, strict=True))["cloud_provider_name"]
    )


@pytest.mark.parametrize("extra", [[], ["not an address"], ["8.8.4.4 "]])
def test_a_book_holds_each_address_as_it_resolves_alone(
    enricher: Enricher, extra: list[str]
) -> None:
    """Distinct addresses only (each answer taken in order) or not (answers found by text):
    the book holds what each address resolves to on its own, and every place it names."""
    rng = random.Random(9)
    networks = [f"{rng.randint(1, 223)}.{rng.randint(0, 255)}" for _ in range(20)]
    raw = [
        f"{rng.choice(networks)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}" for _ in range(600)
    ]
    raw = [*dict.fromkeys(raw), "8.8.4.4", *extra]
    book = AddressBook(enricher.for_import(ExclusionRules()))
    held = resolved(book, raw)
    country = PLACE_COLUMNS.index("origin_country")
    for text, (canonical, endpoint, key, origin_country) in zip(raw, held, strict=True):
        alone = enricher.for_import(ExclusionRules())
        if canonical_address(text) is None:
            assert (canonical, endpoint, key, origin_country) == (None, None, None, None)
            continue
        [(values, place_key)] = alone.places([canonical_address(text)])
        assert (endpoint, key, origin_country) == (values[0], place_key, values[country])
    named = {k for _, _, k, _ in held if k is not None}
    assert set(book.places.column("place_key").to_pylist()) == named
    assert len(named) < len(raw) // 2


def test_without_enrichment_the_book_only_knows_addresses() -> None:
    book = AddressBook(None)
    rows = book.rows(pa.array(["8.8.8.8", "nope", None]))
    assert book.canonical.take(rows).to_pylist() == ["8.8.8.8", None, None]
    assert len(book.endpoint) == 0


def test_origins_are_the_single_origins_and_survive_a_full_book(
    run: CountingEnrichment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "_BOOK_MAX", 3)
    book = AddressBook(run)
    batches = [
        (["8.8.8.8", "8.8.8.8", "1.1.1.1", None], ["curl/8", None, "curl/8", "curl/8"]),
        (["1.1.1.1", "9.9.9.9", "8.8.4.4", "8.8.8.8"], ["pip/24", "curl/8", "", "curl/8"]),
        (["8.8.8.8", "9.9.9.9", "1.1.1.1", "8.8.8.8"], ["a", "b", "c", "curl/8"]),
    ]
    cleared = largest = 0
    for raw, agents in batches:
        before = book.raw
        rows = book.rows(pa.array(raw, pa.string()))
        distinct, agent_at = pipeline._distinct(pa.array(agents, pa.string()))
        origins = book.origins(rows, distinct, agent_at).to_pylist()
        want = [
            None if address is None else run.origin(address, agent)
            for address, agent in zip(raw, agents, strict=True)
        ]
        assert origins == want
        # Full: cleared, yet a batch's own addresses always fit.
        largest = max(largest, len({a for a in raw if a is not None}))
        assert len(book.raw) <= max(3, largest)
        cleared += book.raw[: len(before)] != before
    assert cleared  # the book was cleared at least once


def test_an_event_that_asked_not_to_be_tracked_is_not_looked_up(run: CountingEnrichment) -> None:
    """DNT: 1 or Sec-GPC: 1: no look-up of the address at all, not only nothing kept of it (an
    enrichment hunt found every address of a batch looked up, then dropped)."""
    lines = [
        b'{"$time": 1717459200, "$remote_address": "93.184.216.34", "$headers": {"DNT": "1"}}',
        b'{"$time": 1717459200, "$remote_address": "8.8.4.4", "$headers": {"HTTP_SEC_GPC": "1"}}',
        b'{"$time": 1717459200, "$remote_address": "1.1.1.1"}',
    ]
    parsed, entries = decode_ndjson(list(enumerate(lines, start=1)))
    assert entries == []
    lookups = pipeline.Lookups(
        package=lambda _: None, pixel=lambda _: None, stored_ids=lambda ids: ids[:0], enrichment=run
    )
    result = pipeline.build_batch(
        parsed_table(parsed, keep_addresses=False),
        [],
        import_id="import",
        owner_id="owner",
        target=pipeline.Target("package", package_id="package"),
        lookups=lookups,
    )
    assert run.asked == ["1.1.1.1"]
    assert result.do_not_track == 2
