"""Arrow's memory pool for server and worker processes.

pyarrow allocates from mimalloc by default. Over an import's batches (two of ~25 MB each in
flight) mimalloc kept more of what was freed resident than jemalloc does with the decay Arrow
gives it: in a 5M-event enriched import the server's peak was 772-779 MB with mimalloc and
728-734 MB with jemalloc, at the same speed (three interleaved pairs of runs; see README,
Performance). So servers use jemalloc where pyarrow was built with it, unless
``ARROW_DEFAULT_MEMORY_POOL`` names a pool (pyarrow reads it itself, at import).
"""

from __future__ import annotations

import contextlib
import os

import pyarrow as pa


def use_server_pool() -> str:
    """Make jemalloc Arrow's default pool (see the module docstring); the pool's name."""
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        # A pyarrow without jemalloc raises NotImplementedError: its default stays.
        with contextlib.suppress(NotImplementedError):
            pa.set_memory_pool(pa.jemalloc_memory_pool())
    return str(pa.default_memory_pool().backend_name)
