"""Threads named for the operating system (eventport/threads.py)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from eventport.threads import name_this_thread

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's prctl")


def os_name_of(run: object) -> str:
    """The name /proc shows for a thread that runs ``run`` (a callable) first."""
    seen: list[str] = []

    def target() -> None:
        run()  # type: ignore[operator]
        comm = Path(f"/proc/self/task/{threading.get_native_id()}/comm")
        seen.append(comm.read_text().strip())

    thread = threading.Thread(target=target, name="the-python-name-of-it")
    thread.start()
    thread.join()
    return seen[0]


def test_a_thread_gets_the_name_given() -> None:
    assert os_name_of(lambda: name_this_thread("import-writer")) == "import-writer"


def test_by_default_its_python_name_cut_to_fifteen_bytes() -> None:
    assert os_name_of(name_this_thread) == "the-python-name"


def test_a_name_is_cut_between_characters() -> None:
    assert os_name_of(lambda: name_this_thread("ééééééé-x")) == "ééééééé-"  # 15 bytes
    assert os_name_of(lambda: name_this_thread("éééééééé")) == "ééééééé"  # not 7.5
