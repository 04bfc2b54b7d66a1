"""Hashes of a column of texts at once (see _hashing.c)."""

from collections.abc import Sequence

from typing_extensions import Buffer

def hex_digests(key: Buffer, person: Buffer, offsets: Buffer, data: Buffer, count: int, /) -> bytes:
    """``count`` 16-byte keyed BLAKE2b digests as 32 lowercase hex digits each."""

def pair_digests(
    key: Buffer,
    person: Buffer,
    a_offsets: Buffer,
    a_data: Buffer,
    a_count: int,
    b_offsets: Buffer,
    b_data: Buffer,
    b_count: int,
    a_at: Buffer,
    b_at: Buffer,
    count: int,
    /,
) -> bytes:
    """16-byte keyed BLAKE2b digests of ``a[a_at[i]] + "\\n" + b[b_at[i]]`` (int64 positions),
    one after the other (:func:`hex_digests`' digests, before hex)."""

def hashes(offsets: Buffer, data: Buffer, count: int, /) -> bytes:
    """``count`` unkeyed 64-bit hashes (native-endian), to find equal texts fast."""

def md5_keys(prefix: Buffer, offsets: Buffer, data: Buffer, count: int, /) -> tuple[bytes, bytes]:
    """DuckDB's ``md5_number(prefix || text)`` of each text, as native-endian uint64 halves."""

def blake2b_lanes(width: int = ..., /) -> int:
    """How many messages ``pair_digests`` hashes at a time: 8 (AVX-512F), 4 (AVX2) or 1, the
    most the CPU can unless changed; ``width`` uses that many first (1 where the CPU cannot)."""

def md5_lanes(level: int = ..., /) -> int:
    """How ``md5_keys`` hashes: eight texts at a time with AVX-512VL's instructions (2) or
    AVX2's (1), or one by one (0), the best the CPU has unless changed; ``level`` uses the best
    the CPU has up to it first."""

def origin_keys(offsets: Buffer, data: Buffer, count: int, /) -> tuple[bytes, bytes, bytes]:
    """Each origin id's 128-bit key (its hex number, else its md5_number), as uint64 halves,
    and a byte each: 1 where the key is the number the text spells in hex."""

def uuid_numbers(offsets: Buffer, data: Buffer, count: int, /) -> tuple[bytes, bytes, bytes]:
    """The 128-bit number each canonical UUID (lowercase, 8-4-4-4-12) spells, as uint64 halves
    (0 for any other text), and a byte each: 1 where the text is one."""

def index_of(values: Buffer, count: int, set: Buffer, set_count: int, /) -> bytes:
    """Native int32 position of each int64 value's first occurrence in ``set``, or -1."""

def distinct(values: Buffer, count: int, /) -> bytes:
    """The distinct int64 values (native), in the order first seen."""

def bloom_add(bits: Buffer, high: Buffer, low: Buffer, count: int, /) -> None:
    """Add ``count`` 128-bit keys (native uint64 halves) to a blocked Bloom filter's bits (a
    writable buffer of whole 64-byte blocks)."""

def bloom_candidates(
    filters: Sequence[Buffer],
    high: Buffer,
    low: Buffer,
    count: int,
    add_to: Buffer | None = None,
    /,
) -> bytes:
    """Native int32 positions of the keys any of the filters (1 to 64 of them) may hold (every
    added key among them). With ``add_to`` (a writable filter's bits), every other key is added
    to it in the same pass."""

def fixed_offsets(count: int, width: int, /) -> bytes:
    """Native int32 offsets ``0, width, ..., count * width`` of ``count`` texts of one width."""

class KeyTable:
    """A lasting table of distinct int64 keys, each at the position it was added."""

    def __len__(self) -> int: ...
    def find(self, keys: Buffer, count: int, /) -> bytes:
        """Native int32 position of each native int64 key, or -1."""
    def add(self, keys: Buffer, count: int, /) -> None:
        """Add new distinct keys at the next positions (ValueError, and nothing added, for a
        key already held or given twice)."""
    def clear(self) -> None: ...
