"""User-agent enrichment: which client sent a request, from which platform, and whether a bot.

Scarf reports each download's ``platform`` from a fixed list and lets an owner drop known bots
and user agents containing substrings of their choosing; this module answers those questions.

Downloads come mostly from package managers, container runtimes and build tools, which the
browser-oriented ua-parser rules either do not know (``npm/10.2.4 …`` is "Other") or misjudge
(``Java/17`` and ``Python-urllib/3.11`` are "spiders" to it). So the tool rules of
:mod:`eventport.enrich.agent_rules` are tried first, and only agents none of them claims go to
ua-parser, through its native ``ua-parser-rs`` resolver (46 times faster than its
pure-Python one on the same strings, measured).

Platforms follow Scarf's list. ``darwin`` is kept for agents that name only the Darwin kernel
(``MyApp/1.0 CFNetwork/1410.0.3 Darwin/22.6.0``): Darwin 22 is macOS 13 and iOS 16 alike, so
such an agent could be either, and ua-parser's guess of iOS would be a guess. Developer tools
that say darwin (npm, pip, conda, RubyGems) run on a Mac, so they get ``macos``.

Imports repeat a few agents millions of times, so :func:`parse_agent` is memoized (on the
agent's first :data:`MAX_AGENT_CHARS` characters, all it reads).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from ua_parser import OS, Domain, PartialResult, UserAgent, load_lazy_builtins
from ua_parser.regex import Resolver

from eventport.enrich.agent_rules import (
    BOT_MARKERS,
    BROWSER_WORDS,
    CI_ALIASES,
    CI_MARKERS,
    CLIENT_FAMILIES,
    NOT_SPIDERS,
    OS_FAMILY_PLATFORMS,
    PLATFORM_HINTS,
    PLATFORM_WORDS,
    RULES,
    UNKNOWN_PLATFORM,
    Rule,
)

PLATFORMS = (
    "macos",
    "darwin",
    "linux",
    "windows",
    "ios",
    "android",
    "aix",
    "freebsd",
    "openbsd",
    "sunos",
    UNKNOWN_PLATFORM,
)


@dataclass(frozen=True, slots=True)
class Agent:
    """What a user agent says about its sender; ``None`` wherever it says nothing usable."""

    client: str | None
    client_version: str | None
    platform: str
    bot: bool
    runtime: str | None = None
    ci: str | None = None


UNKNOWN = Agent(None, None, UNKNOWN_PLATFORM, False)


def _index_by_start(rules: Sequence[Rule]) -> dict[str, tuple[Rule, ...]]:
    index: dict[str, tuple[Rule, ...]] = {}
    for rule in rules:
        index[rule.start] = (*index.get(rule.start, ()), rule)
    return index


_RULES_BY_START = _index_by_start(RULES)

# For agents ua-parser places nowhere ("Mozilla/4.0 (compatible; MSIE 6.0; AIX 5.3)", unknown
# tools that say "(linux x86_64)"): an operating system named as a word of its own.
_OS_WORD = re.compile(r"\b(android|darwin|linux|windows|freebsd|openbsd|sunos|solaris|aix)\b", re.I)
_DARWIN_KERNEL = re.compile(r"\bDarwin/\d")
_APPLE_DEVICE = re.compile(r"Macintosh|Mac OS X|iPhone|iPad|iPod|\biOS\b")
# Salvage for linehaul JSON that arrives cut short (proxies truncate long agents) or mangled.
# Spaces allowed where JSON allows them (a proxy or a log may have written the JSON again).
_JSON_IMPLEMENTATION = re.compile(
    r'"implementation"\s*:\s*\{\s*"name"\s*:\s*"(\w+)"\s*,\s*"version"\s*:\s*"([^"]+)"'
)
_JSON_SYSTEM = re.compile(r'"system"\s*:\s*\{\s*"name"\s*:\s*"([^"]+)"')
_JSON_CI = re.compile(r'"ci"\s*:\s*true\b')
_NOT_IN_NAME = re.compile(r"[^a-z0-9.]+")
# ua-parser's names for a crawler it knows only by a word of its agent ("…; ChatGPT-User/1.0;
# +https://openai.com/bot)" is "com/bot"), and the product such an agent names: after
# "compatible; ", else its first one that is not Mozilla's.
_GENERIC_SPIDERS = frozenset({"com/bot", "crawler", "bot", "spider", "robot"})
_PRODUCT = re.compile(
    r"compatible; ([A-Za-z][\w.-]*)/(\d[\w.]*)|^(?!Mozilla/)([A-Za-z][\w.-]*)/(\d[\w.]*)"
)


#: How much of a user agent is read. ua-parser's expressions take longer on longer texts, and
#: its native resolver holds the GIL meanwhile (the whole server stalled): a hostile 1 MB agent
#: took 1-3.5 s, 2,048 characters up to ~5 ms, 1,024 at most ~0.1 ms (a resource hunt). No
#: client sends more: pip's, with its JSON, is ~500 characters. Also the memo's key is no
#: longer than this.
MAX_AGENT_CHARS = 1024


def parse_agent(user_agent: str | None) -> Agent:
    """Parse a user agent (its first :data:`MAX_AGENT_CHARS` characters); never raises, and an
    empty or unreadable one is :data:`UNKNOWN`."""
    return _parsed((user_agent or "").strip()[:MAX_AGENT_CHARS].rstrip())


@functools.lru_cache(maxsize=65536)
def _parsed(text: str) -> Agent:
    if not text:
        return UNKNOWN
    lowered = text.lower()
    for rule in _RULES_BY_START.get(lowered[:2], ()):
        if match := rule.pattern.match(text):
            agent = _tool_agent(rule, match)
            break
    else:
        agent = _other_agent(text)
    return Agent(
        agent.client,
        agent.client_version,
        agent.platform,
        agent.bot or any(marker in lowered for marker in BOT_MARKERS),
        agent.runtime,
        agent.ci or next((name for marker, name in CI_MARKERS if marker in lowered), None),
    )


def matches_any(user_agent: str | None, substrings: Sequence[str]) -> bool:
    """Whether the agent contains any of an owner's exclusion substrings, ignoring case.

    An empty substring is skipped: it would otherwise exclude every event, which no owner means.
    """
    if not user_agent:
        return False
    folded = user_agent.casefold()
    return any(substring and substring.casefold() in folded for substring in substrings)


def _tool_agent(rule: Rule, match: re.Match[str]) -> Agent:
    groups = match.groupdict()
    platform = _platform_from_text(groups.get("os") or groups.get("old_os"))
    runtime = _runtime(groups.get("runtime"), rule.runtime_name)
    ci = rule.ci or _ci_name(groups.get("ci"))
    if (linehaul := groups.get("json")) is not None:
        runtime, platform, json_ci = _read_linehaul(linehaul)
        ci = ci or json_ci
    return Agent(rule.client, groups.get("version"), platform, False, runtime, ci)


def _read_linehaul(raw: str) -> tuple[str | None, str, str | None]:
    """Runtime, platform and CI from the JSON pip and uv append (PyPI's "linehaul" format).

    Well-formed JSON is read as such; broken JSON still gives whatever fields survive intact.
    """
    try:
        data: object = orjson.loads(raw)
    except orjson.JSONDecodeError:
        implementation = _JSON_IMPLEMENTATION.search(raw)
        system = _JSON_SYSTEM.search(raw)
        return (
            f"{implementation[1]} {implementation[2]}" if implementation else None,
            _platform_from_text(system[1] if system else None),
            "ci" if _JSON_CI.search(raw) else None,
        )
    name = _text_at(data, "implementation", "name")
    version = _text_at(data, "implementation", "version")
    return (
        f"{name} {version}" if name and version else None,
        _platform_from_text(_text_at(data, "system", "name")),
        "ci" if isinstance(data, dict) and data.get("ci") is True else None,
    )


def _text_at(data: object, *keys: str) -> str | None:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data if isinstance(data, str) else None


def _other_agent(text: str) -> Agent:
    """Browsers, crawlers and whatever else ua-parser knows."""
    result = _resolve(text)
    platform = _os_platform(result.os)
    if platform == UNKNOWN_PLATFORM and (word := _OS_WORD.search(text)):
        platform = _platform_from_text(word[1])
    if (
        platform in ("macos", "ios", UNKNOWN_PLATFORM)
        and _DARWIN_KERNEL.search(text)
        and not _APPLE_DEVICE.search(text)
    ):
        platform = "darwin"
    browser = result.user_agent
    spider = result.device is not None and result.device.family == "Spider"
    generic = spider and browser is not None and browser.family.lower() in _GENERIC_SPIDERS
    if generic and (product := _PRODUCT.search(text)):
        # ua-parser names the kind, not the crawler: the product the agent names instead
        name, version = product[1] or product[3], product[2] or product[4]
        return Agent(name.lower(), version, platform, True)
    lowered = text.lower()
    if spider and any(library in lowered for library in NOT_SPIDERS):
        spider = False
    return Agent(
        _client_name(browser.family) if browser else None,
        _browser_version(browser) if browser else None,
        platform,
        spider,
    )


def _resolve(text: str) -> PartialResult:
    try:
        return _resolver()(text, Domain.ALL)
    except UnicodeEncodeError:  # lone surrogates, which the native resolver cannot take
        return _resolver()(text.encode("utf-8", "replace").decode("utf-8"), Domain.ALL)


@functools.cache
def _resolver() -> Resolver:
    """Built on first use: compiling ua-parser's ~1,300 expressions takes a tenth of a second
    that commands which never parse an agent should not pay."""
    return Resolver(load_lazy_builtins())


def load_agent_parser() -> None:
    """Build and exercise ua-parser's resolver now (at start-up) rather than in the first
    import's first batch (~0.15 s)."""
    _resolve("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36")


def _os_platform(os: OS | None) -> str:
    if os is None:
        return UNKNOWN_PLATFORM
    return OS_FAMILY_PLATFORMS.get(os.family) or _platform_from_text(os.family)


def _platform_from_text(text: str | None) -> str:
    if not text:
        return UNKNOWN_PLATFORM
    lowered = text.lower()
    if platform := PLATFORM_WORDS.get(lowered):
        return platform
    return next(
        (platform for hint, platform in PLATFORM_HINTS if hint in lowered), UNKNOWN_PLATFORM
    )


def _client_name(family: str) -> str | None:
    if family == "Other":
        return None
    if client := CLIENT_FAMILIES.get(family):
        return client
    first_word = family.split(" ", 1)[0].lower()
    if first_word in BROWSER_WORDS:
        return first_word
    return _NOT_IN_NAME.sub("-", family.lower()).strip("-") or None


def _browser_version(browser: UserAgent) -> str | None:
    parts: list[str] = []
    for part in (browser.major, browser.minor, browser.patch, browser.patch_minor):
        if not part:
            break
        parts.append(part)
    return ".".join(parts) or None


def _runtime(raw: str | None, name: str | None) -> str | None:
    if not raw:
        return None
    return f"{name} {raw}" if name else raw.replace("/", " ", 1)


def _ci_name(raw: str | None) -> str | None:
    """One CI name from an agent's list; a specific name wins over the generic "ci"."""
    if not raw:
        return None
    names = [CI_ALIASES.get(name, name) for name in raw.lower().split(",") if name]
    return next((name for name in names if name != "ci"), names[0] if names else None)
