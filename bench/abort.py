"""How fast does a running import stop when aborted? (Scarf's API: abort answers 204.)

    python bench/abort.py --events 1000000

Starts a real server, uploads N events, waits until the first batch is committed, asks for an
abort and prints the time until the import reports ``aborted``, plus how many events it kept.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from ingest import bench_client, free_port, generate, run_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--tries", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.ndjson"
        generate(path, args.events)
        env = {
            **os.environ,
            "EVENTPORT_DATA_DIR": str(Path(tmp) / "data"),
            "EVENTPORT_LOG_LEVEL": "warning",
        }
        port = free_port()
        server = run_server(env, port)
        try:
            client, package_id = bench_client(env, port)
            for attempt in range(1, args.tries + 1):
                with path.open("rb") as body:
                    started = client.post(
                        f"/v2/packages/bench/{package_id}/import",
                        content=body,
                        headers={"Content-Type": "application/x-ndjson"},
                    )
                import_id = started.json()["id"]
                while client.get(f"/v2/imports/bench/{import_id}").json()["events_total"] == 0:
                    time.sleep(0.01)
                asked = time.perf_counter()
                client.post(f"/v2/imports/bench/{import_id}/abort").raise_for_status()
                while True:
                    status = client.get(f"/v2/imports/bench/{import_id}").json()
                    if status["status"] != "importing":
                        break
                    time.sleep(0.01)
                latency = time.perf_counter() - asked
                print(
                    f"try {attempt}: {status['status']} {latency:.2f} s after the abort; kept "
                    f"{status['events_successfully_imported']:,} of {args.events:,} events"
                )
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
