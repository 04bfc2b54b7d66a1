"""Text rules every store shares."""

from __future__ import annotations

from typing import Any


def without_nul(value: Any) -> Any:
    """Text with U+0000 replaced by U+FFFD, in a JSON value (strings, lists and objects,
    keys too): PostgreSQL cannot store NUL, so neither store does.

    Callers test for a NUL first (a substring search), so the common case pays only that.
    """
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value
