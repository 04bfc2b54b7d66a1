"""WindowPipeline: jobs on several DuckDB cursors at once, results in the order started."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import duckdb
import pytest

from eventport.events.duckdb_pipeline import WindowPipeline


@pytest.fixture
def cursors() -> Iterator[list[duckdb.DuckDBPyConnection]]:
    connection = duckdb.connect()
    opened = [connection.cursor() for _ in range(2)]
    yield opened
    for cursor in opened:
        cursor.close()
    connection.close()


def numbered(cursor: duckdb.DuckDBPyConnection, n: int, pause: float) -> tuple[int, int]:
    time.sleep(pause)  # later jobs finish first: the order must still be the starting one
    found = cursor.execute("SELECT ?::INTEGER", [n]).fetchall()
    return n, int(found[0][0])


def test_results_come_in_the_order_started(cursors: list[duckdb.DuckDBPyConnection]) -> None:
    pipeline: WindowPipeline[tuple[int, int]] = WindowPipeline(cursors)
    taken = []
    try:
        for n in range(7):
            if pipeline.full:
                taken.append(pipeline.take_oldest())
            pipeline.submit(numbered, n, 0.02 * (n % 2 == 0))
        while pipeline.running:
            taken.append(pipeline.take_oldest())
    finally:
        pipeline.stop()
    assert taken == [(n, n) for n in range(7)]


def test_at_most_one_job_per_cursor(cursors: list[duckdb.DuckDBPyConnection]) -> None:
    pipeline: WindowPipeline[tuple[int, int]] = WindowPipeline(cursors)
    try:
        pipeline.submit(numbered, 1, 0)
        pipeline.submit(numbered, 2, 0)
        assert pipeline.full
        with pytest.raises(RuntimeError, match="busy"):
            pipeline.submit(numbered, 3, 0)
        assert pipeline.take_oldest() == (1, 1)
        assert not pipeline.full
    finally:
        pipeline.stop()
    with pytest.raises(ValueError, match="cursor"):
        WindowPipeline([])


def test_a_failed_job_raises_where_its_result_is_taken(
    cursors: list[duckdb.DuckDBPyConnection],
) -> None:
    def failing(cursor: duckdb.DuckDBPyConnection) -> None:
        cursor.execute("SELECT no_such_column")

    pipeline: WindowPipeline[None] = WindowPipeline(cursors)
    try:
        pipeline.submit(failing)
        with pytest.raises(duckdb.BinderException):
            pipeline.take_oldest()
    finally:
        pipeline.stop()


def test_stop_interrupts_a_running_query(cursors: list[duckdb.DuckDBPyConnection]) -> None:
    started = threading.Event()

    def endless(cursor: duckdb.DuckDBPyConnection) -> None:
        started.set()
        cursor.execute("SELECT count(*) FROM range(10000000000000) a")

    pipeline: WindowPipeline[None] = WindowPipeline(cursors)
    pipeline.submit(endless)
    assert started.wait(10)
    time.sleep(0.1)
    begun = time.perf_counter()
    pipeline.stop()
    assert time.perf_counter() - begun < 10
    assert not pipeline.running
