"""Where values occur: the hash look-ups an import batch needs, on 64-bit integers in C.

Arrow's hash kernels (``index_in``, ``is_in``, ``value_counts``) cost 45-80 ns a 64-bit value on
this project's machine, most of it building their memo table again for every call; a batch of
61,440 events takes several such calls (its id hashes against themselves and the previous
batch's, its (address, agent) pairs against their distinct ones). The ``_hashing`` extension
does the same with an open-addressing table in a few ns a value, with the GIL released. Other
types, or no extension: Arrow's kernels, with the same answers (tests/unit/test_positions.py).
"""

from __future__ import annotations

import threading

import pyarrow as pa
import pyarrow.compute as pc

from eventport.events.keys import string_buffers

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
    return _found(array, _hashing.index_of(data, len(array), theirs[1], len(theirs[0])))


def _found(values: pa.Array, positions: bytes) -> pa.Array:
    """A C look-up's native int32 positions for ``values`` as an Arrow column: null where the
    look-up found nothing (-1) or the value is null."""
    found = pa.Array.from_buffers(pa.int32(), len(values), [None, pa.py_buffer(positions)])
    missing = pc.less(found, 0)
    if values.null_count:
        missing = pc.or_(missing, pc.is_null(values))
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


def not_at(count: int, positions: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A mask of ``count`` rows: true where the row's position is not among ``positions``. The
    positions 0..count-1 are made in C where the extension is compiled (a Python range of
    61,440 took ~3 ms, a batch's mask ~4 ms in all; ~0.6 ms so)."""
    if _hashing is not None and count:
        every = pa.Array.from_buffers(
            pa.int32(), count, [None, pa.py_buffer(_hashing.fixed_offsets(count - 1, 1))]
        )
    else:
        every = pa.array(range(count), pa.int32())
    return pc.invert(pc.is_in(every, value_set=positions.cast(pa.int32())))


def hex_column(text: bytes | pa.Buffer, count: int, validity: pa.Buffer | None = None) -> pa.Array:
    """A string column of ``count`` texts of 32 characters each, one after the other in
    ``text`` (hex digests), null where ``validity`` (a bitmap from offset 0) says so."""
    if _hashing is not None:
        ends = pa.py_buffer(_hashing.fixed_offsets(count, 32))
    else:
        ends = pa.array(range(0, 32 * count + 1, 32), pa.int32()).buffers()[1]
    data = text if isinstance(text, pa.Buffer) else pa.py_buffer(text)
    return pa.Array.from_buffers(pa.string(), count, [validity, ends, data])


class RememberedTexts:
    """Distinct texts remembered in the order added (positions 0, 1, 2, ...) and found again
    batch after batch: an import's address book, its raw ``$remote_address`` texts.

    Arrow's ``index_in`` builds its table again from every text remembered on each call, so a
    batch's look-up cost grows with the book (122,880 events against 370,000 addresses: ~107 ms,
    against 20,000: ~3 ms). With the extension the texts' 64-bit hashes live in a C table that
    lasts (``_hashing.KeyTable``), and each position found is checked against the text it
    holds: two texts with one hash (or a batch that meets one) take Arrow's look-up instead,
    with the same answers. Without the extension, Arrow's look-up.
    """

    def __init__(self) -> None:
        self.texts = pa.array([], pa.string())
        self._table = _hashing.KeyTable() if _hashing is not None else None

    def __len__(self) -> int:
        return len(self.texts)

    def clear(self) -> None:
        self.texts = pa.array([], pa.string())
        if self._table is not None:
            self._table.clear()

    def find(self, values: pa.Array) -> pa.Array:
        """The int32 position of each text, null where it is null or not remembered."""
        if self._table is None or not len(values):
            return index_of(values, self.texts)
        hashes, data = int64_values(text_hashes(values))
        at = _found(values, self._table.find(data, len(hashes)))
        same = pc.equal(self.texts.take(at), values)  # null where at is
        if pc.any(pc.invert(same)).as_py():  # a hash shared by two texts: ask Arrow
            return index_of(values, self.texts)
        return at

    def add(self, values: pa.Array) -> None:
        """Remember new texts (distinct, none remembered, no nulls), at the next positions."""
        if values.null_count:
            raise ValueError("a text to remember cannot be missing")
        if self._table is not None and len(values):
            hashes, data = int64_values(text_hashes(values))
            taken = pc.is_valid(_found(hashes, self._table.find(data, len(hashes))))
            if pc.any(taken).as_py() or has_repeats(hashes):
                hashes = self._free_keys(hashes)
                data = int64_values(hashes)[1]
            self._table.add(data, len(hashes))
        self.texts = pa.concat_arrays([self.texts, values.cast(pa.string())])

    def _free_keys(self, hashes: pa.Array) -> pa.Array:
        """The hashes, each that is in the table already or repeated replaced by a key in use
        by nothing: its text is then found by no hash, and looked for by Arrow (never wrong)."""
        assert self._table is not None
        keys = hashes.to_pylist()
        seen: set[int] = set()
        for i, key in enumerate(keys):
            while key in seen or self._known(key):
                key = key + 1 if key < (1 << 63) - 1 else -(1 << 63)
            keys[i] = key
            seen.add(key)
        return pa.array(keys, pa.int64())

    def _known(self, key: int) -> bool:
        assert self._table is not None
        data = pa.array([key], pa.int64()).buffers()[1]
        return bool(int.from_bytes(self._table.find(data, 1), "little", signed=True) >= 0)


def text_hashes(texts: pa.Array) -> pa.Array:
    """A 64-bit hash of each text (a null's means nothing): equal texts, equal hashes. Comparing
    hashes (integers) finds the candidate repeats among many texts several times faster than
    comparing the texts; candidates are then compared as texts. Without the C extension, the
    texts."""
    if _hashing is None:
        return texts
    texts, offsets, data = string_buffers(texts)
    found = _hashing.hashes(offsets, data, len(texts))
    return pa.Array.from_buffers(pa.int64(), len(texts), [None, pa.py_buffer(found)])


class KnownKeys:
    """Distinct int64 keys known to be held somewhere (a store's place and agent keys that are
    committed), at most ``limit`` of them: past it the set starts again empty, so its memory
    stays bounded and a key it forgot is only looked for again where it is held.

    Safe to share between threads. With the extension the keys live in a ``_hashing.KeyTable``
    (~20 bytes a key); without it, in an Arrow array that :func:`pc.is_in` searches.
    """

    def __init__(self, limit: int = 1 << 18) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._table = _hashing.KeyTable() if _hashing is not None else None
        self._values = pa.array([], pa.int64())

    def __len__(self) -> int:
        with self._lock:
            return self._count()

    def _count(self) -> int:
        return len(self._table) if self._table is not None else len(self._values)

    def unknown(self, keys: pa.Array | pa.ChunkedArray) -> pa.Array:
        """A boolean column: whether each key (int64, no nulls) is not known."""
        with self._lock:
            return self._unknown(keys)

    def add(self, keys: pa.Array | pa.ChunkedArray) -> None:
        """Know these keys (int64, no nulls; repeats and keys known already are fine)."""
        with self._lock:
            fresh = distinct(keys)
            fresh = fresh.filter(self._unknown(fresh))
            if self._count() + len(fresh) > self.limit:
                self._clear()
            if self._table is None:
                self._values = pa.concat_arrays([self._values, fresh])
            else:
                fresh, data = int64_values(fresh)
                self._table.add(data, len(fresh))

    def _clear(self) -> None:
        """Start again empty (under the lock)."""
        if self._table is not None:
            self._table.clear()
        self._values = pa.array([], pa.int64())

    def _unknown(self, keys: pa.Array | pa.ChunkedArray) -> pa.Array:
        """:meth:`unknown`, under the lock."""
        keys, data = int64_values(keys)
        if self._table is None:
            return pc.invert(pc.is_in(keys, value_set=self._values))
        return pc.is_null(_found(keys, self._table.find(data, len(keys))))
