"""Enrichment as the import pipeline uses it: once per distinct value, never per event.

An :class:`Enricher` lives as long as the process (the IP data and the origin-id key load once);
each import gets an :class:`ImportEnrichment`, which remembers user agents and places (each set
of place values once), while the import pipeline's address book remembers each address's answer
and each (address, agent) pair's origin id, so every distinct value is looked up once per import
however many events repeat it. Answers are tuples of column values in the order the events table
has them; the pipeline takes every event's columns from them by index, with no Python per event.

Privacy:

* ``origin_id`` is a keyed BLAKE2b hash of the canonical IP address and the user agent;
  ``endpoint_id`` one of the address alone. Without the key (a server secret) neither can be
  reversed or even checked against a guessed address.
* An event whose ``$headers`` carry ``DNT: 1`` or ``Sec-GPC: 1`` gets no IP look-up and no ids:
  only ``dnt`` true (its client and platform still come from the user agent).
* Raw addresses are not part of anything this module returns.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import re
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from eventport.domain.exclusions import ExclusionRules
from eventport.enrich.agents import (
    MAX_AGENT_CHARS,
    load_agent_parser,
    matches_any,
    parse_agent,
)
from eventport.enrich.ip import DataSource, IpEnricher, Place, PlaceSignature
from eventport.events.batch import PLACE_FIELDS, dimension_key
from eventport.events.keys import string_buffers
from eventport.positions import hex_column, int64_values

try:
    from eventport import _hashing
except ImportError:  # not compiled: hashlib, one value at a time
    _hashing = None  # type: ignore[assignment]
try:
    from eventport.enrich import _mmdb
except ImportError:  # not compiled: a regular expression, one text at a time
    _mmdb = None  # type: ignore[assignment]

#: The event columns an address fills, in the order :meth:`ImportEnrichment.place` answers:
#: its own endpoint id, then what its place gives.
PLACE_COLUMNS = ("endpoint_id", *PLACE_FIELDS)
NO_PLACE: tuple[object, ...] = (None,) * len(PLACE_COLUMNS)
MAX_KEY_BYTES = 64  # BLAKE2b's longest key
# Distinct places and agents remembered per import; cleared when full. (Addresses are
# remembered by the import pipeline's address book.)
_CACHE_MAX = 100_000
_UNKNOWN = object()  # a key not made yet (None is a key: nothing known)
# Places whose values and key an import keeps (~420 B each), as IpEnricher keeps Places: at
# 100,000 each, an import of 430,000 distinct addresses peaked ~60 MB higher.
_MADE_MAX = 30_000


def _values_of(place: Place | None) -> tuple[object, ...]:
    """A place's column values (:data:`PLACE_COLUMNS` after the endpoint id)."""
    if place is None:
        return NO_PLACE[1:]
    return (
        place.latitude,
        place.longitude,
        place.country,
        place.state,
        place.city,
        place.postal,
        place.connection_type,
        place.company,
        place.domain,
        place.cloud_provider_name,
        place.cloud_provider_domain,
    )


# A dotted-quad IPv4 address without leading zeros is its own canonical form (ipaddress
# refuses leading zeros): the common case, answered without building an address object.
_PLAIN_IPV4 = re.compile(  # ASCII digits only: fullwidth or Arabic-Indic digits make no address
    r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)",
    re.ASCII,
)


def canonical_address(text: str) -> str | None:
    """The address in canonical form (IPv4-mapped IPv6 as IPv4), or None if not an address.

    Also read as their address: one with its port, as load balancers' logs write the client
    (``203.0.113.9:443``, ``[2001:db8::1]:443``), and a list, as ``X-Forwarded-For`` holds
    one (``203.0.113.9, 10.0.0.1``: its first, the client)."""
    text = text.strip()
    if _PLAIN_IPV4.fullmatch(text):
        return text
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        if "," in text:
            return canonical_address(text.split(",", 1)[0])
        with_port = _WITH_PORT.fullmatch(text)
        if with_port is None or int(with_port["port"] or with_port["port6"] or 0) > 65535:
            return None
        return canonical_address(with_port["ipv4"] or with_port["ipv6"])
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        if address.scope_id is not None:  # '%eth0': the sender's interface, not the address
            return str(ipaddress.IPv6Address(int(address)))
    return str(address)


# An IPv4 address and its port, or an IPv6 address in brackets and maybe a port (RFC 3986's form).
_WITH_PORT = re.compile(
    r"(?P<ipv4>\d{1,3}(?:\.\d{1,3}){3}):(?P<port>\d{1,5})"
    r"|\[(?P<ipv6>[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*(?:%[\w.-]+)?)\](?::(?P<port6>\d{1,5}))?"
)


def canonical_addresses(texts: Sequence[str]) -> list[str | None]:
    """:func:`canonical_address` of each text; plain dotted quads (their own canonical form)
    are recognised in C where it is compiled."""
    if _mmdb is None:
        return [canonical_address(text) for text in texts]
    values = _mmdb.ipv4_values(texts)
    return [
        text if value >= 0 else canonical_address(text)
        for text, value in zip(texts, values, strict=True)
    ]


def header_name(name: str) -> str:
    """A header's name as compared: lowercase, without surrounding blanks, ``_`` as ``-``
    (the way some proxies spell them), and without CGI's ``HTTP_`` before it (``HTTP_DNT``,
    ``HTTP_X_FORWARDED_FOR``: the names of a CGI or PHP server's environment)."""
    name = name.strip()
    if name[:5].upper() == "HTTP_":
        name = name[5:]
    return name.lower().replace("_", "-")


def do_not_track(headers: Sequence[tuple[str, str]] | None) -> bool:
    """The request asked not to be tracked: ``DNT: 1`` or ``Sec-GPC: 1`` (names as
    :func:`header_name` compares them; the value's first item, blanks aside, is 1)."""
    if not headers:
        return False
    return any(
        header_name(name) in ("dnt", "sec-gpc") and value.split(",", 1)[0].strip() in ("1", "1.0")
        for name, value in headers
    )


class Enricher:
    """Process-wide enrichment: IP data (``ip`` None: no location look-ups) and the id key."""

    def __init__(self, key: bytes, ip: IpEnricher | None) -> None:
        if len(key) < 16:
            raise ValueError("the origin-id key must be at least 16 bytes")
        if len(key) > MAX_KEY_BYTES:
            raise ValueError(f"the origin-id key must be at most {MAX_KEY_BYTES} bytes")
        self._key = key
        self.ip = ip

    def for_import(self, rules: ExclusionRules) -> ImportEnrichment:
        return ImportEnrichment(self, rules)

    def sources(self) -> list[DataSource]:
        """Every data source in use, with its date, for ``eventport enrichment info``."""
        found = list(self.ip.sources()) if self.ip is not None else []
        for package in ("ua-parser", "ua-parser-builtins"):
            try:
                version = metadata.version(package)
            except metadata.PackageNotFoundError:
                continue
            found.append(DataSource(f"{package} {version}", "user-agent", None, None))
        return found

    def hasher(self, person: bytes) -> Callable[[str], str]:
        """A keyed hash function (BLAKE2b, 128 bits, hex) for one purpose (``person``): the keyed
        state is made once and copied per value, cheaper than keying each hash."""
        keyed = hashlib.blake2b(key=self._key, digest_size=16, person=person)

        def digest(text: str) -> str:
            state = keyed.copy()
            state.update(text.encode("utf-8", "surrogatepass"))
            return state.hexdigest()

        return digest

    def column_hasher(self, person: bytes) -> Callable[[pa.Array], pa.Array]:
        """:meth:`hasher` for a whole Arrow string column (no nulls) at once: in C where the
        ``_hashing`` extension is compiled, else one hashlib call per value."""
        one = self.hasher(person)
        key = self._key

        def digests(texts: pa.Array) -> pa.Array:
            if texts.null_count:
                raise ValueError("cannot hash a missing text")
            if _hashing is None:
                return pa.array([one(t) for t in texts.to_pylist()], pa.string())
            texts, offsets, data = string_buffers(texts)
            count = len(texts)
            return hex_column(_hashing.hex_digests(key, person, offsets, data, count), count)

        return digests

    def pair_hasher(
        self, person: bytes
    ) -> Callable[[pa.Array, pa.Array, pa.Array, pa.Array], pa.Array]:
        """:meth:`column_hasher` of ``firsts[first_at] + "\\n" + seconds[second_at]``: the
        digests of :meth:`pair_digester` in hex."""
        raw = self.pair_digester(person)

        def digests(
            firsts: pa.Array, first_at: pa.Array, seconds: pa.Array, second_at: pa.Array
        ) -> pa.Array:
            found = raw(firsts, first_at, seconds, second_at)
            return hex_column(found.hex().encode("ascii"), len(first_at))

        return digests

    def pair_digester(
        self, person: bytes
    ) -> Callable[[pa.Array, pa.Array, pa.Array, pa.Array], bytes]:
        """The 16-byte digests (:meth:`hasher`'s, before hex) of ``firsts[first_at] + "\\n" +
        seconds[second_at]`` (two string columns and int64 positions into them, no nulls among
        the texts named), one after the other. In C the texts are hashed where they are, not
        joined into new ones first (an import's origin ids, by (address, agent) pair: ~200
        bytes a pair copied twice, otherwise)."""
        keyed = hashlib.blake2b(key=self._key, digest_size=16, person=person)
        key = self._key

        def digests(
            firsts: pa.Array, first_at: pa.Array, seconds: pa.Array, second_at: pa.Array
        ) -> bytes:
            if _hashing is None:
                found = bytearray()
                pairs = zip(
                    firsts.take(first_at).to_pylist(),
                    seconds.take(second_at).to_pylist(),
                    strict=True,
                )
                for first, second in pairs:
                    state = keyed.copy()
                    state.update(f"{first}\n{second}".encode("utf-8", "surrogatepass"))
                    found += state.digest()
                return bytes(found)
            a, a_offsets, a_data = string_buffers(firsts)
            b, b_offsets, b_data = string_buffers(seconds)
            return _hashing.pair_digests(
                key,
                person,
                a_offsets,
                a_data,
                len(a),
                b_offsets,
                b_data,
                len(b),
                _positions(first_at),
                _positions(second_at),
                len(first_at),
            )

        return digests


def _positions(at: pa.Array | pa.ChunkedArray) -> pa.Buffer:
    """Positions into a column (no nulls) as the C hashing functions take them."""
    if at.null_count:
        raise ValueError("a position cannot be missing")
    return int64_values(at.cast(pa.int64()))[1]


class ImportEnrichment:
    """One import's view: caches and the owner's exclusion rules. Addresses are canonical
    (:func:`canonical_address`) by the time they come here."""

    def __init__(self, enricher: Enricher, rules: ExclusionRules) -> None:
        self.enricher = enricher
        self.rules = rules
        self._shared: dict[tuple[object, ...], tuple[object, ...]] = {}  # equal places, one tuple
        self._keys: dict[tuple[object, ...], int | None] = {}  # values -> dimension_key
        # place signature -> (its values, their key); see located()
        self._made: dict[PlaceSignature, tuple[tuple[object, ...], int | None]] = {}
        self._agents: dict[str | None, tuple[tuple[object, ...], bool]] = {}
        self._endpoints = enricher.column_hasher(b"endpoint")
        self._origin = enricher.hasher(b"origin")
        self._origin_pairs = enricher.pair_hasher(b"origin")

    # -- addresses -----------------------------------------------------------------------------

    def places(self, addresses: Sequence[str]) -> list[tuple[tuple[object, ...], int | None]]:
        """For each canonical address: its column values (:data:`PLACE_COLUMNS`) and the key of
        its place (events/batch.py; None: no place known). Looked up all at once."""
        endpoints, located = self.located(addresses)
        return [
            ((endpoint, *values), key)
            for endpoint, (values, key) in zip(endpoints, located, strict=True)
        ]

    def located(
        self, addresses: Sequence[str]
    ) -> tuple[list[str | None], list[tuple[tuple[object, ...], int | None]]]:
        """:meth:`places` as two lists, each address's endpoint id and its place's values
        (:data:`PLACE_FIELDS`) with their key: addresses of one place share one (values, key)
        pair. The caller remembers the answers (the import pipeline's address book)."""
        ip = self.enricher.ip
        # All the endpoint ids at once, in C where it is compiled (~0.15 us an address
        # against ~1.4 us for one hashlib call each).
        endpoints = self._endpoints(pa.array(addresses, pa.string())).to_pylist()
        if ip is None:
            return endpoints, [self._values_and_key(None) for _ in addresses]
        signatures = ip.place_signatures(list(addresses))
        if signatures is None:  # an override answers by the address: a Place for every one
            found = ip.lookup_many(addresses)
            return endpoints, [self._values_and_key(found[address]) for address in addresses]
        # Addresses of one signature have one place: its values and key are made once, and
        # found again by the signature.
        made = self._made
        if len(made) >= _MADE_MAX:
            made.clear()
        # Each new signature with an address (any one: they all have its place).
        new = {
            s: address for s, address in zip(signatures, addresses, strict=True) if s not in made
        }
        for signature, place in zip(
            new, ip.signed_places(list(new), list(new.values())), strict=True
        ):
            values = _values_of(place)
            made[signature] = (values, dimension_key(values))
        return endpoints, [made[signature] for signature in signatures]

    def _values_and_key(self, place: Place | None) -> tuple[tuple[object, ...], int | None]:
        """A place's values and key, equal values held once with one key (see _located)."""
        values = self._located(place)
        return values, self._key_of(values)

    def place(self, address: str) -> tuple[object, ...]:
        """Column values (:data:`PLACE_COLUMNS`) of one canonical address."""
        return self.places([address])[0][0]

    def _located(self, place: Place | None) -> tuple[object, ...]:
        located = _values_of(place)
        if len(self._shared) >= _CACHE_MAX:
            self._shared.clear()
        return self._shared.setdefault(located, located)

    def _key_of(self, values: tuple[object, ...]) -> int | None:
        keys = self._keys
        key = keys.get(values, _UNKNOWN)
        if key is _UNKNOWN:
            if len(keys) >= _CACHE_MAX:
                keys.clear()
            key = keys[values] = dimension_key(values)
        return key  # type: ignore[return-value]

    def origin(self, address: str, agent: str | None) -> str:
        """The origin id of a canonical address and a user agent."""
        return self._origin(f"{address}\n{agent or ''}")

    def origins(self, addresses: pa.Array, agents: pa.Array) -> pa.Array:
        """:meth:`origin` of each (canonical address, user agent or null) pair of two columns."""
        if addresses.null_count:
            raise ValueError("cannot hash a missing text")
        everyone = pa.array(range(len(addresses)), pa.int64())
        return self._origin_pairs(addresses, everyone, pc.fill_null(agents, ""), everyone)

    def origin_ids_of(
        self, addresses: pa.Array, address_at: pa.Array, agents: pa.Array, agent_at: pa.Array
    ) -> pa.Array:
        """The origin ids of ``addresses[address_at[i]]`` and ``agents[agent_at[i]]`` (``agents``
        without nulls: no agent is an empty text; the addresses named not null), hashed where
        the texts are, without joining them first."""
        return self._origin_pairs(addresses, address_at, agents, agent_at)

    # -- user agents ---------------------------------------------------------------------------

    def agent(self, user_agent: str | None) -> tuple[tuple[object, ...], bool]:
        """A user agent's ``platform, client, client_version, client_runtime, ci``, and
        whether the owner's rules exclude events sent with it."""
        found = self._agents.get(user_agent)
        if found is None:
            parsed = parse_agent(user_agent)
            excluded = (self.rules.exclude_bots and parsed.bot) or (
                bool(self.rules.user_agent_substrings)
                and matches_any(user_agent, self.rules.user_agent_substrings)
            )
            found = (
                (
                    parsed.platform,
                    parsed.client,
                    parsed.client_version,
                    parsed.runtime,
                    parsed.ci,
                ),
                excluded,
            )
            if user_agent is not None and len(user_agent) > MAX_AGENT_CHARS:
                return found  # not kept: 100,000 agents of up to 1 MiB each would be (the
                # owner's substrings are looked for in the whole agent, so it is the key)
            if len(self._agents) >= _CACHE_MAX:
                self._agents.clear()
            self._agents[user_agent] = found
        return found

    def agent_key(self, user_agent: str | None) -> int | None:
        """The key of a user agent's reading (events/batch.py; None: nothing known)."""
        return self._key_of(self.agent(user_agent)[0])


def origin_key(configured: str | None, stored: Callable[[], bytes]) -> bytes:
    """The configured key (32 or more hex digits, or any text of at least 16 bytes), else the
    stored one. Hex is read as hex only when it makes a whole key: 'abcdefabcdefabcd' is 16
    bytes of text, not 8 of hex."""
    if configured is None:
        return stored()
    key = configured.encode()
    if len(configured) >= 32:
        with contextlib.suppress(ValueError):  # not hex: text
            key = bytes.fromhex(configured)
    if len(key) < 16:
        raise ValueError(
            "EVENTPORT_ORIGIN_SECRET must be at least 16 bytes of text (or 32 hex digits)"
        )
    if len(key) > MAX_KEY_BYTES:
        # BLAKE2b's keys stop at 64 bytes: a longer secret's tail would change nothing (a key
        # rotated by its end would not rotate). Earlier versions used the first 64 bytes.
        raise ValueError(
            f"EVENTPORT_ORIGIN_SECRET must be at most {MAX_KEY_BYTES} bytes of text (or "
            f"{2 * MAX_KEY_BYTES} hex digits), not {len(key)}: the hashes take no more (to keep "
            f"the ids of an earlier eventport, which used only the first {MAX_KEY_BYTES}, set "
            "those)"
        )
    return key


def open_enricher(
    *,
    enabled: bool,
    key: bytes,
    city_database: Path | None = None,
    asn_database: Path | None = None,
) -> Enricher | None:
    """The process's enricher, its IP data loaded now (not by the first import), or None when
    enrichment is switched off."""
    if not enabled:
        return None
    ip = IpEnricher(city_database=city_database, asn_database=asn_database)
    ip.sources()  # loads the data
    load_agent_parser()
    return Enricher(key, ip)
