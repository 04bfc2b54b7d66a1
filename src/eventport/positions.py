"""Where values occur: the hash look-ups an import batch needs, on 64-bit integers in C.

Arrow's hash kernels (``index_in``, ``is_in``, ``value_counts``) cost 45-80 ns a 64-bit value on
this project's machine, most of it building their memo table again for every call; a batch of
122,880 events takes several such calls (its id hashes against themselves and the previous
batch's, its (address, agent) pairs against the import's). The ``_hashing`` extension does the
same with an open-addressing table in a few ns a value, with the GIL released. Other types, or
no extension: Arrow's kernels, with the same answers (tests/unit/test_positions.py).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

try:
    from eventport import _hashing
except ImportError:  # not compiled
    _hashing = None  # type: ignore[assignment]


def int64_values(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Buffer]:
    """``values`` (int64) as one array and its value buffer from its first value, as the C
    functions take them (nulls hold whatever their slots hold)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    data = values.buffers()[1]
    if data is None:  # no values at all
        return values, pa.py_buffer(b"")
    return values, data.slice(values.offset * 8, len(values) * 8)


def _int64_data(values: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Buffer] | None:
    """:func:`int64_values`, or None when the C look-ups do not apply."""
    if _hashing is None or not pa.types.is_int64(values.type):
        return None
    return int64_values(values)


def index_of(values: pa.Array | pa.ChunkedArray, known: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The int32 position in ``known`` (no nulls) of each of ``values``; null where a value
    is null or not known. A value known twice gets its first position."""
    ours, theirs = _int64_data(values), _int64_data(known)
    if ours is None or theirs is None:
        found = pc.index_in(values, value_set=known)
        return found.combine_chunks() if isinstance(found, pa.ChunkedArray) else found
    array, data = ours
    count = len(array)
    positions = _hashing.index_of(data, count, theirs[1], len(theirs[0]))
    found = pa.Array.from_buffers(pa.int32(), count, [None, pa.py_buffer(positions)])
    missing = pc.less(found, 0)
    if array.null_count:
        missing = pc.or_(missing, pc.is_null(array))
    return pc.if_else(missing, pa.scalar(None, pa.int32()), found)


def has_repeats(values: pa.Array | pa.ChunkedArray) -> bool:
    """Whether any value (no nulls) occurs more than once."""
    return len(distinct(values)) < len(values)


def distinct(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The distinct values, nulls left out, in the order first seen."""
    if values.null_count:
        values = pc.drop_null(values)
    ours = _int64_data(values)
    if ours is None:
        found = pc.unique(values)
        return found.combine_chunks() if isinstance(found, pa.ChunkedArray) else found
    array, data = ours
    found = _hashing.distinct(data, len(array))
    return pa.Array.from_buffers(pa.int64(), len(found) // 8, [None, pa.py_buffer(found)])
