"""positions.index_of, has_repeats, distinct and RememberedTexts: the C look-ups answer as
Arrow and Python do."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventport import positions
from tests.unit.extension import with_and_without

# Small values repeat often; the extremes and sequential pair keys are hashed too.
_int64 = st.one_of(
    st.integers(-3, 3),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(0, 2**32 - 1).map(lambda n: n << 31),
)


@pytest.fixture(params=["C", "Arrow"])
def compiled(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    return with_and_without(request, monkeypatch, positions)


def _first_positions(values: list[int | None], known: list[int]) -> list[int | None]:
    first: dict[int, int] = {}
    for at, value in enumerate(known):
        first.setdefault(value, at)
    return [None if v is None else first.get(v) for v in values]


@pytest.mark.usefixtures("compiled")
@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.one_of(st.none(), _int64), max_size=60),
    st.lists(_int64, max_size=60),
    st.integers(0, 3),
)
def test_index_of_gives_each_value_its_first_position(
    values: list[int | None], known: list[int], skip: int
) -> None:
    # Sliced arrays (an offset into their buffers) and chunked ones, as pipelines hand them over.
    array = pa.array([0] * skip + values, pa.int64())[skip:]
    found = positions.index_of(array, pa.array(known, pa.int64()))
    assert found.type == pa.int32()
    assert found.to_pylist() == _first_positions(values, known)
    half = len(values) // 2
    chunked = pa.chunked_array([values[:half], values[half:]], pa.int64())
    assert positions.index_of(chunked, pa.array(known, pa.int64())).to_pylist() == (
        _first_positions(values, known)
    )


@pytest.mark.usefixtures("compiled")
@settings(max_examples=80, deadline=None)
@given(st.lists(_int64, max_size=80), st.integers(0, 3))
def test_has_repeats_says_whether_a_value_occurs_twice(values: list[int], skip: int) -> None:
    array = pa.array([7] * skip + values, pa.int64())[skip:]
    assert positions.has_repeats(array) == (len(set(values)) < len(values))


@pytest.mark.usefixtures("compiled")
@settings(max_examples=80, deadline=None)
@given(st.lists(st.one_of(st.none(), _int64), max_size=80), st.integers(0, 3))
def test_distinct_keeps_the_first_of_each_value(values: list[int | None], skip: int) -> None:
    array = pa.array([7] * skip + values, pa.int64())[skip:]
    expected = list(dict.fromkeys(v for v in values if v is not None))
    assert positions.distinct(array).to_pylist() == expected
    half = len(values) // 2
    chunked = pa.chunked_array([values[:half], values[half:]], pa.int64())
    assert positions.distinct(chunked).to_pylist() == expected


@pytest.mark.usefixtures("compiled")
def test_many_values_and_a_large_set() -> None:
    known = pa.array([n << 31 for n in range(300_000)], pa.int64())
    values = pa.array([n << 31 for n in range(-5, 300_005, 7)], pa.int64())
    found = positions.index_of(values, known).to_pylist()
    assert found == [n if 0 <= n < 300_000 else None for n in range(-5, 300_005, 7)]
    assert not positions.has_repeats(known)
    assert positions.has_repeats(pa.concat_arrays([known, known[123_456:123_457]]))


def test_other_types_take_arrows_kernels() -> None:
    texts = pa.array(["a", "b", None, "a"])
    assert positions.index_of(texts, pa.array(["b", "a"])).to_pylist() == [1, 0, None, 1]
    assert positions.has_repeats(texts)
    assert positions.distinct(texts).to_pylist() == ["a", "b"]
    assert not positions.has_repeats(pa.array([], pa.string()))
    assert pc.all(
        pc.is_null(positions.index_of(pa.array([1, 2]), pa.array([], pa.int64())))
    ).as_py()


def test_wrong_buffers_are_errors_not_reads_past_the_end() -> None:
    if positions._hashing is None:
        pytest.skip("the _hashing extension is not compiled")
    with pytest.raises(ValueError, match="values"):
        positions._hashing.index_of(b"\0" * 8, 2, b"", 0)
    with pytest.raises(ValueError, match="set"):
        positions._hashing.index_of(b"", 0, b"\0" * 8, 3)
    with pytest.raises(ValueError, match="values"):
        positions._hashing.distinct(b"\0" * 8, 2)


_texts = st.lists(
    st.one_of(st.none(), st.sampled_from(["", "a", "b", "1.2.3.4", "::1"]), st.text(max_size=8)),
    max_size=30,
)


@pytest.mark.usefixtures("compiled")
@settings(max_examples=60, deadline=None)
@given(st.lists(_texts, max_size=5))
def test_remembered_texts_are_found_at_the_positions_they_were_added(
    batches: list[list[str | None]],
) -> None:
    known = positions.RememberedTexts()
    remembered: list[str] = []
    for batch in batches:
        values = pa.array([None, *batch], pa.string())[1:]  # an offset too
        expected = [
            None if v is None or v not in remembered else remembered.index(v) for v in batch
        ]
        assert known.find(values).to_pylist() == expected
        new = [v for v in dict.fromkeys(v for v in batch if v is not None) if v not in remembered]
        known.add(pa.array(new, pa.string()))
        remembered += new
        assert len(known) == len(remembered)
        assert known.texts.to_pylist() == remembered
        assert known.find(values).to_pylist() == [
            None if v is None else remembered.index(v) for v in batch
        ]
    known.clear()
    assert len(known) == 0
    assert known.find(pa.array(remembered, pa.string())).null_count == len(remembered)


def test_remembered_texts_that_share_a_hash_are_still_told_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Texts whose 64-bit hashes are equal (forced here: every text hashes to 7, or to one of
    two values) get keys of their own and are found by comparing the texts."""
    if positions._hashing is None:
        pytest.skip("the _hashing extension is not compiled")
    for hashed in (lambda texts: 7, lambda texts: len(texts) % 2):
        monkeypatch.setattr(
            positions,
            "text_hashes",
            lambda texts, hashed=hashed: pa.array(
                [hashed(t or "") for t in texts.to_pylist()], pa.int64()
            ),
        )
        known = positions.RememberedTexts()
        known.add(pa.array(["a", "bb", "c"], pa.string()))
        known.add(pa.array(["dd", "e"], pa.string()))
        asked = pa.array(["e", None, "bb", "zz", "a", "dd", "c"], pa.string())
        assert known.find(asked).to_pylist() == [4, None, 1, None, 0, 3, 2]
        assert len(known) == 5


def test_remembered_texts_refuse_a_missing_text() -> None:
    known = positions.RememberedTexts()
    with pytest.raises(ValueError, match="missing"):
        known.add(pa.array(["a", None], pa.string()))
    assert len(known) == 0


@pytest.mark.usefixtures("compiled")
def test_known_keys_answer_which_keys_are_new_and_start_again_past_their_limit() -> None:
    known = positions.KnownKeys(limit=5)
    keys = pa.array([7, -(2**63), 2**63 - 1, 0], pa.int64())
    assert known.unknown(keys).to_pylist() == [True, True, True, True]
    known.add(pa.chunked_array([[7, 7], [0]]))  # repeats, and chunks, are fine
    known.add(pa.array([0, 2**63 - 1], pa.int64()).slice(1))  # a slice: its own values
    assert known.unknown(keys).to_pylist() == [False, True, False, False]
    assert len(known) == 3
    known.add(pa.array([7, 1, 2], pa.int64()))  # 5 keys: at the limit, still kept
    assert len(known) == 5
    known.add(pa.array([3], pa.int64()))  # past it: only the newest are known
    assert len(known) == 1
    assert known.unknown(pa.array([3, 7], pa.int64())).to_pylist() == [False, True]
    assert known.unknown(pa.array([], pa.int64())).to_pylist() == []


@pytest.mark.usefixtures("compiled")
@pytest.mark.parametrize(
    ("count", "at", "want"),
    [
        (5, [1, 3], [True, False, True, False, True]),
        (3, [], [True, True, True]),
        (1, [0], [False]),
        (0, [], []),
    ],
)
def test_not_at_marks_the_rows_away_from_the_positions(
    count: int, at: list[int], want: list[bool]
) -> None:
    assert positions.not_at(count, pa.array(at, pa.int64())).to_pylist() == want
