"""Finding repeated ids fast: 64-bit hashes find the candidates, texts decide."""

from __future__ import annotations

import pyarrow as pa
import pytest

from eventport import positions
from eventport.imports.pipeline import _also_in, _last_of_each_id, text_hashes
from tests.unit.extension import with_and_without

IDS = ["a", "b", "a", "", "é", "b", "a" * 300, "c", "a" * 300]


@pytest.fixture(params=["C", "texts"])
def hashing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    return with_and_without(request, monkeypatch, positions)


@pytest.mark.usefixtures("hashing")
def test_equal_texts_equal_hashes() -> None:
    hashes = text_hashes(pa.array(["x", *IDS])[1:]).to_pylist()  # sliced: offsets past 0
    for i, a in enumerate(IDS):
        for j, b in enumerate(IDS):
            assert (hashes[i] == hashes[j]) == (a == b)


@pytest.mark.usefixtures("hashing")
def test_the_last_line_of_each_id_stays() -> None:
    ids = pa.array(IDS)
    lines = pa.array(range(1, len(IDS) + 1), pa.int64())
    keep, entries = _last_of_each_id(ids, lines, text_hashes(ids))
    assert keep.to_pylist() == [False, False, True, True, True, True, False, True, True]
    assert [(e.line, e.code) for e in entries] == [
        (3, "duplicate-unique-id"),
        (6, "duplicate-unique-id"),
        (9, "duplicate-unique-id"),
    ]
    assert "line 1 of this file" in entries[0].message


@pytest.mark.usefixtures("hashing")
def test_ids_also_in_another_batch() -> None:
    ids, others = pa.array(["a", "b", "c"]), pa.array(["c", "d", "a", "a"])
    found = _also_in(ids, text_hashes(ids), others, text_hashes(others))
    assert found.to_pylist() == ["a", "c"]  # in the order of ids
    assert len(_also_in(ids, text_hashes(ids), others[:0], text_hashes(others)[:0])) == 0
