"""The PostgreSQL store's id keys, sent as a binary ``uuid[]`` (no database needed here; the
integration tests check them against keys PostgreSQL's own ``md5`` made)."""

from __future__ import annotations

import hashlib
import struct

import pyarrow as pa
import pytest

from eventport.events.keys import id_keys
from eventport.events.postgres_store import _keyed

IDS = ["0b7e5c1e-5d1f-4c53-9f25-3a8c9d0e1f2a", "x", "é", "", "a\x00b", "id with spaces"]


def _elements(data: bytes) -> list[bytes]:
    """The elements of a binary one-dimensional uuid[] without nulls, checking its header."""
    ndim, has_nulls, element_type, count, lower_bound = struct.unpack(">iiiii", data[:20])
    assert (ndim, has_nulls, element_type, lower_bound) == (1, 0, 2950, 1)
    assert len(data) == 20 + 20 * count
    elements = [data[20 + 20 * i : 40 + 20 * i] for i in range(count)]
    assert all(struct.unpack(">i", element[:4]) == (16,) for element in elements)
    return [element[4:] for element in elements]


@pytest.mark.parametrize(("start", "stop"), [(0, len(IDS)), (2, 5), (1, 1)])
def test_each_key_is_the_md5_of_owner_nul_and_id(start: int, stop: int) -> None:
    high, low = id_keys("owner-a", pa.array(IDS))
    sliced = _keyed(high.slice(start, stop - start), low.slice(start, stop - start))["keys"]
    expected = [hashlib.md5(b"owner-a\x00" + i.encode()).digest() for i in IDS[start:stop]]
    assert _elements(sliced.data) == expected
