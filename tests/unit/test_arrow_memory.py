"""Server processes allocate Arrow memory from jemalloc unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest

PROBE = (
    "import pyarrow as pa; from eventport.arrow_memory import use_server_pool; "
    "before = pa.default_memory_pool().backend_name; after = use_server_pool(); "
    "pa.array(range(1000)); print(before, after, pa.default_memory_pool().backend_name)"
)


def probe(**env: str) -> list[str]:
    environment = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=environment | env,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.split()


def has_jemalloc() -> bool:
    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        return False
    return True


@pytest.mark.skipif(not has_jemalloc(), reason="this pyarrow was built without jemalloc")
def test_a_server_process_takes_jemalloc() -> None:
    before, after, now = probe()
    assert before != "jemalloc"  # pyarrow's own default: the call is what changes it
    assert after == now == "jemalloc"


def test_a_pool_named_in_the_environment_is_kept() -> None:
    assert probe(ARROW_DEFAULT_MEMORY_POOL="system") == ["system", "system", "system"]
