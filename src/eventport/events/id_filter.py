"""Which id keys an embedded event store may hold: a Bloom filter kept in memory beside it.

Every batch of an import asks the store which of its ids are stored already (to replace those
events and warn) and deletes them as it is written. Without help each of the two is a scan of
every stored id key, which grows with the store (at 5M stored events ~40 ms a batch each, at
20M ~200 ms). The filter answers "certainly not stored" for nearly every new id from memory, so
the store only looks for the few it may hold, and a batch of new ids skips both scans.

A blocked Bloom filter (the ``_hashing`` extension) over the 128-bit ``id_key``: 40 bits a key
and 14 probes in one 512-bit block give about one false "maybe" in two million new keys while
the filter is within its capacity (5 bytes a key: 5M keys take 25 MB). Keys are only ever added
(a deleted event's key stays: at worst a look-up for nothing). It grows with the keys added (or
at once by what an import says it brings: :meth:`IdFilter.reserve`), up to ``max_bytes`` (the
store's default 64 MB holds ~13M keys); beyond that it fills and answers "maybe" more often,
and the store does what it did without one.

Without the extension there is no filter (:func:`available`): every key is a candidate.
"""

from __future__ import annotations

import pyarrow as pa

from eventport.positions import int64_values

try:
    from eventport import _hashing
except ImportError:  # not compiled
    _hashing = None  # type: ignore[assignment]

BITS_PER_KEY = 40
BLOCK_BYTES = 64
MIN_CAPACITY = 1 << 20


def available() -> bool:
    return _hashing is not None


def _words(values: pa.Array | pa.ChunkedArray) -> tuple[int, pa.Buffer]:
    if values.type.bit_width != 64:
        raise TypeError(f"id key halves are 64-bit integers, not {values.type}")
    array, data = int64_values(values)  # uint64 or int64: only the words count
    if array.null_count:
        raise ValueError("an id key cannot be missing")
    return len(array), data


class IdFilter:
    """A Bloom filter sized for ``capacity`` keys that grows as keys are added, to at most
    ``max_bytes``.

    It grows by adding parts (a scalable Bloom filter): when the newest part holds the keys it
    was sized for, keys go to a new part for twice as many as the filter holds, so growing never
    reads the stored keys again. A key is a candidate when any part may hold it.
    """

    def __init__(self, capacity: int, max_bytes: int) -> None:
        if _hashing is None:
            raise RuntimeError("the _hashing extension is not compiled")
        self.max_bytes = max_bytes
        self.keys = 0
        self._parts: list[bytearray] = []
        self._part_keys = 0  # in the newest part
        self._add_part(max(capacity, MIN_CAPACITY))

    def _add_part(self, capacity: int) -> None:
        room = self.max_bytes - self.nbytes
        blocks = max(1, min(capacity * BITS_PER_KEY // 8, room) // BLOCK_BYTES)
        self._parts.append(bytearray(blocks * BLOCK_BYTES))
        self._part_keys = 0

    @property
    def nbytes(self) -> int:
        return sum(len(part) for part in self._parts)

    @property
    def capacity(self) -> int:
        """The keys it holds at about one false "maybe" in a million."""
        return self.nbytes * 8 // BITS_PER_KEY

    @property
    def _newest_capacity(self) -> int:
        """The keys the newest part was sized for."""
        return len(self._parts[-1]) * 8 // BITS_PER_KEY

    @property
    def parts(self) -> int:
        return len(self._parts)

    def reserve(self, count: int) -> None:
        """Make room for about ``count`` more keys in one part, when the newest part has less
        (an import that says how many events it brings). Grown step by step instead, a filter
        doubles what it holds at each step and can end up with twice the memory its keys need
        (5M keys: 45 MB in three parts, against 30 MB reserved)."""
        if count <= self._newest_capacity - self._part_keys:
            return
        empty = self._part_keys == 0  # the newest part holds nothing yet: replace it
        room = self.max_bytes - self.nbytes + (len(self._parts[-1]) if empty else 0)
        if room < BLOCK_BYTES:
            return
        if empty:
            self._parts.pop()
        self._add_part(count)

    def add(self, high: pa.Array | pa.ChunkedArray, low: pa.Array | pa.ChunkedArray) -> None:
        """Add the keys given as their uint64 halves."""
        count, high_words = _words(high)
        _, low_words = _words(low)
        if not count:
            return
        self._make_room()
        _hashing.bloom_add(self._parts[-1], high_words, low_words, count)
        self._counted(count)

    def _make_room(self) -> None:
        """A new part when the newest holds the keys it was sized for (and memory allows)."""
        if self._part_keys >= self._newest_capacity and self.nbytes + BLOCK_BYTES <= self.max_bytes:
            self._add_part(2 * self.keys)

    def _counted(self, added: int) -> None:
        self.keys += added
        self._part_keys += added

    def candidates(
        self,
        high: pa.Array | pa.ChunkedArray,
        low: pa.Array | pa.ChunkedArray,
        *,
        adding: bool = False,
    ) -> pa.Array:
        """The int32 positions of the keys that may have been added: every one that was, and
        (within capacity) about one in a million of the others. With ``adding``, the others
        are added in the same pass (a key already a candidate adds nothing: it answers "maybe"
        either way), at about the cost of asking alone."""
        count, high_words = _words(high)
        _, low_words = _words(low)
        if adding and count:
            self._make_room()
        add_to = self._parts[-1] if adding else None
        found = _hashing.bloom_candidates(self._parts, high_words, low_words, count, add_to)
        if adding:
            self._counted(count - len(found) // 4)
        return pa.Array.from_buffers(pa.int32(), len(found) // 4, [None, pa.py_buffer(found)])
