"""Event rows as CSV, in Scarf's v1 and v2 column layouts, from the store's Arrow record batches.

Pure functions: record batches in, bytes out, one chunk per batch, so an export of any size is
written without holding more than one batch. Every value is converted column by column with
``pyarrow.compute`` and each batch is written by ``pyarrow.csv``:

* times are ISO 8601 in UTC, ``2024-06-04T00:00:00Z``, with ``.ffffff`` only when the time has
  microseconds;
* booleans are ``true``/``false``; an unknown value (NULL) is an empty field, while an empty
  text is ``""``; every text value is quoted (Arrow's ``needed`` style), header names are not;
* a text value that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a
  leading ``'``, so that a spreadsheet opening the file shows it instead of evaluating it as a
  formula (OWASP's advice against CSV injection). This applies to every text column, the v1
  package name included (so a scoped npm name reads ``'@scope/name``), unless the layout says
  otherwise (``escape_formulas``: EVENTPORT_CSV_ESCAPE_FORMULAS, for files programs read).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv


@dataclass(frozen=True)
class CsvColumn:
    """One column of the file: its header, and the event column its values come from."""

    header: str
    source: str
    #: v1: the package's name instead of its id (``source`` is then ``package_id``).
    package_name: bool = False


def _same(*names: str) -> tuple[CsvColumn, ...]:
    return tuple(CsvColumn(name, name) for name in names)


#: Scarf's v2 order, which its open-source PostgreSQL exporter copies by position.
V2_COLUMNS: Final[tuple[CsvColumn, ...]] = (
    *_same("id", "type"),
    CsvColumn("package", "package_id"),
    CsvColumn("pixel", "pixel_id"),
    *_same(
        "version",
        "time",
        "referer",
        "user_agent",
        "platform",
        "variables",
        "origin_id",
        "origin_latitude",
        "origin_longitude",
        "origin_country",
        "origin_city",
        "origin_postal",
        "origin_connection_type",
        "origin_company",
        "origin_domain",
        "dnt",
        "confidence",
        "endpoint_id",
        "origin_state",
        "mtc_quota_exceeded",
    ),
)
#: eventport's own columns, appended to the v2 file on request (``extra_columns=true``).
V2_EXTRA_COLUMNS: Final[tuple[CsvColumn, ...]] = _same(
    "client",
    "client_version",
    "client_runtime",
    "ci",
    "cloud_provider_name",
    "cloud_provider_domain",
    "excluded",
    "import_id",
    "remote_address",  # empty unless EVENTPORT_KEEP_IP_ADDRESSES kept it
)
#: The v1 file: the columns Scarf's v1 documentation lists, in its order; then the v2 columns
#: it lacks, in v2 order; then eventport's own.
V1_COLUMNS: Final[tuple[CsvColumn, ...]] = (
    CsvColumn("type", "type"),
    CsvColumn("package", "package_id", package_name=True),
    *_same(
        "version",
        "time",
        "referer",
        "user_agent",
        "variables",
        "origin_id",
        "origin_latitude",
        "origin_longitude",
        "origin_country",
        "origin_city",
        "origin_postal",
        "origin_company",
        "origin_domain",
        "origin_connection_type",
        "id",
    ),
    CsvColumn("pixel", "pixel_id"),
    *_same(
        "platform",
        "dnt",
        "confidence",
        "endpoint_id",
        "origin_state",
        "mtc_quota_exceeded",
        "client",
        "client_version",
    ),
    CsvColumn("cloud_provider", "cloud_provider_name"),
    CsvColumn("import_id", "import_id"),
)

_FORMULA_START = r"^([=+\-@\t\r])"
_WHOLE_SECONDS = r"\.000000$"


@dataclass(frozen=True)
class CsvLayout:
    columns: tuple[CsvColumn, ...]
    escape_formulas: bool = True

    @property
    def headers(self) -> tuple[str, ...]:
        return tuple(c.header for c in self.columns)

    @property
    def sources(self) -> tuple[str, ...]:
        """The event columns to ask the store for, each once."""
        return tuple(dict.fromkeys(c.source for c in self.columns))

    @property
    def header_line(self) -> bytes:
        return (",".join(self.headers) + "\n").encode()


def v2_layout(*, extra_columns: bool = False, escape_formulas: bool = True) -> CsvLayout:
    return CsvLayout(
        V2_COLUMNS + V2_EXTRA_COLUMNS if extra_columns else V2_COLUMNS, escape_formulas
    )


def v1_layout(*, escape_formulas: bool = True) -> CsvLayout:
    return CsvLayout(V1_COLUMNS, escape_formulas)


V1_LAYOUT: Final = v1_layout()


def csv_chunks(
    batches: Iterable[pa.RecordBatch],
    layout: CsvLayout,
    package_names: Mapping[str, str] | None = None,
) -> Iterator[bytes]:
    """The header line, then one chunk of CSV lines per non-empty batch.

    ``package_names`` maps package ids to names, for a layout with a package-name column, and
    the ids of pixels attached to a package to that package's name (an event of such a pixel
    is its package's); an id it does not know gives an empty field.
    """
    yield layout.header_line
    yield from csv_lines(batches, layout, package_names)


def csv_lines(
    batches: Iterable[pa.RecordBatch],
    layout: CsvLayout,
    package_names: Mapping[str, str] | None = None,
) -> Iterator[bytes]:
    """One chunk of CSV lines (no header) per non-empty batch: the export of a store that does
    not write CSV itself, and the reference that one that does must match byte for byte."""
    for batch in batches:
        if batch.num_rows:
            yield encode_batch(batch, layout, package_names)


def encode_batch(
    batch: pa.RecordBatch,
    layout: CsvLayout,
    package_names: Mapping[str, str] | None = None,
) -> bytes:
    """The batch's rows as CSV lines (no header), in the layout's columns."""
    arrays = []
    for column in layout.columns:
        values = batch.column(column.source)
        if column.package_name:  # the event's package, else its pixel's
            values = names_of(values, package_names or {})
            if "pixel_id" in batch.schema.names:
                values = pc.coalesce(
                    values, names_of(batch.column("pixel_id"), package_names or {})
                )
        arrays.append(csv_values(values, escape=layout.escape_formulas))
    table = pa.RecordBatch.from_arrays(arrays, names=list(layout.headers))
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(table, sink, pa_csv.WriteOptions(include_header=False))
    data: bytes = sink.getvalue().to_pybytes()
    return data


def csv_values(values: Any, *, escape: bool = True) -> Any:
    """One column made ready for writing: times formatted, text escaped (with ``escape``), the
    rest as is."""
    kind = values.type
    if pa.types.is_timestamp(kind):
        return iso_times(values)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        texts = values.cast(pa.string())
        return escape_formulas(texts) if escape else texts
    return values


def iso_times(values: Any) -> Any:
    """Timestamps as ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` in UTC (a naive one is taken as UTC)."""
    utc = values.cast(pa.timestamp("us", tz="UTC"))
    text = pc.strftime(utc, format="%Y-%m-%dT%H:%M:%S")  # seconds with .ffffff, at "us"
    text = pc.replace_substring_regex(text, pattern=_WHOLE_SECONDS, replacement="")
    return pc.binary_join_element_wise(text, "Z", "")


def escape_formulas(values: Any) -> Any:
    """Prefix ``'`` to text that a spreadsheet would read as a formula."""
    return pc.replace_substring_regex(values, pattern=_FORMULA_START, replacement=r"'\1")


def names_of(package_ids: Any, names: Mapping[str, str]) -> Any:
    """Each package id's name (NULL where unknown)."""
    ids = pa.array(list(names), pa.string())
    known = pa.array(list(names.values()), pa.string())
    return pc.take(known, pc.index_in(package_ids.cast(pa.string()), value_set=ids))
