"""CSV lines written by DuckDB itself: a :class:`~eventport.export.csv.CsvLayout` as one SQL
expression per event, byte for byte what :func:`eventport.export.csv.encode_batch` (pyarrow's
CSV writer) writes for the same values.

Why: pyarrow's writer, fed record batches from Python, tops out near 540,000 rows/s on this
project's 2-core machine before any formatting (times, formula escaping) is done; building each
line inside the query that reads the events keeps the work vectorized in DuckDB, and the lines
leave it as one Arrow string array whose data buffer already *is* the CSV text (every line ends
with its newline), so Python only hands buffers on.

The rules, those of pyarrow's writer with eventport's formatting (see :mod:`eventport.export.csv`):

* text is quoted, a ``"`` inside doubled; NULL is an empty field, an empty text ``""``; a text
  that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``;
* times are ``"YYYY-MM-DDTHH:MM:SS[.ffffff]Z"`` in UTC (quoted: pyarrow writes them as text);
* booleans are ``true``/``false``; integers are plain decimals;
* doubles are written as Arrow writes them: the shortest text that reads back as the same double
  (the digits DuckDB's own cast gives too), in decimal notation when the decimal exponent is
  from -6 to 9 and otherwise as ``d.ddde+XX``/``d.ddde-X``, without a trailing ``.0``; ``nan``,
  ``inf``, ``-inf``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from eventport.events.schema import ColumnType

#: SQL expressions whose texts, one after the other, make a field (a NULL one adds nothing).
Pieces = tuple[str, ...]

#: The columns of a window's rows: the sort keys and the line.
SORT_TIME: Final = "sort_time"
SORT_ID: Final = "sort_id"
LINE: Final = "line"

#: The code points of the first characters that make a spreadsheet read a cell as a formula:
#: ``=``, ``+``, ``-``, ``@``, tab, carriage return. (``ascii`` gives the first code point, 0 for
#: an empty text; several times cheaper than comparing ``left(value, 1)``.)
_FORMULA_START: Final = "(61, 43, 45, 64, 9, 13)"


# Each field is a few pieces of the line's one ``concat``, which skips NULL pieces: a text's
# opening quote, its value and its closing quote are three pieces, not a string made first of
# its own (half the time on a 32-character id), and a NULL value is no piece at all.


def text_field(value: str, escape: bool = True) -> Pieces:
    """A text value: quoted, quotes doubled, formula starts escaped (with ``escape``); NULL is
    empty. ``replace`` copies every string it is given, so only the strings that hold a quote
    go through it."""
    escaped = f"WHEN ascii({value}) IN {_FORMULA_START} THEN '\"''' " if escape else ""
    return (
        f"CASE WHEN {value} IS NULL THEN '' {escaped}ELSE '\"' END",
        f"CASE WHEN contains({value}, '\"') THEN replace({value}, '\"', '\"\"') ELSE {value} END",
        f"CASE WHEN {value} IS NULL THEN '' ELSE '\"' END",
    )


def time_field(value: str) -> Pieces:
    """A timestamp as quoted ISO 8601 in UTC, with microseconds only when it has some."""
    micros = f"epoch_us(CAST({value} AS TIMESTAMPTZ))"
    wall = f"make_timestamp({micros})"  # the UTC wall clock, whatever the session's zone
    return (
        f"CASE WHEN {micros} % 1000000 = 0 THEN strftime({wall}, '\"%Y-%m-%dT%H:%M:%SZ\"') "
        f"ELSE strftime({wall}, '\"%Y-%m-%dT%H:%M:%S.%fZ\"') END",
    )


def boolean_field(value: str) -> Pieces:
    return (f"CASE WHEN {value} THEN 'true' WHEN NOT {value} THEN 'false' END",)


def integer_field(value: str) -> Pieces:
    return (f"CAST({value} AS VARCHAR)",)


def double_field(value: str) -> Pieces:
    """A double as Arrow writes it (see the module docstring), from DuckDB's cast, which
    gives the same shortest digits but lays them out as Python's ``repr`` does: decimal for
    decimal exponents -4 to 15, else ``d.ddde±XX`` with at least two exponent digits.

    So: from 1e-4 to 1e10 both write decimals (DuckDB with ``.0`` on whole numbers); from 1e16
    and below 1e-6 both write exponents (DuckDB's padded: ``e-07``); below 1e-4 Arrow writes
    the decimals of DuckDB's ``d.ddde-0X``; from 1e10 the exponent of DuckDB's decimals.
    Comparing with ``1e-4`` and the like picks the right branch: a double's shortest text is
    below ``10^k`` exactly when the double is below the double nearest ``10^k``.
    """
    x = f"CAST({value} AS DOUBLE)"
    text = f"CAST(abs({x}) AS VARCHAR)"
    sign = f"CASE WHEN {x} < 0 THEN '-' ELSE '' END"
    small = (  # 1e-6 <= |x| < 1e-4: DuckDB "1.5e-05", Arrow "0.000015"
        f"concat({sign}, CASE WHEN abs({x}) < 1e-5 THEN '0.00000' ELSE '0.0000' END, "
        f"replace(split_part({text}, 'e', 1), '.', ''))"
    )
    digits = f"rtrim(replace({text}, '.', ''), '0')"
    large = (  # 1e10 <= |x| < 1e16: DuckDB "12345678901.5", Arrow "1.23456789015e+10"
        f"concat({sign}, {digits}[1], CASE WHEN length({digits}) > 1 "
        f"THEN concat('.', {digits}[2:]) ELSE '' END, 'e+', "
        f"CAST(strpos({text}, '.') - 2 AS VARCHAR))"
    )
    return (
        f"CASE WHEN {x} IS NULL THEN '' "
        f"WHEN {x} = 0 THEN CASE WHEN signbit({x}) THEN '-0' ELSE '0' END "
        f"WHEN abs({x}) >= 1e-4 AND abs({x}) < 1e10 THEN CASE WHEN {x} = trunc({x}) "
        f"THEN CAST(CAST({x} AS BIGINT) AS VARCHAR) ELSE CAST({x} AS VARCHAR) END "
        f"WHEN isnan({x}) THEN 'nan' "  # DuckDB writes a NaN with its sign bit set as -nan
        f"WHEN abs({x}) >= 1e16 OR abs({x}) < 1e-6 THEN replace(CAST({x} AS VARCHAR), 'e-0', 'e-') "
        f"WHEN abs({x}) < 1e-4 THEN {small} "
        f"ELSE {large} END",
    )


FIELDS: Final[dict[ColumnType, Callable[[str], Pieces]]] = {
    "text": text_field,
    "timestamp": time_field,
    "boolean": boolean_field,
    "bigint": integer_field,
    "integer": integer_field,
    "double": double_field,
}


def fields_sql(fields: Iterable[Pieces], *, line: bool = False) -> str:
    """The expression of fields separated by commas, ended by a newline for a whole ``line``."""
    pieces: list[str] = []
    for field in fields:
        if pieces:
            pieces.append("','")
        pieces.extend(field)
    if line:
        pieces.append("chr(10)")
    return f"concat({', '.join(pieces)})"


def sorted_lines(table: pa.Table) -> pa.Array:
    """The :data:`LINE` column of a window's rows, ordered by time then id (ids by their
    bytes, as DuckDB's ORDER BY has them), as one contiguous string array."""
    table = table.combine_chunks()
    lines = table.column(LINE).chunk(0) if table.num_rows else pa.array([], pa.string())
    if not pa.types.is_string(lines.type):  # a large or view string type: made plain once
        lines = lines.cast(pa.string())
    if in_order(table.column(SORT_TIME).chunk(0), table.column(SORT_ID).chunk(0)):
        return lines  # events imported in time order: the scan's order is the export's
    order = pc.sort_indices(table, [(SORT_TIME, "ascending"), (SORT_ID, "ascending")])
    return lines.take(order)


def in_order(times: pa.Array, ids: pa.Array) -> bool:
    """Whether the rows are ordered by time, then id (several times cheaper than sorting)."""
    if len(times) < 2:
        return True
    earlier, later = times.slice(0, len(times) - 1), times.slice(1)
    if not pc.all(pc.less_equal(earlier, later)).as_py():
        return False
    ties = pc.equal(earlier, later)
    if not pc.any(ties).as_py():
        return True
    first, second = ids.slice(0, len(ids) - 1), ids.slice(1)
    return bool(pc.all(pc.or_kleene(pc.invert(ties), pc.less(first, second))).as_py())


def chunks_of(lines: pa.Array, rows: int) -> Iterator[bytes]:
    """The text of ``lines``, ``rows`` lines at a time."""
    for start in range(0, len(lines), rows):
        yield text_of(lines.slice(start, rows))


def text_of(lines: pa.Array) -> bytes:
    """The text of consecutive lines: the stretch of the array's data buffer they cover (each
    line carries its own newline, so that stretch is the CSV text as it is)."""
    if not pa.types.is_string(lines.type):
        lines = lines.cast(pa.string())
    if len(lines) == 0:
        return b""
    offsets, data = lines.buffers()[1], lines.buffers()[2]
    (first,) = struct.unpack_from("<i", offsets, 4 * lines.offset)
    (last,) = struct.unpack_from("<i", offsets, 4 * (lines.offset + len(lines)))
    return data[first:last].to_pybytes()  # type: ignore[no-any-return]
