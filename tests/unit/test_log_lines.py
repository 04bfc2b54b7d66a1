"""One warning on many lines, held as columns: its rows are made, in parts, as they are stored."""

from __future__ import annotations

import pyarrow as pa
import pytest

from eventport.imports.log_lines import LineWarnings


def _named(text: str | None) -> str:
    return f"names {text!r}"


def test_rows_in_parts_are_the_rows_whole() -> None:
    warnings = LineWarnings(
        "duplicate-unique-id",
        pa.array([3, 5, 8, 13, 21], pa.int64()),
        _named,
        pa.array(["a", "b", None, "d", "e"]),
    )
    whole = list(warnings.rows())
    assert whole[0] == (
        3,
        "warning",
        "duplicate-unique-id",
        "duplicate-unique-id",
        "names 'a'",
    )  # a short row: no package, pixel or counts
    assert [row[0] for row in whole] == [3, 5, 8, 13, 21]
    assert [row[4] for row in whole] == [
        "names 'a'",
        "names 'b'",
        "names None",
        "names 'd'",
        "names 'e'",
    ]
    parts = [list(warnings.rows(at, at + 2)) for at in range(0, len(warnings), 2)]
    assert [len(part) for part in parts] == [2, 2, 1]
    assert [row for part in parts for row in part] == whole
    assert list(warnings.rows(5, 7)) == []


def test_a_message_that_names_nothing_is_the_same_on_every_line() -> None:
    warnings = LineWarnings("invalid-remote-address", pa.array([2, 4], pa.int64()), _named)
    assert len(warnings) == 2
    assert [(row[0], row[4]) for row in warnings.rows()] == [(2, "names None"), (4, "names None")]


def test_a_text_for_each_line() -> None:
    with pytest.raises(ValueError, match="2 texts for 3 lines"):
        LineWarnings("x", pa.array([1, 2, 3], pa.int64()), _named, pa.array(["a", "b"]))
