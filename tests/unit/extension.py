"""Running a test with the C extensions and without them (their Python fallbacks)."""

from __future__ import annotations

from types import ModuleType

import pytest


def with_and_without(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, *modules: ModuleType
) -> str:
    """The body of a fixture parametrized ``["C", <fallback's name>]``: for the fallback the
    ``modules`` lose their ``_hashing``; "C" skips the test where it is not compiled."""
    if request.param != "C":
        for module in modules:
            monkeypatch.setattr(module, "_hashing", None)
    elif any(module._hashing is None for module in modules):
        pytest.skip("the _hashing extension is not compiled")
    return str(request.param)
