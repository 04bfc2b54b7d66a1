"""pyarrow turns Python values into scalars without a failed import each time.

pyarrow looks for ``dateutil.relativedelta`` whenever a compute function gets a Python value
(``pc.add(array, 1)``, as the import pipeline does for each batch many times). Without
python-dateutil installed each such call searched every directory of ``sys.path`` and failed:
~35 us a call against ~4, 4.7% of an import's reading thread. The dependency is declared for
that; this test fails if it goes missing.
"""

from __future__ import annotations

import builtins
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest


def test_compute_with_python_values_imports_nothing_that_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = pa.array([1, 2, 3], pa.int64())
    pc.add(values, 1)  # anything loaded once is loaded now
    failed: list[str] = []
    real_import = builtins.__import__

    def watched(name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return real_import(name, *args, **kwargs)
        except ImportError:
            failed.append(name)
            raise

    monkeypatch.setattr(builtins, "__import__", watched)
    assert pc.add(values, 1).to_pylist() == [2, 3, 4]
    assert pc.equal(pa.array(["a", "b"]), "b").to_pylist() == [False, True]
    monkeypatch.undo()
    assert failed == []
