"""An import's batch between reading and commit (imports/batches.py)."""

from __future__ import annotations

from eventport.imports.batches import PendingBatch
from eventport.imports.decoding import DECODED_SCHEMA
from eventport.imports.records import LogEntry


def test_a_batch_counts_its_events_and_failed_lines_not_its_warnings() -> None:
    """Lines read in Python have their warnings (a time without a zone) as entries, lines read
    in C as columns: counting the entries ended batches at different lines on the two paths,
    and a replaced id's message then differed (a line-reader hunt)."""
    batch = PendingBatch()
    warnings = [LogEntry(n, "warning", "naive-time", "naive-time", "no zone") for n in (1, 2, 3)]
    errors = [
        LogEntry(4, "error", "invalid-time", "invalid-time", "not a time"),
        LogEntry(4, "error", "failed-to-decode", "failed-to-decode", "and more"),  # one line
        LogEntry(5, "error", "invalid-time", "invalid-time", "not a time"),
    ]
    events = DECODED_SCHEMA.empty_table()
    batch.add(None, events, warnings, [])  # type: ignore[arg-type]
    assert batch.size == 0
    batch.add(None, events, errors, [])  # type: ignore[arg-type]
    assert batch.size == 2
    assert batch.entries == warnings + errors
