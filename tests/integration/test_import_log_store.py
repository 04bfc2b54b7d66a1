"""An import's log in the control store, on both backends: the whole log read page by page in
its order, the samples of the first errors and warnings, and (SQLite) that each reads through
an index instead of every entry of the import (an import can log every line)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator

import pyarrow as pa
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from eventport.control import accounts, imports
from eventport.control.database import ControlDatabase
from eventport.control.imports import RunRow
from eventport.control.models import ImportLog
from eventport.imports import log_lines
from eventport.imports.log_lines import LineWarnings
from tests.conftest import truncate_all


@pytest.fixture
def import_id(control: ControlDatabase) -> str:
    truncate_all(control)
    with control.session() as s:
        owner, _ = accounts.create_user(s, "alice", "alice@example.com")
        new = imports.NewImport(
            str(uuid.uuid4()), owner, "multi", None, None, "ndjson", "identity", "/none", 0
        )
        created = imports.create_import(s, owner, new, limit=15).id
    return created


def write_logs(s: Session, import_id: str, entries: list[dict[str, object]]) -> None:
    """Entries given by field name, as the rows write_log_rows takes."""
    rows = (tuple(e.get(name) for name in imports._LOG_FIELDS) for e in entries)
    imports.write_log_rows(s, import_id, rows)


def entry(line: int, level: str, code: str) -> dict[str, object]:
    return {"line": line, "level": level, "type": code, "code": code, "message": f"{code} {line}"}


def test_the_whole_log_is_read_page_by_page_in_line_and_code_order(
    control: ControlDatabase, import_id: str
) -> None:
    written = [entry(line, "warning", "naive-time") for line in range(1, 8)]
    written += [entry(3, "warning", "unknown-field"), entry(3, "error", "artifact-not-found")]
    written += [entry(0, "info", "progress"), entry(5, "info", "progress")]
    with control.session() as s:
        write_logs(s, import_id, written)
        write_logs(s, import_id, written[:3] + written[:1])  # replayed: kept once
    seen: list[tuple[int, str]] = []
    after = None
    while True:
        with control.session() as s:
            page = imports.log_page(s, import_id, after, limit=2)  # pages end mid-line
        if not page:
            break
        seen += [(e.line, e.code) for e in page]
        after = (page[-1].line, page[-1].code)
    assert seen == sorted((int(e["line"]), str(e["code"])) for e in written)  # type: ignore[call-overload]


def test_the_samples_are_the_first_entries_of_each_level(
    control: ControlDatabase, import_id: str
) -> None:
    written = [entry(line, "warning", "naive-time") for line in range(1, 40)]
    written += [entry(line, "error", "failed-to-decode") for line in (38, 12)]
    with control.session() as s:
        write_logs(s, import_id, written[::-1])
        errors = imports.log_sample(s, import_id, "error")
        warnings = imports.log_sample(s, import_id, "warning")
        nothing = imports.log_sample(s, import_id, "info")
    assert [(e.line, e.code) for e in errors] == [
        (12, "failed-to-decode"),
        (38, "failed-to-decode"),
    ]
    assert [e.line for e in warnings] == list(range(1, imports.LOG_SAMPLE + 1))
    assert nothing == []


def test_the_log_queries_search_an_index(control: ControlDatabase, import_id: str) -> None:
    if control.engine.dialect.name != "sqlite":
        pytest.skip("the plans are SQLite's (PostgreSQL plans by the table's statistics)")
    sample = imports.sample_query(import_id, "error")
    page = imports.page_query(import_id, (5, "a"), limit=10)
    with control.engine.connect() as c:
        plans = []
        for query in (sample, page):
            sql = str(query.compile(dialect=c.dialect, compile_kwargs={"literal_binds": True}))
            plans.append(" ".join(row[3] for row in c.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")))
    assert "level=?" in plans[0]  # straight to the level's first entries
    assert "(line,code)>(?,?)" in plans[1]  # straight to the page's first entry
    assert not any("TEMP B-TREE" in plan for plan in plans)  # already in order: nothing sorted


def test_an_entry_reads_back_as_written(control: ControlDatabase, import_id: str) -> None:
    odd = entry(2**40, "error", "artifact-not-found")
    odd |= {"message": 'line \u2028 "quoted" \\ é 🚀\n', "package_id": "pkg", "events_count": 7}
    with control.session() as s:
        write_logs(s, import_id, [odd])
        (found,) = imports.log_page(s, import_id, None)
        created = s.scalar(select(ImportLog.created_at).where(ImportLog.import_id == import_id))
    assert (found.line, found.level, found.type, found.code, found.message) == (
        2**40,
        "error",
        "artifact-not-found",
        "artifact-not-found",
        odd["message"],
    )
    assert (found.package_id, found.tracking_pixel_id, found.events_count) == ("pkg", None, 7)
    assert found.failed_events_count is None
    assert created is not None  # stored, though a read does not give it


def test_a_nul_in_a_message_does_not_stop_the_entries_going_in(
    control: ControlDatabase, import_id: str
) -> None:
    """PostgreSQL cannot make text of a NUL (its json's \\u0000): the entries went in as one
    JSON parameter, and one such message failed them all, and the import's every attempt."""
    written = [entry(1, "error", "invalid-json"), entry(2, "warning", "naive-time")]
    written[0]["message"] = "not JSON: x\x00y"
    with control.session() as s:
        write_logs(s, import_id, written)
        found = imports.log_page(s, import_id, None)
    assert [(e.line, e.code) for e in found] == [(1, "invalid-json"), (2, "naive-time")]
    kept = "\x00" if control.engine.dialect.name == "sqlite" else "\ufffd"
    assert found[0].message == f"not JSON: x{kept}y"


def test_many_entries_go_in_several_statements_and_replays_are_kept_once(
    control: ControlDatabase, import_id: str
) -> None:
    """More entries than one SQLite statement takes (2,500), with repeats within and across
    statements: each (line, code) is stored once, as first written."""
    written = [entry(line, "warning", "naive-time") for line in range(1, 6_001)]
    repeats = [entry(line, "error", "naive-time") for line in (1, 2_500, 2_501, 6_000)]
    with control.session() as s:
        write_logs(s, import_id, written[:2_600] + repeats[:3] + written[2_600:] + repeats)
        write_logs(s, import_id, written[::7])  # a replayed batch
        page = imports.log_page(s, import_id, None, limit=10_000)
    assert [(e.line, e.level) for e in page] == [(line, "warning") for line in range(1, 6_001)]


def test_a_low_sqlite_parameter_limit_makes_smaller_statements(
    control: ControlDatabase, import_id: str
) -> None:
    if control.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's limit on parameters")
    written = [entry(line, "info", "progress") for line in range(1, 101)]
    with control.session() as s:
        raw = s.connection().connection.dbapi_connection
        assert raw is not None
        before = raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 5 * len(imports._LOG_COLUMNS))
        try:
            assert imports._sqlite_rows_per_statement(raw) == 5
            write_logs(s, import_id, written)
        finally:
            raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, before)
        page = imports.log_page(s, import_id, None)
    assert [e.line for e in page] == list(range(1, 101))


def test_rows_given_one_by_one_go_in_as_entries(control: ControlDatabase, import_id: str) -> None:
    """write_log_rows reads its rows once, as they go in (an import hands over a generator):
    more of them than one SQLite statement takes, each stored with its values."""

    def rows() -> Iterator[imports.LogRow]:
        for line in range(1, 5_002):
            yield (line, "warning", "naive-time", "naive-time", f"m{line}", None, None, None, None)
        yield (0, "info", "progress", "progress", "done", "pkg", "px", 5_001, 0)

    with control.session() as s:
        imports.write_log_rows(s, import_id, rows())
        imports.write_log_rows(s, import_id, iter([]))  # nothing to write
        page = imports.log_page(s, import_id, None, limit=10_000)
    assert [(e.line, e.message) for e in page] == [(0, "done")] + [
        (line, f"m{line}") for line in range(1, 5_002)
    ]
    progress = page[0]
    assert (progress.package_id, progress.tracking_pixel_id) == ("pkg", "px")
    assert (progress.events_count, progress.failed_events_count) == (5_001, 0)


@pytest.mark.parametrize("first_short", [True, False])
def test_short_rows_have_no_artifact_and_no_counts(
    control: ControlDatabase, import_id: str, first_short: bool
) -> None:
    """A row of only (line, level, type, code, message) is an entry that names no package or
    pixel and has no counts; short and whole rows mix in one call, in either order, and across
    SQLite's statements."""
    whole = (0, "info", "progress", "progress", "done", "pkg", "px", 7, 1)

    def rows() -> Iterator[imports.LogRow]:
        if not first_short:
            yield whole
        for line in range(1, 3_001):
            yield (line, "warning", "naive-time", "naive-time", f"m{line}")
            if line == 2_600:  # in the second statement, after short rows
                yield (
                    line,
                    "error",
                    "artifact-not-found",
                    "artifact-not-found",
                    "no",
                    "p2",
                    None,
                    None,
                    None,
                )
        if first_short:
            yield whole

    with control.session() as s:
        imports.write_log_rows(s, import_id, rows())
        page = imports.log_page(s, import_id, None, limit=10_000)
    got = [
        (
            e.line,
            e.code,
            e.message,
            e.package_id,
            e.tracking_pixel_id,
            e.events_count,
            e.failed_events_count,
        )
        for e in page
    ]
    assert got[0] == (0, "progress", "done", "pkg", "px", 7, 1)
    assert len(got) == 3_002
    assert got[1:3] == [
        (1, "naive-time", "m1", None, None, None, None),
        (2, "naive-time", "m2", None, None, None, None),
    ]
    at = [g for g in got if g[0] == 2_600]
    assert at == [
        (2_600, "artifact-not-found", "no", "p2", None, None, None),
        (2_600, "naive-time", "m2600", None, None, None, None),
    ]
    assert got[-1] == (3_000, "naive-time", "m3000", None, None, None, None)


# --- runs: a warning on many lines as one row (imports/log_lines.py) --------------------------


def _runs(code: str, lines: list[int], texts: list[str] | None, size: int) -> list[RunRow]:
    held = LineWarnings(
        code, pa.array(lines, pa.int64()), None if texts is None else pa.array(texts)
    )
    return list(held.runs(size))


def test_the_whole_log_merges_single_entries_and_runs_in_order(
    control: ControlDatabase, import_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two codes' runs interleave (a batch's replaced ids and bad addresses), single entries
    fall between and on the same lines; runs are read a few heads at a time; an entry of a run
    on a (line, code) that has a single entry is given once (the single one, written first,
    as the unique key kept it before runs); a replayed run is stored once."""
    monkeypatch.setattr(log_lines, "RUN_HEADS", 2)
    replaced = list(range(1, 200, 2))  # odd lines
    addresses = list(range(50, 150, 3))
    singles = [entry(0, "info", "progress"), entry(60, "error", "failed-to-decode")]
    singles += [entry(line, "warning", "duplicate-unique-id") for line in (7, 99)]  # in file
    runs = _runs("duplicate-unique-id", replaced, [f"id{n}" for n in replaced], size=7)
    runs += _runs("invalid-remote-address", addresses, None, size=5)
    with control.session() as s:
        write_logs(s, import_id, singles)
        imports.write_log_runs(s, import_id, runs[::-1])
        imports.write_log_runs(s, import_id, runs[:3])  # a replay
    got = [(e[0], e[3], e[4]) for e in log_lines.log_entries(control.session, import_id)]
    keys = [(line, code) for line, code, _ in got]
    want = {(int(e["line"]), str(e["code"])) for e in singles}  # type: ignore[call-overload]
    want |= {(line, "duplicate-unique-id") for line in replaced}
    want |= {(line, "invalid-remote-address") for line in addresses}
    assert keys == sorted(want)  # each once, in order
    messages = {(line, code): message for line, code, message in got}
    assert messages[(7, "duplicate-unique-id")] == "duplicate-unique-id 7"  # the single entry
    assert messages[(9, "duplicate-unique-id")] == log_lines.replaced_message(
        "id9", "an event stored before (by an earlier import, or from further up this file)"
    )
    assert messages[(53, "invalid-remote-address")].startswith("$remote_address is not")
    with control.session() as s:
        sample = log_lines.log_sample(s, import_id, "warning")
        errors = log_lines.log_sample(s, import_id, "error")
    assert [(e[0], e[3]) for e in sample] == [k for k in sorted(want) if k[0] and k[0] != 60][
        : imports.LOG_SAMPLE
    ]
    assert [(e[0], e[3]) for e in errors] == [(60, "failed-to-decode")]


def test_a_resumed_import_drops_the_runs_past_its_checkpoint(
    control: ControlDatabase, import_id: str
) -> None:
    lines = list(range(1, 31))
    with control.session() as s:
        imports.write_log_runs(s, import_id, _runs("naive-time", lines, ["t"] * 30, size=10))
        imports.drop_log_runs_from(s, import_id, 11)  # the second and third runs start there
    got = [e[0] for e in log_lines.log_entries(control.session, import_id)]
    assert got == list(range(1, 11))


def test_a_warning_sample_reads_only_the_first_runs(
    control: ControlDatabase, import_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A status request reads the first warnings: of a log of 100,000 warnings in runs, only
    the runs those come from."""
    lines = list(range(1, 100_001))
    runs = _runs("invalid-remote-address", lines, None, size=log_lines.RUN_ENTRIES)
    read: list[int] = []
    real_body = imports.run_body

    def counted(session: Session, run_id: int) -> bytes:
        read.append(run_id)
        return real_body(session, run_id)

    monkeypatch.setattr(imports, "run_body", counted)
    with control.session() as s:
        imports.write_log_runs(s, import_id, runs)
        sample = log_lines.log_sample(s, import_id, "warning")
    assert len(runs) == 5
    assert [e[0] for e in sample] == list(range(1, imports.LOG_SAMPLE + 1))
    assert len(read) == 1
