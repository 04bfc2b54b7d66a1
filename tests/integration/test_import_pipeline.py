"""Imports processed end to end by a real server with an in-process worker, on both stores."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventport.control.database import ControlDatabase
from eventport.events.duckdb_layout import ROW_GROUP_ROWS
from eventport.imports.records import MAX_TEXT_BYTES
from eventport.imports.worker import LOG_CHUNK, UNREADABLE_LINES
from eventport.settings import Settings
from tests.conftest import Server, running_server
from tests.importing import counts, full_log, import_lines, setup_package, start, wait_finished
from tests.integration.test_duckdb_layout import row_group_sizes

SEED = (
    b'{"$remote_address":"152.241.796.177","$time":"2024-06-04T00:00:00Z",'
    b'"$unique_id":"c20b1271-fb3f-abfa-df12-ef3cda4b2aa0"}\n'
    b'{"$remote_address":"600.188.717.651","$time":"2024-06-01T00:00:00Z",'
    b'"$unique_id":"9053a19a-15a9-3695-bd37-b055a45949c1"}\n'
    b'{"$remote_address":"665.921.984.205","$time":"2024-06-25T00:00:00Z",'
    b'"$unique_id":"09b5b69a-0af0-8002-2c2b-39df3d5685a4"}\n'
)


@pytest.fixture(scope="module")
def worker_server(
    backend: str, control: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server on this backend with one in-process import worker and a 2 s lease."""
    settings = Settings(
        database_url=backend,
        data_dir=tmp_path_factory.mktemp("worker-data"),
        workers=1,
        lease_seconds=2,
    )
    with running_server(settings, control) as server:
        yield server


def stored(server: Server, **filters: str) -> int:
    count: int = server.app.state.events.count(**filters)
    return count


def test_seed_example_imports(api: Server) -> None:
    alice = api.user("alice")
    package_id = setup_package(alice, "alice")
    started = start(alice, f"/v2/packages/alice/{package_id}/import", SEED)
    done = wait_finished(alice, "alice", started["id"])
    assert done["status"] == "done"
    assert counts(done) == (3, 3, 0)
    assert done["percent_complete"] == 100.0
    assert done["bytes_processed"] == done["bytes_total"] == len(SEED)
    # The seed's own addresses are not IP addresses: warnings, and the events still count.
    assert [w["code"] for w in done["warning_log_sample"]] == ["invalid-remote-address"] * 3
    assert stored(api, import_id=started["id"]) == 3
    rows = {r["id"]: r for r in api.app.state.events.rows(done_owner_id(api, "alice"))}
    assert rows["c20b1271-fb3f-abfa-df12-ef3cda4b2aa0"]["package_id"] == package_id
    assert list(api.settings.spool_dir.glob(f"{started['id']}*")) == []


def done_owner_id(server: Server, name: str) -> str:
    from eventport.control.accounts import account_by_name

    with server.control.session() as s:
        account = account_by_name(s, name)
        assert account is not None
        return account.id


def test_bad_lines_are_logged_with_line_numbers(api: Server) -> None:
    alice = api.user("alice")
    package_id = setup_package(alice, "alice")
    body = (
        b"\n".join(
            [
                b'{"$time":"2024-06-04T00:00:00Z"}',  # 1 ok
                b'{"$time":',  # 2 truncated
                b"",  # 3 blank: not counted
                b"[1,2]",  # 4 not an object
                b'{"$unique_id":"x"}',  # 5 no $time
                b'{"$time":"yesterday"}',  # 6 bad $time
                b'{"$time":1717459200, "$colour":"red", "plan":{"tier":"pro"}}',  # 7 ok + warning
                b'\xff\xfe{"$time":1}',  # 8 invalid UTF-8
                b'{"$time":"2024-06-04T00:00:00"}\r',  # 9 naive time: warning
            ]
        )
        + b"\n"
    )
    started = start(alice, f"/v2/packages/alice/{package_id}/import", body)
    done = wait_finished(alice, "alice", started["id"])
    assert done["status"] == "done"
    assert counts(done) == (8, 3, 5)
    errors = [(e["line"], e["type"]) for e in done["error_log_sample"]]
    assert errors == [
        (2, "failed-to-decode"),
        (4, "failed-to-decode"),
        (5, "failed-to-decode"),
        (6, "failed-to-decode"),
        (8, "failed-to-decode"),
    ]
    codes = {e["line"]: e["code"] for e in done["error_log_sample"]}
    assert codes == {
        2: "invalid-json",
        4: "not-an-object",
        5: "missing-time",
        6: "invalid-time",
        8: "invalid-utf8",
    }
    assert all(e["human_friendly_message"] for e in done["error_log_sample"])
    warnings = {(w["line"], w["code"]) for w in done["warning_log_sample"]}
    assert warnings == {(7, "unknown-field"), (9, "naive-time")}
    log = full_log(alice, "alice", started["id"])
    assert [e for e in log if e["type"] == "progress"][-1]["events_count"] == 3
    assert {e["line"] for e in log if e["class"] == "error"} == {2, 4, 5, 6, 8}
    assert stored(api, import_id=started["id"]) == 3


def test_a_text_too_long_to_keep_fails_only_its_line(api: Server) -> None:
    """Events of 1 MB user agents failed their whole import on the embedded store (its
    commits ran out of memory once ~100 MB of such texts were held; a resource hunt): each
    such line is now an error of its own, on both stores, and texts of the longest size
    kept are kept."""
    alice = api.user("alice")
    package_id = setup_package(alice, "alice")
    huge, kept = "x" * ((1 << 20) - 100), "k" * MAX_TEXT_BYTES
    lines = [
        {"$time": 1717459200, "$unique_id": "a", "$user_agent": "curl/8.5.0"},
        {"$time": 1717459201, "$unique_id": "b", "$user_agent": huge},
        {"$time": 1717459202, "$unique_id": "c", "$user_agent": kept, "note": kept[5:]},
        {"$time": 1717459203, "$unique_id": "d", "payload": {"blob": huge}},
    ]
    body = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    started = start(alice, f"/v2/packages/alice/{package_id}/import", body)
    done = wait_finished(alice, "alice", started["id"])
    assert done["status"] == "done"
    assert counts(done) == (4, 2, 2)
    errors = [(e["line"], e["code"]) for e in done["error_log_sample"]]
    assert errors == [(2, "text-too-long"), (4, "text-too-long")]
    assert done["error_log_sample"][0]["human_friendly_message"].startswith(
        '"$user_agent" takes 1,048,476 bytes'
    )
    owner = done_owner_id(api, "alice")
    stored_rows = {row["id"]: row for row in api.app.state.events.rows(owner)}
    assert sorted(stored_rows) == ["a", "c"]
    assert stored_rows["c"]["user_agent"] == kept
    assert stored_rows["c"]["variables"] == "note=" + kept[5:]


def test_unique_ids_replace_earlier_events(api: Server) -> None:
    alice = api.user("alice")
    package_id = setup_package(alice, "alice")
    path = f"/v2/packages/alice/{package_id}/import"
    first = start(alice, path, b'{"$time":1,"$unique_id":"a"}\n{"$time":2,"$unique_id":"b"}\n')
    wait_finished(alice, "alice", first["id"])
    second = start(
        alice,
        path,
        b'{"$time":3,"$unique_id":"a"}\n{"$time":4,"$unique_id":"c"}\n'
        b'{"$time":5,"$unique_id":"c"}\n{"$time":6}\n{"$time":6}\n',
    )
    done = wait_finished(alice, "alice", second["id"])
    assert done["events_successfully_imported"] == 5
    replaced = sorted((w["line"], w["code"]) for w in done["warning_log_sample"])
    assert replaced == [(1, "duplicate-unique-id"), (3, "duplicate-unique-id")]
    owner = done_owner_id(api, "alice")
    rows = api.app.state.events.rows(owner)
    by_id = {r["id"]: r for r in rows}
    assert sorted(by_id) == sorted(["a", "b", "c", f"{second['id']}:4", f"{second['id']}:5"])
    assert by_id["a"]["import_id"] == second["id"]
    assert by_id["c"]["line"] == 3


def test_an_id_stored_before_and_repeated_in_the_file_warns_each_line_once(
    api: Server,
) -> None:
    """The first line of a stored id replaced the stored event; each later line replaced
    the line before it. Before, the first line got no warning and the last two (counted
    twice, logged once: warnings_total did not match the log)."""
    alice = api.user("alice")
    path = f"/v2/packages/alice/{setup_package(alice, 'alice')}/import"
    first = start(alice, path, b'{"$time":1,"$unique_id":"x"}\n')
    wait_finished(alice, "alice", first["id"])
    body = (
        b'{"$time":2,"$unique_id":"x"}\n{"$time":3,"$unique_id":"y"}\n'
        b'{"$time":4,"$unique_id":"x"}\n{"$time":5,"$unique_id":"x"}\n'
    )
    second = start(alice, path, body)
    done = wait_finished(alice, "alice", second["id"])
    log = full_log(alice, "alice", second["id"])
    warned = [(e["line"], e["human_friendly_message"]) for e in log if e["class"] == "warning"]
    used = "$unique_id 'x' was used before: this event replaces"
    assert warned == [
        (1, f"{used} an event stored before (by an earlier import, or from further up this file)"),
        (3, f"{used} the event from line 1 of this file"),
        (4, f"{used} the event from line 3 of this file"),
    ]
    assert done["warnings_total"] == len(warned)
    assert done["events_successfully_imported"] == 4
    rows = {r["id"]: r for r in api.app.state.events.rows(done_owner_id(api, "alice"))}
    assert (rows["x"]["import_id"], rows["x"]["line"]) == (second["id"], 4)


def test_a_reimport_warns_on_every_line_once(api: Server) -> None:
    """Importing a file again replaces each of its events: every line gets one warning that
    names its id, and every line whose address is not one gets its own, however many (more
    than the worker stores between two looks at the abort flag)."""
    alice = api.user("alice")
    package_id = setup_package(alice, "alice")
    path = f"/v2/packages/alice/{package_id}/import"
    events = LOG_CHUNK + 500
    body = b"".join(
        orjson.dumps(
            {
                "$time": 1_700_000_000 + n,
                "$unique_id": f"id-{n}",
                "$remote_address": "8.8.8.8" if n % 2 else "999.1.1.1",
            }
        )
        + b"\n"
        for n in range(events)
    )
    wait_finished(alice, "alice", start(alice, path, body)["id"])
    second = start(alice, path, body)
    done = wait_finished(alice, "alice", second["id"])

    assert counts(done) == (events, events, 0)
    bad_lines = list(range(1, events + 1, 2))  # n = line - 1 even
    assert done["warnings_total"] == events + len(bad_lines)
    log = full_log(alice, "alice", second["id"])
    replaced = [
        (e["line"], e["human_friendly_message"]) for e in log if e["type"] == "duplicate-unique-id"
    ]
    assert [line for line, _ in replaced] == list(range(1, events + 1))
    assert replaced[-1][1] == (
        f"$unique_id 'id-{events - 1}' was used before: this event replaces an event stored "
        "before (by an earlier import, or from further up this file)"
    )
    assert [e["line"] for e in log if e["type"] == "invalid-remote-address"] == bad_lines
    # The whole log in (line, code) order, each once, the warnings held in stored runs among
    # the single entries; the status's sample is the log's first warnings.
    keys = [(e.get("line", 0), e["code"]) for e in log]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    warnings = [e for e in log if e["class"] == "warning"]
    assert done["warning_log_sample"] == warnings[:10]
    assert [(e["line"], e["code"]) for e in warnings[:3]] == [
        (1, "duplicate-unique-id"),
        (1, "invalid-remote-address"),
        (2, "duplicate-unique-id"),
    ]
    assert stored(api, import_id=second["id"]) == events
    assert stored(api, owner_id=done_owner_id(api, "alice")) == events  # replaced, not added


def test_multi_artifact_import(api: Server) -> None:
    alice = api.user("alice")
    package_id = setup_package(alice, "alice")
    pixel = alice.post("/v2/tracking-pixels/alice", json={"name": "docs"}).json()["id"]
    bob = api.user("bob")
    bobs = setup_package(bob, "bob", "bobs")
    missing = "00000000-0000-0000-0000-000000000000"
    lines = [
        {"$time": 1, "$package": package_id},
        {"$time": 2, "$tracking_pixel": pixel},
        {"$time": 3, "$pixel": pixel},
        {"$time": 4, "$package": missing},
        {"$time": 5, "$package": bobs},
        {"$time": 6},
    ]
    done = import_lines(alice, "alice", "/v2/alice/import", lines)
    assert (done["events_successfully_imported"], done["events_failed_to_import"]) == (3, 3)
    not_found = [(e["line"], e["type"], e.get("package_id")) for e in done["error_log_sample"]]
    assert not_found == [
        (4, "artifact-not-found", missing),
        (5, "artifact-not-found", bobs),
        (6, "artifact-not-found", None),
    ]
    rows = api.app.state.events.rows(done_owner_id(api, "alice"))
    assert sorted((r["line"], r["package_id"], r["pixel_id"]) for r in rows) == [
        (1, package_id, None),
        (2, None, pixel),
        (3, None, pixel),
    ]


def test_a_pixel_named_beside_another_package_is_refused(api: Server) -> None:
    """A pixel attached to package A named with $package B: which artifact the event counts
    under depended on who asked (an export counts A's own events and its pixels'). Such a
    line is an artifact-not-found error; a pixel with its own package, or alone, is fine. So
    is a free-standing pixel beside a package: its events, with the package's id, went to
    every reader of the pixel, someone blocked on the package too."""
    alice = api.user("alice")
    a = setup_package(alice, "alice", "a")
    b = setup_package(alice, "alice", "b")
    on_a = alice.post("/v2/tracking-pixels/alice", json={"name": "on-a", "package_id": a})
    free = alice.post("/v2/tracking-pixels/alice", json={"name": "free"})
    pixel_a, pixel_free = on_a.json()["id"], free.json()["id"]
    lines = [
        {"$time": 1, "$package": b, "$tracking_pixel": pixel_a},
        {"$time": 2, "$package": a, "$tracking_pixel": pixel_a},
        {"$time": 3, "$tracking_pixel": pixel_a},
        {"$time": 4, "$package": b, "$tracking_pixel": pixel_free},
    ]
    done = import_lines(alice, "alice", "/v2/alice/import", lines)
    assert counts(done) == (4, 2, 2)
    attached, free_one = done["error_log_sample"]
    assert (attached["line"], attached["type"]) == (1, "artifact-not-found")
    assert "belongs to another package" in attached["human_friendly_message"]
    assert (free_one["line"], free_one["type"]) == (4, "artifact-not-found")
    assert "belongs to no package" in free_one["human_friendly_message"]
    rows = api.app.state.events.rows(done_owner_id(api, "alice"))
    assert sorted((r["line"], r["package_id"], r["pixel_id"]) for r in rows) == [
        (2, a, pixel_a),
        (3, None, pixel_a),
    ]


def test_a_line_naming_another_target_is_warned_and_imported_into_the_imports(
    api: Server,
) -> None:
    """A package's (or pixel's) import puts every line into its own package (or pixel); a
    line that names another gets a warning, not a silent drop of what it said."""
    alice = api.user("alice")
    own = setup_package(alice, "alice", "own")
    other = setup_package(alice, "alice", "other")
    lines = [
        {"$time": 1, "$package": own},
        {"$time": 2},
        {"$time": 3, "$package": other},
        {"$time": 4, "$package": "no-such-package"},
        {"$time": 5, "$package": own},
    ]
    done = import_lines(alice, "alice", f"/v2/packages/alice/{own}/import", lines)
    assert counts(done) == (5, 5, 0)
    warned = [(w["line"], w["type"]) for w in done["warning_log_sample"]]
    assert warned == [(3, "other-target"), (4, "other-target")]
    assert done["warnings_total"] == 2
    assert f"$package {other!r}" in done["warning_log_sample"][0]["human_friendly_message"]
    rows = api.app.state.events.rows(done_owner_id(api, "alice"))
    assert {r["package_id"] for r in rows} == {own}

    docs = alice.post("/v2/tracking-pixels/alice", json={"name": "docs"}).json()["id"]
    body = b'{"$time":1,"$tracking_pixel":"elsewhere"}\n{"$time":2,"$pixel":"%s"}\n' % docs.encode()
    path = f"/v2/tracking-pixels/alice/{docs}/import"
    done = wait_finished(alice, "alice", start(alice, path, body)["id"])
    assert [(w["line"], w["type"]) for w in done["warning_log_sample"]] == [(1, "other-target")]


def _imported_by_alice(api: Server, body: bytes) -> tuple[dict[str, Any], dict[int, Any]]:
    """``body`` imported into a package of alice's: the import, and its stored rows by line."""
    alice = api.user("alice")
    package_id = setup_package(alice, "alice")
    done = wait_finished(
        alice, "alice", start(alice, f"/v2/packages/alice/{package_id}/import", body)["id"]
    )
    rows = {r["line"]: r for r in api.app.state.events.rows(done_owner_id(api, "alice"))}
    return done, rows


def test_a_custom_variable_keeps_an_integer_of_any_size(api: Server) -> None:
    """orjson reads integers past 64 bits as doubles: 12345678901234567890123 was kept as
    1.2345678901234568e+22. Such a line is read again by the standard library."""
    done, rows = _imported_by_alice(
        api,
        b'{"$time":1,"big":12345678901234567890123,"n":{"deep":-99999999999999999999999}}\n'
        b'{"$time":2,"id":"12345678901234567890123","small":1.5}\n',
    )
    assert counts(done) == (2, 2, 0)
    assert rows[1]["variables"] == "big=12345678901234567890123&n.deep=-99999999999999999999999"
    assert rows[2]["variables"] == "id=12345678901234567890123&small=1.5"


def test_negative_integers_below_64_bits_stay_exact(api: Server) -> None:
    """-2**63 - 1 has 19 digits only, which the read-again rule (20) missed: orjson made two
    such $unique_ids one double, and the second event replaced the first (a line-reader hunt)."""
    done, rows = _imported_by_alice(
        api,
        b'{"$time":1,"$unique_id":-9223372036854775809,"n":-9223372036854775809}\n'
        b'{"$time":2,"$unique_id":-9223372036854775810}\n',
    )
    assert counts(done) == (2, 2, 0)
    assert done["warning_log_sample"] == []
    assert (rows[1]["id"], rows[2]["id"]) == ("-9223372036854775809", "-9223372036854775810")
    assert rows[1]["variables"] == "n=-9223372036854775809"


def test_csv_import(api: Server) -> None:
    alice = api.user("alice")
    package_id = setup_package(alice, "alice")
    body = (
        b"$time,$unique_id,$version,plan\r\n2024-06-04T00:00:00Z,u1,1.0,pro\r\n"
        b'1717459200000,u2,"2.0",free\r\nnot-a-time,u3,,\r\n'
    )
    done = wait_finished(
        alice,
        "alice",
        start(alice, f"/v2/packages/alice/{package_id}/import", body, "text/csv")["id"],
    )
    assert (done["events_total"], done["events_successfully_imported"]) == (3, 2)
    assert [(e["line"], e["code"]) for e in done["error_log_sample"]] == [(4, "invalid-time")]
    rows = {r["id"]: r for r in api.app.state.events.rows(done_owner_id(api, "alice"))}
    assert rows["u1"]["version"] == "1.0"
    assert rows["u1"]["variables"] == "plan=pro"
    assert rows["u2"]["time"].isoformat() == "2024-06-04T00:00:00+00:00"


def test_a_stray_quote_in_a_csv_is_an_error_naming_the_lines_it_took(api: Server) -> None:
    """A quote opened and never closed took every later row into one value of one event:
    the import said done, nothing failed, and those events did not exist."""
    alice = api.user("alice")
    package_id = setup_package(alice, "alice")
    body = (
        b"$time,$unique_id,v\n"
        b"2024-06-05T00:00:00Z,ut1,a\n"
        b'2024-06-05T00:00:00Z,"ut2,b\n'
        b"2024-06-05T00:00:00Z,ut3,c\n"
        b"2024-06-05T00:00:00Z,ut4,d\n"
    )
    started = start(alice, f"/v2/packages/alice/{package_id}/import", body, "text/csv")
    done = wait_finished(alice, "alice", started["id"])
    assert counts(done) == (2, 1, 1)
    assert done["percent_complete"] == 100.0
    (error,) = done["error_log_sample"]
    assert (error["line"], error["code"]) == (3, "unclosed-quote")
    assert "lines 3 to 5 were read as one row" in error["human_friendly_message"]
    ids = sorted(r["id"] for r in api.app.state.events.rows(done_owner_id(api, "alice")))
    assert ids == ["ut1"]


def gzip_bomb() -> bytes:
    return gzip.compress(b"\n" * (300 * 1024 * 1024), compresslevel=9)


HOSTILE: list[tuple[str, bytes, dict[str, str], str, tuple[int, int, int]]] = [
    ("empty body", b"", {}, "done", (0, 0, 0)),
    ("only blank lines", b"\n\n  \r\n\n", {}, "done", (0, 0, 0)),
    ("bom and crlf", b'\xef\xbb\xbf{"$time":1}\r\n{"$time":2}\r\n', {}, "done", (2, 2, 0)),
    ("json null", b"null\n", {}, "done", (1, 0, 1)),
    ("a number", b"42\n", {}, "done", (1, 0, 1)),
    ("nested time", b'{"$time":{"at":1}}\n', {}, "done", (1, 0, 1)),
    (
        "huge number time",
        b'{"$time":1e300}\n{"$time":100000000000000000000000000000}\n',
        {},
        "done",
        (2, 0, 2),
    ),
    ("no final newline", b'{"$time":1}\n{"$time":2}', {}, "done", (2, 2, 0)),
    (
        "gzip",
        gzip.compress(b'{"$time":1}\n' * 10),
        {"Content-Encoding": "gzip"},
        "done",
        (10, 10, 0),
    ),
    (
        "gzip corrupt tail",
        gzip.compress(b'{"$time":1}\n' * 1000)[:-20] + b"garbage!" * 3,
        {"Content-Encoding": "gzip"},
        "failed",
        (-1, -1, -1),
    ),
    ("not gzip at all", b'{"$time":1}\n', {"Content-Encoding": "gzip"}, "failed", (0, 0, 0)),
    # A raw NUL makes the line invalid JSON; its message quotes the line (PostgreSQL cannot
    # store a NUL in text: this import once failed every attempt there).
    ("raw nul", b'{"$time":1,"a":"x\x00y"}\n{"$time":2}\n', {}, "done", (2, 1, 1)),
    # U+2028 is a line break to str.splitlines(), not to NDJSON.
    ("u+2028", '{"$time":1,"a":"x\u2028y"\n{"$time":2}\n'.encode(), {}, "done", (2, 1, 1)),
    # A stray bracket before NDJSON lines is that line's error (a line-reader hunt: the whole
    # import failed as pretty-printed JSON).
    ("stray brace", b'{\n{"$time": 1}\n{"$time": 2}\n', {}, "done", (3, 2, 1)),
    # A pretty-printed JSON array: no line could be imported, so the file is unusable as a whole
    # (an array on one line is that line's error).
    (
        "json array over lines",
        b'\xef\xbb\xbf\n[\n  {"$time": 1},\n  {"$time": 2}\n]\n',
        {},
        "failed",
        (0, 0, 0),
    ),
    ("json array on a line", b'[{"$time": 1}, {"$time": 2}]\n', {}, "done", (1, 0, 1)),
    (
        "json objects over lines",
        b'{\n  "$time": 1\n}\n{\n  "$time": 2\n}\n',
        {},
        "failed",
        (0, 0, 0),
    ),
    ("a lone brace later", b'{"$time": 1}\n{\n"$time": 2}\n', {}, "done", (3, 1, 2)),
    # A CSV header without $time: no line could be imported, so the file is unusable as a whole.
    (
        "csv separated by semicolons",
        b"$time;$unique_id\n2024-06-04T00:00:00Z;a\n",
        {"content_type": "text/csv"},
        "failed",
        (0, 0, 0),
    ),
    (
        "csv without a header",
        b"2024-06-04T00:00:00Z,a\n",
        {"content_type": "text/csv"},
        "failed",
        (0, 0, 0),
    ),
]


@pytest.mark.parametrize(
    ("name", "body", "headers", "state", "expected"), HOSTILE, ids=[h[0] for h in HOSTILE]
)
def test_hostile_inputs(
    api: Server,
    name: str,
    body: bytes,
    headers: dict[str, str],
    state: str,
    expected: tuple[int, int, int],
) -> None:
    alice = api.user("alice")
    package_id = setup_package(alice, "alice")
    done = wait_finished(
        alice,
        "alice",
        start(alice, f"/v2/packages/alice/{package_id}/import", body, **headers)["id"],
    )
    assert done["status"] == state, done
    if expected[0] >= 0:
        assert counts(done) == expected
    if state == "failed":
        assert done["failure_reason"]
        assert done["error_log_sample"][-1]["code"] == "input-unusable"


def test_a_csv_header_without_time_says_what_is_wrong(api: Server) -> None:
    alice = api.user("alice")
    package_id = setup_package(alice, "alice")
    body = b"$time;$unique_id;plan\n2024-06-04T00:00:00Z;u1;pro\n" * 3
    started = start(alice, f"/v2/packages/alice/{package_id}/import", body, "text/csv")
    done = wait_finished(alice, "alice", started["id"])
    assert done["status"] == "failed"
    assert counts(done) == (0, 0, 0)  # not three lines failed one by one
    assert "separated by semicolons" in done["failure_reason"]
    assert "comma-separated" in done["failure_reason"]


def test_a_json_array_over_lines_says_what_is_wrong(api: Server) -> None:
    alice = api.user("alice")
    package_id = setup_package(alice, "alice")
    events = [{"$time": 1717459200 + n, "$unique_id": f"a{n}"} for n in range(1000)]
    body = orjson.dumps(events, option=orjson.OPT_INDENT_2)
    started = start(alice, f"/v2/packages/alice/{package_id}/import", body, "application/json")
    done = wait_finished(alice, "alice", started["id"])
    assert done["status"] == "failed"
    assert counts(done) == (0, 0, 0)  # not 4,002 lines failed one by one
    assert "JSON array spread over lines, not NDJSON" in done["failure_reason"]


def test_a_broken_line_is_quoted_without_its_nul(api: Server) -> None:
    alice = api.user("alice")
    package_id = setup_package(alice, "alice")
    body = b'{"$time":1,"a":"x\x00y"}\n'
    done = wait_finished(
        alice, "alice", start(alice, f"/v2/packages/alice/{package_id}/import", body)["id"]
    )
    (entry,) = [e for e in full_log(alice, "alice", done["id"]) if e["class"] == "error"]
    assert entry["code"] == "invalid-json"
    assert entry["human_friendly_message"].endswith('{"$time":1,"a":"x\ufffdy"}')


def test_gzip_bomb_fails_cleanly(api: Server) -> None:
    alice = api.user("alice")
    package_id = setup_package(alice, "alice")
    done = wait_finished(
        alice,
        "alice",
        start(
            alice,
            f"/v2/packages/alice/{package_id}/import",
            gzip_bomb(),
            **{"Content-Encoding": "gzip"},
        )["id"],
    )
    assert done["status"] == "failed"
    assert "100:1" in done["failure_reason"] or "ratio" in done["failure_reason"]


def test_a_file_none_of_whose_first_100000_lines_can_be_read_fails(api: Server) -> None:
    """3M lines of "{}" stored 3M errors, ~300 bytes of the control database for each 3-byte
    line (a resource hunt); a file that holds no event eventport can read fails once the
    batch that passes UNREADABLE_LINES of them is committed, its errors so far kept. One
    good line among them is enough to go on."""
    alice = api.user("alice")
    package_id = setup_package(alice, "alice")
    garbage = b"{}\n" * 200_000
    failed = wait_finished(
        alice, "alice", start(alice, f"/v2/packages/alice/{package_id}/import", garbage)["id"]
    )
    assert failed["status"] == "failed"
    read = failed["events_total"]
    assert UNREADABLE_LINES <= read < 200_000  # stopped at the batch that passed the limit
    assert counts(failed) == (read, 0, read)
    assert failed["failure_reason"].startswith(f"none of its first {read:,} lines could be")
    log = full_log(alice, "alice", failed["id"])
    assert len([e for e in log if e.get("code") == "missing-time"]) == read
    (unusable,) = [e for e in log if e.get("code") == "input-unusable"]
    assert "none of its first" in unusable["human_friendly_message"]

    readable = b'{"$time":1717459200}\n' + b"{}\n" * 150_000
    done = wait_finished(
        alice, "alice", start(alice, f"/v2/packages/alice/{package_id}/import", readable)["id"]
    )
    assert done["status"] == "done"
    assert counts(done) == (150_001, 1, 150_000)


def test_abort_a_running_import(api: Server, tmp_path: Path) -> None:
    alice = api.user("alice")
    package_id = setup_package(alice, "alice")
    # Fractional times are decoded by Python, not the scanner: slow enough to abort midway.
    # Every line is warned twice: an entry of its own and one of a run (log_lines.py).
    body = b"".join(
        b'{"$time":%d.5,"n":"x","$nope":1,"$remote_address":"999.1.1.1"}\n' % i
        for i in range(1, 400_001)
    )
    started = start(alice, f"/v2/packages/alice/{package_id}/import", body)
    deadline = time.monotonic() + 60
    while alice.get(f"/v2/imports/alice/{started['id']}").json()["events_total"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert alice.post(f"/v2/imports/alice/{started['id']}/abort").status_code == 204
    done = wait_finished(alice, "alice", started["id"])  # latency: bench/abort.py
    assert done["status"] == "aborted"
    assert 0 < done["events_successfully_imported"] < 400_000
    assert stored(api, import_id=started["id"]) == done["events_successfully_imported"]
    # The log tells of the committed lines only (the logger is a batch ahead of the writer:
    # before, the entries of batches never committed stayed, with their progress entries).
    log = full_log(alice, "alice", started["id"])
    processed = done["lines_processed"]
    assert processed == done["events_total"]
    warned = [e["line"] for e in log if e["class"] == "warning"]
    assert len(warned) == done["warnings_total"] == 2 * processed
    assert max(warned) == processed
    progress = [e for e in log if e["type"] == "progress"]
    assert progress[-1]["events_count"] == done["events_successfully_imported"]
    assert max(e["line"] for e in progress) == processed


def test_clean_lines_make_whole_row_groups(backend: str, tmp_path: Path) -> None:
    """Batches of exactly the store's preferred size (worker.slice_lines): DuckDB then keeps
    each batch as one row group (ROW_GROUP_ROWS), with no small ones left between them to merge
    (which left the file twice the size of its data).

    On a control database of its own: on the session's, the module's server (its worker polls
    the same imports) could claim the import first and write it to its own file (seen once in
    CI: no row groups here, though the import was done)."""
    if not backend.startswith("sqlite"):
        pytest.skip("row groups are the DuckDB store's")
    database = f"sqlite:///{tmp_path / 'control.sqlite3'}"
    control = ControlDatabase(database)
    settings = Settings(database_url=database, data_dir=tmp_path / "data", workers=1)
    try:
        with running_server(settings, control) as server:
            alice = server.user("alice")
            package_id = setup_package(alice, "alice")
            lines = 2 * ROW_GROUP_ROWS + 7
            body = b"".join(b'{"$time":%d}\n' % (1_717_200_000 + i) for i in range(lines))
            started = start(alice, f"/v2/packages/alice/{package_id}/import", body)
            done = wait_finished(alice, "alice", started["id"])
            assert counts(done) == (lines, lines, 0)
            store = server.app.state.events
            with store._lock:  # the store's one connection, between writes
                sizes = row_group_sizes(store._connection())
            alice.close()
    finally:
        control.dispose()
    assert sizes == [ROW_GROUP_ROWS, ROW_GROUP_ROWS, 7]


def test_an_importer_never_replaces_events_they_may_not_write(api: Server) -> None:
    """An owner's $unique_ids are one space, but a line only replaces an event of a package or
    pixel its importer may write: carol (admin of one of alice's packages) and bob (admin of an
    organization, blocked on one of its packages) get an error for such lines, and the events
    stay where they were; alice herself still moves an event between her packages."""
    alice, bob, carol = api.user("alice"), api.user("bob"), api.user("carol")
    shared, private = setup_package(alice, "alice", "shared"), setup_package(alice, "alice", "own")
    pixel = alice.post("/v2/tracking-pixels/alice", json={"name": "site"})
    assert pixel.status_code == 201, pixel.text
    pixel_id = pixel.json()["id"]
    grant = {"username": "carol", "permission_level": "admin"}
    assert alice.post(f"/v2/packages/alice/{shared}/permissions", json=grant).status_code == 204
    day = "2024-06-04T00:00:00Z"
    import_lines(
        alice,
        "alice",
        f"/v2/packages/alice/{private}/import",
        [{"$time": day, "$unique_id": "p-1"}, {"$time": day, "$unique_id": "p-2"}],
    )
    import_lines(
        alice,
        "alice",
        f"/v2/tracking-pixels/alice/{pixel_id}/import",
        [{"$time": day, "$unique_id": "x-1"}],
    )
    import_lines(
        alice, "alice", f"/v2/packages/alice/{shared}/import", [{"$time": day, "$unique_id": "s-1"}]
    )

    done = import_lines(
        carol,
        "alice",
        f"/v2/packages/alice/{shared}/import",
        [
            {"$time": day, "$unique_id": "p-1", "tag": "carol"},  # 1 alice's own package's
            {"$time": day, "$unique_id": "new", "tag": "carol"},  # 2 a new id
            {"$time": day, "$unique_id": "x-1", "tag": "carol"},  # 3 alice's free pixel's
            {"$time": day, "$unique_id": "s-1", "tag": "carol"},  # 4 the shared package's: replaced
            {"$time": day, "$unique_id": "p-1", "tag": "carol"},  # 5 again
        ],
    )
    assert counts(done) == (5, 2, 3)
    errors = [e for e in full_log(carol, "alice", done["id"]) if e["class"] == "error"]
    assert [(e["line"], e["type"], e["code"]) for e in errors] == [
        (line, "artifact-not-found", "unique-id-not-writable") for line in (1, 3, 5)
    ]
    assert "may not import into" in errors[0]["human_friendly_message"]
    owner_id = done_owner_id(api, "alice")

    def where() -> dict[str, tuple[str | None, str | None, str | None]]:  # and variables
        return {
            r["id"]: (
                r["package_id"],
                r["pixel_id"],
                r["variables"],
            )
            for r in api.app.state.events.rows(owner_id)
        }

    assert where() == {
        "p-1": (private, None, None),
        "p-2": (private, None, None),
        "x-1": (None, pixel_id, None),
        "s-1": (shared, None, "tag=carol"),
        "new": (shared, None, "tag=carol"),
    }

    # An organization's admin blocked on one of its packages is held back from that one only.
    create = {"name": "acme", "description": "an org", "billingEmail": "billing@acme.org"}
    assert alice.post("/api/v1/organizations", json=create).status_code == 200
    member = {"username": "bob", "role": "admin"}
    assert alice.post("/v2/organizations/acme/members", json=member).status_code == 201
    guarded, open_ = setup_package(alice, "acme", "guarded"), setup_package(alice, "acme", "open")
    block = {"userQuery": "bob", "permissionLevel": "blocked"}  # v1's: v2 has no "blocked"
    assert alice.post(f"/api/v1/packages/{guarded}/permissions", json=block).status_code == 200
    import_lines(
        alice, "acme", f"/v2/packages/acme/{guarded}/import", [{"$time": day, "$unique_id": "g-1"}]
    )
    import_lines(
        alice, "acme", f"/v2/packages/acme/{open_}/import", [{"$time": day, "$unique_id": "o-1"}]
    )
    done = import_lines(
        bob,
        "acme",
        "/v2/acme/import",
        [
            {"$time": day, "$unique_id": "g-1", "$package": open_},
            {"$time": day, "$unique_id": "o-1", "$package": open_, "tag": "bob"},
        ],
    )
    assert counts(done) == (2, 1, 1)
    acme = {r["id"]: r["package_id"] for r in api.app.state.events.rows(done_owner_id(api, "acme"))}
    assert acme == {"g-1": guarded, "o-1": open_}

    # The owner may move an event from one of her packages to another, as before.
    done = import_lines(
        alice, "alice", f"/v2/packages/alice/{shared}/import", [{"$time": day, "$unique_id": "p-2"}]
    )
    assert counts(done) == (1, 1, 0)
    assert [w["code"] for w in done["warning_log_sample"]] == ["duplicate-unique-id"]
    assert where()["p-2"] == (shared, None, None)


# --- deletions and lost rights while an import runs ---------------------------------------------


# Fractional times are decoded by Python, not the scanner: slow enough to act on midway.
def slow_lines(count: int, **fields: str) -> list[bytes]:
    extra = b"".join(b',"%s":"%s"' % (k.encode(), v.encode()) for k, v in fields.items())
    return [b'{"$time":%d.5,"$nope":1%s}\n' % (i, extra) for i in range(1, count + 1)]


def running(client: Any, owner: str, import_id: str) -> dict[str, Any]:
    """The import once it has committed a batch (it is still running then)."""
    deadline = time.monotonic() + 60
    while True:
        status = client.get(f"/v2/imports/{owner}/{import_id}").json()
        if status["events_successfully_imported"] > 0:
            assert status["status"] == "importing", status  # acted on midway, or no test
            return dict(status)
        assert time.monotonic() < deadline, status
        time.sleep(0.02)


def test_deleting_a_package_stops_its_running_import_and_takes_its_events(api: Server) -> None:
    """Before, the import went on to 'done', writing the whole upload under a package that no
    longer existed; its events (and a finished import's) stayed in the store for good, and
    their $unique_ids still counted as stored: a later import of them was warned of
    replacements, or refused to an importer with a grant."""
    alice = api.user("alice")
    package_id, other_id = setup_package(alice, "alice", "gone"), setup_package(alice, "alice")
    day = "2024-06-04T00:00:00Z"
    earlier = [{"$time": day, "$unique_id": f"old-{n}"} for n in range(3)]
    first = import_lines(alice, "alice", f"/v2/packages/alice/{package_id}/import", earlier)
    started = start(alice, f"/v2/packages/alice/{package_id}/import", b"".join(slow_lines(400_000)))
    running(alice, "alice", started["id"])
    assert alice.delete(f"/v2/packages/alice/{package_id}").status_code == 204
    done = wait_finished(alice, "alice", started["id"])
    assert done["status"] == "failed", done
    assert "deleted after the upload" in done["failure_reason"]
    assert [e["type"] for e in done["error_log_sample"]] == ["artifact-not-found"]
    assert 0 < done["events_successfully_imported"] < 400_000
    for import_id in (first["id"], started["id"]):
        assert stored(api, import_id=import_id) == 0
    owner = done_owner_id(api, "alice")
    assert api.app.state.events.delete_events(owner, package_ids=[package_id]) == 0
    # The ids are free: imported again, nothing is replaced.
    again = import_lines(alice, "alice", f"/v2/packages/alice/{other_id}/import", earlier)
    assert (again["events_successfully_imported"], again["warnings_total"]) == (3, 0)


def test_deleting_a_pixel_takes_its_events(api: Server) -> None:
    alice = api.user("alice")
    pixel = alice.post("/v2/tracking-pixels/alice", json={"name": "docs"}).json()["id"]
    lines = [{"$time": "2024-06-04T00:00:00Z", "$unique_id": "seen"}]
    done = import_lines(alice, "alice", f"/v2/tracking-pixels/alice/{pixel}/import", lines)
    assert stored(api, import_id=done["id"]) == 1
    assert alice.delete(f"/v2/tracking-pixels/alice/{pixel}").status_code == 204
    assert stored(api, import_id=done["id"]) == 0


def test_an_importer_who_loses_their_rights_is_stopped(api: Server) -> None:
    """bob, an admin of alice's organization, is removed from it while his import into one of
    its packages runs: the import stops at its next heartbeat (a lease's third: here < 1 s)
    and fails; what it committed before stays, and is counted."""
    alice, bob = api.user("alice"), api.user("bob")
    org = {"name": "acme", "description": "d", "billingEmail": "b@acme.org"}
    assert alice.post("/api/v1/organizations", json=org).status_code == 200
    member = {"username": "bob", "role": "admin"}
    assert alice.post("/v2/organizations/acme/members", json=member).status_code == 201
    package_id = setup_package(alice, "acme")
    started = start(bob, f"/v2/packages/acme/{package_id}/import", b"".join(slow_lines(400_000)))
    running(bob, "acme", started["id"])
    assert alice.delete("/v2/organizations/acme/members/bob").status_code == 204
    done = wait_finished(alice, "acme", started["id"])
    assert done["status"] == "failed", done
    assert "may no longer import into it" in done["failure_reason"]
    assert 0 < done["events_successfully_imported"] < 400_000
    assert stored(api, import_id=started["id"]) == done["events_successfully_imported"]


def test_a_block_set_during_an_import_binds_its_replacements(api: Server) -> None:
    """bob, an admin of acme, is blocked on package A while his owner-wide import runs: its
    lines reusing A's $unique_ids moved A's events into package B (the rule against replacing
    events one may not write was decided once, when the import started)."""
    alice, bob = api.user("alice"), api.user("bob")
    org = {"name": "acme", "description": "d", "billingEmail": "b@acme.org"}
    assert alice.post("/api/v1/organizations", json=org).status_code == 200
    member = {"username": "bob", "role": "admin"}
    assert alice.post("/v2/organizations/acme/members", json=member).status_code == 201
    a, b = setup_package(alice, "acme", "a"), setup_package(alice, "acme", "b")
    day = "2024-06-04T00:00:00Z"
    kept = [{"$time": day, "$unique_id": f"a-{n}"} for n in range(1000)]
    first = import_lines(alice, "acme", f"/v2/packages/acme/{a}/import", kept)
    filler = slow_lines(400_000, **{"$package": b})
    taking = [
        b'{"$time":"%s","$package":"%s","$unique_id":"a-%d"}\n' % (day.encode(), b.encode(), n)
        for n in range(1000)
    ]
    started = start(bob, "/v2/acme/import", b"".join(filler + taking))
    running(bob, "acme", started["id"])
    block = {"userQuery": "bob", "permissionLevel": "blocked"}
    assert alice.post(f"/api/v1/packages/{a}/permissions", json=block).status_code == 200
    done = wait_finished(alice, "acme", started["id"])
    assert done["status"] == "done", done
    assert counts(done) == (401_000, 400_000, 1000)
    assert {e["code"] for e in done["error_log_sample"]} == {"unique-id-not-writable"}
    assert stored(api, import_id=first["id"]) == 1000


def test_an_owner_wide_import_keeps_nothing_of_a_package_deleted_meanwhile(api: Server) -> None:
    """Lines naming a package deleted while the import runs: those after are refused, those
    written before go (the deletion took only what was committed by then)."""
    alice = api.user("alice")
    kept, gone = setup_package(alice, "alice", "kept"), setup_package(alice, "alice", "gone")
    lines = [
        line.replace(b"GONE", gone.encode()).replace(b"KEPT", kept.encode())
        for line in slow_lines(200_000, **{"$package": "GONE"})
        + slow_lines(200_000, **{"$package": "KEPT"})
    ]
    lines[0::2], lines[1::2] = lines[:200_000], lines[200_000:]  # alternating
    started = start(alice, "/v2/alice/import", b"".join(lines))
    running(alice, "alice", started["id"])
    assert alice.delete(f"/v2/packages/alice/{gone}").status_code == 204
    done = wait_finished(alice, "alice", started["id"])
    assert done["status"] == "done", done
    assert done["events_failed_to_import"] > 0  # lines after the deletion
    assert stored(api, import_id=started["id"]) == 200_000  # only the kept package's
    owner = done_owner_id(api, "alice")
    assert api.app.state.events.delete_events(owner, package_ids=[gone]) == 0
