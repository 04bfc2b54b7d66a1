"""Public-address parsing and compact range tables built from geoip2fast's bundled data.

geoip2fast ships GeoLite2 country and ASN ranges for IPv4 and IPv6 (MaxMind data of the date
in the file, 2024-06-18 for geoip2fast 1.2.2) as a gzipped pickle of Python lists. Its own
reader keeps those lists, ~107 MB of int objects, in module globals (one data set per process).
Here they are read once and copied into typed arrays (~15 MB) searched with bisect, then the
lists are dropped and the freed heap is handed back to the operating system.

IPv6 ranges are keyed on their first 64 bits: an IPv6 /64 is one site, and 64-bit keys fit an
unsigned array. The ~700 bundled IPv6 networks smaller than a /64 (pieces of a handful of /64s)
resolve at /64 granularity, where the last piece of that /64 wins.
"""

from __future__ import annotations

import ctypes
import gzip
import pickle
import re
import socket
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from importlib import metadata, resources
from ipaddress import IPv4Network, IPv6Network
from itertools import repeat
from operator import rshift
from pathlib import Path
from typing import NamedTuple, TypeVar

try:
    from eventport.enrich import _mmdb
except ImportError:  # not compiled: each key is searched with bisect
    _mmdb = None  # type: ignore[assignment]

T = TypeVar("T")

GEOIP2FAST_DATA_FILE = "geoip2fast-asn-ipv6.dat.gz"
# The list layout below is that of geoip2fast's data format 120 (its 1.2.x releases).
_GEOIP2FAST_FORMAT = 120
# geoip2fast's first 16 country entries are reserved, private and "not found" placeholders.
_FIRST_REAL_COUNTRY = 16
_NO_OWNER_NAMES = frozenset({"", "<unknown>", "IANA.ORG"})
_IPV4_SPACE = 1 << 32


def _ranges(cidrs: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    networks = [IPv4Network(c) if "." in c else IPv6Network(c) for c in cidrs]
    return tuple((int(n.network_address), int(n.broadcast_address)) for n in networks)


# Not "public" for enrichment: IANA special-purpose blocks that are not globally reachable,
# plus multicast (224/4) and the reserved 240/4 (which includes the broadcast address).
_IPV4_NON_PUBLIC = _ranges(("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8",
                            "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24",
                            "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
                            "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/3"))  # fmt: skip
# Global unicast IPv6 is 2000::/3; within it, IETF protocol assignments (Teredo, ORCHID, ...)
# and the documentation prefixes are not a user's address. Everything outside 2000::/3
# (loopback, unspecified, fc00::/7, fe80::/10, ff00::/8, unallocated space) is not public.
_IPV6_GLOBAL = _ranges(("2000::/3",))[0]
_IPV6_NON_PUBLIC = _ranges(("2001::/23", "2001:db8::/32", "3fff::/20"))
_IPV4_MAPPED_PREFIX = 0xFFFF  # ::ffff:0:0/96, as n >> 32
_SIX_TO_FOUR_PREFIX = 0x2002  # 2002::/16, as n >> 112


class PublicAddress(NamedTuple):
    """A public address as look-ups take it; a tuple, as one is built for every look-up."""

    ipv4: bool
    key: int  # the IPv4 address, or an IPv6 address's first 64 bits
    text: str  # for MaxMind readers, which parse text faster than ipaddress objects


def parse_public_address(text: str) -> PublicAddress | None:
    """The public address in text, or None when it is not one (invalid, private, special)."""
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError, TypeError):
        return _public_ipv6(text)
    return _public_ipv4(int.from_bytes(packed, "big"), text)


def parse_public_addresses(texts: Sequence[object]) -> list[PublicAddress | None]:
    """:func:`parse_public_address` of each text with the spaces around it removed (None for
    what is not a text). Plain dotted quads are read in C where it is compiled."""
    return [
        PublicAddress(True, value, text)  # type: ignore[arg-type]
        if value >= 0
        else None
        if value == NOT_PUBLIC or not isinstance(text, str)
        else parse_public_address(text.strip())
        for text, value in zip(texts, public_ipv4_values(texts), strict=True)
    ]


#: What :func:`public_ipv4_values` gives a plain dotted quad that is not a public address.
NOT_PUBLIC = -2


def public_ipv4_values(texts: Sequence[object]) -> list[int]:
    """The address each plain dotted quad (its own canonical form) spells, NOT_PUBLIC where
    that address is not public, -1 for any other text: all checked at once, in C where it is
    compiled."""
    values = _mmdb.ipv4_values(texts) if _mmdb is not None else [-1] * len(texts)
    private = _IPV4_NON_PUBLIC_TABLE.find_many([value if value >= 0 else 0 for value in values])
    return [
        NOT_PUBLIC if value >= 0 and network >= 0 else value
        for value, network in zip(values, private, strict=True)
    ]


def _public_ipv4(value: int, text: str) -> PublicAddress | None:
    if _IPV4_NON_PUBLIC_TABLE.find(value) is not None:
        return None
    return PublicAddress(True, value, text)


def _public_ipv6(text: str) -> PublicAddress | None:
    try:
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
    except (OSError, ValueError, TypeError):
        return None
    if value >> 32 == _IPV4_MAPPED_PREFIX:
        embedded = value & 0xFFFFFFFF
    elif value >> 112 == _SIX_TO_FOUR_PREFIX:
        embedded = (value >> 80) & 0xFFFFFFFF  # a 6to4 address carries the host's IPv4 address
    else:
        first, last = _IPV6_GLOBAL
        if not first <= value <= last or any(a <= value <= b for a, b in _IPV6_NON_PUBLIC):
            return None
        return PublicAddress(False, value >> 64, text)
    return _public_ipv4(embedded, socket.inet_ntoa(embedded.to_bytes(4, "big")))


class RangeTable:
    """Sorted networks (first key, prefix length), each mapped to an index into a name list."""

    __slots__ = ("_last_offsets", "_lengths", "_starts", "_values")

    def __init__(
        self, starts: array[int], lengths: array[int], values: array[int], last_offsets: list[int]
    ) -> None:
        self._starts = starts
        self._lengths = lengths
        self._values = values
        # By prefix length: last key minus first key (unsigned 64-bit, as find_ranges reads it).
        self._last_offsets = array("Q", last_offsets)

    def find(self, key: int) -> int | None:
        index = bisect_right(self._starts, key) - 1
        if index >= 0 and key <= self._starts[index] + self._last_offsets[self._lengths[index]]:
            return self._values[index]
        return None

    def find_many(self, keys: list[int]) -> list[int]:
        """:meth:`find` of each key, -1 for None; searched in C where that is compiled (about
        7% of what resolving a new address costs, measured against bisect)."""
        if _mmdb is not None:
            return _mmdb.find_ranges(
                self._starts, self._lengths, self._values, self._last_offsets, keys
            )
        return [-1 if (found := self.find(key)) is None else found for key in keys]


# By prefix length, how far a network's last key is from its first. IPv6 keys are the first 64
# bits, so every network of /64 or longer is one key.
_V4_LAST_OFFSETS = [(1 << (32 - length)) - 1 for length in range(33)]
_V6_LAST_OFFSETS = [(1 << max(64 - length, 0)) - 1 for length in range(129)]

# The non-public IPv4 networks as a range table (each network's value 0), for many addresses
# at once (public_ipv4_values).
_IPV4_NON_PUBLIC_TABLE = RangeTable(
    array("I", [first for first, _ in _IPV4_NON_PUBLIC]),
    array("B", [33 - (last - first + 1).bit_length() for first, last in _IPV4_NON_PUBLIC]),
    array("I", [0] * len(_IPV4_NON_PUBLIC)),
    _V4_LAST_OFFSETS,
)


class CountryAndOwnerData:
    """geoip2fast's country and ASN-organisation ranges for IPv4 and IPv6, in compact form."""

    def __init__(
        self,
        path: Path,
        info: str,
        country_codes: list[str | None],
        org_names: list[str],
        countries: tuple[RangeTable, RangeTable],
        owners: tuple[RangeTable, RangeTable],
    ) -> None:
        self.path = path
        self.info = info
        self.country_codes = country_codes
        self.org_names = org_names
        self.countries_v4, self.countries_v6 = countries
        self.owners_v4, self.owners_v6 = owners

    @property
    def date(self) -> str | None:
        """The MaxMind release the data was built from, from the file's own description."""
        found = re.search(r"(\d{4})(\d{2})(\d{2})$", self.info)
        return "-".join(found.groups()) if found else None

    def countries_and_org_names(
        self, addresses: list[PublicAddress]
    ) -> tuple[list[str | None], list[str]]:
        """Each address's country code (None: unknown) and owner's organisation name ("": the
        data has none), all looked up at once."""
        countries: list[str | None] = [None] * len(addresses)
        org_names = [""] * len(addresses)
        for ipv4, country_table, owner_table in (
            (True, self.countries_v4, self.owners_v4),
            (False, self.countries_v6, self.owners_v6),
        ):
            at = [i for i, address in enumerate(addresses) if address.ipv4 is ipv4]
            if at:
                keys = [addresses[i].key for i in at]
                _fill(countries, at, country_table.find_many(keys), self.country_codes)
                _fill(org_names, at, owner_table.find_many(keys), self.org_names)
        return countries, org_names


def _fill(answers: list[T], at: list[int], found: list[int], names: Sequence[T]) -> None:
    """``answers[at[k]] = names[found[k]]`` wherever a network was found (``found[k] >= 0``)."""
    for i, index in zip(at, found, strict=True):
        if index >= 0:
            answers[i] = names[index]


def bundled_data_path() -> Path:
    return Path(str(resources.files("geoip2fast") / GEOIP2FAST_DATA_FILE))


def geoip2fast_version() -> str:
    return metadata.version("geoip2fast")


def load_bundled_data() -> CountryAndOwnerData:
    """Read geoip2fast's country + ASN file (~0.4 s) into compact tables.

    The file is a pickle; reading it trusts the installed geoip2fast package exactly as much as
    importing its code would.
    """
    path = bundled_data_path()
    try:
        with gzip.open(path, "rb") as file:
            data_format, source, _total, lists = pickle.load(file)
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as error:
        raise RuntimeError(f"cannot read geoip2fast's data file {path}: {error}") from error
    if data_format != _GEOIP2FAST_FORMAT or not (source.get("asn") and source.get("ipv6")):
        raise RuntimeError(
            f"{path} is geoip2fast data format {data_format} ({source.get('info')}); "
            f"eventport reads format {_GEOIP2FAST_FORMAT} with ASN and IPv6 data (geoip2fast 1.2.x)"
        )
    (_, _, country_names, org_names, country_starts, owner_starts,
     country_ids, owner_ids, country_lengths, owner_lengths) = lists  # fmt: skip
    del lists
    countries = _tables(country_starts, country_lengths, country_ids)
    owners = _tables(owner_starts, owner_lengths, owner_ids)
    del country_starts, country_lengths, country_ids, owner_starts, owner_lengths, owner_ids
    _return_freed_memory()
    return CountryAndOwnerData(
        path,
        str(source.get("info", "")),
        [_country_code(entry, index) for index, entry in enumerate(country_names)],
        [name if name not in _NO_OWNER_NAMES else "" for name in org_names],
        countries,
        owners,
    )


def _country_code(entry: str, index: int) -> str | None:
    code = entry.partition(":")[0]
    if index < _FIRST_REAL_COUNTRY or len(code) != 2 or not code.isalpha():
        return None
    return code.upper()


def _tables(
    chunks_of_starts: list[list[int]],
    chunks_of_lengths: list[list[int]],
    chunks_of_values: list[list[int]],
) -> tuple[RangeTable, RangeTable]:
    """(IPv4, IPv6) tables from geoip2fast's chunked (first address, prefix length, value) lists.

    Each chunk is released as soon as it is copied, so the transient peak stays at the size of
    the unpickled lists instead of growing by the tables on top of it.
    """
    v4_starts, v4_lengths, v4_values = array("I"), array("B"), array("I")
    v6_starts, v6_lengths, v6_values = array("Q"), array("B"), array("I")
    for chunk in range(len(chunks_of_starts)):
        starts, lengths = chunks_of_starts[chunk], chunks_of_lengths[chunk]
        values = chunks_of_values[chunk]
        split = bisect_left(starts, _IPV4_SPACE)  # IPv4 addresses sort before all IPv6 ones
        v4_starts.fromlist(starts[:split])
        v4_lengths.fromlist(lengths[:split])
        v4_values.fromlist(values[:split])
        v6_starts.extend(map(rshift, starts[split:], repeat(64)))
        v6_lengths.fromlist(lengths[split:])
        v6_values.fromlist(values[split:])
        chunks_of_starts[chunk] = chunks_of_lengths[chunk] = chunks_of_values[chunk] = []
    return (
        RangeTable(v4_starts, v4_lengths, v4_values, _V4_LAST_OFFSETS),
        RangeTable(v6_starts, v6_lengths, v6_values, _V6_LAST_OFFSETS),
    )


def _return_freed_memory() -> None:
    """Ask glibc to give the unpickled lists' freed heap back to the system.

    Without it the process keeps ~35 MB of freed but fragmented heap for its whole life. Other
    C libraries (macOS, musl) have no malloc_trim and manage this themselves, so it is skipped.
    """
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):
        return
    malloc_trim(0)
