"""The C scanner of plain lines gives exactly what records.decode_ndjson gives, line by line.

Every test decodes the same chunk two ways, through ``decoding.decode_chunk`` (the scanner for
plain lines, Python for the rest) and through ``decode_ndjson`` alone, and compares the tables
and log entries. The corpus tests also check which lines the scanner took, so a scanner that
handed everything to Python could not pass them.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventport.imports import decoding
from eventport.imports.decoding import decode_chunk, parsed_table, scanner_available
from eventport.imports.formats import Chunk, iter_chunks
from eventport.imports.records import KNOWN_FIELDS, LogEntry, decode_ndjson

pytestmark = pytest.mark.skipif(not scanner_available(), reason="the C scanner is not compiled")

T = "2024-06-04T00:00:00Z"


@pytest.fixture(autouse=True, params=["streamed", "mapped"])
def reading(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test decodes chunks read in blocks (bytes) and through a memory mapping (views
    of it, what the import worker reads)."""
    if request.param == "mapped":
        defaults = iter_chunks.__kwdefaults__
        assert defaults is not None
        monkeypatch.setitem(defaults, "mapped", True)
    return str(request.param)


def chunks_of(tmp_path: Path, data: bytes, **kw: Any) -> list[Chunk]:
    path = tmp_path / "upload.ndjson"
    path.write_bytes(data)
    return list(iter_chunks(path, gzip=False, fmt="ndjson", **kw))


def reference(chunk: Chunk, keep: bool = False) -> tuple[pa.Table, list[Any]]:
    events, entries = decode_ndjson(chunk.lines, max_line_bytes=chunk.max_line_bytes)
    return parsed_table(events, keep), entries


def decoded(chunk: Chunk, keep: bool = False) -> tuple[pa.Table, list[LogEntry]]:
    """decode_chunk's table, and its entries with its warnings held as columns among them, in
    line order (one line never has both)."""
    table, entries, line_warnings = decode_chunk(chunk, csv=False, keep_addresses=keep)
    warned = [
        LogEntry(line, "warning", code, code, message)
        for group in line_warnings
        for line, _, code, _, message, *_ in group.entries()
    ]
    return table, sorted(entries + warned, key=lambda entry: entry.line or 0)


def same_as_python(chunk: Chunk, keep: bool = False) -> pa.Table:
    got, got_entries = decoded(chunk, keep)
    want, want_entries = reference(chunk, keep)
    assert got.schema == want.schema
    assert got.to_pylist() == want.to_pylist()
    assert got_entries == want_entries
    return got


def fast_lines(chunk: Chunk) -> set[int]:
    """The line numbers the scanner decoded itself."""
    _, fast, index, *_ = decoding._plainline.scan(chunk.block, chunk.max_line_bytes)
    found = {chunk.first_line + i for i in memoryview(index).cast("i")}
    assert len(found) == fast
    return found


def line(**fields: Any) -> bytes:
    return orjson.dumps(fields)


PLAIN = [
    line(**{"$time": T}),
    line(**{"$time": T, "$unique_id": "a" * 512}),
    line(**{"$time": T, "$unique_id": "é" * 512}),  # characters, not bytes
    line(**{"$time": "2024-06-04T00:00:00.5Z"}),
    line(**{"$time": "2024-06-04T00:00:00.123456+05:30"}),
    line(**{"$time": "2024-06-04 23:59:59-23:59"}),
    line(**{"$time": "2024-02-29T00:00:00z"}),
    line(**{"$time": "0001-01-01T00:00:00Z"}),
    line(**{"$time": "9999-12-30T23:59:59.999999Z"}),
    line(**{"$time": 1_717_459_200}),
    line(**{"$time": 99_999_999_999}),
    line(**{"$time": 100_000_000_000}),
    line(**{"$time": -62_135_596_800}),
    line(**{"$time": 0}),
    line(**{"$time": T, "$tracking_pixel": "p", "$pixel": "q", "$referrer": "r", "$referer": "s"}),
    line(**{"$time": T, "$tracking_pixel": None, "$pixel": "q", "$referer": "s"}),
    line(**{"$time": T, "$package": "p", "$version": "1.0", "$type": "download", "$domain": "d"}),
    line(**{"$time": T, "$headers": None, "$unique_id": None, "$user_agent": None}),
    line(**{"$time": T, "$remote_address": "152.241.796.177", "$user_agent": "curl/8.5.0"}),
    line(**{"$time": T, "a": "x y", "b": 1, "c": -12, "d": True, "e": False, "f": None}),
    line(**{"$time": T, "": "empty name", "ü": "ñ&=+%", "a b": "~._-", "n": 123456789012345678}),
    line(**{"$time": T, "only": None}),
    b'{"$time":"2024-06-04T00:00:00Z","s":"tab\\tquote\\"slash\\/back\\\\\\u00e9\\u20ac"}',
    b' \t{ "$time" : "2024-06-04T00:00:00Z" , "x" : "y" } \r',
    json.dumps({"$time": T, "city": "Zürich", "emoji": "😀"}, ensure_ascii=False).encode(),
    b'{"$time":"2024-06-04T00:00:00Z","x":"\x7f"}',
    # no zone: UTC, with a naive-time warning
    line(**{"$time": "2024-06-04T00:00:00"}),
    line(**{"$time": "2024-06-04 23:59:59.5", "$unique_id": "n", "a": "b"}),
    line(**{"$time": "0001-01-01T00:00:00.000001"}),
    line(**{"$time": "9999-12-30T23:59:59.999999"}),
    b'{"$time":"2024-06-04T00:00:0\\u0030"}',
    # texts of MAX_TEXT_BYTES exactly, in bytes of UTF-8 (records.MAX_TEXT_BYTES)
    line(**{"$time": T, "$user_agent": "a" * 32768}),
    line(**{"$time": T, "$referrer": "é" * 16384}),
    line(**{"$time": T, "v": "x" * 32766}),  # v=xxx…: 32,768 as stored
    line(**{"$time": T, "v": "&" * 10922}),  # v=%26%26…: 2 + 32,766 as stored
]

NOT_PLAIN = [
    b"",
    b"   ",
    b"\r",
    b"{}",
    b"[]",
    b"null",
    b'"text"',
    b"12",
    b'{"$time":"2024-06-04T00:00:00Z",}',
    b'{"$time":"2024-06-04T00:00:00Z","a":1,}',
    b'{"$time":"2024-06-04T00:00:00Z","a":NaN}',
    b'{"$time":"2024-06-04T00:00:00Z","a":Infinity}',
    b'{"$time":"2024-06-04T00:00:00Z","a":-Infinity}',
    b'{"$time":"2024-06-04T00:00:00Z","a":1e400}',
    b'{"$time":"2024-06-04T00:00:00Z","a":1.5}',
    b'{"$time":"2024-06-04T00:00:00Z","a":1E5}',
    b'{"$time":"2024-06-04T00:00:00Z","a":-0}',
    b'{"$time":"2024-06-04T00:00:00Z","a":01}',
    b'{"$time":"2024-06-04T00:00:00Z","a":1234567890123456789}',
    b'{"$time":"2024-06-04T00:00:00Z","a":18446744073709551616}',
    b'{"$time":"2024-06-04T00:00:00Z","a":[1,2]}',
    b'{"$time":"2024-06-04T00:00:00Z","a":{"b":1}}',
    b'{"$time":"2024-06-04T00:00:00Z","a":"\\u0000"}',
    b'{"$time":"2024-06-04T00:00:00Z","a":"\\ud800"}',
    b'{"$time":"2024-06-04T00:00:00Z","a":"\\ud83d\\ude00"}',
    b'{"$time":"2024-06-04T00:00:00Z","a":"\\x"}',
    b'{"$time":"2024-06-04T00:00:00Z","a":"tab\there"}',
    b'{"$time":"2024-06-04T00:00:00Z","a":"\xff"}',
    b'{"$time":"2024-06-04T00:00:00Z","a":"\xc0\xaf"}',
    b'{"$time":"2024-06-04T00:00:00Z","a":"\xed\xa0\x80"}',
    b'{"$time":"2024-06-04T00:00:00Z","a":"\xf4\x90\x80\x80"}',
    b'{"$time":"2024-06-04T00:00:00Z","a":"\xe2\x82"}',
    b'{"$time":"2024-06-04T00:00:00Z","\\u0061":1}',
    b'{"$time":"2024-06-04T00:00:00Z","a":1,"a":2}',
    b'{"$time":"2024-06-04T00:00:00Z","$time":"2024-06-05T00:00:00Z"}',
    b'{"$time":"2024-06-04T00:00:00Z","$unknown":1}',
    b'{"$time":"2024-06-04T00:00:00Z","$headers":[{"name":"DNT","value":"1"}]}',
    b'{"$time":"2024-06-04T00:00:00Z","$headers":{"DNT":"1"}}',
    b'{"$time":"2024-06-04T00:00:00Z","$unique_id":""}',
    b'{"$time":"2024-06-04T00:00:00Z","$unique_id":' + b'"' + b"a" * 513 + b'"}',
    b'{"$time":"2024-06-04T00:00:00Z","$unique_id":' + "é".encode() * 513 + b"}",
    b'{"$time":"2024-06-04T00:00:00Z","$unique_id":12}',
    b'{"$time":"2024-06-04T00:00:00Z","$version":1.5}',
    b'{"$time":"2024-06-04T00:00:00Z","$user_agent":true}',
    b'{"$time":"2024-06-04T00:00:00Z","$package":["a"]}',
    b'{"$time":null}',
    b'{"a":1}',
    b'{"$time":"2024-06-04"}',
    b'{"$time":"2024-06-04T00:00"}',
    b'{"$time":"2024-06-04T00:00:00."}',
    b'{"$time":"2024-06-04T00:00:00 "}',
    b'{"$time":"2024-02-30T00:00:00"}',
    b'{"$time":"2024-06-04T24:00:00Z"}',
    b'{"$time":"2024-02-30T00:00:00Z"}',
    b'{"$time":"2023-02-29T00:00:00Z"}',
    b'{"$time":"0000-01-01T00:00:00Z"}',
    b'{"$time":"0001-01-01T00:00:00+00:01"}',
    b'{"$time":"9999-12-31T23:59:59-00:01"}',
    b'{"$time":"2024-06-04T00:00:00.1234567Z"}',
    b'{"$time":"2024-06-04T00:00:00.Z"}',
    b'{"$time":"2024-06-04T00:00:00+0530"}',
    b'{"$time":"2024-06-04T00:00:00+24:00"}',
    b'{"$time":"2024-06-04T00:00:60Z"}',
    b'{"$time":" 2024-06-04T00:00:00Z"}',
    b'{"$time":"2024-06-04t00:00:00Z"}',
    b'{"$time":"1717459200"}',
    b'{"$time":1717459200.5}',
    b'{"$time":1234567890123456}',
    b'{"$time":-1234567890123456}',
    b'{"$time":999999999999999}',
    b'{"$time":true}',
    b'{"$time":"2024-06-04T00:00:00Z"} x',
    b'{"$time":"2024-06-04T00:00:00Z"}{"$time":"2024-06-04T00:00:00Z"}',
    b'{"$time":"2024-06-04T00:00:00Z"',
    b'{"$time" "2024-06-04T00:00:00Z"}',
    b"{'$time':'2024-06-04T00:00:00Z'}",
    b'\xef\xbb\xbf{"$time":"2024-06-04T00:00:00Z"}',
    b'{"$time":"2024-06-04T00:00:00Z","a":tru}',
    b'{"$time":"2024-06-04T00:00:00Z","a":nul}',
    b'{"$time":"2024-06-04T00:00:00Z","a":"\\u12"}',
    b'{"$time":"2024-06-04T00:00:00Z","a":"unterminated}',
    # a text over MAX_TEXT_BYTES: Python's, which fails the line (text-too-long)
    line(**{"$time": T, "$user_agent": "a" * 32769}),
    line(**{"$time": T, "$domain": "é" * 16385}),
    line(**{"$time": T, "$pixel": "p" * 40000}),
    line(**{"$time": T, "v": "x" * 32767}),
    line(**{"$time": T, "v": "&" * 10923}),  # v=%26%26…: 2 + 32,769 as stored
    line(**{"$time": T, **{f"k{i}": "y" * 600 for i in range(60)}}),  # 60 small ones
]


def test_plain_lines_are_scanned_and_agree(tmp_path: Path) -> None:
    (chunk,) = chunks_of(tmp_path, b"\n".join(PLAIN) + b"\n")
    table = same_as_python(chunk)
    assert fast_lines(chunk) == set(range(1, len(PLAIN) + 1))
    assert table.num_rows == len(PLAIN)


def test_other_lines_go_to_python_and_agree(tmp_path: Path) -> None:
    data = b"\n".join(NOT_PLAIN) + b"\n"
    (chunk,) = chunks_of(tmp_path, data)
    same_as_python(chunk)
    assert fast_lines(chunk) == set()


def test_mixed_lines_keep_their_order(tmp_path: Path) -> None:
    mixed = [x for pair in zip(PLAIN, NOT_PLAIN, strict=False) for x in pair]
    (chunk,) = chunks_of(tmp_path, b"\r\n".join(mixed))  # CRLF, no newline at the end
    table = same_as_python(chunk)
    lines = table.column("line").to_pylist()
    assert lines == sorted(lines)


def test_scans_after_larger_ones_give_only_their_own_lines(tmp_path: Path) -> None:
    """A thread's scans reuse its buffers: each result holds its own lines, nothing left over
    from a larger scan before it, on this thread or on others scanning at the same time."""
    big = b"\n".join([*PLAIN, *NOT_PLAIN] * 200) + b"\n"
    (small,) = chunks_of(tmp_path, b"\n".join(reversed(PLAIN)) + b"\n")
    errors: list[BaseException] = []

    def scan_both() -> None:
        try:
            for _ in range(5):
                assert decoding._plainline.scan(big, 1 << 20)[0] == 200 * (
                    len(PLAIN) + len(NOT_PLAIN)
                )
                same_as_python(small)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    scan_both()
    threads = [threading.Thread(target=scan_both) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_lines_over_the_limit(tmp_path: Path) -> None:
    data = line(**{"$time": T}) + b"\n" + line(**{"$time": T, "x": "y" * 50}) + b"\n"
    data += b"z" * 200 + b"\n" + line(**{"$time": T})
    got = chunks_of(tmp_path, data, max_line_bytes=60, block_size=16)
    assert sum(c.line_count for c in got) == 4
    entries = []
    for chunk in got:
        same_as_python(chunk)
        entries += decoded(chunk)[1]
    assert [(e.line, e.code) for e in entries] == [(2, "line-too-long"), (3, "line-too-long")]


def test_headers_and_do_not_track_come_from_python(tmp_path: Path) -> None:
    data = line(
        **{
            "$time": T,
            "$headers": [{"name": "DNT", "value": "1"}, {"name": "X-Forwarded-For", "value": "x"}],
        }
    )
    tracked = line(**{"$time": T, "$headers": {"X-Forwarded-For": "x"}})
    (chunk,) = chunks_of(tmp_path, data + b"\n" + line(**{"$time": T}) + b"\n" + tracked)
    for keep in (False, True):
        table = same_as_python(chunk, keep)
        assert table.column("dnt").to_pylist() == [True, False, False]
        # Kept addresses are kept of the requests that did not ask not to be tracked.
        kept = '[["X-Forwarded-For","x"]]' if keep else None
        assert table.column("headers").to_pylist() == ['[["DNT","1"]]', None, kept]


def test_without_the_scanner_python_decodes_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (chunk,) = chunks_of(tmp_path, b"\n".join(PLAIN + NOT_PLAIN))
    with_scanner = decoded(chunk)
    monkeypatch.setattr(decoding, "_plainline", None)
    without = decoded(chunk)
    assert without[0].to_pylist() == with_scanner[0].to_pylist()
    assert without[1] == with_scanner[1]


# --- generated lines ------------------------------------------------------------------------------

# The known fields whose values are texts (sorted: hypothesis wants the same order every run).
STRING_FIELDS = sorted(KNOWN_FIELDS - {"$time", "$headers"})
KEYS = ["$time", *STRING_FIELDS, "$headers", "$other", "a", "b", "A", "", "x y", "ü", "a.b"]
TEXT = st.text(
    alphabet=st.sampled_from([*"az09 -_.~+=&%/\\\"'\t\x00\x1f\x7féü€😀\u2028", "\ud800"]),
    max_size=12,
)
TIMES = st.one_of(
    st.sampled_from(
        [
            T,
            "2024-06-04T00:00:00.5Z",
            "2024-06-04T05:30:00+05:30",
            "2024-06-04 00:00:00-01:00",
            "2024-06-04T00:00:00",
            "2024-02-30T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "1717459200",
            "",
        ]
    ),
    st.integers(min_value=-(10**16), max_value=10**16),
    st.floats(allow_nan=True, allow_infinity=True),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    TEXT,
)
SCALARS = st.one_of(
    TEXT,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=2),
    st.dictionaries(st.sampled_from(["k", "$time"]), SCALARS, max_size=2),
)


@st.composite
def json_lines(draw: st.DrawFn) -> bytes:
    pairs = draw(
        st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=6)
    )  # duplicates allowed: JSON text can hold them
    if draw(st.booleans()):
        pairs.insert(draw(st.integers(0, len(pairs))), ("$time", draw(TIMES)))
    ascii_only = draw(st.booleans())
    space = draw(st.sampled_from(["", " ", "\t", " \r"]))
    parts = []
    for key, value in pairs:
        try:
            text = json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)
            name = json.dumps(key, ensure_ascii=ascii_only)
        except ValueError:
            continue
        parts.append(f"{name}{space}:{space}{text}")
    raw = ("{" + space + ("," + space).join(parts) + space + "}").encode("utf-8", "surrogatepass")
    cut = draw(st.one_of(st.none(), st.integers(0, len(raw))))
    if cut is not None:  # a broken line now and then
        raw = raw[:cut] + draw(st.sampled_from([b"", b",", b"}", b"\xff", b"\x00", b'"']))
    return raw


GOOD_TIMES = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(
        lambda d: (
            d.isoformat(sep=" " if d.second % 2 else "T") + ("Z" if d.microsecond % 2 else "+01:00")
        )
    ),
    st.integers(min_value=-(10**14), max_value=10**14),
)


@st.composite
def plain_json_lines(draw: st.DrawFn) -> bytes:
    """Lines that are mostly plain, so that the scanner's own answers get compared."""
    fields: dict[str, Any] = {"$time": draw(GOOD_TIMES)}
    for key in draw(st.lists(st.sampled_from(STRING_FIELDS), max_size=5, unique=True)):
        fields[key] = draw(st.one_of(TEXT, st.none()))
    names = st.text(alphabet=st.sampled_from(list("ab Zü._~-+&=%$")), max_size=4)
    for key in draw(st.lists(names, max_size=4, unique=True)):
        fields[key] = draw(
            st.one_of(TEXT, st.integers(-(10**18), 10**18), st.booleans(), st.none())
        )
    items = list(fields.items())
    order = draw(st.permutations(range(len(items))))
    ascii_only = draw(st.booleans())
    body = ",".join(
        f"{json.dumps(items[i][0], ensure_ascii=ascii_only)}:"
        f"{json.dumps(items[i][1], ensure_ascii=ascii_only)}"
        for i in order
    )
    return ("{" + body + "}").encode("utf-8", "surrogatepass")


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(plain_json_lines(), min_size=1, max_size=20))
def test_generated_plain_lines_agree(tmp_path: Path, lines: list[bytes]) -> None:
    for chunk in chunks_of(tmp_path, b"\n".join(lines) + b"\n"):
        same_as_python(chunk)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(json_lines(), min_size=1, max_size=20))
def test_generated_lines_agree(tmp_path: Path, lines: list[bytes]) -> None:
    lines = [raw.replace(b"\n", b"") for raw in lines]
    for chunk in chunks_of(tmp_path, b"\n".join(lines) + b"\n", max_line_bytes=400):
        same_as_python(chunk)


def test_generated_lines_are_mostly_scanned(tmp_path: Path) -> None:
    """The property above would hold if the scanner took nothing: show it takes the plain."""
    plain = [
        line(**{"$time": T, "$unique_id": f"id-{i}", "$user_agent": "pip/24", "n": i, "s": "x y"})
        for i in range(1000)
    ]
    (chunk,) = chunks_of(tmp_path, b"\n".join(plain))
    same_as_python(chunk)
    assert len(fast_lines(chunk)) == 1000


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(
        st.one_of(
            st.binary(max_size=80),
            st.builds(
                lambda raw, cut, junk: raw[:cut] + junk + raw[cut:],
                st.sampled_from(PLAIN),
                st.integers(0, 200),
                st.binary(min_size=1, max_size=4),
            ),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_arbitrary_bytes_agree(tmp_path: Path, lines: list[bytes]) -> None:
    """Plain lines with bytes pushed in anywhere, and bytes that are no JSON at all."""
    lines = [raw.replace(b"\n", b" ") for raw in lines]
    for chunk in chunks_of(tmp_path, b"\n".join(lines) + b"\n", max_line_bytes=300):
        same_as_python(chunk)
