"""Keyed BLAKE2b over a column of texts (see _keyed.c)."""

from typing_extensions import Buffer

def hex_digests(key: Buffer, person: Buffer, offsets: Buffer, data: Buffer, count: int, /) -> bytes:
    """``count`` 16-byte keyed BLAKE2b digests as 32 lowercase hex digits each."""
