"""Enrichment end to end: events imported over HTTP by a real server with an in-process worker,
then read back from the event store. Every test runs on both stores (DuckDB with a SQLite
control store, and PostgreSQL for both).

Servers with settings of their own (raw addresses kept, enrichment off, an origin secret) get a
control database of their own too, so that no other test server's worker claims their imports.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from eventport.control.accounts import account_by_name
from eventport.control.database import ControlDatabase
from eventport.events.schema import COLUMN_NAMES
from eventport.settings import Settings
from tests.conftest import Server, postgres_database, running_server
from tests.importing import full_log, import_lines, setup_package, start, wait_finished

HEX32 = re.compile(r"[0-9a-f]{32}")
LOCATION = (
    "origin_latitude",
    "origin_longitude",
    "origin_country",
    "origin_state",
    "origin_city",
    "origin_postal",
    "origin_connection_type",
    "origin_company",
    "origin_domain",
    "cloud_provider_name",
    "cloud_provider_domain",
)
#: Every column enrichment fills (and remote_address, which only an operator's setting fills).
ENRICHED = COLUMN_NAMES[COLUMN_NAMES.index("origin_id") :]

PIP_CI = (
    'pip/24.0 {"ci":true,"cpu":"x86_64","distro":{"name":"Ubuntu","version":"22.04"},'
    '"implementation":{"name":"CPython","version":"3.11.7"},"installer":{"name":"pip",'
    '"version":"24.0"},"python":"3.11.7","system":{"name":"Linux","release":"6.5.0"}}'
)
PIP_MAC = (
    'pip/23.3.1 {"implementation":{"name":"CPython","version":"3.12.1"},'
    '"system":{"name":"Darwin","release":"23.0"}}'
)
NPM = "npm/10.2.4 node/v20.11.0 linux x64 workspaces/false"
DOCKER = (
    "docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/6.5.0 os/linux arch/amd64 "
    "UpstreamClient(Docker-Client/24.0.7 \\(linux\\))"
)
CURL = "curl/8.4.0"
CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"

Imported = tuple[dict[str, Any], dict[int, dict[str, Any]]]


JUNE_4 = {"start_date": "2024-06-04", "end_date": "2024-06-05"}


def event(
    address: str | None = None, agent: str | None = None, headers: object = None
) -> dict[str, Any]:
    line: dict[str, Any] = {"$time": "2024-06-04T00:00:00Z"}
    if address is not None:
        line["$remote_address"] = address
    if agent is not None:
        line["$user_agent"] = agent
    if headers is not None:
        line["$headers"] = headers
    return line


class Importer:
    """A user with a package on a server, importing lines into it."""

    def __init__(self, server: Server, name: str = "alice") -> None:
        self.server = server
        self.name = name
        self.client = server.user(name)
        self.package_id = setup_package(self.client, name)
        with server.control.session() as s:
            account = account_by_name(s, name)
            assert account is not None
            self.owner_id = account.id

    def run(self, *lines: dict[str, Any]) -> Imported:
        """Import the lines and wait until done: the finished import and its events by line."""
        path = f"/v2/packages/{self.name}/{self.package_id}/import"
        done = import_lines(self.client, self.name, path, list(lines))
        assert done["status"] == "done", done
        assert done["events_successfully_imported"] == len(lines), done
        rows = self.server.app.state.events.rows(self.owner_id)
        return done, {r["line"]: r for r in rows if r["import_id"] == done["id"]}

    def settings(self, **changes: object) -> None:
        response = self.client.patch(f"/v2/{self.name}/settings", json=changes)
        assert response.status_code == 200, response.text


@contextmanager
def own_database(backend: str, data_dir: Path) -> Iterator[str]:
    """A new control database for servers on ``data_dir``: a SQLite file in it (DuckDB goes
    beside it), or a new PostgreSQL database (for events too), dropped afterwards."""
    if backend.startswith("sqlite"):
        yield f"sqlite:///{data_dir / 'control.sqlite3'}"
    else:
        with contextmanager(postgres_database)() as url:
            yield url


@contextmanager
def own_server(database: str, data_dir: Path, **settings: Any) -> Iterator[Server]:
    """A server with one worker on a control database no other running server uses."""
    control = ControlDatabase(database)
    config = Settings(**{"database_url": database, "data_dir": data_dir, "workers": 1, **settings})
    try:
        with running_server(config, control) as server:
            yield server
            for client in server.clients:
                client.close()
    finally:
        control.dispose()


@contextmanager
def fresh_server(backend: str, data_dir: Path, **settings: Any) -> Iterator[Server]:
    with (
        own_database(backend, data_dir) as database,
        own_server(database, data_dir, **settings) as server,
    ):
        yield server


# --- addresses --------------------------------------------------------------------------------


def test_known_addresses_are_located(api: Server) -> None:
    alice = Importer(api)
    done, rows = alice.run(
        event("8.8.8.8"),
        event("52.94.76.1"),
        event("20.42.65.92"),
        event("2001:4860:4860::8888"),
        event("81.2.69.160"),
    )
    google, aws, azure, google_v6, london = (rows[n] for n in range(1, 6))

    assert google["origin_country"] == "US"
    assert "Google" in google["origin_company"]
    assert google["cloud_provider_name"] == "Google Cloud"
    assert google["origin_connection_type"] == "hosting"

    assert aws["origin_country"] == "US"
    assert aws["cloud_provider_name"] == "Amazon Web Services"
    assert aws["origin_connection_type"] == "hosting"
    assert (aws["origin_city"], aws["origin_state"]) == ("Boardman", "Oregon")
    assert aws["origin_latitude"] == pytest.approx(45.87, abs=0.01)
    assert aws["origin_longitude"] == pytest.approx(-119.69, abs=0.01)

    assert azure["origin_country"] == "US"
    assert azure["cloud_provider_name"] == "Microsoft Azure"
    assert azure["origin_connection_type"] == "hosting"

    assert google_v6["origin_country"] == "US"
    assert "Google" in google_v6["origin_company"]
    assert google_v6["cloud_provider_name"] == "Google Cloud"

    assert london["origin_country"] == "GB"
    assert london["cloud_provider_name"] is None

    for row in rows.values():
        assert HEX32.fullmatch(row["origin_id"]), row
        assert HEX32.fullmatch(row["endpoint_id"]), row
        assert row["dnt"] is False
        assert row["excluded"] is False
        assert row["remote_address"] is None
    assert len({row["endpoint_id"] for row in rows.values()}) == 5
    assert done["warnings_total"] == 0


def test_an_address_with_its_port_or_in_a_list_is_located(api: Server) -> None:
    """As load balancers' logs and X-Forwarded-For write them (an enrichment hunt: each was an
    invalid address, the event without location or ids)."""
    alice = Importer(api)
    done, rows = alice.run(
        event("8.8.8.8:443", CURL),
        event("[2a01:4f8::1]:8443", CURL),
        event("8.8.8.8, 10.0.0.1", CURL),
    )
    assert done["warning_log_sample"] == []
    assert [rows[n]["origin_country"] for n in (1, 2, 3)] == ["US", "DE", "US"]
    assert rows[1]["origin_id"] == rows[3]["origin_id"]  # the same address, the same agent
    assert rows[1]["endpoint_id"] == rows[3]["endpoint_id"] is not None


def test_private_reserved_and_invalid_addresses_get_no_location(api: Server) -> None:
    alice = Importer(api)
    invalid = "152.241.796.177"
    addresses = ["10.0.0.1", "192.168.1.1", "fc00::1", "240.0.0.1", invalid]
    done, rows = alice.run(*(event(a, CURL) for a in addresses), event(agent=CURL))
    assert len(rows) == 6
    for row in rows.values():
        assert {column: row[column] for column in LOCATION} == dict.fromkeys(LOCATION), row
        assert row["client"] == "curl"  # the rest of the enrichment still happens
    # An invalid address and no address: nothing to derive ids from.
    assert (rows[5]["origin_id"], rows[5]["endpoint_id"]) == (None, None)
    assert (rows[6]["origin_id"], rows[6]["endpoint_id"]) == (None, None)

    assert done["warnings_total"] == 1
    assert done["events_failed_to_import"] == 0
    log = full_log(alice.client, "alice", done["id"])
    warnings = [e for e in log if e["class"] == "warning"]
    assert [(w["line"], w["code"]) for w in warnings] == [(5, "invalid-remote-address")]
    assert "not an IP address" in warnings[0]["human_friendly_message"]
    # The log keeps none of the addresses, valid or not.
    logged = orjson.dumps(log).decode()
    for address in addresses:
        assert address not in logged


def test_ids_are_keyed_by_address_and_agent(api: Server) -> None:
    alice = Importer(api)
    _, first = alice.run(
        event("8.8.8.8", CURL),
        event("8.8.8.8", NPM),
        event("8.8.4.4", CURL),
        event(agent=CURL),
        event("::ffff:8.8.8.8", CURL),
        event("2001:4860:4860:0:0:0:0:8888", CURL),
    )
    _, second = alice.run(event("8.8.8.8", CURL), event("2001:4860:4860::8888", CURL))

    same_address_other_agent, other_address = first[2], first[3]
    assert second[1]["origin_id"] == first[1]["origin_id"]
    assert second[1]["endpoint_id"] == first[1]["endpoint_id"]
    assert same_address_other_agent["origin_id"] != first[1]["origin_id"]
    assert same_address_other_agent["endpoint_id"] == first[1]["endpoint_id"]
    assert other_address["endpoint_id"] != first[1]["endpoint_id"]
    assert other_address["origin_id"] != first[1]["origin_id"]
    # No address: no endpoint and no origin, though the agent is known.
    assert (first[4]["endpoint_id"], first[4]["origin_id"]) == (None, None)
    assert first[4]["client"] == "curl"
    # An address is hashed in its canonical form: IPv4-mapped IPv6 is the IPv4 address, and
    # the long and short forms of an IPv6 address are one address.
    assert first[5]["origin_id"] == first[1]["origin_id"]
    assert first[5]["origin_country"] == "US"
    assert first[6]["endpoint_id"] == second[2]["endpoint_id"]
    assert first[6]["origin_id"] == second[2]["origin_id"]


# --- user agents ------------------------------------------------------------------------------


def test_clients_and_platforms_from_user_agents(api: Server) -> None:
    alice = Importer(api)
    agents = [PIP_CI, PIP_MAC, NPM, DOCKER, CURL, CHROME_WINDOWS, None]
    _, rows = alice.run(*(event("81.2.69.160", agent) for agent in agents))
    found = [
        (r["client"], r["client_version"], r["platform"], r["client_runtime"], r["ci"])
        for r in (rows[n] for n in range(1, len(agents) + 1))
    ]
    assert found == [
        ("pip", "24.0", "linux", "CPython 3.11.7", "ci"),
        ("pip", "23.3.1", "macos", "CPython 3.12.1", None),
        ("npm", "10.2.4", "linux", "node 20.11.0", None),
        ("docker", "24.0.7", "linux", "go1.20.10", None),
        ("curl", "8.4.0", "unknownplatform", None, None),
        ("chrome", "120.0.0.0", "windows", None, None),
        (None, None, "unknownplatform", None, None),
    ]
    assert rows[1]["user_agent"] == PIP_CI  # the agent itself is kept as imported


# --- do not track -----------------------------------------------------------------------------


def test_do_not_track_events_get_no_location_and_no_ids(api: Server) -> None:
    alice = Importer(api)
    done, rows = alice.run(
        event("8.8.8.8", PIP_CI, [{"name": "DNT", "value": "1"}]),
        event("8.8.8.8", NPM, {"Sec-GPC": "1"}),
        event("8.8.8.8", NPM, {"dnt": 1}),
        event("8.8.8.8", NPM, [{"name": "DNT", "value": "0"}]),
        event("8.8.8.8", NPM),
        # Shapes other clients send: Go's http.Header (a list of values a name), a name with a
        # blank after it, CGI's underscores, a number written as a float.
        event("8.8.8.8", NPM, {"DNT": ["1"]}),
        event("8.8.8.8", NPM, [{"name": "DNT ", "value": "1"}]),
        event("8.8.8.8", NPM, {"SEC_GPC": 1.0}),
        # Found by an enrichment hunt, each tracked before: a malformed header beside DNT
        # (the whole field was dropped), CGI's environment names, a JSON true.
        event("8.8.8.8", NPM, {"X": "y", "DNT": "1", "Z": {"a": 1}}),
        event("8.8.8.8", NPM, {"HTTP_DNT": "1"}),
        event("8.8.8.8", NPM, {"HTTP_SEC_GPC": "1"}),
        event("8.8.8.8", NPM, {"DNT": True}),
    )
    for n in (1, 2, 3, 6, 7, 8, 9, 10, 11, 12):
        row = rows[n]
        assert row["dnt"] is True, row
        assert (row["origin_id"], row["endpoint_id"]) == (None, None), row
        assert {column: row[column] for column in LOCATION} == dict.fromkeys(LOCATION), row
    assert (rows[1]["client"], rows[1]["platform"], rows[1]["ci"]) == ("pip", "linux", "ci")
    assert rows[2]["client"] == rows[3]["client"] == "npm"
    for n in (4, 5):
        assert rows[n]["dnt"] is False
        assert rows[n]["origin_country"] == "US"
        assert HEX32.fullmatch(rows[n]["origin_id"])
    assert done["events_do_not_track"] == 10
    assert done["events_excluded"] == 0
    assert [e["line"] for e in done["warning_log_sample"]] == [9]  # the malformed header


# --- bots and the owner's exclusions ----------------------------------------------------------


def test_bots_are_excluded_unless_the_owner_turns_it_off(api: Server) -> None:
    alice = Importer(api)
    done, rows = alice.run(event("8.8.8.8", GOOGLEBOT), event("8.8.8.8", CURL))
    assert (rows[1]["excluded"], rows[2]["excluded"]) == (True, False)
    assert rows[1]["client"] == "googlebot"
    assert HEX32.fullmatch(rows[1]["origin_id"])  # kept, and enriched like any other event
    assert done["events_excluded"] == 1
    assert done["events_successfully_imported"] == 2

    alice.settings(exclude_bots=False)
    done, rows = alice.run(event("8.8.8.8", GOOGLEBOT), event("8.8.8.8", "My-Monitor/1.0"))
    assert (rows[1]["excluded"], rows[2]["excluded"]) == (False, False)
    assert done["events_excluded"] == 0

    alice.settings(excluded_user_agents=["my-monitor"])
    done, rows = alice.run(
        event("8.8.8.8", GOOGLEBOT),
        event("8.8.8.8", "My-Monitor/1.0 (+https://status.example.com)"),
        event("8.8.8.8", CURL),
    )
    assert [rows[n]["excluded"] for n in (1, 2, 3)] == [False, True, False]
    assert done["events_excluded"] == 1


def test_lines_replaced_in_the_file_are_counted_as_flagged(api: Server) -> None:
    """The counters count lines, as events_successfully_imported does: a bot or DNT line that
    a later line of the same batch replaced counts too (before, only in another batch, so
    the counts hung on where batches began and differed between the backends)."""
    alice = Importer(api)
    dnt = {"DNT": "1"}
    lines = [
        {**event("8.8.8.8", GOOGLEBOT), "$unique_id": "a"},
        {**event("8.8.8.8", CURL, dnt), "$unique_id": "b"},
        {**event("8.8.8.8", GOOGLEBOT, dnt), "$unique_id": "a"},
        {**event("8.8.8.8", CURL, dnt), "$unique_id": "b"},
        {**event("8.8.8.8", CURL), "$unique_id": "c"},
    ]
    done, rows = alice.run(*lines)
    assert sorted(rows) == [3, 4, 5]  # a and b: their last lines
    assert done["events_excluded"] == 2  # lines 1 and 3
    assert done["events_do_not_track"] == 3  # lines 2, 3 and 4


def test_settings_of_one_owner_leave_another_alone(api: Server) -> None:
    alice, bob = Importer(api, "alice"), Importer(api, "bob")
    alice.settings(exclude_bots=False, excluded_user_agents=["curl/"])
    _, alices = alice.run(event(agent=GOOGLEBOT), event(agent=CURL))
    _, bobs = bob.run(event(agent=GOOGLEBOT), event(agent=CURL))
    assert (alices[1]["excluded"], alices[2]["excluded"]) == (False, True)
    assert (bobs[1]["excluded"], bobs[2]["excluded"]) == (True, False)


# --- privacy ----------------------------------------------------------------------------------

# Public addresses that no other test here imports, so that finding one means this test's.
UNKEPT = [
    "52.94.76.7",
    "81.2.69.142",
    "2001:4860:4860::8844",
    "2a03:2880:f10c:83:face:b00c:0:25de",
]


def held_in(path: Path, needles: list[str]) -> list[str]:
    data = path.read_bytes()
    return [needle for needle in needles if needle.encode() in data]


def tables_containing(control: ControlDatabase, needles: list[str]) -> dict[str, list[str]]:
    """Which of ``needles`` any row of any table of a PostgreSQL database holds as text."""
    found: dict[str, list[str]] = {}
    with control.session() as s:
        tables = s.execute(
            text(
                "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) "
                "FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
                "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
            )
        ).scalars()
        for table in list(tables):
            for needle in needles:
                hits = s.execute(
                    text(f"SELECT count(*) FROM {table} AS t WHERE t::text LIKE :pattern"),
                    {"pattern": f"%{needle}%"},
                ).scalar_one()
                if hits:
                    found.setdefault(table, []).append(needle)
    return found


def stored_anywhere(server: Server, needles: list[str]) -> dict[str, list[str]]:
    """Where any of ``needles`` is, as bytes in a file of the server's data dir or of the SQLite
    control file and its journals, or as text in any table of a PostgreSQL database."""
    url = server.control.engine.url
    files = list(server.settings.data_dir.rglob("*"))
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        control_file = Path(url.database)
        files += control_file.parent.glob(f"{control_file.name}*")
    found = {str(f): hits for f in files if f.is_file() and (hits := held_in(f, needles))}
    if url.get_backend_name() == "postgresql":
        found.update(tables_containing(server.control, needles))
    return found


def test_raw_addresses_are_kept_nowhere(api: Server) -> None:
    alice = Importer(api)
    invalid = "152.241.796.178"
    done, rows = alice.run(
        *(event(address, CURL) for address in UNKEPT),
        event(invalid, CURL),
        event(UNKEPT[0], CURL, {"DNT": "1"}),
    )
    assert rows[1]["origin_country"] == "US"  # enriched, so the addresses were read
    assert rows[4]["origin_country"] == "SG"
    needles = [*UNKEPT, invalid]
    for row in rows.values():
        assert row["remote_address"] is None
        assert not [n for n in needles if n in orjson.dumps(row, default=str).decode()], row
    assert invalid not in orjson.dumps(full_log(alice.client, "alice", done["id"])).decode()
    assert stored_anywhere(api, needles) == {}
    spool = api.settings.spool_dir
    assert not spool.exists() or list(spool.iterdir()) == []


# Lines whose messages quote what they held: each holds an address no other test imports.
QUOTED = [
    "52.94.76.41",
    "52.94.76.42",
    "52.94.76.43",
    "2001:4860:4860::8845",
    "52.94.76.44",
    "152.241.796.45",
    "::ffff:52.94.76.46",
    "52.94.76.47",
    "2a03:2880:f10c:83:face:b00c:0:2548",
]


def test_messages_that_quote_a_line_leave_its_addresses_out(api: Server) -> None:
    """An error or warning shows what was wrong by quoting the line or the value; an address
    quoted there would keep a raw IP in the import's log. Each is shown as <address>."""
    alice = Importer(api)
    a = QUOTED
    lines = [
        b'{"$remote_address": "%s", "$time": "2024-06-04T00:00:00Z"' % a[0].encode(),  # cut off
        b'["%s"]' % a[1].encode(),  # not an object
        b'{"$time": "2024-06-04T00:00:00Z", "$remote_address": ["%s"]}' % a[2].encode(),
        b'{"$time": "2024-06-04T00:00:00Z", "$remote_address": {"v6": "%s"}}' % a[3].encode(),
        b'{"$time": "2024-06-04T00:00:00Z", "$headers": [{"X-Real-IP": "%s"}]}' % a[4].encode(),
        b'{"$time": {"at": "%s"}}' % a[5].encode(),  # an address that is not one, too
        b'{"$time": "2024-06-04T00:00:00Z", "$unique_id": ["[%s]:443"]}' % a[6].encode(),
        b'{"$time": "2024-06-04T00:00:00Z", "$version": ["%s:8080"]}' % a[7].encode(),
        # cut off, and longer than a message shows: the address runs past the cut
        b'{"$time": "2024-06-04T00:00:00Z", "$remote_address": "%s", "x": ' % a[8].encode(),
        b'{"$time": "2024-06-04T00:00:00Z", "$remote_address": 1357913579}',  # 80.240.27.235
    ]
    body = b"\n".join(lines) + b"\n"
    started = start(alice.client, f"/v2/packages/alice/{alice.package_id}/import", body)
    done = wait_finished(alice.client, "alice", started["id"])
    assert done["status"] == "done", done
    log = full_log(alice.client, "alice", done["id"])
    quoting = [e for e in log if "<address>" in e["human_friendly_message"]]
    # A $remote_address that is no string is not quoted at all (a number can be an address).
    unquoted = {3, 4, len(lines)}
    assert {e["line"] for e in quoting} == set(range(1, len(lines) + 1)) - unquoted, log
    for entry in (e for e in log if e["line"] in unquoted and e["type"] != "progress"):
        assert entry["human_friendly_message"].startswith('"$remote_address" should be a string')
    # What else the messages show is still there: the time, the header's name, the port.
    shown = orjson.dumps(log).decode()
    for kept in ("2024-06-04T00:00:00Z", "X-Real-IP", "<address>:8080", "[<address>]:443"):
        assert kept in shown, kept
    assert not [n for n in a if n[:12] in shown]  # not even a part of one
    assert "1357913579" not in shown
    assert stored_anywhere(api, a) == {}


def test_messages_hide_addresses_glued_to_a_word_or_a_colon(api: Server) -> None:
    """A JSON value written without quotes follows its colon; a header value or a custom
    variable may glue an address to a word. An enrichment hunt found each kept raw in the
    import's log (and so in the control database); a $unique_id quoted by a replacement too."""
    alice = Importer(api)
    glued = ["52.94.76.50", "2600:1f18::51", "52.94.76.52", "52.94.76.53", "52.94.76.54"]
    lines = [
        b'{"$time":"2024-06-04T00:00:00Z","$remote_address":%s,"x":1}' % glued[0].encode(),
        b'{"$time":"2024-06-04T00:00:00Z","$remote_address":%s,"x":1}' % glued[1].encode(),
        b'{"$time":"2024-06-04T00:00:00Z","$headers":[{"name":5,"value":"ip_%s"}]}'
        % glued[2].encode(),
        b'{"$time":"2024-06-04T00:00:00Z","$headers":[{"name":7,"value":"x:%s"}]}'
        % glued[3].encode(),
        b'{"$time":"2024-06-04T00:00:00Z","$unique_id":"id-%s"}' % glued[4].encode(),
        b'{"$time":"2024-06-04T00:00:01Z","$unique_id":"id-%s"}' % glued[4].encode(),
    ]
    started = start(
        alice.client, f"/v2/packages/alice/{alice.package_id}/import", b"\n".join(lines)
    )
    done = wait_finished(alice.client, "alice", started["id"])
    assert done["status"] == "done", done
    log = [e for e in full_log(alice.client, "alice", done["id"]) if e["type"] != "progress"]
    assert [e["line"] for e in log] == [1, 2, 3, 4, 6], log
    assert all("<address>" in e["human_friendly_message"] for e in log), log
    shown = orjson.dumps(log).decode()
    assert not [n for n in glued if n in shown], shown
    # The id itself is the user's data, kept as the event's id; the log keeps none of the rest.
    assert stored_anywhere(api, glued[:4]) == {}


def test_address_headers_are_not_stored(api: Server) -> None:
    alice = Importer(api)
    forwarded = [
        {"name": "X-Forwarded-For", "value": "52.94.76.21, 10.0.0.1"},
        {"name": "x-real-ip", "value": "52.94.76.22"},
        {"name": "Forwarded", "value": "for=52.94.76.23"},
        {"name": "CF-Connecting-IP", "value": "52.94.76.24"},
        {"name": "Accept", "value": "*/*"},
    ]
    # Spelled as proxies and clients spell them (a blank after the name, CGI's underscores, a
    # list of values), the headers of other proxies, and an address in a header of any name.
    spelled = {
        "X-Forwarded-For ": "52.94.76.25",
        "x_forwarded_for": "52.94.76.26",
        "X-Envoy-External-Address": "52.94.76.27",
        "Fly-Client-IP": "52.94.76.28",
        "X-Azure-ClientIP": "2001:4860:4860::8846",
        "X-Forwarded-For": ["52.94.76.29", "10.0.0.2"],
        "X-Trace": "hop 52.94.76.30 then [2a03:2880:f10c:83:face:b00c:0:2549]:443",
        "X-Client": "ip:52.94.76.19, proxy_52.94.76.18, client:2001:db8::abcd",
        "Via": "1.1 vegur",
    }
    _, rows = alice.run(
        event("8.8.8.8", CURL, forwarded),
        event("8.8.8.8", CURL, forwarded[:2]),
        event("8.8.8.8", CURL, spelled),
    )
    assert orjson.loads(rows[1]["headers"]) == [["Accept", "*/*"]]
    assert rows[2]["headers"] is None  # nothing left to keep
    assert orjson.loads(rows[3]["headers"]) == [
        ["X-Trace", "hop <address> then [<address>]:443"],
        ["X-Client", "ip:<address>, proxy_<address>, client:<address>"],
        ["Via", "1.1 vegur"],
    ]
    sent = [f"52.94.76.{n}" for n in range(18, 31)]
    sent += ["2001:4860:4860::8846", "2a03:2880:f10c:83:face:b00c:0:2549", "2001:db8::abcd"]
    assert stored_anywhere(api, sent) == {}


def test_an_aborted_waiting_import_leaves_no_upload(backend: str, tmp_path: Path) -> None:
    with fresh_server(backend, tmp_path, workers=0) as server:
        alice = Importer(server)
        body = orjson.dumps(event("52.94.76.31", CURL)) + b"\n"
        started = start(alice.client, f"/v2/packages/alice/{alice.package_id}/import", body)
        spool = server.settings.spool_dir
        assert [p.read_bytes() for p in spool.iterdir()] == [body]
        response = alice.client.post(f"/v2/imports/alice/{started['id']}/abort")
        assert response.status_code == 204
        assert alice.client.get(f"/v2/imports/alice/{started['id']}").json()["state"] == "aborted"
        assert list(spool.iterdir()) == []
        assert stored_anywhere(server, ["52.94.76.31"]) == {}


def test_keep_ip_addresses_stores_them(backend: str, tmp_path: Path) -> None:
    kept = ["52.94.76.9", "2001:4860:4860::6464", "152.241.796.179"]
    with fresh_server(backend, tmp_path, keep_ip_addresses=True) as server:
        alice = Importer(server)
        _, rows = alice.run(
            *(event(address, CURL) for address in kept),
            event("52.94.76.10", CURL, {"DNT": "1", "X-Forwarded-For": "52.94.76.13"}),
            event("52.94.76.11", CURL, [{"name": "X-Forwarded-For", "value": "52.94.76.12"}]),
        )
        assert [rows[n]["remote_address"] for n in (1, 2, 3)] == kept
        # Not even kept when asked not to track, in its headers neither.
        assert rows[4]["remote_address"] is None
        assert orjson.loads(rows[4]["headers"]) == [["DNT", "1"]]
        assert stored_anywhere(server, ["52.94.76.10", "52.94.76.13"]) == {}
        assert orjson.loads(rows[5]["headers"]) == [["X-Forwarded-For", "52.94.76.12"]]
        # Kept addresses are exported with eventport's own columns.
        exported = alice.client.get(
            f"/v2/packages/alice/{alice.package_id}/events",
            params={**JUNE_4, "extra_columns": "true"},
        )
        assert exported.status_code == 200, exported.text
        by_address = {r["remote_address"] for r in csv.DictReader(io.StringIO(exported.text))}
        assert by_address == {*kept, "", "52.94.76.11"}
        assert rows[1]["origin_country"] == "US"  # enriched all the same
        assert HEX32.fullmatch(rows[2]["endpoint_id"])
        # The search the privacy test relies on finds addresses where they are kept.
        assert set().union(*stored_anywhere(server, kept).values()) == set(kept)


# --- settings of the server -------------------------------------------------------------------


def test_enrichment_off_stores_events_as_imported(backend: str, tmp_path: Path) -> None:
    with fresh_server(backend, tmp_path, enrichment=False) as server:
        alice = Importer(server)
        done, rows = alice.run(
            event("8.8.8.8", PIP_CI),
            event("2001:4860:4860::8888", GOOGLEBOT, {"DNT": "1"}),
            event("152.241.796.177", CURL),
            event(),
        )
    assert len(rows) == 4
    # A do-not-track request is honoured whether or not events are enriched.
    derived = [column for column in ENRICHED if column != "dnt"]
    for row in rows.values():
        assert {column: row[column] for column in derived} == dict.fromkeys(derived), row
    assert rows[1]["user_agent"] == PIP_CI
    assert (done["events_failed_to_import"], done["events_excluded"]) == (0, 0)
    assert [rows[n]["dnt"] for n in (1, 2, 3, 4)] == [False, True, False, False]
    assert done["events_do_not_track"] == 1
    # Invalid addresses are still reported, and still without the address.
    assert [(w["line"], w["code"]) for w in done["warning_log_sample"]] == [
        (3, "invalid-remote-address")
    ]
    message = done["warning_log_sample"][0]["human_friendly_message"]
    assert "not an IP address" in message
    assert "152.241.796.177" not in message


def ids_of(database: str, data_dir: Path, user: str, **settings: Any) -> tuple[str, str]:
    """The origin and endpoint ids a server on ``database`` gives one address and agent."""
    with own_server(database, data_dir, **settings) as server:
        _, rows = Importer(server, user).run(event("8.8.8.8", CURL))
    origin, endpoint = rows[1]["origin_id"], rows[1]["endpoint_id"]
    assert HEX32.fullmatch(origin)
    assert HEX32.fullmatch(endpoint)
    return origin, endpoint


def test_origin_secret_makes_ids_the_same_across_servers(backend: str, tmp_path: Path) -> None:
    secret = "00112233445566778899aabbccddeeff"
    one, two = tmp_path / "one", tmp_path / "two"
    with own_database(backend, one) as first_db, own_database(backend, two) as second_db:
        # Servers one after the other, each on a control database of its own.
        with_secret = ids_of(first_db, one, "ann", origin_secret=secret)
        assert ids_of(second_db, two, "ann", origin_secret=secret) == with_secret
        # Without the setting, each control database makes a random key of its own ...
        first = ids_of(first_db, one, "bob")
        second = ids_of(second_db, two, "bob")
        assert first[0] != second[0]
        assert first[1] != second[1]
        assert first[0] != with_secret[0]
        # ... and keeps it: a restarted server gives the same ids.
        assert ids_of(first_db, one, "cid") == first
