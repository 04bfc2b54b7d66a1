"""The DuckDB store's keys computed outside DuckDB equal DuckDB's own (events/keys.py)."""

from __future__ import annotations

import hashlib
import random
import uuid

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventport.events import keys
from eventport.events.keys import (
    ID_KEY_SQL,
    KEY_FROM_HALVES_SQL,
    ORIGIN_KEY_SQL,
    RecentIdKeys,
    id_keys,
    origin_keys,
)
from tests.unit.extension import with_and_without

OWNER = "0190c8a2-6e4b-7c1d-9f3e-5a2b1c0d9e8f"
HEX = "0123456789abcdef"
TEXTS = [
    "",
    "a",
    "0" * 32,
    "f" * 32,
    "0123456789abcdef0123456789abcdef",
    "0123456789ABCDEF0123456789ABCDEF",  # upper case: not an origin id's spelling
    "0" * 31,
    "0" * 33,
    "0" * 31 + "g",  # one byte that is not a digit, anywhere: the last,
    "/" + "0" * 31,  # just below '0', and just above '9' and 'f' in the middle:
    "0" * 15 + ":" + "0" * 16,
    "0" * 16 + "g" + "0" * 15,
    "0" * 30 + "é",  # 32 bytes, two of them above ASCII
    " " + "0" * 31,
    "x" * 55,  # MD5 padding: the length fits in the last block
    "x" * 56,  # ... and does not
    "x" * 64,
    "é€😀\x00" * 40,  # several blocks of multi-byte text, a NUL among them
    "4a1c7e0d-2b9f-4c1e-8d3a-6f5e4d3c2b1a",
]
texts_and_hex = st.lists(
    st.one_of(st.text(max_size=150), st.text(alphabet=HEX, min_size=31, max_size=33)),
    max_size=30,
)


@pytest.fixture(params=["C", "hashlib"])
def compiled(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    return with_and_without(request, monkeypatch, keys)


def keyed(texts: list[str | None]) -> list[tuple[int, int, int | None, int | None]]:
    """Per text: (DuckDB's id key, the id key from computed halves, DuckDB's origin key, the
    origin key from computed halves); a null text's id is keyed as ''."""
    column = pa.array(texts, pa.string())
    id_high, id_low = id_keys(OWNER, column.fill_null(""))
    origin_high, origin_low = origin_keys(column)
    table = pa.table(
        {
            "t": column,
            "id_hi": id_high,
            "id_lo": id_low,
            "origin_hi": origin_high,
            "origin_lo": origin_low,
        }
    )
    con = duckdb.connect()
    con.register("texts", table)
    id_key = ID_KEY_SQL.format(owner="?", id="coalesce(t, '')")
    return con.execute(
        f"SELECT {id_key}, {KEY_FROM_HALVES_SQL.format(prefix='id')}, "
        f"{ORIGIN_KEY_SQL.format(origin='t')}, {KEY_FROM_HALVES_SQL.format(prefix='origin')} "
        "FROM texts",
        [OWNER],
    ).fetchall()


def check(texts: list[str | None]) -> None:
    for (want_id, got_id, want_origin, got_origin), text in zip(keyed(texts), texts, strict=True):
        assert got_id == want_id, text
        assert got_origin == want_origin, text
        assert (got_origin is None) == (text is None)


@pytest.mark.usefixtures("compiled")
def test_known_texts_key_as_duckdb_keys_them() -> None:
    check([*TEXTS, None])
    assert keyed(["0" * 31 + "1"])[0][2:] == (1, 1)  # an origin id is the number it spells


@pytest.mark.usefixtures("compiled")
def test_sliced_and_chunked_columns() -> None:
    column = pa.chunked_array([pa.array(["skip", *TEXTS[:5]])[1:], pa.array(TEXTS[5:])])
    high, low = id_keys(OWNER, column)
    want = [id_keys(OWNER, pa.array([t])) for t in TEXTS]
    assert high.to_pylist() == [h[0].as_py() for h, _ in want]
    assert low.to_pylist() == [lo[0].as_py() for _, lo in want]
    assert id_keys(OWNER, pa.array([], pa.string()))[0].to_pylist() == []


@pytest.mark.parametrize("level", [2, 1, 0], ids=["avx-512", "avx2", "one-by-one"])
def test_many_ids_of_every_length_key_as_hashlib_keys_them(level: int) -> None:
    """md5_keys hashes ids of one and of two blocks eight at a time where the CPU can (AVX2, or
    AVX-512VL's instructions): a call mixes both with longer ids and leaves sets unfilled at its
    end."""
    if keys._hashing is None:
        pytest.skip("the _hashing extension is not compiled")
    was = keys._hashing.md5_lanes()
    rng = random.Random(5)
    alphabet = "ab-09é€😀\x00"
    texts = [
        "".join(
            rng.choice(alphabet)
            for _ in range(rng.choice([0, 1, 17, 18, 19, 36, 60, 81, 82, 83, 150]))
        )
        for _ in range(2_003)
    ]
    try:
        if keys._hashing.md5_lanes(level) != level:
            pytest.skip(f"this CPU cannot hash at level {level}")
        high, low = id_keys(OWNER, pa.array(texts))
    finally:
        keys._hashing.md5_lanes(was)
    prefix = OWNER.encode() + b"\0"  # 37 bytes: 18 of text fill one block, 19 need two
    for text, got_high, got_low in zip(texts, high.to_pylist(), low.to_pylist(), strict=True):
        number = int.from_bytes(hashlib.md5(prefix + text.encode()).digest(), "little")
        assert (got_high, got_low) == (number >> 64, number & keys.HALF_MASK), text


def test_an_id_cannot_be_missing() -> None:
    with pytest.raises(ValueError, match="missing"):
        id_keys(OWNER, pa.array(["a", None]))


@pytest.mark.usefixtures("compiled")
@settings(max_examples=60, deadline=None)
@given(texts_and_hex)
def test_any_texts_key_as_duckdb_keys_them(texts: list[str]) -> None:
    check(texts)


def test_recent_keys_are_reused_only_for_equal_ids_of_the_same_owner() -> None:
    recent = RecentIdKeys(size=2)
    ids = pa.array(["a", "b", "c"])
    first = recent(OWNER, ids)
    again = recent(OWNER, pa.chunked_array([pa.array(["a"]), pa.array(["b", "c"])]))
    assert again[0] is first[0]
    assert again[1] is first[1]
    other_owner = recent("someone-else", ids)
    assert other_owner[0].to_pylist() == id_keys("someone-else", ids)[0].to_pylist()
    assert other_owner[0].to_pylist() != first[0].to_pylist()
    shorter = recent(OWNER, ids[:2])
    assert shorter[1].to_pylist() == first[1].to_pylist()[:2]
    assert recent(OWNER, pa.array(["a", "b", "d"]))[0].to_pylist()[2] != first[0][2].as_py()


def test_recent_id_keys_let_go_of_a_batch_once_it_is_written() -> None:
    recent = RecentIdKeys(size=4)
    ids, others = pa.array(["a", "b"]), pa.array(["c"])
    looked_up = recent(OWNER, ids)
    recent(OWNER, others)
    written = recent(OWNER, ids, last_use=True)
    assert written[0] is looked_up[0]  # found again, then let go
    again = recent(OWNER, ids, last_use=True)
    assert again[0] is not looked_up[0]
    assert again[0].to_pylist() == looked_up[0].to_pylist()
    assert (
        recent(OWNER, others, last_use=True)[0].to_pylist() == id_keys(OWNER, others)[0].to_pylist()
    )
    assert len(recent._recent) == 0


@pytest.mark.usefixtures("compiled")
def test_dictionary_encoded_texts_key_as_their_texts() -> None:
    """The import hands origin and endpoint ids over dictionary-encoded (each distinct id
    once): their keys are the same as the plain texts', chunk by chunk, nulls included."""
    values = ["0" * 31 + "1", "F" * 32, None, "abcdef0123456789" * 2, "x"]
    first = pa.DictionaryArray.from_arrays(pa.array([3, None, 0, 2, 3, 1], pa.int32()), values)
    second = pa.DictionaryArray.from_arrays(pa.array([0, 0, 1], pa.int32()), ["f" * 32, "y"])
    for encoded in (first, pa.chunked_array([first, second]), pa.chunked_array([], first.type)):
        plain = encoded.cast(pa.string())
        got = keys.spelled_keys(encoded)
        want = keys.spelled_keys(plain)
        assert [column.to_pylist() for column in got] == [column.to_pylist() for column in want]
    assert keys.spelled_keys(first)[2].to_pylist() == [True, False, True, False, True, False]


@pytest.mark.usefixtures("compiled")
def test_spelled_keys_say_which_texts_the_key_gives_back() -> None:
    texts = ["0" * 31 + "1", "F" * 32, "a" * 31, None, "0" * 33, "abcdef0123456789" * 2, ""]
    sliced = pa.array(["skip", *texts])[1:]
    high, low, spelled = keys.spelled_keys(sliced)
    assert spelled.to_pylist() == [True, False, False, False, False, True, False]
    assert (high, low) == keys.origin_keys(sliced)
    for text, hi, lo, back in zip(
        texts, high.to_pylist(), low.to_pylist(), spelled.to_pylist(), strict=True
    ):
        if back:
            assert f"{hi:016x}{lo:016x}" == text


UUIDS = [
    "4a1c7e0d-2b9f-4c1e-8d3a-6f5e4d3c2b1a",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "0190c8a2-6e4b-7c1d-9f3e-5a2b1c0d9e8f",
]
NOT_UUIDS = [
    "4A1C7E0D-2B9F-4C1E-8D3A-6F5E4D3C2B1A",  # upper case: DuckDB would give it back lower
    "4a1c7e0d2b9f4c1e8d3a6f5e4d3c2b1a",  # no hyphens
    "{4a1c7e0d-2b9f-4c1e-8d3a-6f5e4d3c2b1a}",
    "4a1c7e0d-2b9f-4c1e-8d3a-6f5e4d3c2b1a0",
    "4a1c7e0d-2b9f-4c1e-8d3a-6f5e4d3c2b1",
    "4a1c7e0d2-b9f-4c1e-8d3a-6f5e4d3c2b1a",  # a hyphen one place off
    "4a1c7e0d-2b9f-4c1e-8d3a_6f5e4d3c2b1a",
    "4a1c7e0g-2b9f-4c1e-8d3a-6f5e4d3c2b1a",  # one byte that is not a digit: 'g', ':', '/'
    "4a1c7e0d-2b9f-4c1e-8d3a-6f5e4d3c2b1:",
    "/a1c7e0d-2b9f-4c1e-8d3a-6f5e4d3c2b1a",
    "4a1c7e0d-2b9f-4c1e-8d3a-6f5e4d3c2bé",  # 36 bytes, two of them above ASCII
    "",
    "import-1:17",
]


@pytest.mark.usefixtures("compiled")
def test_uuid_numbers_are_duckdbs_for_canonical_uuids_only() -> None:
    """A canonical UUID (lowercase, 8-4-4-4-12) is the number DuckDB's UUID type holds for
    it, and that type gives the same text back; any other id has no number."""
    column = pa.array(["skip", *UUIDS, *NOT_UUIDS])[1:]
    high, low, spelled = keys.uuid_numbers(column)
    assert spelled.to_pylist() == [True] * len(UUIDS) + [False] * len(NOT_UUIDS)
    assert high.null_count == low.null_count == len(NOT_UUIDS)
    con = duckdb.connect()
    con.register("ids", pa.table({"id": column, "id_uuid_hi": high, "id_uuid_lo": low}))
    number = f"CAST({KEY_FROM_HALVES_SQL.format(prefix='id_uuid')} AS UUID)"
    found = con.execute(
        f"SELECT CAST({number} AS VARCHAR), {number} = TRY_CAST(id AS UUID) FROM ids"
    ).fetchall()
    assert found == [(text, True) for text in UUIDS] + [(None, None)] * len(NOT_UUIDS)


def test_uuid_numbers_with_and_without_the_extension_agree() -> None:
    texts = [*UUIDS, *NOT_UUIDS, *(str(uuid.UUID(int=random.getrandbits(128))) for _ in range(99))]
    got = keys.uuid_numbers(pa.chunked_array([pa.array(texts[:5]), pa.array(texts[5:])]))
    compiled_module, keys._hashing = keys._hashing, None
    try:
        want = keys.uuid_numbers(pa.array(texts))
    finally:
        keys._hashing = compiled_module
    assert [column.to_pylist() for column in got] == [column.to_pylist() for column in want]
    with pytest.raises(ValueError, match="missing"):
        keys.uuid_numbers(pa.array([UUIDS[0], None]))


def _every_byte_once(valid: str) -> list[str]:
    """``valid`` with each of its characters replaced, one at a time, by every ASCII character
    and by two characters above ASCII."""
    return [
        valid[:at] + other + valid[at + 1 :]
        for at in range(len(valid))
        for other in [*map(chr, range(128)), "é", "\uffff"]
    ]


@pytest.mark.usefixtures("compiled")
def test_every_byte_anywhere_in_a_hex_id_or_a_uuid_is_read_as_python_reads_it() -> None:
    """The C reading of 32 hex digits (16 at a time where the CPU has SSE2, else a digit a
    step) takes lowercase digits only, at every position: each text with one character
    replaced by every ASCII character (and two above ASCII) is spelled exactly when Python's
    reading says so, as the same number."""
    hex_texts = _every_byte_once("0123456789abcdeffedcba9876543210")
    high, low, spelled = keys.spelled_keys(pa.array(hex_texts))
    for text, hi, lo, back in zip(
        hex_texts, high.to_pylist(), low.to_pylist(), spelled.to_pylist(), strict=True
    ):
        is_hex = len(text) == 32 and all(c in HEX for c in text)
        assert back == is_hex, text
        if is_hex:
            assert (hi << 64 | lo) == int(text, 16)
    uuid_texts = _every_byte_once(UUIDS[3])
    high, low, spelled = keys.uuid_numbers(pa.array(uuid_texts))
    for text, hi, back in zip(uuid_texts, high.to_pylist(), spelled.to_pylist(), strict=True):
        assert back == _uuid_shaped(text), text
        if back:
            assert hi == uuid.UUID(text).int >> 64


def _uuid_shaped(text: str) -> bool:
    """Whether ``text`` is a canonical UUID (what Python writes for the UUID it reads)."""
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False
