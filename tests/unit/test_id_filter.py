"""The Bloom filter of stored id keys (events/id_filter.py), on random 128-bit keys."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from eventport.events import id_filter
from eventport.events.id_filter import BITS_PER_KEY, MIN_CAPACITY, IdFilter

pytestmark = pytest.mark.skipif(
    not id_filter.available(), reason="the _hashing extension is not compiled"
)


def halves(rng: random.Random, count: int) -> tuple[pa.Array, pa.Array]:
    def words() -> pa.Array:
        data = pa.py_buffer(rng.randbytes(8 * count))
        return pa.Array.from_buffers(pa.uint64(), count, [None, data])

    return words(), words()


def test_every_added_key_is_a_candidate_and_few_others_are() -> None:
    rng = random.Random(11)
    ids = IdFilter(MIN_CAPACITY, 64 << 20)
    high, low = halves(rng, MIN_CAPACITY)
    ids.add(high, low)
    assert ids.keys == MIN_CAPACITY
    assert ids.parts == 1
    assert ids.candidates(high, low).to_pylist() == list(range(MIN_CAPACITY))

    others = halves(rng, 1_000_000)
    false_maybes = len(ids.candidates(*others))
    # ~2.5 a million measured at full capacity; a broken probe layout gives thousands
    assert false_maybes <= 100, false_maybes


def test_candidates_are_positions_in_the_asked_order_and_slices_count() -> None:
    rng = random.Random(12)
    ids = IdFilter(1000, 1 << 20)
    high, low = halves(rng, 6)
    ids.add(high[2:4], low[2:4])  # slices: their offset must be honoured
    ids.add(high.slice(5), low.slice(5))
    assert ids.candidates(high, low).to_pylist() == [2, 3, 5]
    chunked = pa.chunked_array([high[:3], high[3:]]), pa.chunked_array([low[:3], low[3:]])
    assert ids.candidates(*chunked).to_pylist() == [2, 3, 5]
    assert len(ids.candidates(pa.array([], pa.uint64()), pa.array([], pa.uint64()))) == 0


def test_it_grows_in_parts_and_finds_the_keys_of_every_part() -> None:
    rng = random.Random(13)
    ids = IdFilter(10, 64 << 20)
    assert ids.capacity == MIN_CAPACITY
    assert ids.parts == 1
    assert ids.nbytes == MIN_CAPACITY * BITS_PER_KEY // 8
    first = halves(rng, MIN_CAPACITY)
    ids.add(*first)
    assert ids.parts == 1  # full, but nothing asked for room yet
    second = halves(rng, 1000)
    ids.add(*second)  # into a new part for twice the keys held
    assert ids.parts == 2
    assert ids.capacity == 3 * MIN_CAPACITY
    assert ids.keys == MIN_CAPACITY + 1000
    assert len(ids.candidates(*first)) == MIN_CAPACITY
    assert ids.candidates(*second).to_pylist() == list(range(1000))
    assert len(ids.candidates(*halves(rng, 1_000_000))) <= 100


def test_at_its_cap_it_fills_and_still_finds_every_key() -> None:
    rng = random.Random(14)
    capped = IdFilter(10, 64)  # one 512-bit block: soon nearly every key is a "maybe"
    assert capped.nbytes == 64
    high, low = halves(rng, 5000)
    for start in range(0, 5000, 1000):
        capped.add(high[start : start + 1000], low[start : start + 1000])
    assert capped.parts == 1
    assert capped.nbytes == 64
    assert capped.candidates(high, low).to_pylist() == list(range(5000))


def test_keys_must_be_whole_64_bit_halves() -> None:
    ids = IdFilter(10, 1 << 20)
    with pytest.raises(TypeError):
        ids.add(pa.array([1], pa.int32()), pa.array([1], pa.int32()))
    with pytest.raises(ValueError, match="missing"):
        ids.add(pa.array([1, None], pa.uint64()), pa.array([1, 2], pa.uint64()))


def test_the_c_functions_refuse_bits_that_are_not_whole_blocks() -> None:
    from eventport import _hashing

    words = pa.py_buffer(bytes(8))
    with pytest.raises(ValueError, match="64-byte blocks"):
        _hashing.bloom_add(bytearray(100), words, words, 1)
    with pytest.raises(ValueError, match="64-byte blocks"):
        _hashing.bloom_candidates([bytes(64), b""], words, words, 1)
    with pytest.raises(ValueError, match="1 to 64"):
        _hashing.bloom_candidates([], words, words, 1)
    with pytest.raises(TypeError):
        _hashing.bloom_candidates(bytes(64), words, words, 1)  # bytes: a sequence of ints
    with pytest.raises(ValueError, match="fewer than"):
        _hashing.bloom_candidates([bytes(64)], words, words, 2)
    with pytest.raises(ValueError, match="64-byte blocks"):
        _hashing.bloom_candidates([bytes(64)], words, words, 1, bytearray(100))
    with pytest.raises(BufferError):
        _hashing.bloom_candidates([bytes(64)], words, words, 1, bytes(64))  # not writable


def test_asking_while_adding_answers_as_asking_and_then_adding_did() -> None:
    rng = random.Random(18)
    stored = halves(rng, 200_000)
    asked = IdFilter(MIN_CAPACITY, 64 << 20)
    adding = IdFilter(MIN_CAPACITY, 64 << 20)
    asked.add(*stored)
    adding.add(*stored)
    # a batch: some keys stored already, the rest new (in no particular order)
    new = halves(rng, 50_000)
    pick = list(range(0, 200_000, 7))[:20_000]
    high = pa.concat_arrays([new[0], stored[0].take(pick)])
    low = pa.concat_arrays([new[1], stored[1].take(pick)])
    order = pa.array(rng.sample(range(70_000), 70_000))
    high, low = high.take(order), low.take(order)

    expected = asked.candidates(high, low)
    found = adding.candidates(high, low, adding=True)
    # a new key may also meet a false "maybe" (about one in a million): none here
    assert found.to_pylist() == expected.to_pylist()
    assert len(found) == 20_000
    # the others are added: every key of the batch is a candidate now, and only they were
    # counted (the stored ones add nothing)
    assert len(adding.candidates(high, low)) == 70_000
    assert adding.keys == 200_000 + 50_000
    asked.add(*new)
    assert bytes(adding._parts[-1]) == bytes(asked._parts[-1])  # the same bits as adding after
    assert len(adding.candidates(*halves(rng, 1_000_000))) <= 100


def test_asking_while_adding_makes_room_as_adding_does() -> None:
    rng = random.Random(19)
    ids = IdFilter(10, 64 << 20)
    ids.add(*halves(rng, MIN_CAPACITY))  # the first part holds what it was sized for
    batch = halves(rng, 1000)
    assert len(ids.candidates(*batch, adding=True)) == 0
    assert ids.parts == 2  # a new part, as add() would have made
    assert ids.keys == MIN_CAPACITY + 1000
    assert ids.candidates(*batch).to_pylist() == list(range(1000))
    empty = pa.array([], pa.uint64())
    assert len(ids.candidates(empty, empty, adding=True)) == 0
    assert ids.keys == MIN_CAPACITY + 1000


def test_a_reservation_replaces_an_empty_part_with_one_sized_for_it() -> None:
    ids = IdFilter(10, 64 << 20)
    ids.reserve(3_000_000)
    assert ids.parts == 1
    assert 3_000_000 <= ids.capacity < 3_000_000 + 100
    rng = random.Random(14)
    keys = halves(rng, 3_000_000)
    ids.add(*keys)
    assert ids.parts == 1  # the reserved part held them all: no step of growth
    assert len(ids.candidates(*keys)) == 3_000_000


def test_a_reservation_the_newest_part_has_room_for_changes_nothing() -> None:
    ids = IdFilter(MIN_CAPACITY, 64 << 20)
    rng = random.Random(15)
    ids.add(*halves(rng, 1000))
    before = ids.nbytes
    ids.reserve(MIN_CAPACITY - 1000)
    assert (ids.parts, ids.nbytes) == (1, before)


def test_a_reservation_after_keys_adds_a_part_and_keeps_finding_them() -> None:
    ids = IdFilter(MIN_CAPACITY, 64 << 20)
    rng = random.Random(16)
    first = halves(rng, 500_000)
    ids.add(*first)
    ids.reserve(2_000_000)
    assert ids.parts == 2
    assert ids.capacity >= MIN_CAPACITY + 2_000_000
    second = halves(rng, 2_000_000)
    ids.add(*second)
    assert ids.parts == 2
    assert len(ids.candidates(*first)) == 500_000
    assert len(ids.candidates(*second)) == 2_000_000
    assert len(ids.candidates(*halves(rng, 1_000_000))) <= 100


def test_a_reservation_stays_within_the_cap() -> None:
    ids = IdFilter(10, 8 << 20)
    ids.reserve(100_000_000)
    assert ids.parts == 1
    assert ids.nbytes == 8 << 20
    rng = random.Random(17)
    keys = halves(rng, 100_000)
    ids.add(*keys)
    ids.reserve(100_000_000)  # no room left: nothing changes, nothing is lost
    assert (ids.parts, ids.nbytes) == (1, 8 << 20)
    assert len(ids.candidates(*keys)) == 100_000
