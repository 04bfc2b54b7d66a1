"""What each line of a bulk import means: records.py, with a hostile corpus."""

from __future__ import annotations

import json
import tracemalloc
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest

from eventport.imports import records
from eventport.imports.records import (
    ERROR_CODES,
    MAX_TEXT_BYTES,
    MAX_TIME_US,
    MIN_TIME_US,
    WARNING_CODES,
    Code,
    CsvCells,
    LogEntry,
    ParsedEvent,
    decode_csv,
    decode_ndjson,
    decode_object,
    failed_line_count,
    parse_time,
)

T0 = 1_717_459_200_000_000  # 2024-06-04T00:00:00Z in microseconds
GOOD_TIME = "2024-06-04T00:00:00Z"


def codes(entries: list[LogEntry]) -> list[str]:
    return [e.code for e in entries]


def one(obj: dict[str, Any]) -> tuple[ParsedEvent, list[LogEntry]]:
    """Decode an object that must give an event."""
    event, entries = decode_object(obj, 7)
    assert event is not None, entries
    return event, entries


# --- $time ----------------------------------------------------------------------------------------

GOOD_TIMES = [
    pytest.param(GOOD_TIME, T0, False, id="iso-z"),
    pytest.param("2024-06-04T00:00:00.123Z", T0 + 123_000, False, id="iso-millis"),
    pytest.param("2024-06-04T00:00:00.123456Z", T0 + 123_456, False, id="iso-micros"),
    pytest.param("2024-06-04T00:00:00.123456789Z", T0 + 123_456, False, id="iso-nanos-truncated"),
    pytest.param("2024-06-04T02:00:00+02:00", T0, False, id="iso-plus-offset"),
    pytest.param("2024-06-03T19:00:00-05:00", T0, False, id="iso-minus-offset"),
    pytest.param("2024-06-04T05:30:00+0530", T0, False, id="iso-offset-no-colon"),
    pytest.param("2024-06-04T00:00:00+00:00", T0, False, id="iso-utc-offset"),
    pytest.param("2024-06-04T00:00:00z", T0, False, id="iso-lowercase-z"),
    pytest.param("2024-06-04 00:00:00Z", T0, False, id="iso-space-separator"),
    pytest.param("  2024-06-04T00:00:00Z\t", T0, False, id="iso-surrounding-space"),
    pytest.param("2024-06-04T00:00:00", T0, True, id="iso-naive"),
    pytest.param("2024-06-04T01:02:03.5", T0 + 3_723_500_000, True, id="iso-naive-fraction"),
    pytest.param("2024-06-04", T0, True, id="date-only"),
    pytest.param(1_717_459_200, T0, False, id="unix-seconds-int"),
    pytest.param(1_717_459_200.5, T0 + 500_000, False, id="unix-seconds-float"),
    pytest.param(1_717_459_200_000, T0, False, id="unix-millis-int"),
    pytest.param(1_717_459_200_123.0, T0 + 123_000, False, id="unix-millis-float"),
    pytest.param("1717459200", T0, False, id="unix-seconds-string"),
    pytest.param("1717459200000", T0, False, id="unix-millis-string"),
    pytest.param("1717459200.25", T0 + 250_000, False, id="unix-seconds-decimal-string"),
    pytest.param("+1717459200", T0, False, id="unix-plus-sign-string"),
    pytest.param("1.7174592e9", T0, False, id="unix-exponent-string"),
    pytest.param(0, 0, False, id="epoch"),
    pytest.param(-1, -1_000_000, False, id="before-epoch"),
    pytest.param(99_999_999_999, 99_999_999_999_000_000, False, id="just-below-1e11-is-seconds"),
    pytest.param(100_000_000_000, 100_000_000_000_000, False, id="1e11-is-millis"),
    pytest.param(-100_000_000_000, -100_000_000_000_000, False, id="minus-1e11-is-millis"),
    pytest.param("0001-01-01T00:00:00Z", MIN_TIME_US, False, id="year-1"),
    pytest.param("9999-12-30T23:59:59.999999Z", MAX_TIME_US, False, id="year-9999"),
    pytest.param(-62_135_596_800, MIN_TIME_US, False, id="year-1-as-seconds"),
    pytest.param("20240604", 20_240_604_000_000, False, id="all-digits-is-a-timestamp"),
]


@pytest.mark.parametrize(("value", "expected", "naive"), GOOD_TIMES)
def test_good_times(value: Any, expected: int, naive: bool) -> None:
    event, entries = one({"$time": value})
    assert event.time_us == expected
    assert codes(entries) == (["naive-time"] if naive else [])
    assert parse_time(value) == (expected, naive)


BAD_TIMES = [
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param(None, id="null"),
    pytest.param({}, id="object"),
    pytest.param({"$date": GOOD_TIME}, id="nested-object"),
    pytest.param([GOOD_TIME], id="array"),
    pytest.param([], id="empty-array"),
    pytest.param("", id="empty-string"),
    pytest.param("   ", id="blank-string"),
    pytest.param("garbage", id="garbage"),
    pytest.param("yesterday", id="words"),
    pytest.param("2024-13-01T00:00:00Z", id="month-13"),
    pytest.param("2024-02-30", id="february-30"),
    pytest.param("2024-06-04T24:00:00Z", id="hour-24"),
    pytest.param("2024-06-04T00:00:60Z", id="leap-second"),
    pytest.param("2024-06-04T00:00:00Zjunk", id="trailing-junk"),
    pytest.param("\uff12\uff10\uff12\uff14-06-04", id="fullwidth-digits"),
    pytest.param("1_000", id="underscore-number"),
    pytest.param("NaN", id="nan-string"),
    pytest.param("inf", id="inf-string"),
    pytest.param("1e300", id="huge-string"),
    pytest.param("9" * 40, id="forty-digit-string"),
    pytest.param("9" * 5000, id="five-thousand-digit-string"),
    pytest.param(float("nan"), id="nan"),
    pytest.param(float("inf"), id="inf"),
    pytest.param(float("-inf"), id="minus-inf"),
    pytest.param(1e300, id="1e300"),
    pytest.param(-1e300, id="minus-1e300"),
    pytest.param(10**40, id="10-to-the-40"),
    pytest.param(-(10**40), id="minus-10-to-the-40"),
    pytest.param(300_000_000_000_000, id="millis-past-9999"),
    pytest.param(-62_135_596_801, id="seconds-before-year-1"),
    pytest.param("0001-01-01T00:00:00+01:00", id="year-0-in-utc"),
    pytest.param("9999-12-31T23:59:59-01:00", id="year-10000-in-utc"),
]


@pytest.mark.parametrize("value", BAD_TIMES)
def test_bad_times(value: Any) -> None:
    event, entries = decode_object({"$time": value, "$unique_id": "u"}, 3)
    assert event is None
    assert codes(entries) == ["invalid-time"]
    (entry,) = entries
    assert (entry.line, entry.level, entry.type) == (3, "error", "failed-to-decode")
    assert entry.message.startswith('"$time" value ')
    assert len(entry.message) < 250
    assert parse_time(value) is None


def test_missing_time() -> None:
    event, entries = decode_object({"$unique_id": "u", "x": {"$time": GOOD_TIME}}, 5)
    assert event is None
    assert [(e.line, e.level, e.type, e.code) for e in entries] == [
        (5, "error", "failed-to-decode", "missing-time")
    ]
    assert '"$time"' in entries[0].message


def test_long_bad_time_is_cut_in_the_message() -> None:
    _, entries = decode_object({"$time": "x" * 10_000}, 1)
    assert codes(entries) == ["invalid-time"]
    assert "…" in entries[0].message
    assert len(entries[0].message) < 250


def test_naive_times_warn_every_time() -> None:
    """Naive times are not cached as aware ones: the second line still gets its warning."""
    for _ in range(2):
        _, entries = one({"$time": "2023-01-01T00:00:00"})
        assert codes(entries) == ["naive-time"]
        assert "taken as UTC" in entries[0].message


def test_time_cache_stays_bounded_and_correct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "_TIME_CACHE_MAX", 3)
    monkeypatch.setattr(records, "_TIME_CACHE", {})
    for second in range(10):
        text = f"2024-06-04T00:00:{second:02d}Z"
        for _ in range(2):  # a miss, then (usually) a hit
            event, _ = one({"$time": text})
            assert event.time_us == T0 + second * 1_000_000
        assert len(records._TIME_CACHE) <= 3


def test_long_texts_are_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "_TIME_CACHE", {})
    monkeypatch.setattr(records, "_NAMES", {})
    event, _ = one({"$time": " " * 1000 + GOOD_TIME, "n" * 1000: "v", "short": "v"})
    assert event.time_us == T0
    assert event.variables == "n" * 1000 + "=v&short=v"
    assert records._TIME_CACHE == {}
    assert list(records._NAMES) == ["short"]


# --- $unique_id -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("abc", "abc", id="string"),
        pytest.param(" spaced ", " spaced ", id="kept-as-given"),
        pytest.param(3, "3", id="int"),
        pytest.param(1.5, "1.5", id="float"),
        pytest.param(-7, "-7", id="negative"),
        pytest.param("x" * 512, "x" * 512, id="512-chars"),
        pytest.param(None, None, id="null-is-absent"),
    ],
)
def test_good_unique_ids(value: Any, expected: str | None) -> None:
    event, entries = one({"$time": GOOD_TIME, "$unique_id": value})
    assert event.unique_id == expected
    assert entries == []


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"a": 1}, id="object"),
        pytest.param([1], id="array"),
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param("", id="empty"),
        pytest.param("x" * 513, id="513-chars"),
        pytest.param(float("nan"), id="nan"),
    ],
)
def test_bad_unique_ids(value: Any) -> None:
    event, entries = decode_object({"$time": GOOD_TIME, "$unique_id": value}, 2)
    assert event is None
    assert codes(entries) == ["invalid-unique-id"]
    assert entries[0].type == "failed-to-decode"
    assert "$unique_id" in entries[0].message
    assert len(entries[0].message) < 250


# --- the other $ fields ---------------------------------------------------------------------------

STRING_FIELDS = [
    ("$package", "package"),
    ("$tracking_pixel", "pixel"),
    ("$pixel", "pixel"),
    ("$version", "version"),
    ("$type", "type"),
    ("$remote_address", "remote_address"),
    ("$user_agent", "user_agent"),
    ("$domain", "domain"),
    ("$referrer", "referer"),
    ("$referer", "referer"),
]
NUMBERS_AS_TEXT = {"$package", "$tracking_pixel", "$pixel", "$version"}


@pytest.mark.parametrize(("key", "attr"), STRING_FIELDS, ids=[k for k, _ in STRING_FIELDS])
def test_string_fields_kept_as_given(key: str, attr: str) -> None:
    event, entries = one({"$time": GOOD_TIME, key: "not validated here: 999.1.1.1 é"})
    assert getattr(event, attr) == "not validated here: 999.1.1.1 é"
    assert entries == []
    assert event.variables is None


@pytest.mark.parametrize(("key", "attr"), STRING_FIELDS, ids=[k for k, _ in STRING_FIELDS])
@pytest.mark.parametrize(
    ("value", "text"),
    [pytest.param(3, "3", id="int"), pytest.param(1.5, "1.5", id="float")],
)
def test_numbers_in_string_fields(key: str, attr: str, value: Any, text: str) -> None:
    event, entries = one({"$time": GOOD_TIME, key: value})
    if key in NUMBERS_AS_TEXT:
        assert getattr(event, attr) == text
        assert entries == []
    else:
        assert getattr(event, attr) is None
        assert codes(entries) == ["invalid-field"]
        assert entries[0].type == "invalid-field"
        assert entries[0].level == "warning"


@pytest.mark.parametrize(("key", "attr"), STRING_FIELDS, ids=[k for k, _ in STRING_FIELDS])
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(True, id="bool"),
        pytest.param({"a": "b"}, id="object"),
        pytest.param(["a"], id="array"),
    ],
)
def test_wrong_types_in_string_fields_are_ignored(key: str, attr: str, value: Any) -> None:
    event, entries = one({"$time": GOOD_TIME, key: value})
    assert getattr(event, attr) is None
    assert codes(entries) == ["invalid-field"]
    assert key in entries[0].message
    assert "ignored" in entries[0].message


@pytest.mark.parametrize(("key", "attr"), STRING_FIELDS, ids=[k for k, _ in STRING_FIELDS])
def test_null_fields_are_absent(key: str, attr: str) -> None:
    event, entries = one({"$time": GOOD_TIME, key: None})
    assert getattr(event, attr) is None
    assert entries == []


@pytest.mark.parametrize(
    ("obj", "pixel", "referer", "warned"),
    [
        pytest.param({"$pixel": "p"}, "p", None, 0, id="pixel-alias"),
        pytest.param({"$tracking_pixel": "t", "$pixel": "p"}, "t", None, 0, id="canonical-wins"),
        pytest.param({"$tracking_pixel": {}, "$pixel": "p"}, "p", None, 1, id="alias-if-bad"),
        pytest.param({"$tracking_pixel": None, "$pixel": "p"}, "p", None, 0, id="alias-if-null"),
        pytest.param({"$referer": "r"}, None, "r", 0, id="referer-alias"),
        pytest.param({"$referrer": "a", "$referer": "b"}, None, "a", 0, id="referrer-wins"),
        pytest.param({"$referrer": 1, "$referer": "b"}, None, "b", 1, id="referer-if-bad"),
    ],
)
def test_aliases(obj: dict[str, Any], pixel: str | None, referer: str | None, warned: int) -> None:
    event, entries = one({"$time": GOOD_TIME, **obj})
    assert (event.pixel, event.referer) == (pixel, referer)
    assert codes(entries) == ["invalid-field"] * warned


# --- $headers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            [{"name": "Accept", "value": "*/*"}, {"name": "X-A", "value": "1"}],
            [("Accept", "*/*"), ("X-A", "1")],
            id="array-of-pairs",
        ),
        pytest.param({"Accept": "*/*", "X-N": 5}, [("Accept", "*/*"), ("X-N", "5")], id="object"),
        pytest.param([{"name": "n", "value": 2.5}], [("n", "2.5")], id="number-value"),
        pytest.param(
            [{"name": "Dup", "value": "1"}, {"name": "Dup", "value": "2"}],
            [("Dup", "1"), ("Dup", "2")],
            id="repeated-names-kept",
        ),
        pytest.param([], None, id="empty-array"),
        # Go's http.Header: a name's values, joined as HTTP joins a repeated header's
        pytest.param({"a": ["b", "c"], "DNT": [1]}, [("a", "b, c"), ("DNT", "1")], id="go"),
        pytest.param({}, None, id="empty-object"),
        pytest.param(None, None, id="null"),
        # a JSON yes or no, as a sender may write DNT: 1
        pytest.param({"DNT": True, "x": False}, [("DNT", "1"), ("x", "0")], id="bools"),
    ],
)
def test_good_headers(value: Any, expected: list[tuple[str, str]] | None) -> None:
    event, entries = one({"$time": GOOD_TIME, "$headers": value})
    assert event.headers == expected
    assert entries == []


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("Accept: */*", id="string"),
        pytest.param(5, id="number"),
        pytest.param(True, id="bool"),
        pytest.param([1], id="array-of-numbers"),
        pytest.param([["Accept", "*/*"]], id="array-of-arrays"),
        pytest.param([{"name": "a"}], id="missing-value"),
        pytest.param([{"value": "a"}], id="missing-name"),
        pytest.param([{"name": 1, "value": "a"}], id="number-name"),
        pytest.param([{"name": "a", "value": None}], id="null-value"),
        pytest.param([{"name": "a", "value": {"x": 1}}], id="object-value"),
        pytest.param({"a": [["b"]]}, id="object-of-nested-arrays"),
        pytest.param({"a": ["b", None]}, id="object-of-arrays-with-null"),
    ],
)
def test_bad_headers(value: Any) -> None:
    event, entries = one({"$time": GOOD_TIME, "$headers": value})
    assert event.headers is None
    assert codes(entries) == ["invalid-field"]
    assert "$headers" in entries[0].message


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        pytest.param(
            {"X": "y", "DNT": "1", "Z": {"a": 1}}, [("X", "y"), ("DNT", "1")], id="object"
        ),
        pytest.param(
            [{"name": "DNT", "value": "1"}, {"name": "X", "value": None}, 5],
            [("DNT", "1")],
            id="array",
        ),
    ],
)
def test_a_bad_header_costs_only_itself(value: Any, kept: list[tuple[str, str]]) -> None:
    """The well-formed headers are kept beside a malformed one, so that DNT: 1 is honoured
    whatever else is wrong (an enrichment hunt: one bad header dropped them all, and the
    request was tracked)."""
    event, entries = one({"$time": GOOD_TIME, "$headers": value})
    assert event.headers == kept
    assert codes(entries) == ["invalid-field"]
    assert "the other headers were kept" in entries[0].message


# --- unknown $ fields -----------------------------------------------------------------------------


def test_unknown_dollar_fields_one_warning_sorted() -> None:
    event, entries = one({"$time": GOOD_TIME, "$zeta": 1, "$alpha": {"a": 1}, "tag": "x"})
    assert codes(entries) == ["unknown-field"]
    (entry,) = entries
    assert (entry.type, entry.level, entry.line) == ("unknown-field", "warning", 7)
    assert entry.message.index('"$alpha"') < entry.message.index('"$zeta"')
    assert event.variables == "tag=x"


def test_one_unknown_field_named_in_singular() -> None:
    _, entries = one({"$time": GOOD_TIME, "$Time": "x"})
    assert entries[0].message.startswith('Unknown field "$Time" ignored')


# --- custom variables -----------------------------------------------------------------------------

DEEP: dict[str, Any] = {"v": 1}
for _ in range(3000):
    DEEP = {"d": DEEP}

VARIABLES = [
    pytest.param({"tag": "x"}, [("tag", "x")], id="string"),
    pytest.param({"z": "1", "a": "2", "m": "3"}, [("z", "1"), ("a", "2"), ("m", "3")], id="order"),
    pytest.param(
        {"a": {"b": 1, "c": {"d": "e"}, "f": "g"}, "h": "i"},
        [("a.b", "1"), ("a.c.d", "e"), ("a.f", "g"), ("h", "i")],
        id="nested-objects-flatten",
    ),
    pytest.param(
        {"arr": [1, "two", None, {"k": True}]}, [("arr", '[1,"two",null,{"k":true}]')], id="array"
    ),
    pytest.param({"a": {"arr": []}}, [("a.arr", "[]")], id="nested-array"),
    pytest.param({"t": True, "f": False}, [("t", "true"), ("f", "false")], id="booleans"),
    pytest.param(
        {"i": 3, "n": -1.5, "e": 1e20, "z": 0.0},
        [("i", "3"), ("n", "-1.5"), ("e", "1e+20"), ("z", "0.0")],
        id="numbers",
    ),
    pytest.param({"gone": None, "kept": "k"}, [("kept", "k")], id="null-skipped"),
    pytest.param({"a": {"gone": None}}, [], id="nested-null-skipped"),
    pytest.param({"empty": {}}, [], id="empty-object"),
    pytest.param({"e": ""}, [("e", "")], id="empty-string-kept"),
    pytest.param({"": "v"}, [("", "v")], id="empty-name"),
    pytest.param(
        {"sp ace": "a b&c=d/é+%", "ü": "☃", "safe": "A-z_0.9~"},
        [("sp ace", "a b&c=d/é+%"), ("ü", "☃"), ("safe", "A-z_0.9~")],
        id="quoting",
    ),
    pytest.param({"a": {"$b": 1}}, [("a.$b", "1")], id="nested-dollar-name-is-a-variable"),
    pytest.param({"x": {"$time": "t"}}, [("x.$time", "t")], id="nested-time-is-a-variable"),
    pytest.param(DEEP, [("d" + ".d" * 2999 + ".v", "1")], id="3000-levels-deep"),
]


@pytest.mark.parametrize(("custom", "pairs"), VARIABLES)
def test_custom_variables(custom: dict[str, Any], pairs: list[tuple[str, str]]) -> None:
    event, entries = one({"$time": GOOD_TIME, **custom})
    assert entries == []
    assert event.variables == (urlencode(pairs) if pairs else None)


def test_quoting_cache_gives_the_same_answers() -> None:
    """Names and values go through small caches; a second pass must not change anything."""
    custom = {"a b": "c d", "x/y": "1&2", "k": "é"}
    first, _ = one({"$time": GOOD_TIME, **custom})
    second, _ = one({"$time": GOOD_TIME, **custom})
    assert first.variables == second.variables == urlencode(list(custom.items()))


# --- whole events ---------------------------------------------------------------------------------


def test_full_event() -> None:
    event, entries = decode_object(
        {
            "$time": GOOD_TIME,
            "$unique_id": "u-1",
            "$package": "pkg",
            "$tracking_pixel": "px",
            "$version": "1.2.3",
            "$type": "download",
            "$remote_address": "1.2.3.4",
            "$user_agent": "pip/24.0",
            "$domain": "example.com",
            "$referrer": "https://ref.example/",
            "$headers": [{"name": "Accept", "value": "*/*"}],
            "tag": "x",
        },
        42,
    )
    assert entries == []
    assert event == ParsedEvent(
        line=42,
        time_us=T0,
        unique_id="u-1",
        package="pkg",
        pixel="px",
        version="1.2.3",
        type="download",
        remote_address="1.2.3.4",
        user_agent="pip/24.0",
        domain="example.com",
        referer="https://ref.example/",
        headers=[("Accept", "*/*")],
        variables="tag=x",
    )


def test_warnings_never_stop_the_event() -> None:
    event, entries = decode_object(
        {"$time": "2024-06-04", "$type": 5, "$nope": 1, "$headers": "x", "tag": "y"}, 1
    )
    assert event is not None
    assert event.time_us == T0
    assert sorted(codes(entries)) == ["invalid-field", "naive-time", "unknown-field"]
    assert all(e.level == "warning" for e in entries)
    # One entry for the line's ignored fields, naming each: the log keeps one entry per line
    # and code, and the import counts its entries (three counted, one kept, before).
    (invalid,) = (e for e in entries if e.code == "invalid-field")
    assert '"$type"' in invalid.message
    assert '"$headers"' in invalid.message


def test_every_ignored_field_of_a_line_is_named_in_one_entry() -> None:
    event, entries = decode_object(
        {"$time": GOOD_TIME, "$type": ["x"], "$domain": 5, "$user_agent": {"a": 1}}, 7
    )
    assert event is not None
    assert (event.type, event.domain, event.user_agent) == (None,) * 3
    (entry,) = entries
    assert (entry.line, entry.code, entry.level) == (7, "invalid-field", "warning")
    assert [entry.message.count(f'"{key}"') for key in ("$type", "$domain", "$user_agent")] == [
        1,
        1,
        1,
    ]


def test_several_errors_one_failed_line() -> None:
    event, entries = decode_object({"$time": "soon", "$unique_id": ""}, 9)
    assert event is None
    assert sorted(codes(entries)) == ["invalid-time", "invalid-unique-id"]
    assert failed_line_count(entries) == 1


def test_decode_object_leaves_its_input_alone() -> None:
    obj = {"$time": GOOD_TIME, "$version": "1", "tag": "x"}
    decode_object(obj, 1)
    assert obj == {"$time": GOOD_TIME, "$version": "1", "tag": "x"}


def test_codes_in_one_place() -> None:
    assert set(Code) == ERROR_CODES | WARNING_CODES
    assert not ERROR_CODES & WARNING_CODES
    assert {"invalid-json", "not-an-object", "invalid-utf8", "line-too-long"} <= ERROR_CODES
    assert {"missing-time", "invalid-time", "invalid-unique-id"} <= ERROR_CODES
    assert {"naive-time", "unknown-field", "invalid-field"} <= WARNING_CODES


def test_entries_hold_plain_strings() -> None:
    _, entries = decode_object({"$time": "x", "$nope": 1}, 1)
    assert entries
    for entry in entries:
        assert type(entry.code) is str
        assert type(entry.type) is str
        assert orjson.loads(orjson.dumps(entry)) == {
            "line": 1,
            "level": entry.level,
            "type": entry.type,
            "code": entry.code,
            "message": entry.message,
            "package_id": None,
            "tracking_pixel_id": None,
        }


# --- NDJSON ---------------------------------------------------------------------------------------

LINE = b'{"$time":"2024-06-04T00:00:00Z","$unique_id":"u"}'

NDJSON_CASES = [
    pytest.param(LINE, None, id="good"),
    pytest.param(LINE + b"\r", None, id="trailing-cr"),
    pytest.param(b"  " + LINE + b" \t", None, id="surrounding-space"),
    pytest.param(b'{"$time":"2024-06-04T00:00:00Z"', "invalid-json", id="truncated"),
    pytest.param(b'{"$time":', "invalid-json", id="truncated-after-colon"),
    pytest.param(b"{", "invalid-json", id="lone-brace"),
    pytest.param(b"}", "invalid-json", id="lone-close"),
    pytest.param(LINE + b" {}", "invalid-json", id="two-values"),
    pytest.param(LINE + b",", "invalid-json", id="trailing-comma"),
    pytest.param(b"{'$time': 1}", "invalid-json", id="single-quotes"),
    pytest.param(b'{"$time": NaN}', "invalid-json", id="nan-literal"),
    pytest.param(b'{"$time": Infinity}', "invalid-json", id="infinity-literal"),
    pytest.param(b'{"a": "\\ud800", "$time": 1}', "invalid-json", id="lone-surrogate-escape"),
    pytest.param(b"\xef\xbb\xbf" + LINE, "invalid-json", id="bom-mid-file"),
    pytest.param(b"[" * 5000 + b"]" * 5000, "invalid-json", id="too-deep"),
    pytest.param(b"garbage", "invalid-json", id="garbage"),
    pytest.param(b"\x00", "invalid-json", id="nul"),
    pytest.param(b"[1,2]", "not-an-object", id="array"),
    pytest.param(b"[" + LINE + b"]", "not-an-object", id="array-of-events"),
    pytest.param(b"42", "not-an-object", id="number"),
    pytest.param(b"-1.5e3", "not-an-object", id="float"),
    pytest.param(b'"2024-06-04T00:00:00Z"', "not-an-object", id="string"),
    pytest.param(b"null", "not-an-object", id="null"),
    pytest.param(b"true", "not-an-object", id="true"),
    pytest.param(b"false", "not-an-object", id="false"),
    pytest.param(b"\xff\xfe{}", "invalid-utf8", id="bad-utf8-start"),
    pytest.param(b'{"$time":"2024-06-04T00:00:00Z","a":"\xc3"}', "invalid-utf8", id="cut-utf8"),
    pytest.param(b'{"a":"\xed\xa0\x80","$time":1}', "invalid-utf8", id="utf8-surrogate"),
    pytest.param(b"\xff" * 10, "invalid-utf8", id="all-bad"),
    pytest.param(b'{"$time":{"$time":"2024-06-04T00:00:00Z"}}', "invalid-time", id="nested-time"),
    pytest.param(b'{"x":{"$time":"2024-06-04T00:00:00Z"}}', "missing-time", id="time-only-nested"),
    pytest.param(b"{}", "missing-time", id="empty-object"),
    pytest.param(b'{"$time":null}', "invalid-time", id="null-time"),
    pytest.param(b'{"$time":true}', "invalid-time", id="bool-time"),
    pytest.param(b'{"$time":1e300}', "invalid-time", id="1e300"),
    pytest.param(b'{"$time":1e400}', "invalid-time", id="1e400-beyond-double"),
    pytest.param(b'{"$time":-1e400}', "invalid-time", id="minus-1e400"),
    pytest.param(b'{"$time":1e400,"a":"\\ud800"}', "invalid-json", id="1e400-and-surrogate"),
    pytest.param(
        b'{"$time":1e400,"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "invalid-json",
        id="1e400-and-too-deep",
    ),
    pytest.param(b'{"$time":1e400,"a":NaN}', "invalid-json", id="1e400-and-nan"),
    pytest.param(b'{"$time":' + b"1" + b"0" * 40 + b"}", "invalid-time", id="10-to-the-40"),
    pytest.param(b'{"$time":"' + b"9" * 400 + b'"}', "invalid-time", id="400-digit-string"),
    pytest.param(b'{"$time":' + GOOD_TIME.encode() + b"}", "invalid-json", id="unquoted-time"),
    pytest.param(b'{"$time":1,"$unique_id":{}}', "invalid-unique-id", id="object-unique-id"),
]


@pytest.mark.parametrize(("raw", "code"), NDJSON_CASES)
def test_ndjson_lines(raw: bytes, code: str | None) -> None:
    events, entries = decode_ndjson([(12, raw)])
    if code is None:
        assert [e.line for e in events] == [12]
        assert entries == []
    else:
        assert events == []
        assert codes(entries) == [code]
        (entry,) = entries
        assert (entry.line, entry.level, entry.type) == (12, "error", "failed-to-decode")
        assert len(entry.message) < 300


def test_ndjson_messages_tell_utf8_from_json() -> None:
    _, entries = decode_ndjson([(1, b'{"a":"\xff"}'), (2, b'{"a":}')])
    assert "UTF-8" in entries[0].message
    assert "0xff" in entries[0].message
    assert "not valid JSON" in entries[1].message
    assert "UTF-8" not in entries[1].message


def test_ndjson_messages_are_cut() -> None:
    _, entries = decode_ndjson([(1, b"{" + b"x" * 100_000)])
    assert codes(entries) == ["invalid-json"]
    assert len(entries[0].message) < 300
    assert "…" in entries[0].message


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"   ", id="spaces"),
        pytest.param(b"\r", id="cr"),
        pytest.param(b"\t \r", id="tab-space-cr"),
    ],
)
def test_ndjson_blank_lines_are_skipped(raw: bytes) -> None:
    assert decode_ndjson([(1, raw)]) == ([], [])


def test_ndjson_too_long() -> None:
    events, entries = decode_ndjson([(4, None)], max_line_bytes=1000)
    assert events == []
    assert codes(entries) == ["line-too-long"]
    assert entries[0].line == 4
    assert "1,000 bytes" in entries[0].message


def test_ndjson_counts() -> None:
    lines: list[tuple[int, bytes | None]] = [
        (1, LINE),
        (2, b""),
        (3, b"[]"),
        (4, b'{"$time":"nope","$unique_id":""}'),  # two errors, one line
        (5, None),
        (6, b"  "),
        (7, b'{"$time":"2024-06-04","$x":1}'),  # warnings only
        (8, b"{bad"),
    ]
    events, entries = decode_ndjson(lines)
    assert [e.line for e in events] == [1, 7]
    assert failed_line_count(entries) == 4
    non_blank = 6
    assert len(events) + failed_line_count(entries) == non_blank
    assert sorted({e.line or 0 for e in entries if e.level == "error"}) == [3, 4, 5, 8]


def test_ndjson_duplicate_keys_last_wins() -> None:
    (event,), _ = decode_ndjson([(1, b'{"$time":"x","a":"1","$time":0,"a":"2"}')])
    assert (event.time_us, event.variables) == (0, "a=2")


def test_ndjson_matches_decode_object() -> None:
    raw = (
        b'{"$time":"2024-06-04T00:00:00Z","$unique_id":"u","$user_agent":"pip/24.0",'
        b'"$version":1.5,"tag":"x","n":{"a":[1]}}'
    )
    events, entries = decode_ndjson([(3, raw)])
    event, expected_entries = decode_object(json.loads(raw), 3)
    assert events == [event]
    assert entries == expected_entries


# --- texts too long to keep ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"$user_agent": "a" * (MAX_TEXT_BYTES + 1)}, '"$user_agent" takes 32,769 bytes'),
        ({"$referer": "é" * (MAX_TEXT_BYTES // 2 + 1)}, '"$referrer" takes 32,770 bytes'),
        ({"$type": "t" * 40000}, '"$type" takes 40,000 bytes'),
        ({"v": "x" * (MAX_TEXT_BYTES - 1)}, "The custom variables take more than 32,768"),
        ({"a": {"b": "&" * 11000}}, "The custom variables take more than 32,768"),  # a.b=%26…
        ({"a": "1" * 20000, "b": "2" * 20000}, "The custom variables take more than 32,768"),
        ({"$headers": {"X-Big": "h" * MAX_TEXT_BYTES}}, '"$headers" takes 32,782 bytes as JSON'),
    ],
)
def test_a_text_too_long_to_keep_fails_its_line(extra: dict[str, Any], named: str) -> None:
    """A text of more than MAX_TEXT_BYTES (UTF-8) fails its line with a message naming it:
    stored, ~100 MB of such texts failed every later commit of the embedded store."""
    event, entries = decode_object({"$time": GOOD_TIME, **extra}, 9)
    assert event is None
    assert [(e.line, e.level, e.type, e.code) for e in entries] == [
        (9, "error", "failed-to-decode", "text-too-long")
    ]
    assert entries[0].message.startswith(named), entries[0].message
    assert "texts of up to 32,768 bytes each (UTF-8), so the line was not imported" in (
        entries[0].message
    )


def test_nested_names_cannot_blow_a_line_up() -> None:
    """Each leaf of nested objects is named by its whole path: 200 levels of 1,250-character
    names over 1,000 leaves (a 0.25 MB line) made ~250 MB of variables before, and a half-MB
    one took the server to 2.5 GB. The parts stop as soon as they pass MAX_TEXT_BYTES."""
    inner: dict[str, Any] = {str(i): 1 for i in range(1000)}
    for level in range(200):
        inner = {f"k{level:03d}" + "a" * 1246: inner}
    raw = orjson.dumps({"$time": GOOD_TIME, "v": inner})
    assert len(raw) < 300_000
    tracemalloc.start()
    try:
        events, entries = decode_ndjson([(3, raw)], max_line_bytes=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert events == []
    assert [(e.line, e.code) for e in entries] == [(3, "text-too-long")]
    assert peak < 20 * len(raw), peak  # about the line's own decoding, not its leaves' paths


def test_a_warning_names_ten_unknown_fields_at_most() -> None:
    """A CSV header of 500 long $-names made a 41 KB warning for every row (a resource hunt)."""
    header = ["$time", *(f"$c{i:03d}" + "x" * 2000 for i in range(500))]
    events, entries = decode_csv(header, [(2, ["1", *("d" for _ in range(500))])])
    assert len(events) == 1
    (warning,) = entries
    assert warning.code == "unknown-field"
    assert "and 490 more" in warning.message
    assert len(warning.message) < 1500


def test_texts_of_the_longest_kept_size_are_kept() -> None:
    event, entries = one(
        {
            "$time": GOOD_TIME,
            "$user_agent": "a" * MAX_TEXT_BYTES,
            "$domain": "é" * (MAX_TEXT_BYTES // 2),
            "v": "x" * (MAX_TEXT_BYTES - 2),
            "$headers": {"X-Big": "h" * (MAX_TEXT_BYTES - 14)},  # [["X-Big","hh…"]]
        }
    )
    assert entries == []
    assert event.user_agent is not None
    assert len(event.user_agent) == MAX_TEXT_BYTES
    assert event.variables is not None
    assert len(event.variables) == MAX_TEXT_BYTES
    assert event.headers == [("X-Big", "h" * (MAX_TEXT_BYTES - 14))]
    rows, problems = decode_csv(["$time", "$user_agent"], [(2, ["1", "u" * (MAX_TEXT_BYTES + 1)])])
    assert rows == []
    assert [(e.line, e.code) for e in problems] == [(2, "text-too-long")]


# --- CSV ------------------------------------------------------------------------------------------

HEADER = ["$time", "$unique_id", "tag"]


def csv_one(
    cells: CsvCells, header: list[str] = HEADER
) -> tuple[list[ParsedEvent], list[LogEntry]]:
    return decode_csv(header, [(2, cells)])


@pytest.mark.parametrize(
    ("cells", "unique_id", "variables", "warnings"),
    [
        pytest.param([GOOD_TIME, "u", "x"], "u", "tag=x", [], id="full-row"),
        pytest.param([GOOD_TIME, "", "x"], None, "tag=x", [], id="empty-cell-absent"),
        pytest.param([GOOD_TIME, "u", ""], "u", None, [], id="empty-variable-absent"),
        pytest.param([GOOD_TIME], None, None, [], id="missing-cells-absent"),
        pytest.param(
            [GOOD_TIME, "u", "x", "extra"], "u", "tag=x", ["extra-cells"], id="extra-cell"
        ),
        pytest.param([GOOD_TIME, "u", "x", "", ""], "u", "tag=x", [], id="empty-extras-ok"),
        pytest.param([GOOD_TIME, "123", "1.50"], "123", "tag=1.50", [], id="numbers-stay-text"),
        pytest.param([GOOD_TIME, " ", "  "], " ", "tag=++", [], id="spaces-are-values"),
    ],
)
def test_csv_rows(
    cells: list[str], unique_id: str | None, variables: str | None, warnings: list[str]
) -> None:
    events, entries = csv_one(cells)
    (event,) = events
    assert (event.line, event.time_us, event.unique_id) == (2, T0, unique_id)
    assert event.variables == variables
    assert codes(entries) == warnings


@pytest.mark.parametrize(
    ("cells", "code"),
    [
        pytest.param(["", "u", "x"], "missing-time", id="empty-time-is-missing"),
        pytest.param(["  ", "u"], "invalid-time", id="blank-time-is-invalid"),
        pytest.param(["soon", "u"], "invalid-time", id="bad-time"),
        pytest.param(["1e300"], "invalid-time", id="huge-time"),
        pytest.param([GOOD_TIME, "u" * 513], "invalid-unique-id", id="long-unique-id"),
        pytest.param(Code.LINE_TOO_LONG, "line-too-long", id="too-long"),
        pytest.param(Code.INVALID_UTF8, "invalid-utf8", id="bad-utf8"),
        pytest.param(Code.INVALID_CSV, "invalid-csv", id="bad-csv"),
    ],
)
def test_csv_errors(cells: CsvCells, code: str) -> None:
    events, entries = csv_one(cells)
    assert events == []
    assert codes(entries) == [code]
    assert (entries[0].line, entries[0].type) == (2, "failed-to-decode")


@pytest.mark.parametrize(
    "cells",
    [
        pytest.param([], id="empty-line"),
        pytest.param([""], id="one-empty-cell"),
        pytest.param(["", "", ""], id="commas-only"),
        pytest.param(["", " ", "\t"], id="whitespace-cells"),
        pytest.param(["  ", " "], id="whitespace-time-too"),
        pytest.param(["", "", "", "", ""], id="more-commas-than-columns"),
    ],
)
def test_csv_blank_rows_are_skipped(cells: list[str]) -> None:
    assert csv_one(cells) == ([], [])


@pytest.mark.parametrize(
    ("header", "cells", "variables", "warnings"),
    [
        pytest.param([" $time ", " tag"], [GOOD_TIME, "x"], "tag=x", [], id="names-stripped"),
        pytest.param(
            ["$time", "", "tag"], [GOOD_TIME, "zz", "x"], "tag=x", ["extra-cells"], id="unnamed"
        ),
        pytest.param(["$time", "", "tag"], [GOOD_TIME, "", "x"], "tag=x", [], id="unnamed-empty"),
        pytest.param(["$time", "a", "a"], [GOOD_TIME, "1", "2"], "a=2", [], id="dup-last-wins"),
        pytest.param(["$time", "a", "a"], [GOOD_TIME, "1", ""], "a=1", [], id="dup-empty-skipped"),
        pytest.param(["$time", "$nope"], [GOOD_TIME, "1"], None, ["unknown-field"], id="unknown"),
        pytest.param(["$time", "a.b"], [GOOD_TIME, "1"], "a.b=1", [], id="dotted-name"),
    ],
)
def test_csv_headers(
    header: list[str], cells: list[str], variables: str | None, warnings: list[str]
) -> None:
    events, entries = csv_one(cells, header)
    assert [e.variables for e in events] == [variables]
    assert codes(entries) == warnings


@pytest.mark.parametrize(
    ("cell", "expected", "warned"),
    [
        pytest.param('[{"name":"A","value":"1"}]', [("A", "1")], False, id="json-array"),
        pytest.param('{"A":"1","B":"2"}', [("A", "1"), ("B", "2")], False, id="json-object"),
        pytest.param("A: 1", None, True, id="not-json"),
        pytest.param('"A"', None, True, id="json-string"),
    ],
)
def test_csv_headers_cell(cell: str, expected: list[tuple[str, str]] | None, warned: bool) -> None:
    events, entries = csv_one([GOOD_TIME, cell], ["$time", "$headers"])
    assert events[0].headers == expected
    assert codes(entries) == (["invalid-field"] if warned else [])


def test_csv_extra_cells_message_names_them() -> None:
    _, entries = csv_one([GOOD_TIME, "u", "x", "e1", "e2", "e3", "e4"])
    assert codes(entries) == ["extra-cells"]
    assert entries[0].type == "extra-cells"
    assert '"e1"' in entries[0].message
    assert "4 cells" in entries[0].message


def test_csv_counts_and_lines() -> None:
    rows: list[tuple[int, CsvCells]] = [
        (2, [GOOD_TIME, "a"]),
        (3, []),
        (5, ["bad", "b"]),  # a record may start on any line (the one before spanned two)
        (6, Code.INVALID_CSV),
        (7, [GOOD_TIME, "c", "x"]),
    ]
    events, entries = decode_csv(HEADER, rows)
    assert [e.line for e in events] == [2, 7]
    assert [(e.line, e.code) for e in entries] == [(5, "invalid-time"), (6, "invalid-csv")]
    assert len(events) + failed_line_count(entries) == 4


def test_nul_characters_are_replaced_in_every_text() -> None:
    from eventport.imports.records import decode_csv, decode_ndjson

    events, entries = decode_ndjson(
        [(1, b'{"$time":1,"$unique_id":"ab","$user_agent":"x\\u0000","k\\u0000":"v"}')]
    )
    assert entries == []
    assert events[0].user_agent == "x\ufffd"
    assert events[0].variables is not None
    assert "\x00" not in events[0].variables
    events, _ = decode_csv(["$time", "$version"], [(2, ["1", "1.0\x00"])])
    assert events[0].version == "1.0\ufffd"


def test_a_nul_in_a_unique_id_fails_the_line() -> None:
    """Replaced by U+FFFD like elsewhere, "x\\u0000y" became the id "x\ufffdy": a later,
    different id of that spelling replaced its event (or was refused as not writable)."""
    from eventport.imports.records import decode_csv, decode_ndjson

    events, entries = decode_ndjson(
        [
            (1, b'{"$time":1,"$unique_id":"x\\u0000y"}'),
            (2, b'{"$time":1,"$unique_id":"x\xef\xbf\xbdy","v":"a\\u0000"}'),
        ]
    )
    assert [(e.line, e.code) for e in entries] == [(1, "invalid-unique-id")]
    assert "NUL" in entries[0].message
    assert [e.unique_id for e in events] == ["x\ufffdy"]
    events, entries = decode_csv(
        [" $unique_id ", "$time", "v"], [(2, ["x\x00y", "1", ""]), (3, ["z", "1", "\x00"])]
    )
    assert [(e.line, e.code) for e in entries] == [(2, "invalid-unique-id")]
    assert [e.unique_id for e in events] == ["z"]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        pytest.param("2024-02-01T23:59:60Z", "leap second", id="leap-second"),
        pytest.param("10000-01-01T00:00:00Z", "out of range", id="year-10000"),
        pytest.param("9999-12-31T00:00:00Z", "out of range", id="the-last-day-of-9999"),
        pytest.param("2026-01-01T24:00:00Z", "not a real date-time", id="hour-24"),
        # fromisoformat took any character between date and time, and more (a time hunt)
        pytest.param("2024-06-04X12:00:00Z", "ISO 8601 date-time eventport reads", id="X"),
        pytest.param("2024-06-04512:00:00Z", "ISO 8601 date-time eventport reads", id="digit"),
        pytest.param("2024-06-04Z12:00:00", "ISO 8601 date-time eventport reads", id="Z-sep"),
        pytest.param("2024-06-04+12:00:00", "ISO 8601 date-time eventport reads", id="plus"),
        pytest.param("2024-06-04T12:00:00.Z", "ISO 8601 date-time eventport reads", id="dot"),
        pytest.param("2024-06-04T12:30.5Z", "ISO 8601 date-time eventport reads", id="min-frac"),
        pytest.param("2024-06-04T12:00+05:30:15", "ISO 8601 date-time eventport reads", id="s"),
        pytest.param("2024-06-04T12:00+05:30.5", "ISO 8601 date-time eventport reads", id="f"),
        pytest.param("2026-001", "ISO 8601 date-time eventport reads", id="ordinal-date"),
        pytest.param("+12024-01-01T00:00:00Z", "signed year", id="signed-long-year"),
        pytest.param("+2024-01-01T00:00:00Z", "signed year", id="signed-year"),
        pytest.param("2024-02-30T00:00:00Z", "not a real date-time", id="february-30"),
        pytest.param("yesterday", "neither an ISO 8601", id="words"),
    ],
)
def test_a_bad_time_is_named_for_what_is_wrong(value: str, says: str) -> None:
    _, entries = decode_object({"$time": value}, 1)
    assert codes(entries) == ["invalid-time"]
    assert says in entries[0].message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-06-04T12:00:00Z", "2024-06-04T12:00:00+00:00"),
        ("2024-06-04t12:00:00z", "2024-06-04T12:00:00+00:00"),
        ("2024-06-04 12:00:00.123456789+0530", "2024-06-04T06:30:00.123456+00:00"),
        ("20240604T1200Z", "2024-06-04T12:00:00+00:00"),
        ("2026-W01-1T00:00Z", "2025-12-29T00:00:00+00:00"),
        ("2024-06-04T12:00:00,5-02", "2024-06-04T14:00:00.500000+00:00"),
        ("2024-06-04 12:00:00 +0200", "2024-06-04T10:00:00+00:00"),  # git log --date=iso
        ("2024-06-04T12:00:00 Z", "2024-06-04T12:00:00+00:00"),
        ("9999-12-30T23:59:59.999999Z", "9999-12-30T23:59:59.999999+00:00"),
    ],
)
def test_iso_forms_still_read(value: str, expected: str) -> None:
    parsed = records.parse_time(value)
    assert parsed is not None, value
    got = records._EPOCH + timedelta(microseconds=parsed[0])
    assert got.isoformat() == expected


def test_a_number_too_large_says_so_not_inf() -> None:
    _, entries = decode_object({"$time": float("inf")}, 1)
    assert codes(entries) == ["invalid-time"]
    assert entries[0].message == '"$time" value is a number too large to be a time.'
