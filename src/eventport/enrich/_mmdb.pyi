"""Where a MaxMind database's search tree leads (see _mmdb.c)."""

from collections.abc import Sequence
from typing import Any

from typing_extensions import Buffer

def records(
    tree: Buffer, node_count: int, record_size: int, ip_version: int, texts: list[str], /
) -> list[int]:
    """Each address's record (its node value); 0 in no network, -1 not an address."""

def decode(data: Buffer, offset: int, /) -> Any:
    """The value at ``offset`` of a data section (the bytes after the tree's separator)."""

def city(
    data: Buffer, offset: int, /
) -> tuple[str | None, tuple[str | None, str | None, str | None, float | None, float | None]]:
    """What enrich/ip.py's ``_city`` takes from the record at ``offset`` of a data section:
    (country, (state, city, postal, latitude, longitude)), read in place."""

def find_ranges(
    starts: Buffer, lengths: Buffer, values: Buffer, last_offsets: Buffer, keys: list[int], /
) -> list[int]:
    """The value of the network holding each key, or -1 (see RangeTable.find)."""

def ipv4_values(texts: Sequence[object], /) -> list[int]:
    """The address each plain dotted quad (its own canonical form) spells; -1 for any other."""
