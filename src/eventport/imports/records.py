"""What one line of a bulk import means: decoding NDJSON lines and CSV rows into events.

Pure Python, no I/O. This is the hot path of an import, so the common case is kept cheap:
orjson decodes each line, known ``$`` fields are popped from the decoded dict (what is left
are the custom variables), aware times already seen are answered from a bounded cache, and
log entries are only built when something is wrong.

Each input line gives either one :class:`ParsedEvent` or at least one error :class:`LogEntry`
(plus any number of warnings, which never stop the event). Blank lines give nothing at all and
are not counted: an import's ``events_total`` is ``len(events) + failed_line_count(entries)``.

Rules chosen here (where Scarf's documentation leaves a choice):

* ``$time``: ISO 8601 (``datetime.fromisoformat`` of Python 3.11, plus a lowercase ``z``
  suffix) with ``Z`` or an offset is converted to UTC; a naive time or a bare date is taken as
  UTC with a ``naive-time`` warning. A UNIX timestamp is a JSON number or a string of only
  ``[+-]digits[.digits][e±digits]`` (so ``"20240604"`` is a timestamp, not a basic-format
  date); ``|value| >= 1e11`` means milliseconds, otherwise seconds. Strings are stripped of
  surrounding whitespace first. Anything else, or a time outside 0001-01-01..9999-12-30 (after
  conversion to UTC), is ``invalid-time``; so is a number too large for a double (``1e400``,
  which orjson refuses; such a line is re-read with the standard library to say so).
* ``null`` for any ``$`` field other than ``$time`` means the field is absent (no warning).
* Aliases: ``$pixel`` is used only when ``$tracking_pixel`` gives no value (absent, null or
  ignored), likewise ``$referer`` for ``$referrer``.
* ``$headers``: every item must have a string ``name`` and a string (or number) ``value``;
  otherwise the whole field is ignored with one ``invalid-field`` warning. An empty list or
  object means no headers (``None``). In CSV the cell is JSON text of either shape.
* Custom variables (fields not starting with ``$``): nested objects flatten to ``a.b``,
  arrays become their JSON text, booleans ``true``/``false``, numbers their JSON text (as
  orjson writes it), ``null`` values are skipped; the result is
  ``urllib.parse.urlencode(pairs)`` (``quote_plus``, spaces as ``+``) in input order.
* A line can carry several errors (e.g. a bad ``$time`` and a bad ``$unique_id``); all are
  reported, and :func:`failed_line_count` counts each failed line once.
* CSV: cells map to the header's names (whitespace around a name is stripped). Empty cells are
  absent fields. Non-empty cells beyond the header, or under a column whose name is empty, are
  ignored with one ``extra-cells`` warning per row. A header naming a field twice makes the
  file unusable (formats.py). A row whose cells are all empty or whitespace is blank (skipped,
  uncounted), like a blank NDJSON line. A record the CSV reader could not split or decode
  arrives as its error code (``line-too-long``, ``invalid-utf8``, ``invalid-csv``); one that a
  quoted value stretched over lines and that ends the file inside the quotes
  (``unclosed-quote``) or runs past the limit, as a :class:`SpanProblem` naming its lines.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Literal
from urllib.parse import quote_plus

import orjson

from eventport.domain.text import QUOTED_CHARS, head_without_addresses, without_nul

__all__ = [
    "KNOWN_FIELDS",
    "MAX_LINE_BYTES",
    "MAX_TEXT_BYTES",
    "MAX_UNIQUE_ID_CHARS",
    "Code",
    "CsvCells",
    "Level",
    "LogEntry",
    "LogType",
    "ParsedEvent",
    "SpanProblem",
    "decode_csv",
    "decode_ndjson",
    "decode_object",
    "failed_line_count",
    "parse_time",
]

MAX_LINE_BYTES: Final = 1 << 20
MAX_UNIQUE_ID_CHARS: Final = 512
#: The longest text an event keeps, in UTF-8 bytes: each of its fields, its custom variables
#: together (as stored: ``name=value`` pairs joined by ``&``) and its ``$headers`` (as JSON).
#: DuckDB keeps a committed text of more than ~52 KB in memory, pinned, until its next
#: checkpoint: once ~100 MB of them were held every later commit of the embedded store failed
#: (events of 1 MB user agents: an import failed with most of its events lost; a resource
#: hunt), and a checkpoint that runs out of memory closes the database. Both stores keep the
#: same rule, so an import means the same on either.
MAX_TEXT_BYTES: Final = 32 << 10
MS_THRESHOLD: Final = 100_000_000_000  # |timestamp| >= 1e11 is in milliseconds
_SHOW_CHARS: Final = QUOTED_CHARS

Level = Literal["error", "warning", "info"]


class LogType(StrEnum):
    """Scarf's ``ImportLogType`` values used for error entries."""

    FAILED_TO_DECODE = "failed-to-decode"
    ARTIFACT_NOT_FOUND = "artifact-not-found"


class Code(StrEnum):
    """Every machine-readable reason this module gives, in one place.

    Errors carry ``type`` ``failed-to-decode`` and one of the error codes; warnings carry their
    code as their ``type`` too.
    """

    # errors: the line gives no event
    INVALID_JSON = "invalid-json"
    NOT_AN_OBJECT = "not-an-object"
    INVALID_UTF8 = "invalid-utf8"
    LINE_TOO_LONG = "line-too-long"
    INVALID_CSV = "invalid-csv"
    UNCLOSED_QUOTE = "unclosed-quote"
    MISSING_TIME = "missing-time"
    INVALID_TIME = "invalid-time"
    INVALID_UNIQUE_ID = "invalid-unique-id"
    TEXT_TOO_LONG = "text-too-long"
    # warnings: the event is kept
    NAIVE_TIME = "naive-time"
    UNKNOWN_FIELD = "unknown-field"
    INVALID_FIELD = "invalid-field"
    EXTRA_CELLS = "extra-cells"


ERROR_CODES: Final = frozenset(
    {
        Code.INVALID_JSON,
        Code.NOT_AN_OBJECT,
        Code.INVALID_UTF8,
        Code.LINE_TOO_LONG,
        Code.INVALID_CSV,
        Code.UNCLOSED_QUOTE,
        Code.MISSING_TIME,
        Code.INVALID_TIME,
        Code.INVALID_UNIQUE_ID,
        Code.TEXT_TOO_LONG,
    }
)
WARNING_CODES: Final = frozenset(Code) - ERROR_CODES


# A CSV row as the reader hands it over: its cells, or the error code of a record it could not
# read (line-too-long, invalid-utf8, invalid-csv).
@dataclass(frozen=True, slots=True)
class SpanProblem:
    """A CSV record that a quoted value stretched over several lines, and that could not be
    read: ``code`` is UNCLOSED_QUOTE (the file ended inside the quotes) or LINE_TOO_LONG; its
    lines run from the record's own to ``last_line``, and none of them gives an event."""

    code: Code
    last_line: int


CsvCells = list[str] | Code | SpanProblem


@dataclass(slots=True)
class ParsedEvent:
    """One decoded event. Strings are as given (nothing is validated beyond type)."""

    line: int
    time_us: int  # UTC microseconds since the UNIX epoch
    unique_id: str | None
    package: str | None
    pixel: str | None
    version: str | None
    type: str | None
    remote_address: str | None
    user_agent: str | None
    domain: str | None
    referer: str | None
    headers: list[tuple[str, str]] | None
    variables: str | None  # urlencoded custom variables, in input order


@dataclass(slots=True)
class LogEntry:
    """One import log entry, shaped like Scarf's ``ImportLog``."""

    line: int | None
    level: Level
    type: str
    code: str
    message: str
    package_id: str | None = None
    tracking_pixel_id: str | None = None


def failed_line_count(entries: Iterable[LogEntry]) -> int:
    """Number of distinct lines that have at least one error entry."""
    return len({e.line for e in entries if e.level == "error" and e.line is not None})


# --- messages -------------------------------------------------------------------------------


def _show(value: Any) -> str:
    """A value as JSON text for a message, cut to about 80 characters, addresses left out."""
    if type(value) is float and not math.isfinite(value):
        text = repr(value)
    else:
        try:
            text = orjson.dumps(value).decode()
        except TypeError:
            text = repr(value)
    return _cut(text, len(text) > _SHOW_CHARS)


def _show_bytes(raw: bytes) -> str:
    """The start of a line that could not be read, for its message: invalid UTF-8 and NUL
    (which PostgreSQL cannot store in text) shown as U+FFFD, addresses left out."""
    text: str = without_nul(raw[: _SHOW_CHARS * 4].decode("utf-8", "replace"))
    return _cut(text, len(text) > _SHOW_CHARS or len(raw) > _SHOW_CHARS * 4)


def _cut(text: str, long: bool) -> str:
    """``text`` with its IP addresses shown as <address> (the import's log keeps no raw
    address), then cut to about 80 characters (so an address across the cut is not shown in
    part either)."""
    text = head_without_addresses(text)
    if long or len(text) > _SHOW_CHARS:
        text = text[: _SHOW_CHARS - 1] + "…"
    return text


_JSON_TYPE_NAMES: Final[dict[type, str]] = {
    dict: "an object",
    list: "an array",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    type(None): "null",
}


def _kind(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _error(line: int | None, code: Code, message: str) -> LogEntry:
    # plain str values, not enum members, so any driver or serializer takes them as they are
    return LogEntry(line, "error", LogType.FAILED_TO_DECODE.value, code.value, message)


def _warning(line: int | None, code: Code, message: str) -> LogEntry:
    return LogEntry(line, "warning", code.value, code.value, message)


def _invalid_field(line: int, message: str, entries: list[LogEntry]) -> None:
    """An ``invalid-field`` warning, one per line: a line with several ignored fields gets one
    entry that names them all (the log keeps one entry per line and code, and the import
    counts entries). The line's entries are the last ones made."""
    for index in range(len(entries) - 1, -1, -1):
        entry = entries[index]
        if entry.line != line:
            break
        if entry.code == Code.INVALID_FIELD:
            entries[index] = _warning(line, Code.INVALID_FIELD, f"{entry.message} {message}")
            return
    entries.append(_warning(line, Code.INVALID_FIELD, message))


def _too_long(line: int, max_line_bytes: int) -> LogEntry:
    return _error(
        line,
        Code.LINE_TOO_LONG,
        f"The line is longer than the limit of {max_line_bytes:,} bytes, so it was not read.",
    )


def _bad_utf8(line: int, raw: bytes, exc: UnicodeDecodeError) -> LogEntry:
    bad = raw[exc.start : exc.start + 1].hex()
    return _error(
        line,
        Code.INVALID_UTF8,
        f"The line is not valid UTF-8 text (byte 0x{bad} at position {exc.start}).",
    )


# --- time -------------------------------------------------------------------------------------

_UTC: Final = UTC
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=_UTC)
_ONE_US: Final = timedelta(microseconds=1)
MIN_TIME_US: Final = (datetime(1, 1, 1, tzinfo=_UTC) - _EPOCH) // _ONE_US
# The last day of year 9999 is left out: an export's end date (exclusive) cannot be after it.
MAX_TIME_US: Final = (datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=_UTC) - _EPOCH) // _ONE_US
_FLOAT_LIMIT: Final = 1e20  # beyond any valid timestamp in seconds or milliseconds
_NUMERIC = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_INT_TEXT = re.compile(r"[+-]?\d{1,30}", re.ASCII)
# The ISO 8601 forms datetime.fromisoformat reads that are ISO 8601: a calendar or week date,
# then optionally T (or t, or a space), a time and a zone (Z or an offset of hours and
# minutes). fromisoformat alone took any character between date and time ("2024-06-04X12:00",
# "2024-06-04Z12:00" as a naive time), a bare ".", offsets with seconds, and fractions of a
# minute as fractions of a second ("12:30.5" as 12:30:00.5).
_ISO_DATE = r"\d{4}-\d{2}-\d{2}|\d{8}|\d{4}-W\d{2}(?:-\d)?|\d{4}W\d{2}\d?"
_ISO_TIME = r"\d{2}(?::\d{2}(?::\d{2}(?:[.,]\d+)?)?)?|\d{4}(?:\d{2}(?:[.,]\d+)?)?"
_ISO_ZONE = r"Z|[+-]\d{2}(?::?\d{2})?"
# A space before the zone is git's and Ruby's form ("2024-06-04 12:00:00 +0200").
_ISO = re.compile(rf"(?:{_ISO_DATE})(?:[Tt ](?:{_ISO_TIME})(?: ?(?:{_ISO_ZONE}))?)?", re.ASCII)

# Aware time strings already parsed -> microseconds. Imports are usually sorted by time and
# repeat each second many times, so this answers most lines with one dict lookup. Cleared when
# full (bounded memory, and cheap: a sorted import refills it with the seconds it needs next).
_TIME_CACHE: dict[str, int] = {}
_TIME_CACHE_MAX: Final = 1 << 16
_CACHED_TEXT_MAX: Final = 64  # longer texts are never cached (the caches stay small)


def _number_us(value: int | float) -> int | None:
    """A UNIX timestamp in seconds or milliseconds -> microseconds, None if out of range."""
    if type(value) is int:
        us = value * 1000 if -MS_THRESHOLD < value < MS_THRESHOLD else value
        us *= 1000
    else:
        if not -_FLOAT_LIMIT < value < _FLOAT_LIMIT:  # also NaN and infinities
            return None
        us = (
            round(value * 1_000_000)
            if -MS_THRESHOLD < value < MS_THRESHOLD
            else round(value * 1000)
        )
    return us if MIN_TIME_US <= us <= MAX_TIME_US else None


def _text_us(text: str) -> tuple[int, bool] | None:
    """The general time parser: (microseconds, naive) or None."""
    s = text.strip()
    if not s or not s.isascii():
        return None
    if _NUMERIC.fullmatch(s):
        us = _number_us(int(s)) if _INT_TEXT.fullmatch(s) else _number_us(float(s))
        return None if us is None else (us, False)
    s = _zone_upper(s)
    if _ISO.fullmatch(s) is None:
        return None
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    naive = dt.tzinfo is None
    if naive:
        dt = dt.replace(tzinfo=_UTC)
    us = (dt - _EPOCH) // _ONE_US
    if not MIN_TIME_US <= us <= MAX_TIME_US:
        return None
    return us, naive


def _zone_upper(s: str) -> str:
    """A trailing ``z`` as ``Z`` (fromisoformat and _ISO read only the capital)."""
    return s[:-1] + "Z" if s[-1] == "z" else s


def parse_time(value: Any) -> tuple[int, bool] | None:
    """A ``$time`` value -> (UTC microseconds since the epoch, was_naive), or None if invalid."""
    tv = type(value)
    if tv is str:
        cached = _TIME_CACHE.get(value)
        if cached is not None:
            return cached, False
        parsed = _text_us(value)
        if parsed is not None and not parsed[1] and len(value) <= _CACHED_TEXT_MAX:
            if len(_TIME_CACHE) >= _TIME_CACHE_MAX:
                _TIME_CACHE.clear()
            _TIME_CACHE[value] = parsed[0]
        return parsed
    if tv is int or tv is float:
        us = _number_us(value)
        return None if us is None else (us, False)
    return None  # bool, null, object, array, anything else


def naive_time(line: int, text: str) -> LogEntry:
    """The warning of a line whose ``$time`` (a string) has no time zone."""
    return _warning(line, Code.NAIVE_TIME, naive_time_message(text))


def naive_time_message(text: str | None) -> str:
    """The message of :func:`naive_time`."""
    return f'"$time" value {_show(text)} has no time zone; it was taken as UTC.'


def _time_problem(value: Any, line: int) -> LogEntry:
    if type(value) is str:
        stripped = value.strip()
        if not stripped:
            detail = "is empty"
        elif _looks_iso(stripped) and _LEAP_SECOND.search(stripped):
            detail = "is a leap second (:60), which UNIX time has not: write :59 or the next :00"
        elif _NUMERIC.fullmatch(stripped) or _LONG_YEAR.match(stripped):
            detail = f"is out of range ({_TIME_RANGE})"
        elif _SIGNED_YEAR.match(stripped):
            detail = "has a signed year, which eventport does not read (years 1 to 9999)"
        elif _looks_iso(stripped) and _ISO.fullmatch(_zone_upper(stripped)):
            detail = (
                f"is out of range ({_TIME_RANGE}) or not a real date-time (such as February 30 "
                "or 24:00)"
            )
        elif _looks_iso(stripped):
            detail = (
                "is not an ISO 8601 date-time eventport reads: a date (2024-06-04), then T or "
                "a space, a time (12:00:00, fractions allowed) and a zone (Z, or an offset such "
                "as +02:00)"
            )
        else:
            detail = "is neither an ISO 8601 date-time nor a UNIX timestamp"
    elif type(value) is float and not math.isfinite(value):
        return _error(line, Code.INVALID_TIME, '"$time" value is a number too large to be a time.')
    elif type(value) is int or type(value) is float:
        detail = f"is out of range ({_TIME_RANGE}) as a UNIX timestamp in seconds or milliseconds"
    else:
        detail = f"is {_kind(value)}, not an ISO 8601 date-time string or a UNIX timestamp"
    return _error(line, Code.INVALID_TIME, f'"$time" value {_show(value)} {detail}.')


_LOOKS_ISO = re.compile(r"[+-]?\d{4,}-\d")  # a year (of any length) and a month
_LONG_YEAR = re.compile(r"\d{5,}-\d")  # a year past 9999
_SIGNED_YEAR = re.compile(r"[+-]\d{4,}-\d")
_TIME_RANGE: Final = "0001-01-01 to 9999-12-30 in UTC"
_LEAP_SECOND = re.compile(r"T\d\d:\d\d:60(?!\d)")


def _looks_iso(s: str) -> bool:
    return _LOOKS_ISO.match(s) is not None


# --- fields -----------------------------------------------------------------------------------

KNOWN_FIELDS: Final = frozenset(
    {
        "$time",
        "$unique_id",
        "$package",
        "$tracking_pixel",
        "$pixel",
        "$version",
        "$type",
        "$remote_address",
        "$user_agent",
        "$domain",
        "$referrer",
        "$referer",
        "$headers",
    }
)
# Known fields whose JSON numbers are taken as their text (an id like 3 or a version like 1.5).
_RARE: Final = KNOWN_FIELDS - {
    "$time",
    "$unique_id",
    "$version",
    "$type",
    "$remote_address",
    "$user_agent",
}
_NUMBER_OK: Final = frozenset({"$unique_id", "$package", "$tracking_pixel", "$pixel", "$version"})
_MISSING: Final[Any] = object()


def _number_text(value: int | float) -> str:
    if type(value) is int:
        return str(value)
    return orjson.dumps(value).decode()


def _field(key: str, value: Any, line: int, entries: list[LogEntry]) -> str | None:
    """Slow path of a known string field whose value is not a string."""
    tv = type(value)
    if (tv is int or (tv is float and math.isfinite(value))) and key in _NUMBER_OK:
        return _number_text(value)
    # An address may be written as a number (1357913579 is 80.240.27.235): not repeated.
    shown = "" if key == "$remote_address" else f" ({_show(value)})"
    _invalid_field(
        line, f'"{key}" should be a string but is {_kind(value)}{shown}; it was ignored.', entries
    )
    return None


def _header_text(value: Any) -> str | None:
    """A header's value as text: a string or a number, or a list of them (a header's values,
    as Go's http.Header holds them), joined as HTTP joins a repeated header's."""
    if type(value) is not list:
        return _header_item(value)
    texts = [_header_item(item) for item in value]
    return None if None in texts else ", ".join(texts)  # type: ignore[arg-type]


def _header_item(value: Any) -> str | None:
    tv = type(value)
    if tv is str:
        return value  # type: ignore[no-any-return]
    if tv is bool:  # a header's yes or no, as DNT and Sec-GPC spell them
        return "1" if value else "0"
    if tv is int or (tv is float and math.isfinite(value)):
        return _number_text(value)
    return None


def _headers(value: Any, line: int, entries: list[LogEntry]) -> list[tuple[str, str]] | None:
    """The request's headers, as (name, value) texts. An item that is not a header is left
    out, with a warning naming the first such, and the others are kept: a malformed header
    beside ``DNT: 1`` must not cost the request its wish not to be tracked."""
    out: list[tuple[str, str]] = []
    problems: list[str] = []
    if type(value) is list:
        for item in value:
            if type(item) is not dict:
                problems.append(f"an item is {_kind(item)}, not an object")
                continue
            name = item.get("name")
            text = _header_text(item.get("value"))
            if type(name) is not str or text is None:
                problems.append(f'the item {_show(item)} lacks a string "name" and "value"')
                continue
            out.append((name, text))
    elif type(value) is dict:
        for name, raw in value.items():
            text = _header_text(raw)
            if text is None:
                problems.append(f"the value of header {_show(name)} is {_kind(raw)}")
                continue
            out.append((name, text))
    else:
        problems.append(f"it is {_kind(value)}")
    if problems:
        others = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        kept = "the other headers were kept" if out else "it was ignored"
        _invalid_field(
            line,
            '"$headers" should be an array of {"name": …, "value": …} objects or an object '
            f"of names to values, but {problems[0]}{others}; {kept}.",
            entries,
        )
    return out or None


def _nul_in_unique_id(obj: Any, line: int) -> LogEntry | None:
    """The error of a line whose ``$unique_id`` holds a NUL character. Elsewhere a NUL becomes
    U+FFFD (no store keeps NUL); in an id that made two different ids one."""
    value = obj.get("$unique_id") if type(obj) is dict else None
    if type(value) is not str or "\x00" not in value:
        return None
    return _error(
        line,
        Code.INVALID_UNIQUE_ID,
        f'"$unique_id" holds a NUL character (\\u0000), which no id may: '
        f"{_show(without_nul(value))}.",
    )


def _unique_id(value: Any, line: int, entries: list[LogEntry]) -> str | None:
    tv = type(value)
    if tv is int or (tv is float and math.isfinite(value)):
        value = _number_text(value)
    elif tv is not str:
        entries.append(
            _error(
                line,
                Code.INVALID_UNIQUE_ID,
                f'"$unique_id" must be a string but is {_kind(value)} ({_show(value)}).',
            )
        )
        return None
    if not value:
        entries.append(_error(line, Code.INVALID_UNIQUE_ID, '"$unique_id" is an empty string.'))
        return None
    if len(value) > MAX_UNIQUE_ID_CHARS:
        entries.append(
            _error(
                line,
                Code.INVALID_UNIQUE_ID,
                f'"$unique_id" is {len(value):,} characters long; at most '
                f"{MAX_UNIQUE_ID_CHARS} are allowed ({_show(value)}).",
            )
        )
        return None
    return value  # type: ignore[no-any-return]


# --- custom variables -------------------------------------------------------------------------

_QUOTED: dict[str, str] = {}  # short texts already quoted (repeated values, nested names)
_QUOTED_MAX: Final = 4096
_NAMES: dict[str, str] = {}  # top-level custom variable name -> its quoted "name="
_NAMES_MAX: Final = 4096
_NAMES_SHOWN: Final = 10  # unknown $ fields a warning names (a CSV header may hold thousands)


def _quote(text: str) -> str:
    """``urllib.parse.quote_plus(text, safe="")``, with cheap paths for the common cases."""
    if text.isalnum() and text.isascii():
        return text
    quoted = _QUOTED.get(text)
    if quoted is None:
        quoted = quote_plus(text, safe="")
        if len(text) <= _CACHED_TEXT_MAX:
            if len(_QUOTED) >= _QUOTED_MAX:
                _QUOTED.clear()
            _QUOTED[text] = quoted
    return quoted


def _variable_text(value: Any) -> str | None:
    """A non-object custom variable value as text; None for null (skipped)."""
    tv = type(value)
    if tv is str:
        return value  # type: ignore[no-any-return]
    if value is None:
        return None
    if tv is bool:
        return "true" if value else "false"
    if tv is int:
        return str(value)
    if tv is float:
        return orjson.dumps(value).decode() if math.isfinite(value) else repr(value)
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return str(value)


def _flatten(prefix: str, value: dict[str, Any], parts: list[str], room: int) -> int:
    """Nested objects as ``a.b`` names, depth first in input order (iterative: no recursion
    limit, whatever the nesting depth). ``room``: what the parts may still take, each with
    its ``&``; what is left, negative once they would take more (then it stops: a half-MB
    line of deeply nested names gave each of its leaves the whole path, ~500 MB of text, and
    the server 2.5 GB; a resource hunt)."""
    stack = [(prefix, iter(value.items()))]
    while stack:
        name, items = stack[-1]
        for key, item in items:
            full = f"{name}.{key}"
            if len(full) >= room:  # not even its name fits
                return -1
            if type(item) is dict:
                stack.append((full, iter(item.items())))
                break
            text = _variable_text(item)
            if text is not None:
                part = _quote(full) + "=" + _quote(text)
                room -= len(part) + 1
                if room < 0:
                    return room
                parts.append(part)
        else:
            stack.pop()
    return room


# --- one record -------------------------------------------------------------------------------


def _decode(
    obj: dict[str, Any], line: int, entries: list[LogEntry], long: bool = True
) -> ParsedEvent | None:
    """Decode one object, appending log entries; None when the line has an error. ``long``:
    the record may hold a text of more than :data:`MAX_TEXT_BYTES` (False: its caller knows
    it is too short to, and the texts are not measured).

    Consumes ``obj``: known fields are popped, so what is left are the custom variables (and
    unknown ``$`` fields). Popping costs what ``get`` would, and spares a second pass over
    the known keys.
    """
    pop = obj.pop
    failed = False

    t = pop("$time", _MISSING)
    us = _TIME_CACHE.get(t) if type(t) is str else None
    if us is None:
        if t is _MISSING:
            entries.append(
                _error(line, Code.MISSING_TIME, 'The required field "$time" is missing.')
            )
            failed = True
        else:
            parsed = parse_time(t)
            if parsed is None:
                entries.append(_time_problem(t, line))
                failed = True
            else:
                us = parsed[0]
                if parsed[1]:
                    entries.append(naive_time(line, t))

    uid = pop("$unique_id", None)
    if uid is not None and (type(uid) is not str or not 0 < len(uid) <= MAX_UNIQUE_ID_CHARS):
        uid = _unique_id(uid, line, entries)
        if uid is None:
            failed = True
    version = pop("$version", None)
    if version is not None and type(version) is not str:
        version = _field("$version", version, line, entries)
    type_ = pop("$type", None)
    if type_ is not None and type(type_) is not str:
        type_ = _field("$type", type_, line, entries)
    remote = pop("$remote_address", None)
    if remote is not None and type(remote) is not str:
        remote = _field("$remote_address", remote, line, entries)
    agent = pop("$user_agent", None)
    if agent is not None and type(agent) is not str:
        agent = _field("$user_agent", agent, line, entries)
    if obj and not _RARE.isdisjoint(obj):  # one C-level test spares seven pops
        package = pop("$package", None)
        if package is not None and type(package) is not str:
            package = _field("$package", package, line, entries)
        pixel = pop("$tracking_pixel", None)
        if pixel is not None and type(pixel) is not str:
            pixel = _field("$tracking_pixel", pixel, line, entries)
        alias = pop("$pixel", None)
        if alias is not None and pixel is None:
            pixel = alias if type(alias) is str else _field("$pixel", alias, line, entries)
        domain = pop("$domain", None)
        if domain is not None and type(domain) is not str:
            domain = _field("$domain", domain, line, entries)
        referer = pop("$referrer", None)
        if referer is not None and type(referer) is not str:
            referer = _field("$referrer", referer, line, entries)
        alias = pop("$referer", None)
        if alias is not None and referer is None:
            referer = alias if type(alias) is str else _field("$referer", alias, line, entries)
        headers = pop("$headers", None)
        if headers is not None:
            headers = _headers(headers, line, entries)
    else:
        package = pixel = domain = referer = headers = None

    variables = None
    over = False  # the custom variables take more than MAX_TEXT_BYTES
    if obj:  # custom variables (and unknown $ fields) are what is left
        parts: list[str] = []
        unknown: list[str] | None = None
        room = MAX_TEXT_BYTES + 1  # each part takes its length and an "&" (the first: none)
        for key, value in obj.items():
            name = _NAMES.get(key)
            if name is None:
                if key[:1] == "$":
                    if unknown is None:
                        unknown = [key]
                    else:
                        unknown.append(key)
                    continue
                if over:
                    continue
                name = _quote(key) + "="
                if len(key) <= _CACHED_TEXT_MAX:
                    if len(_NAMES) >= _NAMES_MAX:
                        _NAMES.clear()
                    _NAMES[key] = name
            if over:
                continue
            if type(value) is str:
                part = name + value if value.isalnum() and value.isascii() else name + _quote(value)
            elif type(value) is dict:
                room = _flatten(key, value, parts, room)
                over = room < 0
                continue
            else:
                text = _variable_text(value)
                if text is None:
                    continue
                part = name + _quote(text)
            room -= len(part) + 1
            if room < 0:
                over = True
            else:
                parts.append(part)
        if parts and not over:
            variables = "&".join(parts)
        if unknown is not None:
            names = ", ".join(_show(k) for k in sorted(unknown)[:_NAMES_SHOWN])
            if len(unknown) > _NAMES_SHOWN:
                names += f" and {len(unknown) - _NAMES_SHOWN:,} more"
            entries.append(
                _warning(
                    line,
                    Code.UNKNOWN_FIELD,
                    f"Unknown field{'s' if len(unknown) > 1 else ''} {names} ignored "
                    '(names starting with "$" are reserved for fields eventport knows).',
                )
            )

    if failed or us is None:
        return None
    too_long = None
    if long or over:
        too_long = _text_too_long(
            (
                ("$version", version),
                ("$type", type_),
                ("$remote_address", remote),
                ("$user_agent", agent),
                ("$package", package),
                ("$tracking_pixel", pixel),
                ("$domain", domain),
                ("$referrer", referer),
            ),
            over,
            headers,
        )
    if too_long is not None:
        entries.append(_error(line, Code.TEXT_TOO_LONG, too_long))
        return None
    return ParsedEvent(
        line,
        us,
        uid,
        package,
        pixel,
        version,
        type_,
        remote,
        agent,
        domain,
        referer,
        headers,
        variables,
    )


_KEPT = (
    f"an event keeps texts of up to {MAX_TEXT_BYTES:,} bytes each (UTF-8), so the line was "
    "not imported."
)


def _text_too_long(
    texts: tuple[tuple[str, str | None], ...],
    variables_over: bool,
    headers: list[tuple[str, str]] | None,
) -> str | None:
    """The message for an event's first text of more than :data:`MAX_TEXT_BYTES`, if any:
    a field of ``texts``, the custom variables (``variables_over``: their parts, as stored,
    passed it), ``$headers``."""
    for name, text in texts:
        # A character is at most four bytes: only a long text is measured.
        if text is not None and len(text) > MAX_TEXT_BYTES // 4:
            size = len(text.encode("utf-8", "surrogatepass"))
            if size > MAX_TEXT_BYTES:
                return f'"{name}" takes {size:,} bytes; {_KEPT}'
    if variables_over:
        return (
            f"The custom variables take more than {MAX_TEXT_BYTES:,} bytes as stored "
            f'(name=value pairs joined by "&", nested names written a.b); {_KEPT}'
        )
    # JSON writes a character in at most six bytes (a control character as \u001f), and a
    # pair in eight more.
    bound = 6 * sum(len(n) + len(v) for n, v in headers or ()) + 8 * len(headers or ())
    if headers and bound > MAX_TEXT_BYTES:
        size = len(orjson.dumps(headers))
        if size > MAX_TEXT_BYTES:
            return f'"$headers" takes {size:,} bytes as JSON; {_KEPT}'
    return None


def decode_object(obj: dict[str, Any], line: int) -> tuple[ParsedEvent | None, list[LogEntry]]:
    """The meaning of one record (an NDJSON object, or a CSV row as a dict of strings).

    ``obj`` is not changed.
    """
    entries: list[LogEntry] = []
    return _decode(dict(obj), line, entries), entries


# --- whole chunks -----------------------------------------------------------------------------


def _json_problem(line: int, raw: bytes, exc: orjson.JSONDecodeError) -> LogEntry:
    try:
        raw.decode()
    except UnicodeDecodeError as bad:
        return _bad_utf8(line, raw, bad)
    return _error(
        line,
        Code.INVALID_JSON,
        f"The line is not valid JSON ({exc.msg} at character {exc.pos}): {_show_bytes(raw)}",
    )


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_fallback(raw: bytes, exc: orjson.JSONDecodeError) -> Any:
    """Valid JSON orjson refuses: a number too large for a double (1e400). The standard
    library reads it as infinity, so the field it is in gets its own, clearer message."""
    if "infinity" not in exc.msg:
        return None
    try:
        obj = json.loads(raw, parse_constant=_no_constants)
        json.dumps(obj, ensure_ascii=False).encode()  # refuse lone surrogates, as orjson does
    except (ValueError, RecursionError):  # UnicodeError is a ValueError
        return None
    return obj


# A run of digits longer than any integer orjson reads exactly (it turns those past 64 bits
# into doubles, silently: 12345678901234567890123 became 1.2345678901234568e+22).
_LONG_DIGITS = re.compile(rb"\d{20}|-\d{19}")


def _exact_numbers(raw: bytes, obj: Any) -> Any:
    """``raw`` read again by the standard library, which keeps integers of any size, where
    it may hold one (the digits may as well be in a string: then nothing changes)."""
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        return obj


def decode_ndjson(
    lines: list[tuple[int, bytes | None]], *, max_line_bytes: int = MAX_LINE_BYTES
) -> tuple[list[ParsedEvent], list[LogEntry]]:
    """Decode NDJSON lines: (1-based line number, raw bytes, or None for a line over the limit).

    Blank lines are skipped without an entry. ``max_line_bytes`` only words the message.
    """
    events: list[ParsedEvent] = []
    entries: list[LogEntry] = []
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    append = events.append
    for line, raw in lines:
        if raw is None:
            entries.append(_too_long(line, max_line_bytes))
            continue
        try:
            obj = loads(raw)
        except decode_error as exc:
            if raw.isspace() or not raw:
                continue
            obj = _json_fallback(raw, exc)
            if obj is None:
                entries.append(_json_problem(line, raw, exc))
                continue
        if _LONG_DIGITS.search(raw) is not None:
            obj = _exact_numbers(raw, obj)
        if b"\\u0000" in raw:
            if (nul_id := _nul_in_unique_id(obj, line)) is not None:
                entries.append(nul_id)
                continue
            obj = without_nul(obj)
        if type(obj) is not dict:
            entries.append(
                _error(
                    line,
                    Code.NOT_AN_OBJECT,
                    f"The line is {_kind(obj)} ({_show(obj)}), not a JSON object.",
                )
            )
            continue
        # A text decoded from a line takes at most the line's bytes (headers as pairs: a
        # third more): only a long line's are measured.
        event = _decode(obj, line, entries, len(raw) > MAX_TEXT_BYTES // 2)
        if event is not None:
            append(event)
    return events, entries


_ROW_PROBLEMS: Final = {
    Code.INVALID_UTF8: "The row is not valid UTF-8 text.",
    Code.INVALID_CSV: "The row is not valid CSV (a carriage return outside quotes).",
}


def _span_problem(line: int, problem: SpanProblem, max_line_bytes: int) -> LogEntry:
    lines = f"lines {line} to {problem.last_line}"
    if problem.code == Code.UNCLOSED_QUOTE:
        why = (
            f"The row opens a quoted value that is never closed: the file ends inside it, so "
            f"{lines} were read as one row, and none of them was imported"
        )
    else:
        why = (
            f"A quoted value of this row runs over {lines}, longer together than the limit of "
            f"{max_line_bytes:,} bytes, so none of them was imported"
        )
    return _error(
        line,
        problem.code,
        f"{why}. A stray quote (a value that starts with one, not doubled) opens such a value; "
        'write it as "" inside a quoted value.',
    )


def decode_csv(
    header: list[str],
    rows: list[tuple[int, CsvCells]],
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> tuple[list[ParsedEvent], list[LogEntry]]:
    """Decode CSV rows (line number where the record starts, cells) by the header's names."""
    names = [name.strip() for name in header]
    width = len(names)
    unnamed = [i for i, name in enumerate(names) if not name]
    events: list[ParsedEvent] = []
    entries: list[LogEntry] = []
    for line, cells in rows:
        if isinstance(cells, SpanProblem):
            entries.append(_span_problem(line, cells, max_line_bytes))
            continue
        if not isinstance(cells, list):
            if cells == Code.LINE_TOO_LONG:
                entries.append(_too_long(line, max_line_bytes))
            else:
                problem = _ROW_PROBLEMS.get(cells, "The row could not be read.")
                entries.append(_error(line, cells, problem))
            continue
        if any("\x00" in cell for cell in cells):
            named = dict(zip(names, cells, strict=False))
            if (nul_id := _nul_in_unique_id(named, line)) is not None:
                entries.append(nul_id)
                continue
            cells = without_nul(cells)
        obj: dict[str, Any] = {name: cell for name, cell in zip(names, cells, strict=False) if cell}
        when = obj.get("$time")
        if (when is None or when.isspace()) and all(not c or c.isspace() for c in cells):
            continue  # blank row
        extra = [cell for cell in cells[width:] if cell]
        if unnamed:
            obj.pop("", None)
            extra.extend(cells[i] for i in unnamed if i < len(cells) and cells[i])
        if extra:
            entries.append(
                _warning(
                    line,
                    Code.EXTRA_CELLS,
                    f"{len(extra)} cell{'s' if len(extra) > 1 else ''} without a column name "
                    f"({', '.join(_show(c) for c in extra[:3])}"
                    f"{', …' if len(extra) > 3 else ''}) ignored.",
                )
            )
        text = obj.get("$headers")
        if text is not None:
            try:
                decoded = orjson.loads(text)
            except orjson.JSONDecodeError:
                pass
            else:
                if type(decoded) is list or type(decoded) is dict:
                    obj["$headers"] = decoded
        # A cell's characters take at most four bytes each: only a row with long cells is
        # measured.
        long = max(map(len, cells), default=0) > MAX_TEXT_BYTES // 8
        event = _decode(obj, line, entries, long)
        if event is not None:
            events.append(event)
    return events, entries
