"""Hashes of a column of texts at once (see _hashing.c)."""

from typing_extensions import Buffer

def hex_digests(key: Buffer, person: Buffer, offsets: Buffer, data: Buffer, count: int, /) -> bytes:
    """``count`` 16-byte keyed BLAKE2b digests as 32 lowercase hex digits each."""

def hashes(offsets: Buffer, data: Buffer, count: int, /) -> bytes:
    """``count`` unkeyed 64-bit hashes (native-endian), to find equal texts fast."""
