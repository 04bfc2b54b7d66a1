"""Which imported events an owner has flagged as excluded from counts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExclusionRules:
    """An owner's rules: flag known bots (on by default) and user agents containing any of
    these substrings (compared ignoring case). Flagged events are kept, and counted nowhere."""

    exclude_bots: bool = True
    user_agent_substrings: tuple[str, ...] = ()
