"""End-to-end import benchmark: a real server, an HTTP upload, wait until done.

    python bench/ingest.py --events 1000000            # embedded default (SQLite + DuckDB)
    python bench/ingest.py --events 1000000 --postgres # PostgreSQL (a temporary database)
    python bench/ingest.py --events 1000000 --reimport # the same file imported twice

Prints events/s end to end with and without enrichment (EVENTPORT_ENRICHMENT), the server's
peak resident memory, and a baseline on the same file: DuckDB's own read_json into a table
(embedded), or a plain COPY of the same rows (PostgreSQL), with the ratio of the two.

This machine's speed drifts from run to run (the same import took 20-30% longer from one
minute to the next), so ``--rounds N`` runs each of the three N times, interleaved (without,
with, baseline, then again), and prints the medians: the enrichment cost and the ratio then
compare runs made side by side, not whatever minute each one fell in.

``--reimport`` imports the file, then times a second import of it into the same server (every
event replaces one and gets a ``duplicate-unique-id`` warning): its time, the server's peak
memory during it, the control store's size on disk after it, and how fast its whole log (an
entry a line) streams over HTTP. Enriched only, and no baseline.

``--cpu`` also prints where the CPU went while each import ran (from the end of its upload):
the server's threads by name (eventport names its own: import-worker reads, decodes and builds
batches, import-writer writes them, ...), PostgreSQL's processes, and the cores left idle.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson

USER_AGENTS = [
    'pip/24.0 {"ci":null,"cpu":"x86_64","distro":{"name":"Ubuntu","version":"22.04"},'
    '"implementation":{"name":"CPython","version":"3.11.7"},"installer":{"name":"pip",'
    '"version":"24.0"},"python":"3.11.7","system":{"name":"Linux","release":"6.1.0"}}',
    "npm/10.2.4 node/v20.11.0 linux x64 workspaces/false",
    "docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/6.1.0 os/linux arch/amd64",
    'uv/0.4.18 {"installer":{"name":"uv","version":"0.4.18"}}',
    "curl/8.5.0",
    "Wget/1.21.4",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Go-http-client/1.1",
    "Homebrew/4.2.0 (Macintosh; arm64 Mac OS X 14.2) curl/8.4.0",
]


def generate(path: Path, events: int, seed: int = 7, address_share: float = 0.02) -> None:
    """Events shaped like the seed's: ~2% distinct IPs (``address_share``), random $unique_id,
    realistic agents."""
    rng = random.Random(seed)
    addresses = [
        f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        for _ in range(max(int(events * address_share), 1))
    ]
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with path.open("wb") as out:
        for _ in range(events):
            moment = start + timedelta(seconds=rng.randint(0, 365 * 86400))
            line = {
                "$time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "$unique_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "$remote_address": rng.choice(addresses),
                "$user_agent": rng.choice(USER_AGENTS),
                "$version": f"1.{rng.randint(0, 30)}.{rng.randint(0, 9)}",
                "$type": "download",
                "source": rng.choice(["ci", "laptop", "server"]),
            }
            out.write(orjson.dumps(line) + b"\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def memory_mb(pid: int) -> dict[str, float]:
    """The server's VmHWM (peak resident), and its current RssAnon and RssFile (mapped files,
    e.g. the GeoLite2 database pages read so far), in MB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "RssAnon", "RssFile"):
            found[name] = int(value.split()[0]) / 1024
    return found


def peak_rss_mb(pid: int) -> float:
    return memory_mb(pid).get("VmHWM", float("nan"))


def run_server(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "eventport", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("server did not start")


def cli_token(env: dict[str, str], *args: str) -> str:
    """Run an ``eventport`` command that prints a token on its last line; the token."""
    return subprocess.run(
        [sys.executable, "-m", "eventport", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[-1]


def client_with(token: str, port: int) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=600,
    )


def bench_client(env: dict[str, str], port: int) -> tuple[httpx.Client, str]:
    """A user "bench" with an npm package, and a client acting as them: (client, package id)."""
    token = cli_token(env, "users", "create", "bench", "--email", "b@example.com")
    client = client_with(token, port)
    package = client.post("/v2/packages/bench", json={"name": "bench", "type": "npm"}).json()
    return client, package["id"]


def start_import(client: httpx.Client, package_id: str, path: Path) -> str:
    """Upload ``path`` (NDJSON) as an import into the bench package; the import's id."""
    with path.open("rb") as body:
        response = client.post(
            f"/v2/packages/bench/{package_id}/import",
            content=body,
            headers={"Content-Type": "application/x-ndjson"},
        )
    response.raise_for_status()
    import_id: str = response.json()["id"]
    return import_id


# How often the benchmark asks the server for the import's status, and how often it samples the
# server's memory (from /proc, which costs the server nothing). Asking 20 times a second, as it
# did before, cost the server ~1 s of a 13 s 5M-event import (each request ~3 ms of its CPU,
# holding the GIL the import's reading thread needs); a script or progress bar asks far less
# often. The import's end is the server's own ``finished_at``, not when a poll saw it.
STATUS_SECONDS = 1.0
MEMORY_SECONDS = 0.05
TICKS = os.sysconf("SC_CLK_TCK")


def _name_and_cpu(path: Path) -> tuple[str, float] | None:
    """A /proc stat file's name (comm) and CPU-seconds (user and system); None once it is
    gone."""
    try:
        text = path.read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return text[text.index("(") + 1 : text.rindex(")")], (int(fields[11]) + int(fields[12])) / TICKS


class CpuSampler:
    """CPU-seconds used from now on, by the server's threads (threads that end are kept: they
    are sampled as often as memory is), by PostgreSQL's processes, and left idle."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.threads: dict[str, tuple[str, float]] = {}  # tid -> (name, CPU-seconds so far)
        self.started = self._threads_now()
        self.postgres_started = self._postgres_now()
        self.machine_started = self._machine_now()

    def sample(self) -> None:
        self.threads.update(self._threads_now())

    def report(self) -> str:
        self.sample()
        busy: dict[str, float] = {}
        for tid, (name, seconds) in self.threads.items():
            used = seconds - self.started.get(tid, (name, 0.0))[1]
            busy[name] = busy.get(name, 0.0) + used
        postgres = self._postgres_now() - self.postgres_started
        now = self._machine_now()
        total, idle = (b - a for a, b in zip(self.machine_started, now, strict=True))
        cores = os.cpu_count() or 1
        wall = total / TICKS / cores
        listed = ", ".join(
            f"{name} {seconds:.2f}"
            for name, seconds in sorted(busy.items(), key=lambda i: -i[1])
            if seconds >= 0.05
        )
        pg = f"; PostgreSQL's processes {postgres:.2f}" if postgres >= 0.05 else ""
        return (
            f"  CPU-seconds over the {wall:.2f} s after the upload: server threads {listed}{pg}; "
            f"idle {idle / TICKS:.2f} core-seconds of {wall * cores:.2f}"
        )

    def _threads_now(self) -> dict[str, tuple[str, float]]:
        found = {}
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{self.pid}/task"):
                stat = _name_and_cpu(Path(f"/proc/{self.pid}/task/{tid}/stat"))
                if stat is not None:
                    found[tid] = stat
        return found

    @staticmethod
    def _postgres_now() -> float:
        """CPU-seconds of every process named postgres (those still running)."""
        used = 0.0
        for pid in filter(str.isdigit, os.listdir("/proc")):
            stat = _name_and_cpu(Path(f"/proc/{pid}/stat"))
            if stat is not None and stat[0].startswith("postgres"):
                used += stat[1]
        return used

    @staticmethod
    def _machine_now() -> tuple[int, int]:
        """All CPUs' ticks, and their idle and I/O-wait ticks, from /proc/stat."""
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(values), values[3] + values[4]


def finished_at(status: dict[str, object]) -> float:
    """The import's ``finished_at`` as a UNIX time (UTC when the text names no zone)."""
    moment = datetime.fromisoformat(str(status["finished_at"]).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def wait_done(client: httpx.Client, import_id: str) -> dict[str, object]:
    while True:
        status: dict[str, object] = client.get(f"/v2/imports/bench/{import_id}").json()
        if status["status"] != "importing":
            return status
        time.sleep(STATUS_SECONDS)


def reset_peak(pid: int) -> None:
    """Start the server's VmHWM again from its resident memory now (Linux: clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def log_rate(client: httpx.Client, import_id: str) -> tuple[int, float]:
    """The import's whole log streamed over HTTP: (entries, seconds)."""
    started = time.perf_counter()
    entries = 0
    with client.stream("GET", f"/v2/imports/bench/{import_id}/log") as response:
        for _ in response.iter_lines():
            entries += 1
    return entries, time.perf_counter() - started


def import_over_http(
    path: Path, env: dict[str, str], *, reimport: bool = False, cpu: bool = False
) -> tuple[float, float, dict[str, object]]:
    port = free_port()
    server = run_server(env, port)
    try:
        client, package_id = bench_client(env, port)
        if reimport:  # the same file once before: the timed import replaces all of it
            wait_done(client, start_import(client, package_id, path))
            reset_peak(server.pid)
        started = time.perf_counter()
        started_at = time.time()
        import_id = start_import(client, package_id, path)
        uploaded = time.perf_counter() - started
        sampler = CpuSampler(server.pid) if cpu else None
        anon = mapped = 0.0
        asked = 0.0
        while True:
            if sampler is not None:
                sampler.sample()
            now = memory_mb(server.pid)
            anon, mapped = max(anon, now["RssAnon"]), max(mapped, now["RssFile"])
            # With --cpu, asked often: the CPU is counted until the import is seen done.
            if time.perf_counter() - asked >= (STATUS_SECONDS / 10 if cpu else STATUS_SECONDS):
                asked = time.perf_counter()
                status = client.get(f"/v2/imports/bench/{import_id}").json()
                if status["status"] != "importing":
                    break
            time.sleep(MEMORY_SECONDS)
        status["peak_anon_mb"], status["peak_file_mb"] = round(anon), round(mapped)
        elapsed = finished_at(status) - started_at
        status["upload_seconds"] = round(uploaded, 2)
        if sampler is not None:
            status["cpu_report"] = sampler.report()
        peak = peak_rss_mb(server.pid)
        if reimport:
            status["log_entries"], status["log_seconds"] = log_rate(client, import_id)
        return elapsed, peak, status
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def duckdb_baseline(path: Path) -> float:
    import duckdb

    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect(str(Path(tmp) / "baseline.duckdb"))
        started = time.perf_counter()
        con.execute(
            "CREATE TABLE t AS SELECT * FROM read_json(?, format='newline_delimited')", [str(path)]
        )
        elapsed = time.perf_counter() - started
        con.close()
    return elapsed


def copy_baseline(path: Path, url: str) -> float:
    """A plain COPY of the same rows (parsed to CSV beforehand; the COPY alone is timed)."""
    import psycopg

    csv_path = path.with_suffix(".csv")
    with path.open("rb") as src, csv_path.open("w", newline="") as dst:
        writer = csv.writer(dst)
        for line in src:
            event = orjson.loads(line)
            writer.writerow(
                [
                    event["$unique_id"],
                    event["$time"],
                    event["$remote_address"],
                    event["$user_agent"],
                    event["$version"],
                    event["$type"],
                    f"source={event['source']}",
                ]
            )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS copy_baseline")
        conn.execute(
            "CREATE TABLE copy_baseline (id text, time timestamptz, address text, "
            "user_agent text, version text, type text, variables text)"
        )
        started = time.perf_counter()
        with (
            csv_path.open("rb") as data,
            conn.cursor() as cur,
            cur.copy("COPY copy_baseline FROM STDIN WITH (FORMAT csv)") as copy,
        ):
            while chunk := data.read(1 << 20):
                copy.write(chunk)
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE copy_baseline")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--enriched-only", action="store_true", help="skip the run without enrichment"
    )
    parser.add_argument(
        "--address-share",
        type=float,
        default=0.02,
        help="distinct addresses per event (0.02: the seed's shape; page views have more)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run each import and the baseline this many times, interleaved; print medians",
    )
    parser.add_argument(
        "--reimport",
        action="store_true",
        help="time a second import of the file into the same server (enriched; no baseline)",
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="print each import's CPU-seconds by thread, PostgreSQL's, and the idle cores",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.ndjson"
        generate(path, args.events, address_share=args.address_share)
        # Flush the file to disk now: otherwise the first server run competes with the kernel
        # writing it back (measured: the first run was up to 40% slower than later ones).
        os.sync()
        size_mb = path.stat().st_size / 1e6
        print(
            f"events: {args.events:,} ({size_mb:.0f} MB NDJSON), cores: {os.cpu_count()}, "
            f"workers: {args.workers}, store: {'postgresql' if args.postgres else 'embedded'}, "
            f"distinct addresses: {args.address_share:.0%} of events"
        )
        if args.reimport:
            for round_number in range(args.rounds):
                data_dir = Path(tmp) / f"data-reimport-{round_number}"
                reimport_once(args, path, data_dir)
                shutil.rmtree(data_dir, ignore_errors=True)
            return
        seconds: dict[bool, list[float]] = {}
        baselines: list[float] = []
        name = "plain COPY of the same rows" if args.postgres else "DuckDB read_json into a table"
        for round_number in range(args.rounds):
            if args.rounds > 1:
                print(f"round {round_number + 1} of {args.rounds}")
            for enrichment in (True,) if args.enriched_only else (False, True):
                data_dir = Path(tmp) / f"data-{enrichment}-{round_number}"
                elapsed = run_once(args, path, data_dir, enrichment)
                seconds.setdefault(enrichment, []).append(elapsed)
                shutil.rmtree(data_dir, ignore_errors=True)
            baselines.append(baseline_seconds(args, path))
            if args.rounds > 1:
                seconds_now = baselines[-1]
                print(f"{name}: {seconds_now:.2f} s = {args.events / seconds_now:,.0f} events/s")
        rates = {on: args.events / statistics.median(runs) for on, runs in seconds.items()}
        baseline = statistics.median(baselines)
        medians = f" (medians of {args.rounds} rounds)" if args.rounds > 1 else ""
        if len(rates) == 2:
            print(
                f"enrichment costs {1 - rates[True] / rates[False]:.0%} of the throughput"
                f"{medians}: {rates[False]:,.0f} events/s without, {rates[True]:,.0f} with"
            )
        print(
            f"{name}: {baseline:.2f} s = {args.events / baseline:,.0f} events/s; "
            f"eventport (enriched) / baseline = {rates[True] * baseline / args.events:.2f}x"
            f"{medians}"
        )


def baseline_seconds(args: argparse.Namespace, path: Path) -> float:
    """One run of the baseline: a plain COPY (PostgreSQL) or DuckDB's read_json (embedded)."""
    if args.postgres:
        with temporary_database(args.pg_admin) as url:
            return copy_baseline(path, url)
    return duckdb_baseline(path)


@contextlib.contextmanager
def temporary_database(admin: str) -> Iterator[str]:
    import psycopg

    database = f"eventport_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    try:
        yield admin.rsplit("/", 1)[0] + f"/{database}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def server_env(args: argparse.Namespace, data_dir: Path, enrichment: bool) -> dict[str, str]:
    return {
        **os.environ,
        "EVENTPORT_DATA_DIR": str(data_dir),
        "EVENTPORT_WORKERS": str(args.workers),
        "EVENTPORT_LOG_LEVEL": "warning",
        "EVENTPORT_ENRICHMENT": str(enrichment).lower(),
    }


def fresh_server_import(
    args: argparse.Namespace,
    path: Path,
    data_dir: Path,
    enrichment: bool,
    *,
    reimport: bool = False,
) -> tuple[float, float, dict[str, object]]:
    """:func:`import_over_http` on a server of its own, with a temporary database with
    ``--postgres``."""
    env = server_env(args, data_dir, enrichment)
    with contextlib.ExitStack() as stack:
        if args.postgres:
            env["EVENTPORT_DATABASE_URL"] = stack.enter_context(temporary_database(args.pg_admin))
        return import_over_http(path, env, reimport=reimport, cpu=args.cpu)


def reimport_once(args: argparse.Namespace, path: Path, data_dir: Path) -> None:
    """A second import of the file into the server that imported it; prints its figures."""
    elapsed, rss, status = fresh_server_import(args, path, data_dir, True, reimport=True)
    control = sum(f.stat().st_size for f in data_dir.glob("control.sqlite3*") if f.is_file())
    stored = f"; control store on disk {control / 1e6:,.0f} MB" if control else ""
    entries, log_seconds = int(status["log_entries"]), float(status["log_seconds"])
    print(
        f"re-import: {status['status']}, imported {status['events_successfully_imported']:,}, "
        f"warnings {status['warnings_total']:,}; end to end {elapsed:.2f} s = "
        f"{args.events / elapsed:,.0f} events/s (upload {status['upload_seconds']} s of it); "
        f"server peak RSS during it {rss:.0f} MB{stored}; its log: {entries:,} entries in "
        f"{log_seconds:.2f} s = {entries / log_seconds:,.0f} entries/s over HTTP"
    )
    if "cpu_report" in status:
        print(status["cpu_report"])


def run_once(args: argparse.Namespace, path: Path, data_dir: Path, enrichment: bool) -> float:
    """One import on a fresh server; prints its figures, returns the seconds it took."""
    elapsed, rss, status = fresh_server_import(args, path, data_dir, enrichment)
    # The embedded store's files once the server has stopped (DuckDB checkpoints on close).
    stored = sum(f.stat().st_size for f in data_dir.rglob("*.duckdb*") if f.is_file())
    on_disk = f"; events on disk {stored / 1e6:,.0f} MB" if stored else ""
    print(
        f"{'with' if enrichment else 'without'} enrichment: {status['status']}, imported "
        f"{status['events_successfully_imported']:,}, failed {status['events_failed_to_import']:,}"
        f"; end to end {elapsed:.2f} s = {args.events / elapsed:,.0f} events/s (upload "
        f"{status['upload_seconds']} s of it); server peak RSS {rss:.0f} MB (sampled peaks: "
        f"anonymous {status['peak_anon_mb']} MB, mapped files {status['peak_file_mb']} MB)"
        f"{on_disk}"
    )
    if "cpu_report" in status:
        print(status["cpu_report"])
    return elapsed


if __name__ == "__main__":
    main()
