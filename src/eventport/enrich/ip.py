"""IP enrichment, offline: where an address is and who owns its network.

Every field comes from the best source installed with eventport, with no network access:

=========================  ===================================================================
field                      source
=========================  ===================================================================
country                    geoip2fast's bundled GeoLite2 country ranges (MaxMind, 2024-06-18):
                           the newest data that ships offline. GeoLite2 City 2018 answers only
                           for addresses geoip2fast has no range for.
state, city, postal,       GeoLite2 City 2018 (maxminddb-geolite2), the only city data that ships
latitude, longitude        offline, read through maxminddb's C extension. Used only when its
                           country agrees with the country above: in six years blocks move
                           between countries, and Seattle as a city of Korea (3.5.140.2) is
                           worse than no city. Coordinates come only with a city or subdivision:
                           MaxMind's country-level coordinates (a country's centre) are not a
                           place anyone is.
company, domain,           The network owner (geoip2fast's GeoLite2 ASN organisation names,
connection_type,           2024-06-18) resolved by the curated table and keyword rules in
cloud_provider_*           :mod:`eventport.enrich.ip_owners`. Cloud traffic that resolves no
                           further is "hosting", with the provider as company (as Scarf does).
asn                        Only from a configured ASN database: the bundled data names the
                           owner but does not carry the AS number.
=========================  ===================================================================

MaxMind ``.mmdb`` files given to :class:`IpEnricher` replace the bundled data for what they
cover: a City database for country and all location fields, a Country database for the country
(the bundled 2018 City data still supplies cities where its country agrees), an ASN or ISP
database for the owner and AS number. Bundled data that is entirely replaced is never loaded.

Addresses that are not public (invalid, private, loopback, link-local, multicast, reserved,
unspecified, documentation) get :data:`EMPTY_PLACE`; IPv4-mapped (``::ffff:8.8.8.8``) and 6to4
IPv6 addresses are looked up as the IPv4 address they carry.
"""

from __future__ import annotations

import mmap
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata, resources
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import maxminddb

from eventport.enrich.ip_owners import TABLE_REVIEWED, OwnerDirectory
from eventport.enrich.ip_ranges import (
    NOT_PUBLIC,
    CountryAndOwnerData,
    geoip2fast_version,
    load_bundled_data,
    parse_public_addresses,
    public_ipv4_values,
)

try:
    from eventport.enrich import _mmdb
except ImportError:  # not compiled: maxminddb decodes each address's record
    _mmdb = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from maxminddb.types import Record


class Place(NamedTuple):
    """What an IP address tells about where an event came from; None where the data is silent.
    A named tuple: one is made per address looked up, and a tuple is made ~10x faster than a
    frozen dataclass (1.7 us an address, measured with py-spy on an import)."""

    country: str | None = None
    state: str | None = None
    city: str | None = None
    postal: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    company: str | None = None
    domain: str | None = None
    connection_type: str | None = None
    cloud_provider_name: str | None = None
    cloud_provider_domain: str | None = None
    asn: int | None = None


EMPTY_PLACE = Place()


@dataclass(frozen=True)
class DataSource:
    """One data set the enricher answers from, for reports of how fresh the answers are."""

    name: str
    kind: str
    date: str | None
    path: str | None


_LOCATION_KINDS = {"City": "city", "Enterprise": "city", "Country": "country"}
_OWNER_KINDS = ("ASN", "ISP")


_CITIES_MAX = 100_000  # records remembered by a City database (see _Database.cities)
# What a City record gives: its country, and (state, city, postal, latitude, longitude).
CityAnswer = tuple[
    str | None, tuple[str | None, str | None, str | None, float | None, float | None]
]
_NO_CITY: CityAnswer = (None, (None, None, None, None, None))
# What an address's place is made of (IpEnricher.place_signatures): (City record, bundled
# country, bundled owner) of a plain public IPv4 address, its text for any other, None for one
# that is not public.
PlaceSignature = tuple[int, int, int] | str | None


class _Database:
    """A MaxMind database: maxminddb's reader, and for City look-ups of many addresses at once
    the search tree walked in C (enrich/_mmdb.c), so that each data record is decoded once."""

    def __init__(self, reader: maxminddb.Reader, source: DataSource, path: Path) -> None:
        self.reader = reader
        self.source = source
        self._tree: tuple[memoryview, int, int, int] | None = None  # see _search_tree
        self._data: memoryview | None = None  # the data section, in the same mapping
        self._mapping: mmap.mmap | None = None
        self._cities: dict[int, CityAnswer] = {}  # by record (its node value)
        self._path = path

    def with_source(self, source: DataSource) -> _Database:
        return _Database(self.reader, source, self._path)

    def get(self, address: str) -> Record | None:
        try:
            return self.reader.get(address)
        except (ValueError, maxminddb.InvalidDatabaseError):
            # an IPv6 address in an IPv4-only database, or a damaged file: nothing known
            return None

    def cities(self, texts: list[str]) -> list[CityAnswer]:
        """:func:`_city` of the record of each address (public addresses' texts). Where the
        tree walk is compiled, addresses of the same network's record share one decode."""
        found = self.records(texts) if texts else None
        if found is None:  # not compiled, or a damaged file: maxminddb, address by address
            return [_city(self.get(text)) for text in texts]
        return self.cities_of(found, texts)

    def cities_of(self, records: list[int], texts: list[str]) -> list[CityAnswer]:
        """:meth:`cities` of addresses whose records (:meth:`records`) are known."""
        cities = self._cities
        answers = []
        for text, record in zip(texts, records, strict=True):
            if record <= 0:
                answers.append(_NO_CITY)
                continue
            answer = cities.get(record)
            if answer is None:
                if len(cities) >= _CITIES_MAX:
                    cities.clear()
                answer = cities[record] = self._city_of(record, text)
            answers.append(answer)
        self._release_pages()
        return answers

    def records(self, texts: list[str]) -> list[int] | None:
        """Each address's record, found by the tree walk in C (see ``_mmdb.records``): equal
        numbers name the same record. None where the walk is not compiled, or for a damaged
        tree."""
        if _mmdb is None:
            return None
        try:
            return _mmdb.records(*self._search_tree(), texts)
        except ValueError:
            return None

    def _release_pages(self) -> None:
        """Unmap the file's pages that the look-ups read, from this process only: they stay in
        the kernel's page cache (shared, clean, reclaimable) and come back at the next read
        with a minor fault. Counted in the server's resident memory otherwise: up to the
        file's 57 MB at the peak of an import (a 5M-event import's peak 695 -> 642 MB, at the
        same speed: only the addresses new to an import are looked up)."""
        if self._mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._mapping.madvise(mmap.MADV_DONTNEED)

    def _city_of(self, record: int, text: str) -> CityAnswer:
        """:func:`_city` of the data record a tree walk led ``text`` to, read from the same
        mapping: only the fields it takes (``_mmdb.city``; decoding the whole record, names in
        eight languages and more, took ~14 us a record, ~20x as long)."""
        _, node_count, _, _ = self._search_tree()
        data = self._data
        assert data is not None
        try:
            answer: CityAnswer = _mmdb.city(data, record - node_count - 16)
        except ValueError:  # a damaged data section: maxminddb says what it can
            return _city(self.get(text))
        return answer

    def _search_tree(self) -> tuple[memoryview, int, int, int]:
        """The file's search tree, mapped read-only (shared with the page cache), with the
        metadata that reads it: node count, record size, IP version. The data section after
        it is read from the same mapping (:meth:`_record`): maxminddb's reader maps the file
        again, and reading records through it kept the tree's pages resident twice (21 MB
        more at the peak of an import of 100,000 distinct addresses)."""
        if self._tree is None:
            meta = self.reader.metadata()
            with self._path.open("rb") as file:
                mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
            size = meta.node_count * meta.record_size // 4
            self._mapping = mapped
            self._data = memoryview(mapped)[size + 16 :]
            self._tree = (
                memoryview(mapped)[:size],
                meta.node_count,
                meta.record_size,
                meta.ip_version,
            )
        return self._tree


def _open_database(path: Path, role: str) -> _Database:
    """Open a MaxMind database for a role ("location" or "asn"), or say clearly why not."""
    try:
        reader = maxminddb.open_database(str(path))
    except (OSError, maxminddb.InvalidDatabaseError) as error:
        raise ValueError(f"cannot read MaxMind database {path}: {error}") from error
    meta = reader.metadata()
    kind = _database_kind(meta.database_type, role)
    if kind is None:
        reader.close()
        wanted = "a City or Country" if role == "location" else "an ASN or ISP"
        raise ValueError(f"{path} is a {meta.database_type} database, not {wanted} database")
    name = f"{meta.database_type} (MaxMind database {path})"
    source = DataSource(name, kind, _epoch_date(meta.build_epoch), str(path))
    return _Database(reader, source, path)


def check_database(path: Path, role: str) -> None:
    """Whether ``path`` is a MaxMind database for ``role`` ("location" or "asn"): a
    :class:`ValueError` that says why not."""
    _open_database(path, role).reader.close()


def _database_kind(database_type: str, role: str) -> str | None:
    if role == "asn":
        return "asn" if any(word in database_type for word in _OWNER_KINDS) else None
    for word, kind in _LOCATION_KINDS.items():
        if word in database_type:
            return kind
    return None


def _epoch_date(epoch: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


def _bundled_city_database() -> _Database:
    path = Path(str(resources.files("_maxminddb_geolite2") / "GeoLite2-City.mmdb"))
    database = _open_database(path, "location")
    version = metadata.version("maxminddb-geolite2")
    source = DataSource(
        f"GeoLite2 City (maxminddb-geolite2 {version})",
        "city",
        database.source.date,
        str(path),
    )
    return database.with_source(source)


class _Sources:
    """The data actually in use, loaded together the first time anything is looked up."""

    def __init__(self, location: _Database | None, owner: _Database | None) -> None:
        self.location_override = location
        self.owner_override = owner
        if location is not None and location.source.kind == "city":
            self.city = location
        else:
            self.city = _bundled_city_database()
        needs_bundled = location is None or owner is None
        self.bundled: CountryAndOwnerData | None = load_bundled_data() if needs_bundled else None
        # Without an override that answers by the address, an address's place is what its City
        # and bundled answers make it (IpEnricher.lookup_many shares it between addresses).
        self.shares_places = owner is None and location in (None, self.city)

    def describe(self) -> list[DataSource]:
        described: list[DataSource] = []
        if self.location_override is not None:
            described.append(self.location_override.source)
        bundled = self.bundled
        if bundled is not None:
            name = f"geoip2fast {geoip2fast_version()} ({bundled.info})"
            path = str(bundled.path)
            if self.location_override is None:
                described.append(DataSource(name, "country", bundled.date, path))
            if self.owner_override is None:
                described.append(DataSource(name, "asn", bundled.date, path))
        if self.city is not self.location_override:
            described.append(self.city.source)
        if self.owner_override is not None:
            described.append(self.owner_override.source)
        described.append(
            DataSource("eventport cloud provider table (ip_owners)", "cloud", TABLE_REVIEWED, None)
        )
        return described


class IpEnricher:
    """Looks up addresses offline. Make one per process and keep it: loading costs memory.

    Loading happens once, under a lock, on the first lookup or :meth:`sources` call, and takes
    0.3-0.7 s. It keeps ~30 MB, plus the pages of the City database that look-ups touch (up to
    its 57 MB, mapped from the file: shared page cache the kernel can reclaim). While loading,
    geoip2fast's unpickled lists briefly need ~110 MB more, so call ``sources()`` at start-up
    rather than let the first import pay for it at its own peak. Look-ups only read (the owner
    memo's writes are single dict operations) and are safe from several threads.
    """

    def __init__(
        self, *, city_database: Path | None = None, asn_database: Path | None = None
    ) -> None:
        # Opening a .mmdb only maps it, so a wrong path fails here, at start-up, not mid-import.
        self._location = _open_database(city_database, "location") if city_database else None
        self._owner = _open_database(asn_database, "asn") if asn_database else None
        self._owners = OwnerDirectory()
        self._sources: _Sources | None = None
        self._loading = threading.Lock()

    def lookup(self, address: str) -> Place:
        """The place of one address; EMPTY_PLACE for anything that is not a public address."""
        if not isinstance(address, str):
            return EMPTY_PLACE
        return self.lookup_many([address])[address]

    def lookup_many(self, addresses: Iterable[str]) -> dict[str, Place]:
        """One entry per distinct input string, each looked up once; addresses of one place
        share one Place (one per signature: :meth:`signed_places`), unless an override
        answers by the address."""
        distinct = list(dict.fromkeys(addresses))
        signatures = self.place_signatures(distinct)
        places = (
            self._places_of(distinct)
            if signatures is None
            else self.signed_places(signatures, distinct)
        )
        return dict(zip(distinct, places, strict=True))

    def _places_of(self, texts: list[str]) -> list[Place]:
        """The place of each text, each made on its own (no signature tells which share one)."""
        parsed = parse_public_addresses(texts)
        public = [address for address in parsed if address is not None]
        if not public:
            return [EMPTY_PLACE] * len(texts)
        sources = self._loaded()
        cities = iter(sources.city.cities([address.text for address in public]))
        bundled = sources.bundled
        known: Iterator[tuple[str | None, str]] = repeat((None, ""))
        if bundled is not None:  # the bundled country and owner of each, at once
            countries, org_names = bundled.countries_and_org_names(public)
            known = zip(countries, org_names, strict=True)
        return [
            EMPTY_PLACE
            if address is None
            else self._place(sources, address.text, next(cities), next(known))
            for address in parsed
        ]

    def place_signatures(self, texts: list[str]) -> list[PlaceSignature] | None:
        """For each canonical address, what :meth:`lookup_many` makes its place of, found
        without making it: (City record, bundled country, bundled owner), as numbers, for a
        plain public IPv4 address; None for a plain one that is not public (no place); the
        text itself for any other. Equal signatures mean equal places, so a caller makes one
        place per signature. All found at once, in C: ~1 us an address, against ~7 for
        making its place. None where places are not shared (:attr:`shares_places`) or the
        tree walk is not compiled."""
        sources = self._loaded()
        bundled = sources.bundled
        if not sources.shares_places or bundled is None:
            return None
        records = sources.city.records(texts)
        if records is None:
            return None
        values = public_ipv4_values(texts)
        keys = [value if value >= 0 else 0 for value in values]
        countries = bundled.countries_v4.find_many(keys)
        owners = bundled.owners_v4.find_many(keys)
        return [
            (record, country, owner) if value >= 0 else None if value == NOT_PUBLIC else text
            for text, value, record, country, owner in zip(
                texts, values, records, countries, owners, strict=True
            )
        ]

    def signed_places(self, signatures: list[PlaceSignature], texts: list[str]) -> list[Place]:
        """The place of each address with its signature (:meth:`place_signatures`): one Place
        for each signature, made from its parts (what :meth:`lookup_many` answers, without
        finding the parts again)."""
        sources = self._loaded()
        bundled = sources.bundled
        assert bundled is not None, "signatures are made only with the bundled data"
        # An address for each signature (any one: they all have its place).
        first: dict[PlaceSignature, str] = dict(zip(signatures, texts, strict=True))
        others = [text for signature, text in first.items() if isinstance(signature, str)]
        parts = [(s, t) for s, t in first.items() if isinstance(s, tuple)]
        cities = iter(sources.city.cities_of([s[0] for s, _ in parts], [t for _, t in parts]))
        codes, names = bundled.country_codes, bundled.org_names
        made: dict[PlaceSignature, Place] = dict(zip(others, self._places_of(others), strict=True))
        made[None] = EMPTY_PLACE
        for signature, text in parts:
            _, country, owner = signature
            bundled_answer = (
                codes[country] if country >= 0 else None,
                names[owner] if owner >= 0 else "",
            )
            made[signature] = self._place(sources, text, next(cities), bundled_answer)
        return [made[signature] for signature in signatures]

    @property
    def shares_places(self) -> bool:
        """Whether :meth:`lookup_many` answers addresses of the same place with one Place
        object (it does unless an override database answers by the address)."""
        return self._loaded().shares_places

    def sources(self) -> list[DataSource]:
        """Each data set in use, with its date; loads the data if it is not loaded yet."""
        return self._loaded().describe()

    def _loaded(self) -> _Sources:
        sources = self._sources
        if sources is None:
            with self._loading:
                if self._sources is None:
                    self._sources = _Sources(self._location, self._owner)
                sources = self._sources
        return sources

    def _place(
        self,
        sources: _Sources,
        text: str,
        city: CityAnswer,
        bundled: tuple[str | None, str],
    ) -> Place:
        """``bundled``: the address's country and owner's name in the bundled data (loaded
        whenever an override is missing)."""
        city_country, located = city
        location_override = sources.location_override
        if location_override is None:
            country = bundled[0]
        elif location_override is sources.city:
            country = city_country
        else:
            country = _country(location_override.get(text))
        if country is None:
            country = city_country

        asn: int | None = None
        if sources.owner_override is not None:
            asn, org_name = _asn_and_org(sources.owner_override.get(text))
        else:
            org_name = bundled[1]
        owner = self._owners.owner(asn, org_name) if asn is not None or org_name else None

        if country is None and owner is None:
            return EMPTY_PLACE
        state = town = postal = None
        latitude = longitude = None
        if city_country == country:
            state, town, postal, latitude, longitude = located
        if owner is None:
            return Place(country, state, town, postal, latitude, longitude)
        return Place(
            country,
            state,
            town,
            postal,
            latitude,
            longitude,
            owner.company,
            owner.domain,
            owner.connection_type,
            owner.cloud_provider_name,
            owner.cloud_provider_domain,
            asn,
        )


def _city(record: Record | None) -> CityAnswer:
    """What a City database's record says: its country and its location fields."""
    if not isinstance(record, dict):
        return _NO_CITY
    return _country(record), _location(record)


def _country(record: Record | None) -> str | None:
    if not isinstance(record, dict):
        return None
    country = record.get("country")
    code = country.get("iso_code") if isinstance(country, dict) else None
    return code if isinstance(code, str) and code else None


def _english_name(entry: Record | None) -> str | None:
    if not isinstance(entry, dict):
        return None
    names = entry.get("names")
    name = names.get("en") if isinstance(names, dict) else None
    return name if isinstance(name, str) and name else None


def _location(
    record: dict[str, Record],
) -> tuple[str | None, str | None, str | None, float | None, float | None]:
    """(state, city, postal, latitude, longitude) from a MaxMind City record."""
    city = _english_name(record.get("city"))
    subdivisions = record.get("subdivisions")
    state = None
    if isinstance(subdivisions, list) and subdivisions:
        first = subdivisions[0]
        state = _english_name(first)
        if state is None and isinstance(first, dict) and isinstance(first.get("iso_code"), str):
            state = str(first["iso_code"])
    postal_entry = record.get("postal")
    code = postal_entry.get("code") if isinstance(postal_entry, dict) else None
    postal = code if isinstance(code, str) and code else None
    if city is None and state is None:
        return None, None, postal, None, None
    location = record.get("location")
    latitude = longitude = None
    if isinstance(location, dict):
        latitude = _coordinate(location.get("latitude"))
        longitude = _coordinate(location.get("longitude"))
    return state, city, postal, latitude, longitude


def _coordinate(value: Record | None) -> float | None:
    return value if isinstance(value, float) else None  # MaxMind stores coordinates as doubles


def _asn_and_org(record: Record | None) -> tuple[int | None, str]:
    if not isinstance(record, dict):
        return None, ""
    number = record.get("autonomous_system_number")
    name = record.get("autonomous_system_organization")
    asn = number if isinstance(number, int) and not isinstance(number, bool) and number else None
    return asn, name if isinstance(name, str) else ""
