"""The DuckDB event store's 128-bit keys, computed before a batch reaches DuckDB.

Two keys live beside each stored event (see events/duckdb_store.py and duckdb_layout.py):

* ``id_key``: ``md5_number(owner_id || chr(0) || id)``, how an id is found again;
* ``origin_key``: an origin id of 32 lowercase hex digits (enrichment's keyed hashes) read as
  the number it spells; any other text, its ``md5_number``. Aggregates count distinct keys.

The SQL expressions (:data:`ID_KEY_SQL`, :data:`ORIGIN_KEY_SQL`) define them and compute them for
rows already stored. For a batch, the ``_hashing`` C extension computes them (about 10x cheaper
than DuckDB's MD5 and regexp, and on the thread that builds the batch) as two UBIGINT halves
that DuckDB only joins (:data:`KEY_FROM_HALVES_SQL`). Without the extension hashlib computes the
same numbers, slower. tests/unit/test_keys.py holds all three to DuckDB's answers.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import deque

import pyarrow as pa
import pyarrow.compute as pc

try:
    from eventport import _hashing
except ImportError:  # not compiled
    _hashing = None  # type: ignore[assignment]

ID_KEY_SQL = "md5_number({owner} || chr(0) || {id})"
ORIGIN_KEY_SQL = (
    "CASE WHEN regexp_full_match({origin}, '[0-9a-f]{{32}}') "
    "THEN CAST('0x' || {origin} AS UHUGEINT) ELSE md5_number({origin}) END"
)
KEY_FROM_HALVES_SQL = "((CAST({prefix}_hi AS UHUGEINT) << 64) | {prefix}_lo)"
_HEX_ID = re.compile(rb"[0-9a-f]{32}")
# A canonical UUID: what uuid_numbers gives a number (and DuckDB's UUID type gives back).
_UUID_PATTERN = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_UUID = re.compile(_UUID_PATTERN.encode())
#: Whether the text ``{id}`` is a canonical UUID, in SQL (for ids stored as text before).
IS_UUID_SQL = (
    "regexp_full_match({id}, '" + _UUID_PATTERN.replace("{", "{{").replace("}", "}}") + "')"
)
HALF_MASK = (1 << 64) - 1  # a 128-bit key's low half


def id_keys(owner_id: str, ids: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """``id_key`` of each id (no nulls) of ``owner_id``, as (high, low) uint64 columns."""
    prefix = owner_id.encode() + b"\0"
    texts, offsets, data = string_buffers(ids)
    if texts.null_count:
        raise ValueError("an event id cannot be missing")
    if _hashing is None:
        return _split([_md5_number(prefix + t) for t in _bytes(texts)])
    return _halves(*_hashing.md5_keys(prefix, offsets, data, len(texts)), None)


class RecentIdKeys:
    """:func:`id_keys` remembering its last few answers: a batch's ids are keyed once to find
    which exist already (on the thread that builds the batch) and again to be written (on the
    writer's thread), ~0.06 us an id each time (0.08 with AVX2 only, 0.26 without). An answer
    is reused only for equal ids of the same owner, so a miss costs a comparison and never
    gives a wrong key."""

    def __init__(self, size: int = 4) -> None:
        self._recent: deque[tuple[str, pa.Array, pa.Array, pa.Array]] = deque(maxlen=size)
        self._lock = threading.Lock()

    def __call__(
        self, owner_id: str, ids: pa.Array | pa.ChunkedArray, *, last_use: bool = False
    ) -> tuple[pa.Array, pa.Array]:
        """The keys of ``ids``; ``last_use``: they will not be asked for again (the batch is
        being written), so an answer remembered for them is let go (~7 MB a batch)."""
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        with self._lock:
            recent = list(self._recent)
        for entry in reversed(recent):
            owner, known, high, low = entry
            if owner == owner_id and len(known) == len(ids) and known.equals(ids):
                if last_use:
                    with self._lock:
                        kept = [e for e in self._recent if e is not entry]
                        self._recent = deque(kept, maxlen=self._recent.maxlen)
                return high, low
        high, low = id_keys(owner_id, ids)
        if not last_use:
            with self._lock:
                self._recent.append((owner_id, ids, high, low))
        return high, low


def origin_keys(origin_ids: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """``origin_key`` of each origin id as (high, low) uint64 columns, null where it is null."""
    high, low, _ = spelled_keys(origin_ids)
    return high, low


def spelled_keys(texts: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array, pa.Array]:
    """:func:`origin_keys`, and for each text whether it is 32 lowercase hex digits (the key
    then is the number they spell, and gives the text back): a boolean column, false where the
    text is null. A dictionary-encoded column's texts are read once each."""
    if pa.types.is_dictionary(texts.type):
        return _spelled_keys_of_dictionaries(texts)
    column, offsets, data = string_buffers(texts)
    if _hashing is None:
        values = _bytes(column)
        high, low = _split([None if t is None else _origin_number(t) for t in values])
        hex_ids = [t is not None and _HEX_ID.fullmatch(t) is not None for t in values]
        return high, low, pa.array(hex_ids, pa.bool_())
    high_words, low_words, flags = _hashing.origin_keys(offsets, data, len(column))
    nulls = column.buffers()[0] if column.null_count else None
    high, low = _halves(high_words, low_words, nulls)
    spelled = _flags(flags, len(column))
    if column.null_count:
        spelled = pc.and_(spelled, pc.is_valid(column))
    return high, low, spelled


def uuid_numbers(ids: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array, pa.Array]:
    """The number each id (no nulls) that is a canonical UUID (36 characters, lowercase hex in
    groups of 8-4-4-4-12) spells, as (high, low) uint64 columns null where the id is not one,
    and a boolean column of where it is. DuckDB's UUID type gives exactly that text back."""
    column, offsets, data = string_buffers(ids)
    if column.null_count:
        raise ValueError("an event id cannot be missing")
    if _hashing is None:
        texts = [t or b"" for t in _bytes(column)]  # no nulls
        high, low = _split(
            [int(t.replace(b"-", b""), 16) if _UUID.fullmatch(t) else None for t in texts]
        )
        return high, low, pc.is_valid(high)
    high_words, low_words, flags = _hashing.uuid_numbers(offsets, data, len(column))
    spelled = _flags(flags, len(column))
    return (*_halves(high_words, low_words, spelled.buffers()[1]), spelled)


def _flags(flags: bytes, count: int) -> pa.Array:
    """A byte a text, 1 or 0, as a boolean column."""
    spelled = pa.Array.from_buffers(pa.uint8(), count, [None, pa.py_buffer(flags)])
    return pc.cast(spelled, pa.bool_())


def _spelled_keys_of_dictionaries(
    texts: pa.DictionaryArray | pa.ChunkedArray,
) -> tuple[pa.Array, pa.Array, pa.Array]:
    """:func:`spelled_keys` of each chunk's dictionary, taken for its rows."""
    chunks = texts.chunks if isinstance(texts, pa.ChunkedArray) else [texts]
    parts: list[tuple[pa.Array, pa.Array, pa.Array]] = []
    for chunk in chunks:
        high, low, spelled = spelled_keys(chunk.dictionary)
        at = chunk.indices
        parts.append((high.take(at), low.take(at), pc.fill_null(spelled.take(at), False)))
    if not parts:
        empty = pa.array([], pa.uint64())
        return empty, empty, pa.array([], pa.bool_())
    high, low, spelled = (pa.concat_arrays(list(column)) for column in zip(*parts, strict=True))
    return high, low, spelled


def string_buffers(
    texts: pa.Array | pa.ChunkedArray,
) -> tuple[pa.Array, pa.Buffer, pa.Buffer | bytes]:
    """A text column as the ``_hashing`` functions read it: one string array with no offset
    and int32 offsets, its offsets buffer and its data buffer (b"" when it has none). A
    column that is one such array already is read where it is: copying a batch's 61,440 ids
    took 0.67 ms, several times a batch on the thread that builds it."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.chunk(0) if texts.num_chunks == 1 else texts.combine_chunks()
    texts = texts.cast(pa.string())
    if texts.offset:  # a slice: its buffers hold rows before it
        texts = pa.concat_arrays([texts])
    _, offsets, data = texts.buffers()
    return texts, offsets, data or b""


def _bytes(texts: pa.Array) -> list[bytes | None]:
    return texts.cast(pa.binary()).to_pylist()  # type: ignore[no-any-return]


def _md5_number(data: bytes) -> int:
    return int.from_bytes(hashlib.md5(data).digest(), "little")  # a key, not a signature


def _origin_number(text: bytes) -> int:
    if _HEX_ID.fullmatch(text):
        return int(text, 16)
    return _md5_number(text)


def _split(numbers: list[int | None]) -> tuple[pa.Array, pa.Array]:
    high = [None if n is None else n >> 64 for n in numbers]
    low = [None if n is None else n & HALF_MASK for n in numbers]
    return pa.array(high, pa.uint64()), pa.array(low, pa.uint64())


def _halves(high: bytes, low: bytes, validity: pa.Buffer | None) -> tuple[pa.Array, pa.Array]:
    """The C function's words (native-endian, as Arrow's own) as uint64 columns, null where
    the bitmap ``validity`` (None: nowhere) says."""
    count = len(high) // 8
    return (
        pa.Array.from_buffers(pa.uint64(), count, [validity, pa.py_buffer(high)]),
        pa.Array.from_buffers(pa.uint64(), count, [validity, pa.py_buffer(low)]),
    )
