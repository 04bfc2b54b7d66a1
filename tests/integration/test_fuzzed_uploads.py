"""Uploads made of mutated lines (bytes inserted, deleted, flipped; every kind of ``$time``;
lines over 1 MiB; BOMs, CRLF, truncated gzip) sent to a real server with a worker: whatever
they hold, the answer is JSON and never a 5xx, the import ends, its counts add up, every
failed event has an error entry with its line, and the store holds what the import says it
imported. The seeds are fixed, so a failure can be replayed.
"""

from __future__ import annotations

import gzip
import json
import random

import pytest

from tests.conftest import Server
from tests.importing import counts, full_log, setup_package, wait_finished

UPLOADS_PER_SEED = 12
NASTY = [
    b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\r", b"\\", b'"', b"{", b"}", b"[", b"]",
    b",", b":", b"\\u0000", b"\\ud800", b"\\udc00x", b"1e999", b"-0", b"NaN", b"Infinity",
    b"\xef\xbb\xbf", b"\t", b" ", b"null", b"true", b"9" * 40, b"\xe2\x80\xa8",
    b"=cmd|' /C calc'!A0", b'"$time":', b'"$unique_id":',
]  # fmt: skip
TIMES = [
    '"2024-02-03T04:05:06Z"', '"2024-02-03T04:05:06"', '"2024-02-03T04:05:06+05:30"',
    "1706933106", "1706933106000", '"1706933106"', "1.5e9", "-1", "0",
    "99999999999999999999", '"2024-13-45T99:99:99Z"', '{"a":1}', "[1]", "null", "true", '""',
    '"yesterday"', "1e400", '"2024-02-30T00:00:00Z"', '"0001-01-01T00:00:00Z"',
    '"9999-12-31T23:59:59Z"', "253402300800", "-62135596800", '"2024-02-03 04:05:06Z"',
    '"20240203T040506Z"', "1706933106.123",
]  # fmt: skip
ADDRESSES = [
    '"1.2.3.4"', '"::1"', '"2001:db8::1"', '"152.241.796.177"', '""', "123", "null",
    '"::ffff:8.8.8.8"', '"8.8.8.8 "', '"01.02.03.04"', '"fe80::1%eth0"', '["1.1.1.1"]',
]  # fmt: skip


class Fuzzer:
    """Bodies made from a seed: each line an event with random fields, then mutated."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.unusable = False  # the last upload: a file no line of which could pass

    def event(self) -> bytes:
        rng = self.rng
        # Ids are unique (or invalid), and no mutation makes one another's (32 random hex
        # digits, or a random number, taken as its text): no event replaces another, so the
        # store must hold exactly what each import says it imported.
        fields = {"$time": rng.choice(TIMES) if rng.random() < 0.5 else TIMES[0]}
        if rng.random() < 0.7:
            unique = f"{rng.getrandbits(128):032x}"
            fields["$unique_id"] = rng.choice(
                [
                    json.dumps(unique),
                    str(rng.getrandbits(60)),
                    "null",
                    '""',
                    json.dumps("x" * 300 + unique),
                ]
            )
        if rng.random() < 0.6:
            fields["$remote_address"] = rng.choice(ADDRESSES)
        if rng.random() < 0.6:
            agents = ['pip/23.0 {"ci":null}', "Mozilla/5.0", "", "curl/8.0", "\u0000\ud7ff"]
            fields["$user_agent"] = json.dumps(rng.choice(agents))
        if rng.random() < 0.3:
            fields["$headers"] = rng.choice(
                ['{"DNT":"1"}', '[["DNT","1"]]', '"x"', '{"a":{"b":1}}', "null"]
            )
        if rng.random() < 0.3:
            fields["$version"] = rng.choice(['"1.0"', "1", "null", '{"x":1}'])
        if rng.random() < 0.2:
            fields["$bogus"] = '"x"'
        if rng.random() < 0.3:
            nested = "[" * 50 + "]" * 50
            fields["custom"] = rng.choice(
                ['{"a":{"b":[1,2,{"c":null}]}}', '"=1+1"', "1e308", '"\\u0000"', nested]
            )
        if rng.random() < 0.1:
            fields["$package"] = '"nope"'
        if rng.random() < 0.05:  # $time twice
            fields["$time"] = '"2024-01-01T00:00:00Z", "$time": ' + rng.choice(TIMES)
        return ("{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}").encode()

    def mutate(self, line: bytes) -> bytes:
        rng = self.rng
        for _ in range(rng.choice([0, 0, 1, 1, 2, 5])):
            op, at = rng.random(), rng.randrange(len(line) + 1)
            if op < 0.4:
                line = line[:at] + rng.choice(NASTY) + line[at:]
            elif op < 0.6:
                line = line[:at] + line[at + rng.randrange(1, 8) :]
            elif op < 0.7:
                line = line[:at]
            elif op < 0.8:
                line = line[:at] + bytes([rng.randrange(256)]) + line[at + 1 :]
            else:
                line += rng.choice([b"", b" ", b"\r", b"{}", b'"x"'])
        return line

    def ndjson(self, count: int) -> bytes:
        rng = self.rng
        lines = []
        for _ in range(count):
            kind = rng.random()
            if kind < 0.03:
                lines.append(b"")
            elif kind < 0.05:
                lines.append(rng.choice([b"   ", b"\t", b"\r", b"[]", b"1", b"null", b'"s"', b"{"]))
            elif kind < 0.06:
                size = rng.choice([1 << 20, (1 << 20) - 40, 2 << 20])
                lines.append(b'{"$time": "2024-01-01T00:00:00Z", "x": "' + b"a" * size + b'"}')
            else:
                lines.append(self.mutate(self.event()))
        end = rng.choice([b"\n", b"\r\n"])
        body = end.join(lines) + rng.choice([b"", end, end + end])
        # a lone "{" or "[" first: pretty-printed JSON, which no line could pass, unless the
        # next two lines (or the one) are objects: a stray bracket before NDJSON
        filled = [line.strip() for line in lines if line.strip()]
        self.unusable = bool(filled) and filled[0] in (b"{", b"[")
        if self.unusable and filled[1:]:
            self.unusable = not all(_an_object(line) for line in filled[1:3])
        return b"\xef\xbb\xbf" + body if rng.random() < 0.05 else body

    def csv(self, count: int) -> bytes:
        rng = self.rng
        header = rng.choice(
            [b"$time,$unique_id,$remote_address,custom", b"$time,$time,x", b"$time", b"a,b"]
        )
        names = header.split(b",")
        # a CSV header no line can pass, or one naming a field twice
        self.unusable = b"$time" not in names or len(set(names)) < len(names)
        rows = [header]
        for _ in range(count):
            cells = [
                rng.choice(TIMES).strip('"').encode(),
                f"{rng.getrandbits(128):032x}".encode(),
                b"1.2.3.4",
                b'"a,""b"""',
            ]
            row = b",".join(cells[: rng.randrange(0, 6)])
            rows.append(self.mutate(row) if rng.random() < 0.3 else row)
        return b"\n".join(rows) + b"\n"

    def upload(self) -> tuple[bytes, dict[str, str]]:
        rng = self.rng
        self.unusable = False
        count = rng.choice([1, 5, 50, 200])
        if rng.random() < 0.75:
            body = self.ndjson(count)
            media = rng.choice(["application/x-ndjson", "application/json", "application/ndjson"])
        else:
            body, media = self.csv(count), "text/csv"
        headers = {"Content-Type": media}
        if rng.random() < 0.15:
            body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
            if rng.random() < 0.3:  # a corrupt tail
                tail = bytes(rng.randrange(256) for _ in range(rng.randrange(4)))
                body = body[: rng.randrange(len(body))] + tail
        return body, headers


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzzed_uploads_end_with_counts_that_add_up(api: Server, seed: int) -> None:
    alice = api.user("alice")
    package_id = setup_package(alice, "alice")
    fuzzer = Fuzzer(seed)
    for number in range(UPLOADS_PER_SEED):
        body, headers = fuzzer.upload()
        route = f"/v2/packages/alice/{package_id}/import" if number % 5 else "/v2/alice/import"
        response = alice.post(route, content=body, headers=headers)
        where = f"seed {seed}, upload {number}"
        assert response.status_code < 500, (where, response.text)
        assert response.headers["content-type"].startswith("application/json"), where
        if response.status_code != 200:
            assert isinstance(response.json()["message"], str), where
            continue
        import_id = response.json()["id"]
        done = wait_finished(alice, "alice", import_id)
        total, imported, failed = counts(done)
        if done["status"] == "failed":  # the input as a whole: a corrupt gzip, a CSV header
            # without $time or naming a field twice, or pretty-printed JSON
            assert "Content-Encoding" in headers or fuzzer.unusable, (where, done)
            assert done["failure_reason"], (where, done)
        else:
            assert done["status"] == "done", (where, done)
            assert total == imported + failed, (where, done)
        errors = [e for e in full_log(alice, "alice", import_id) if e["class"] == "error"]
        if done["status"] == "failed":  # the entry that says why names no line
            errors = [e for e in errors if e["code"] != "input-unusable"]
        assert all(isinstance(e.get("line"), int) and e["line"] >= 1 for e in errors), where
        assert len({e["line"] for e in errors}) == failed, (where, done)
        stored = api.app.state.events.count(import_id=import_id)
        assert stored == imported, (where, stored, done)


def _an_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
