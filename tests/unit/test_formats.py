"""Streaming readers over spooled uploads: formats.py (NDJSON, CSV, gzip, resume, limits)."""

from __future__ import annotations

import csv
import gzip
import io
import random
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import pytest

from eventport.imports.formats import (
    Chunk,
    InputUnusable,
    check_gzip,
    iter_chunks,
    refuse_pretty_json,
)
from eventport.imports.records import Code, CsvCells, SpanProblem

BOM = b"\xef\xbb\xbf"


@pytest.fixture(autouse=True, params=["streamed", "mapped"])
def reading(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test reads its plain NDJSON files both ways: streamed in blocks, and through a
    memory mapping (what the import worker does; gzip and CSV are always streamed)."""
    if request.param == "mapped":
        defaults = iter_chunks.__kwdefaults__
        assert defaults is not None
        monkeypatch.setitem(defaults, "mapped", True)
    return str(request.param)


def write(tmp_path: Path, data: bytes, *, packed: bool, name: str = "upload") -> Path:
    path = tmp_path / (name + (".gz" if packed else ""))
    path.write_bytes(gzip.compress(data) if packed else data)
    return path


def chunks(path: Path, **kw: Any) -> list[Chunk]:
    kw.setdefault("gzip", path.suffix == ".gz")
    kw.setdefault("fmt", "ndjson")
    return list(iter_chunks(path, **kw))


def ndjson_lines(path: Path, **kw: Any) -> list[tuple[int, bytes | None]]:
    return [line for c in chunks(path, **kw) for line in c.lines]


def csv_rows(path: Path, **kw: Any) -> list[tuple[int, CsvCells]]:
    return [row for c in chunks(path, fmt="csv", **kw) for row in c.rows]


both = pytest.mark.parametrize("packed", [False, True], ids=["plain", "gzip"])
blocks = pytest.mark.parametrize("block_size", [1, 2, 5, 64, 1 << 20], ids=lambda b: f"block{b}")

# --- NDJSON ---------------------------------------------------------------------------------------

NDJSON_CASES = [
    pytest.param(b"", [], id="empty-file"),
    pytest.param(b"\n", [(1, b"")], id="one-newline"),
    pytest.param(b"\n\n \n", [(1, b""), (2, b""), (3, b" ")], id="only-blank-lines"),
    pytest.param(b"a\nb\n", [(1, b"a"), (2, b"b")], id="lf"),
    pytest.param(b"a\nb", [(1, b"a"), (2, b"b")], id="last-line-without-newline"),
    pytest.param(b"a\r\nb\r\n", [(1, b"a\r"), (2, b"b\r")], id="crlf-keeps-cr"),
    pytest.param(b"a\rb\n", [(1, b"a\rb")], id="lone-cr-is-not-a-newline"),
    pytest.param(BOM + b"a\nb\n", [(1, b"a"), (2, b"b")], id="bom-skipped"),
    pytest.param(BOM, [], id="bom-only"),
    pytest.param(BOM + b"\n", [(1, b"")], id="bom-then-newline"),
    pytest.param(b"a\n" + BOM + b"b\n", [(1, b"a"), (2, BOM + b"b")], id="bom-mid-file-kept"),
    pytest.param(b"\xff\xfe\n\x00\n", [(1, b"\xff\xfe"), (2, b"\x00")], id="bytes-as-they-are"),
    pytest.param(
        b"short\n" + b"x" * 11 + b"\nok",
        [(1, b"short"), (2, None), (3, b"ok")],
        id="too-long-line",
    ),
    pytest.param(b"x" * 10 + b"\n", [(1, b"x" * 10)], id="exactly-the-limit"),
    pytest.param(b"x" * 11 + b"\r\n", [(1, None)], id="over-the-limit-by-the-cr"),
    pytest.param(b"ok\n" + b"y" * 100, [(1, b"ok"), (2, None)], id="too-long-last-line"),
    pytest.param(
        b"y" * 30 + b"\n" + b"z" * 30 + b"\n\n",
        [(1, None), (2, None), (3, b"")],
        id="two-too-long-lines",
    ),
]


@both
@blocks
@pytest.mark.parametrize(("data", "expected"), NDJSON_CASES)
def test_ndjson_lines(
    tmp_path: Path,
    data: bytes,
    expected: list[tuple[int, bytes | None]],
    packed: bool,
    block_size: int,
) -> None:
    path = write(tmp_path, data, packed=packed)
    assert ndjson_lines(path, max_line_bytes=10, block_size=block_size) == expected


@pytest.mark.parametrize("chunk_lines", [1, 2, 3, 7, 50_000])
def test_ndjson_chunk_sizes_and_offsets(tmp_path: Path, chunk_lines: int) -> None:
    data = BOM + b"".join(b'{"n":%d}\r\n' % i for i in range(20)) + b"\n" + b"x" * 40 + b"\nlast"
    path = write(tmp_path, data, packed=False)
    got = chunks(path, chunk_lines=chunk_lines, max_line_bytes=20, block_size=16)
    sizes = [len(c.lines) for c in got]
    assert all(s == chunk_lines for s in sizes[:-1])
    assert 1 <= sizes[-1] <= chunk_lines
    assert sum(sizes) == 23
    for c in got:
        # each chunk ends just after a newline, or at the end of the file
        assert c.next_offset == len(data) or data[c.next_offset - 1 : c.next_offset] == b"\n"
        assert c.next_line == c.lines[-1][0] + 1
        assert c.header == []
        assert c.rows == []
    assert got[-1].next_offset == len(data)
    assert got[-1].next_line == 24
    sources = [c.source_offset for c in got]
    assert sources == sorted(sources)
    assert sources[-1] == len(data)


def test_ndjson_offsets_count_the_bom(tmp_path: Path) -> None:
    path = write(tmp_path, BOM + b"a\nb\n", packed=False)
    first, second = chunks(path, chunk_lines=1)
    assert (first.next_line, first.next_offset) == (2, 5)
    assert (second.next_line, second.next_offset) == (3, 7)


def test_ndjson_huge_line_is_never_held(tmp_path: Path) -> None:
    """A 8 MiB line with a 64 KiB limit: skipped as None while memory stays near the limit."""
    path = tmp_path / "big.ndjson"
    with path.open("wb") as f:
        f.write(b'{"a":1}\n')
        for _ in range(128):
            f.write(b"q" * (1 << 16))
        f.write(b'\n{"b":2}\n')
    tracemalloc.start()
    try:
        got = ndjson_lines(path, max_line_bytes=1 << 16, block_size=1 << 16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == [(1, b'{"a":1}'), (2, None), (3, b'{"b":2}')]
    assert peak < 1 << 20  # the line is 8 MiB


def test_csv_huge_record_is_never_held(tmp_path: Path) -> None:
    """An 8 MiB quoted field over many lines (quotes inside too): one too-long record."""
    path = tmp_path / "big.csv"
    with path.open("wb") as f:
        f.write(b'$time,a\n1,"')
        for _ in range(128):
            f.write((b'q""' + b"q" * 1000 + b"\n") * 64)
        f.write(b'"\n2,b\n')
    tracemalloc.start()
    try:
        got = csv_rows(path, max_line_bytes=1 << 16, block_size=1 << 16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == [
        (2, SpanProblem(Code.LINE_TOO_LONG, 2 + 128 * 64)),
        (2 + 128 * 64 + 1, ["2", "b"]),
    ]
    assert peak < 1 << 20


def test_big_file_memory_is_bounded(tmp_path: Path) -> None:
    """Many lines: what is held at once is about a chunk, not the file."""
    path = tmp_path / "many.ndjson"
    line = b'{"$time":"2024-06-04T00:00:00Z","pad":"' + b"p" * 200 + b'"}\n'
    with path.open("wb") as f:
        for _ in range(40):
            f.write(line * 1000)  # 40,000 lines, ~10 MiB
    tracemalloc.start()
    try:
        total = 0
        for c in iter_chunks(path, gzip=False, fmt="ndjson", chunk_lines=1000, block_size=1 << 16):
            total += len(c.lines)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 40_000
    assert peak < 2 << 20


# --- gzip -----------------------------------------------------------------------------------------


def test_gzip_multi_member_and_padding(tmp_path: Path) -> None:
    data = gzip.compress(b"a\nb") + gzip.compress(b"c\n") + b"\x00" * 1000 + gzip.compress(b"d")
    path = tmp_path / "multi.gz"
    path.write_bytes(data + b"\x00" * 10)
    assert ndjson_lines(path, gzip=True, block_size=3) == [(1, b"a"), (2, b"bc"), (3, b"d")]


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        pytest.param(lambda z: z[:-4], "truncated", id="cut-in-trailer"),
        pytest.param(lambda z: z[: len(z) // 2], "truncated", id="cut-in-half"),
        pytest.param(lambda z: z[:10], "truncated", id="header-only"),
        pytest.param(
            lambda z: z[:-8] + bytes(b ^ 0xFF for b in z[-8:-4]) + z[-4:], "corrupt", id="bad-crc"
        ),
        pytest.param(lambda z: z[:-4] + b"\x00\x00\x00\x00", "corrupt", id="bad-length"),
        pytest.param(lambda z: z[:40] + b"\xff" * 40 + z[80:], "corrupt", id="garbage-inside"),
        pytest.param(lambda z: z + b"trailing junk", "corrupt", id="junk-after-member"),
        pytest.param(lambda z: b"not gzip at all\n", "not a gzip", id="plain-text"),
        pytest.param(lambda z: b"", "empty", id="empty-file"),
    ],
)
def test_gzip_unusable(tmp_path: Path, mangle: Any, reason: str) -> None:
    rng = random.Random(7)
    payload = b"".join(b'{"n":%d,"r":%d}\n' % (i, rng.randrange(10**9)) for i in range(5000))
    path = tmp_path / "bad.gz"
    path.write_bytes(mangle(gzip.compress(payload)))
    with pytest.raises(InputUnusable) as caught:
        chunks(path, gzip=True, chunk_lines=100)
    assert reason in caught.value.reason
    assert str(caught.value) == caught.value.reason


def test_gzip_corrupt_tail_after_good_chunks(tmp_path: Path) -> None:
    """The chunks before the damage are handed out, then the whole input is declared unusable."""
    payload = b"".join(b'{"n":%d}\n' % i for i in range(200_000))
    packed = gzip.compress(payload)
    path = tmp_path / "tail.gz"
    path.write_bytes(packed[: len(packed) - 100])
    seen: list[tuple[int, bytes | None]] = []

    def read_all() -> None:
        for c in iter_chunks(path, gzip=True, fmt="ndjson", chunk_lines=1000, block_size=1 << 14):
            seen.extend(c.lines)

    with pytest.raises(InputUnusable, match="truncated"):
        read_all()
    assert seen
    assert seen == [(i + 1, b'{"n":%d}' % i) for i in range(len(seen))]


def bomb(path: Path, zeros: int) -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\x00" * (1 << 20)
    with path.open("wb") as f:
        for _ in range(zeros >> 20):
            f.write(packer.compress(block))
        f.write(packer.flush())


def test_gzip_bomb(tmp_path: Path) -> None:
    path = tmp_path / "bomb.gz"
    bomb(path, 200 << 20)  # 200 MiB of zeros in ~200 KiB
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(InputUnusable) as caught:
            chunks(path, gzip=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "100:1" in caught.value.reason
    assert "bomb" in caught.value.reason
    assert peak < 16 << 20  # stopped early, not after inflating 200 MiB


def test_check_gzip_reads_the_whole_stream_in_bounded_memory(tmp_path: Path) -> None:
    """check_gzip finds what a read would find at the end (before any chunk is imported),
    holds little while it reads, and stops when asked."""
    path = tmp_path / "bomb.gz"
    bomb(path, 200 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(InputUnusable, match="bomb"):
            check_gzip(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20
    lines = b"".join(
        b'{"n":%d,"r":"%s"}\n' % (n, random.randbytes(200).hex().encode()) for n in range(20_000)
    )
    whole = gzip.compress(lines)
    good = tmp_path / "good.gz"
    good.write_bytes(whole + gzip.compress(b'{"n":-1}\n') + b"\x00" * 64)  # members, padding
    assert check_gzip(good) is True
    asked: list[int] = []
    assert check_gzip(good, stopped=lambda: not asked.append(1)) is False
    assert len(asked) == 1
    for broken, reason in ((whole[:-8], "truncated"), (whole + b"junk", "not gzip")):
        bad = tmp_path / "bad.gz"
        bad.write_bytes(broken)
        with pytest.raises(InputUnusable, match=reason):
            check_gzip(bad)


def test_gzip_bomb_threshold_is_a_parameter(tmp_path: Path) -> None:
    path = tmp_path / "small-bomb.gz"
    bomb(path, 4 << 20)
    with pytest.raises(InputUnusable, match="10:1"):
        chunks(path, gzip=True, max_ratio=10, ratio_grace_bytes=1 << 16, block_size=1 << 16)


def test_gzip_tiny_but_very_compressible_is_fine(tmp_path: Path) -> None:
    """Under the 1 MiB grace the ratio is not judged: 500 KiB of one repeated line is fine."""
    data = b'{"$time":"2024-06-04T00:00:00Z"}\n' * 15_000
    path = write(tmp_path, data, packed=True)
    assert path.stat().st_size * 100 < len(data)  # its ratio is over 100:1
    assert len(ndjson_lines(path)) == 15_000


def test_gzip_ordinary_ratio_is_fine(tmp_path: Path) -> None:
    rng = random.Random(1)
    data = b"".join(b'{"id":"%032x"}\n' % rng.getrandbits(128) for _ in range(60_000))
    path = write(tmp_path, data, packed=True)
    assert len(data) > 2 << 20
    got = chunks(path, chunk_lines=10_000)
    assert sum(len(c.lines) for c in got) == 60_000
    assert got[-1].source_offset == path.stat().st_size


# --- CSV ------------------------------------------------------------------------------------------

CSV_CASES = [
    pytest.param(b"", None, [], id="empty-file"),
    pytest.param(b"\n\n", None, [], id="only-blank-lines"),
    pytest.param(b"$time,tag\n", ["$time", "tag"], [], id="header-only"),
    pytest.param(
        b"$time,tag\n1,a\n2,b",
        ["$time", "tag"],
        [(2, ["1", "a"]), (3, ["2", "b"])],
        id="last-line-without-newline",
    ),
    pytest.param(
        BOM + b"$time,tag\r\n1,a\r\n2,b\r\n",
        ["$time", "tag"],
        [(2, ["1", "a"]), (3, ["2", "b"])],
        id="bom-and-crlf",
    ),
    pytest.param(
        b"\n\n$time,tag\n1,a\n",
        ["$time", "tag"],
        [(4, ["1", "a"])],
        id="blank-lines-before-header",
    ),
    pytest.param(
        b'$time,ua\n1,"multi\nline\r\nvalue"\n2,"x"\n',
        ["$time", "ua"],
        [(2, ["1", "multi\nline\r\nvalue"]), (5, ["2", "x"])],
        id="multiline-record",
    ),
    pytest.param(
        b'$time,ua\n1,"pip/24.0 {""ci"":null,\n""cpu"":""x86""}"\n2,b\n',
        ["$time", "ua"],
        [(2, ["1", 'pip/24.0 {"ci":null,\n"cpu":"x86"}']), (4, ["2", "b"])],
        id="doubled-quotes-across-lines",
    ),
    pytest.param(
        b'$time,a\n1,ab"c\n2,d\n',
        ["$time", "a"],
        [(2, ["1", 'ab"c']), (3, ["2", "d"])],
        id="quote-mid-field-is-literal",
    ),
    pytest.param(
        b'$time,a\n1,"ab"c\n2,d\n',
        ["$time", "a"],
        [(2, ["1", "abc"]), (3, ["2", "d"])],
        id="text-after-closing-quote",
    ),
    # A quote still open at the end of the file: its record is an error naming the lines it
    # took (before, they went into its value, with no word).
    pytest.param(
        b'$time,a\n1,"open\n2,d\n',
        ["$time", "a"],
        [(2, SpanProblem(Code.UNCLOSED_QUOTE, 3))],
        id="unclosed-quote-runs-to-the-end",
    ),
    pytest.param(
        b'$time,a\n1,"open\n2,d\n3,e"\n4,"last',
        ["$time", "a"],
        [(2, ["1", "open\n2,d\n3,e"]), (5, SpanProblem(Code.UNCLOSED_QUOTE, 5))],
        id="unclosed-quote-on-the-last-line-without-newline",
    ),
    pytest.param(
        b'$time,a\n1,"' + b"x" * 70 + b"\n2,b\n",
        ["$time", "a"],
        [(2, SpanProblem(Code.UNCLOSED_QUOTE, 3))],
        id="unclosed-quote-on-a-too-long-line",
    ),
    pytest.param(
        b"$time,a\n\n1,a\n,\n",
        ["$time", "a"],
        [(2, []), (3, ["1", "a"]), (4, ["", ""])],
        id="blank-rows-kept-for-the-decoder",
    ),
    pytest.param(
        b"$time,a\n1,\xff\n2,b\n",
        ["$time", "a"],
        [(2, Code.INVALID_UTF8), (3, ["2", "b"])],
        id="bad-utf8-row",
    ),
    pytest.param(
        b"$time,a\n1,a\rb\n2,b\n",
        ["$time", "a"],
        [(2, Code.INVALID_CSV), (3, ["2", "b"])],
        id="bare-cr-row",
    ),
    pytest.param(
        b"$time,a\n1," + b"x" * 70 + b"\n2,b\n",
        ["$time", "a"],
        [(2, Code.LINE_TOO_LONG), (3, ["2", "b"])],
        id="too-long-row",
    ),
    pytest.param(
        b'$time,a\n1,"' + b"x\n" * 40 + b'"\n2,b\n',
        ["$time", "a"],
        [(2, SpanProblem(Code.LINE_TOO_LONG, 42)), (43, ["2", "b"])],
        id="too-long-multiline-record",
    ),
    pytest.param(
        b'$time,a\n1,"' + b'x""\n' * 5 + b'y""' * 30 + b'\n,"\n2,b\n',
        ["$time", "a"],
        [(2, SpanProblem(Code.LINE_TOO_LONG, 8)), (9, ["2", "b"])],
        id="quotes-tracked-through-a-too-long-line",
    ),
    pytest.param(
        b"$time,a\n" + b"x" * 100,
        ["$time", "a"],
        [(2, Code.LINE_TOO_LONG)],
        id="too-long-last-line",
    ),
]


@both
@blocks
@pytest.mark.parametrize(("data", "header", "expected"), CSV_CASES)
def test_csv_records(
    tmp_path: Path,
    data: bytes,
    header: list[str] | None,
    expected: list[tuple[int, CsvCells]],
    packed: bool,
    block_size: int,
) -> None:
    path = write(tmp_path, data, packed=packed)
    got = chunks(path, fmt="csv", max_line_bytes=60, block_size=block_size)
    assert [row for c in got for row in c.rows] == expected
    assert all(c.header == (header or []) for c in got)  # none: blank lines only
    assert all(c.lines == [] for c in got)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"$time," + b"x" * 40 + b"\n1,2\n", "longer than", id="too-long"),
        pytest.param(b"$time,\xff\n1,2\n", "UTF-8", id="bad-utf8"),
        pytest.param(b"$time,a\rb\n1,2\n", "not valid CSV", id="bare-cr"),
        # No line of these could be imported: each would fail with missing-time.
        pytest.param(b"$time;$unique_id\n1;a\n", "separated by semicolons", id="semicolons"),
        pytest.param(b"$time\t$unique_id\n1\ta\n", "separated by tabs", id="tabs"),
        pytest.param(b"2024-06-01T00:00:00Z,a\n", "looks like an event", id="no-header"),
        pytest.param(b"time,id\n1,a\n", "columns: 'time', 'id'", id="no-time-column"),
        pytest.param(
            b"$time,v, $time ,v,v\n1,a,2,b,c\n",
            r"names '\$time' more than once \(columns 1, 3\)",
            id="repeated-name",
        ),
    ],
)
def test_csv_bad_header(tmp_path: Path, data: bytes, reason: str) -> None:
    path = write(tmp_path, data, packed=False)
    with pytest.raises(InputUnusable, match=reason):
        chunks(path, fmt="csv", max_line_bytes=30)


def test_csv_header_without_time_quotes_no_address(tmp_path: Path) -> None:
    path = write(tmp_path, b"id,52.94.76.62,2001:db8::62\nx,y,z\n", packed=False)
    with pytest.raises(InputUnusable) as caught:
        chunks(path, fmt="csv")
    assert "52.94.76.62" not in caught.value.reason
    assert "2001:db8::62" not in caught.value.reason
    assert "'<address>', '<address>'" in caught.value.reason


def test_csv_header_time_column_may_have_spaces(tmp_path: Path) -> None:
    path = write(tmp_path, b" $time ,a\n1,b\n", packed=False)
    assert [row for c in chunks(path, fmt="csv") for row in c.rows] == [(2, ["1", "b"])]


def test_csv_chunks_end_on_record_boundaries(tmp_path: Path) -> None:
    data = b'$time,a\n1,"a\nb"\n2,"c\n\nd"\n3,e\n'
    path = write(tmp_path, data, packed=False)
    got = chunks(path, fmt="csv", chunk_lines=1)
    assert [(c.rows, c.next_line, c.next_offset) for c in got] == [
        ([(2, ["1", "a\nb"])], 4, data.index(b"2,")),
        ([(4, ["2", "c\n\nd"])], 7, data.index(b"3,")),
        ([(7, ["3", "e"])], 8, len(data)),
    ]
    assert all(c.header == ["$time", "a"] for c in got)


def test_csv_field_size_above_the_csv_module_default(tmp_path: Path) -> None:
    big = "é" * 200_000  # over csv's default 131,072-character field limit
    path = write(tmp_path, ("$time,a\n1," + big + "\n").encode(), packed=False)
    assert csv_rows(path) == [(2, ["1", big])]


def random_csv(rng: random.Random) -> bytes:
    pieces = ['"', '"', ",", "a", "b", " ", "\n", '""', "\r\n"]
    return "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 40))).encode()


def test_csv_splitting_agrees_with_the_csv_module(tmp_path: Path) -> None:
    """Fuzz: records, their first lines and their cells are exactly what csv.reader sees."""
    rng = random.Random(2024)
    path = tmp_path / "fuzz.csv"
    unclosed = 0
    for case in range(1500):
        body = random_csv(rng)
        data = b"$time,h2\n" + body
        path.write_bytes(data)
        expected = csv_module_rows(data.decode(), 1)[1:]  # the header
        unclosed += any(isinstance(row, SpanProblem) for _, row in expected)
        assert csv_rows(path, block_size=rng.choice([1, 3, 1 << 20])) == expected, (case, data)
    assert unclosed > 100  # the cases do leave quotes open


def csv_module_rows(text: str, first_line: int) -> list[tuple[int, CsvCells]]:
    """The records csv.reader sees in ``text`` (numbered from ``first_line``), except that a
    last record still inside quotes at the end is a SpanProblem naming its lines."""
    rows = [(first_line + at, row) for at, row in _csv_module_records(text)]
    if rows and len(_csv_module_records(text + "\nZ")) == len(rows):  # "Z" joined the quotes
        last_line = first_line + text.count("\n") - (1 if text.endswith("\n") else 0)
        rows[-1] = (rows[-1][0], SpanProblem(Code.UNCLOSED_QUOTE, last_line))
    return rows


def _csv_module_records(text: str) -> list[tuple[int, CsvCells]]:
    """(index of the record's first line, its cells) for each record csv.reader reads."""
    reader = csv.reader(io.StringIO(text, newline=""))
    records: list[tuple[int, CsvCells]] = []
    last = 0
    while True:
        try:
            row: CsvCells = next(reader)
        except StopIteration:
            break
        except csv.Error:
            row = Code.INVALID_CSV
        records.append((last, row))
        last = reader.line_num
    return records


# --- resume ---------------------------------------------------------------------------------------

NDJSON_RESUME = (
    BOM
    + b'{"a":1}\r\n\n{"b":2}\n'
    + b"x" * 50
    + b"\n\xff\xfe\n   \n"
    + b"".join(b'{"n":%d}\n' % i for i in range(30))
    + b"y" * 45
    + b'\n{"last":true}'
)
CSV_RESUME = (
    BOM
    + b"$time,ua,tag\r\n"
    + b'1,"multi\nline",a\r\n'
    + b"\n"
    + b'2,"has ""quotes""",b\n'
    + b'3,"'
    + b"long\n" * 12
    + b'",c\n'
    + b"".join(b'%d,"u\n%d",t\n' % (i, i) for i in range(20))
    + b"4,\xff,bad\n"
    + b"5,a\rb,bad\n"
    + b'6,"unclosed\n7,x,y\n'
)


@both
@pytest.mark.parametrize(("fmt", "data"), [("ndjson", NDJSON_RESUME), ("csv", CSV_RESUME)])
@pytest.mark.parametrize("chunk_lines", [1, 2, 5])
def test_resume_from_every_checkpoint(
    tmp_path: Path, fmt: str, data: bytes, packed: bool, chunk_lines: int
) -> None:
    path = write(tmp_path, data, packed=packed)
    options: dict[str, Any] = {"fmt": fmt, "max_line_bytes": 40, "block_size": 7}
    first = chunks(path, chunk_lines=chunk_lines, **options)
    assert len(first) > 5
    everything = [(c.lines, c.rows) for c in first]
    for i, checkpoint in enumerate(first):
        resumed = chunks(
            path,
            chunk_lines=chunk_lines,
            start_line=checkpoint.next_line,
            start_offset=checkpoint.next_offset,
            **options,
        )
        assert [(c.lines, c.rows) for c in resumed] == everything[i + 1 :]
        assert [(c.next_line, c.next_offset) for c in resumed] == [
            (c.next_line, c.next_offset) for c in first[i + 1 :]
        ]
        if fmt == "csv":
            assert all(c.header == ["$time", "ua", "tag"] for c in resumed)


@both
def test_resume_with_other_chunk_sizes_and_blocks(tmp_path: Path, packed: bool) -> None:
    """A checkpoint is a position, not tied to the chunk size or block size that made it."""
    path = write(tmp_path, NDJSON_RESUME, packed=packed)
    whole = ndjson_lines(path, max_line_bytes=40)
    for checkpoint in chunks(path, chunk_lines=3, max_line_bytes=40, block_size=5):
        rest = ndjson_lines(
            path,
            max_line_bytes=40,
            chunk_lines=4,
            block_size=1 << 20,
            start_line=checkpoint.next_line,
            start_offset=checkpoint.next_offset,
        )
        assert rest == whole[checkpoint.next_line - 1 :]


@both
def test_resume_at_the_end(tmp_path: Path, packed: bool) -> None:
    path = write(tmp_path, b"a\nb\n", packed=packed)
    (last,) = chunks(path)
    assert chunks(path, start_line=last.next_line, start_offset=last.next_offset) == []
    assert chunks(path, start_line=99, start_offset=10_000) == []


# --- arguments ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"chunk_lines": 0}, id="chunk-lines"),
        pytest.param({"max_line_bytes": 0}, id="max-line"),
        pytest.param({"block_size": 0}, id="block-size"),
        pytest.param({"fmt": "xml"}, id="format"),
    ],
)
def test_bad_arguments(tmp_path: Path, bad: dict[str, Any]) -> None:
    path = write(tmp_path, b"a\n", packed=False)
    with pytest.raises(ValueError, match=r"positive|format"):
        chunks(path, **bad)


@pytest.mark.parametrize(
    "data", [b"", b"\n", b"a\nbb\n\nccc", b"no newline", b"\n" * 10, b"x\n" * 1000 + b"tail"]
)
def test_line_counting_in_c_and_python_agree(data: bytes) -> None:
    from eventport.imports import formats

    if formats._count_lines is formats.count_lines_py:
        pytest.skip("the C scanner is not compiled")
    for start in range(0, len(data) + 1, max(1, len(data) // 7)):
        for stop in (start, len(data), -1):
            args = (data, start, stop) if stop >= 0 else (data, start)
            assert formats._count_lines(*args) == formats.count_lines_py(*args)
        for n in (0, 1, 2, 3, 500, 2000):
            assert formats._line_end(data, start, n) == formats.line_end_py(data, start, n)


@pytest.mark.parametrize("seed", range(6))
def test_chunks_of_random_lines_in_c_and_python_agree_with_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, reading: str
) -> None:
    """Whole lines however blocks and chunks cut them: each line once, in order, too long ones
    as None, every chunk's resume point just after its last line; the same with the pure
    Python line counting (held lines are views of blocks there too)."""
    from eventport.imports import formats

    if reading == "mapped":
        pytest.skip("compares the streamed read's chunks in C and in Python (never mapped)")

    rng = random.Random(seed)
    lines = [
        b"".join(
            rng.choice([b"a", b"{", b'"', b" ", b"\r"])
            for _ in range(rng.choice([0, 1, 5, 30, 90]))
        )
        for _ in range(rng.randint(1, 300))
    ]
    data = b"\n".join(lines) + rng.choice([b"", b"\n"])
    path = write(tmp_path, data, packed=False)
    read = data.split(b"\n")
    if read[-1] == b"":  # after the last newline: no line
        read.pop()
    expected = [(i + 1, None if len(line) > 40 else line) for i, line in enumerate(read)]
    ends = [min(sum(len(line) + 1 for line in read[: i + 1]), len(data)) for i in range(len(read))]
    kw = {
        "block_size": rng.choice([1, 3, 64, 4096]),
        "chunk_lines": rng.choice([1, 3, 50]),
        "chunk_bytes": rng.choice([10, 1000, 1 << 20]),
        "max_line_bytes": 40,
    }
    found = []
    for python in (False, True):
        if python:
            monkeypatch.setattr(formats, "_count_lines", formats.count_lines_py)
            monkeypatch.setattr(formats, "_line_end", formats.line_end_py)
        got = chunks(path, **kw)
        assert [line for c in got for line in c.lines] == expected
        for c in got:
            assert c.next_line == c.first_line + c.line_count
            assert c.next_offset == ends[c.next_line - 2]
        found.append([(c.first_line, c.line_count, c.block, c.dropped) for c in got])
    assert found[0] == found[1]


@pytest.mark.parametrize(
    ("batch", "expected"), [(122_880, 20_480), (50_000, 12_500), (20_480, 20_480), (7, 7)]
)
def test_slices_divide_a_batch_evenly(batch: int, expected: int) -> None:
    from eventport.imports.worker import SLICE_LINES, slice_lines

    assert slice_lines(batch) == expected
    for size in (1, 2, 97, 1000, 20_481, 65_536, 99_991, 122_880, 1_000_000):
        lines = slice_lines(size)
        assert size % lines == 0, size
        assert lines <= SLICE_LINES, size


@pytest.mark.parametrize("seed", range(8))
def test_a_mapped_file_reads_as_the_streamed_one(tmp_path: Path, seed: int) -> None:
    """Read through a memory mapping (blocks are views of it, nothing copied), a plain file
    gives the streamed read's lines, and resuming from any chunk's end gives the same lines
    as a streamed resume from there: BOMs, CRLF, blank, too long and unended last lines."""
    from eventport.imports import formats

    if formats._line_end is formats.line_end_py:
        pytest.skip("files are mapped only with the C line helpers")
    rng = random.Random(seed)
    parts = [BOM] if rng.random() < 0.3 else []
    for _ in range(rng.randint(0, 200)):
        n = rng.choice([0, 1, 5, 39, 40, 41, 120])
        parts.append(bytes(rng.choice(b'a{" \r') for _ in range(n)) + rng.choice([b"\n", b"\r\n"]))
    data = b"".join(parts)
    if rng.random() < 0.5:
        data = data.rstrip(b"\n")
    path = write(tmp_path, data, packed=False)
    kw: dict[str, Any] = {
        "chunk_lines": rng.choice([1, 3, 50]),
        "chunk_bytes": rng.choice([10, 1000, 1 << 20]),
        "max_line_bytes": 40,
    }
    streamed = chunks(path, mapped=False, block_size=rng.choice([1, 7, 4096]), **kw)
    mapped = chunks(path, mapped=True, **kw)
    assert all(isinstance(c.block, memoryview) for c in mapped)
    assert [x for c in mapped for x in c.lines] == [x for c in streamed for x in c.lines]
    for c in mapped:
        assert c.next_line == c.first_line + c.line_count
        resumed = {"start_line": c.next_line, "start_offset": c.next_offset}
        assert [x for r in chunks(path, mapped=True, **kw, **resumed) for x in r.lines] == [
            x for r in chunks(path, mapped=False, **kw, **resumed) for x in r.lines
        ]
    if mapped:
        assert mapped[-1].next_offset == len(data)
    assert chunks(path, mapped=True, start_offset=len(data), **kw) == []


@pytest.mark.parametrize(
    ("data", "refused"),
    [
        pytest.param(b'[\n  {"$time": 1}\n]\n', "JSON array", id="array"),
        pytest.param(BOM + b'\r\n  \n[ \r\n{"$time": 1}\n]', "JSON array", id="array-after-blanks"),
        pytest.param(b'{\n  "$time": 1\n}\n', "objects spread over lines", id="objects"),
        pytest.param(b"{", "objects spread over lines", id="a-lone-brace"),
        pytest.param(b'[{"$time": 1}]\n', None, id="array-on-a-line"),
        pytest.param(b'{"$time": 1}\n{\n', None, id="a-lone-brace-later"),
        pytest.param(b"[1,\n2]\n", None, id="not-alone-on-its-line"),
        # a stray bracket before NDJSON lines: an error of its own, the rest imported (a
        # line-reader hunt: the whole import failed, "no line of it could be imported")
        pytest.param(b'{\n{"$time": 1}\n\n{"$time": 2}\n', None, id="a-stray-brace"),
        pytest.param(b'[\r\n{"$time": 1}\r\n{"$time": 2}', None, id="a-stray-bracket"),
        pytest.param(b'[\n  {"$time": 1},\n  {"$time": 2}\n]\n', "JSON array", id="items"),
    ],
)
def test_pretty_printed_json_is_refused(tmp_path: Path, data: bytes, refused: str | None) -> None:
    path = write(tmp_path, data, packed=False)
    read = chunks(path)  # the reading itself hands out every line either way
    assert sum(c.line_count for c in read) == data.count(b"\n") + (not data.endswith(b"\n"))
    if refused is None:
        assert list(refuse_pretty_json(iter(read))) == read
    else:
        with pytest.raises(InputUnusable, match=refused):
            list(refuse_pretty_json(iter(read)))


def test_csv_chunks_end_at_their_byte_bound(tmp_path: Path) -> None:
    """A CSV chunk ends at chunk_lines records or at the first record past chunk_bytes, so that
    wide records are not held 20,480 at a time; every record still comes once, in order."""
    wide = "x" * 1000
    data = ("$time,v\n" + "".join(f"{n},{wide}\n" for n in range(100))).encode()
    path = write(tmp_path, data, packed=False)
    got = chunks(path, fmt="csv", chunk_lines=50, chunk_bytes=10_000)
    assert [len(c.rows or []) for c in got] == [10] * 10
    assert [row[0] for c in got for row in c.rows or []] == list(range(2, 102))
    assert [len(c.rows or []) for c in chunks(path, fmt="csv", chunk_lines=50)] == [50, 50]


@pytest.mark.parametrize(
    ("data", "next_line"),
    [(b"$time\n", 2), (b"\r\n\r\n\r\n", 4), (b"", None)],
    ids=["header-only", "blank-lines", "empty"],
)
def test_a_csv_without_rows_still_reports_its_lines_read(
    tmp_path: Path, data: bytes, next_line: int | None
) -> None:
    """A header, or blank lines, and no rows: one chunk without rows that resumes after them
    (the import's lines_processed counts them, as NDJSON's blank lines are); an empty file
    gives none."""
    got = chunks(write(tmp_path, data, packed=False), fmt="csv")
    assert [(c.next_line, c.rows) for c in got] == ([] if next_line is None else [(next_line, [])])
