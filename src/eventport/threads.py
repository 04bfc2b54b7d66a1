"""eventport's threads named for the operating system too, so that ``top -H``, ``ps -L``,
``perf`` and ``/proc/<pid>/task/*/comm`` tell which of them uses the CPU (Python 3.11 names a
thread for itself only). Linux only; elsewhere, and where the call fails, nothing happens."""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable

_PR_SET_NAME = 15  # prctl(2)
_NAME_BYTES = 15  # the kernel keeps 16 bytes, the last a NUL


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_SET_NAME = _prctl()


def name_this_thread(name: str | None = None) -> None:
    """Name the calling thread ``name`` (by default its Python name) for the operating
    system: as many of its first 15 bytes as make whole characters."""
    if _SET_NAME is None:
        return
    text = (name or threading.current_thread().name).encode("utf-8", "replace")[:_NAME_BYTES]
    text = text.decode("utf-8", "ignore").encode()  # not half a character
    _SET_NAME(_PR_SET_NAME, ctypes.c_char_p(text), 0, 0, 0)
