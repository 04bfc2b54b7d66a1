"""One warning on many lines: held as columns, stored as compressed runs, read back whole."""

from __future__ import annotations

import random
import uuid

import pyarrow as pa
import pytest

from eventport.imports import log_lines
from eventport.imports.log_lines import LineWarnings, replaced_message
from eventport.imports.records import naive_time_message

ADDRESS_MESSAGE = "$remote_address is not an IP address; the event is imported without location"


def test_runs_give_back_every_line_and_message() -> None:
    ids = [f"id-{n}" for n in range(5)]
    lines = [3, 5, 8, 1_000_013, 1_000_021]  # steps of one, of millions
    warnings = LineWarnings("duplicate-unique-id", pa.array(lines, pa.int64()), pa.array(ids))
    got = list(warnings.entries())
    assert got[0] == (
        3,
        "warning",
        "duplicate-unique-id",
        "duplicate-unique-id",
        replaced_message(
            "id-0", "an event stored before (by an earlier import, or from further up this file)"
        ),
        None,
        None,
        None,
        None,
    )
    assert [entry[0] for entry in got] == lines
    assert [entry[4] for entry in got] == [
        replaced_message(
            i, "an event stored before (by an earlier import, or from further up this file)"
        )
        for i in ids
    ]


def test_runs_hold_at_most_their_size() -> None:
    lines = pa.array(range(10, 35), pa.int64())
    warnings = LineWarnings("naive-time", lines, pa.array([f"2024-01-{n}" for n in range(25)]))
    runs = list(warnings.runs(size=10))
    assert [(r[0], r[1], r[2], r[3]) for r in runs] == [
        ("naive-time", 10, 19, 10),
        ("naive-time", 20, 29, 10),
        ("naive-time", 30, 34, 5),
    ]
    whole = list(warnings.entries())
    assert [e[0] for e in whole] == list(range(10, 35))
    assert whole[-1][4] == naive_time_message("2024-01-24")


def test_runs_are_compact() -> None:
    """A re-import's warnings: one a line, each naming a random id (as one row each they took
    ~420 bytes an entry in SQLite). The line steps cost next to nothing; a random UUID's 36
    characters hold 122 bits, ~16 bytes."""
    count = 20_000
    rng = random.Random(7)
    ids = pa.array([str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)])
    lines = pa.array(range(1, count + 1), pa.int64())
    (run,) = LineWarnings("duplicate-unique-id", lines, ids).runs()
    assert len(run[4]) < count * 24
    (bare,) = LineWarnings("invalid-remote-address", lines).runs()
    assert len(bare[4]) < count // 4  # steps of one: the framing of each part, ~200 bytes


def test_a_message_that_names_nothing_is_the_same_on_every_line() -> None:
    warnings = LineWarnings("invalid-remote-address", pa.array([2, 4], pa.int64()))
    assert len(warnings) == 2
    assert [(e[0], e[4]) for e in warnings.entries()] == [
        (2, ADDRESS_MESSAGE),
        (4, ADDRESS_MESSAGE),
    ]


def test_a_text_for_each_line_and_a_known_code() -> None:
    with pytest.raises(ValueError, match="2 texts for 3 lines"):
        LineWarnings("naive-time", pa.array([1, 2, 3], pa.int64()), pa.array(["a", "b"]))
    with pytest.raises(ValueError, match="no message"):
        LineWarnings("made-up", pa.array([1], pa.int64()))


def test_a_warning_about_an_address_keeps_no_text() -> None:
    """Runs are stored compressed, out of reach of a search of the data directory for raw
    addresses: a warning about an address cannot keep one."""
    with pytest.raises(ValueError, match="keeps no text"):
        LineWarnings("invalid-remote-address", pa.array([1], pa.int64()), pa.array(["1.2.3.4"]))


def test_a_run_is_read_a_part_at_a_time() -> None:
    """Lines carry over from one part of a run's body to the next, gaps and all; the first
    entries need only the first part."""
    lines = [n * 3 + (n // 1_500) * 1_000_000 for n in range(1, 2_600)]
    warnings = LineWarnings("naive-time", pa.array(lines, pa.int64()), pa.array(["t"] * 2_599))
    (run,) = warnings.runs()
    assert [e[0] for e in warnings.entries()] == lines
    first_part = pa.ipc.open_stream(run[4]).read_next_batch()
    assert first_part.num_rows == log_lines.RUN_PART
