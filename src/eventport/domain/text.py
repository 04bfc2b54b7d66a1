"""Text rules every store shares."""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Final


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


# Anything in a text shaped like an IPv4 address (four dotted numbers of 1-3 digits, valid or
# not: an address like 152.241.796.177 is still someone's attempt at theirs), or a valid IPv6
# address (hex groups and colons, an IPv4 tail and a zone allowed; a time such as 12:30:00 is
# not one). An IPv4 address glued to a word counts (``ip_203.0.113.9``, ``client:203.0.113.9``,
# and a JSON value written without quotes: ``"$remote_address":203.0.113.9``), not one inside a
# longer dotted number (a sentence's full stop after it is not part of it); an IPv6 address may
# follow a colon (``"a":2001:db8::1``) or an underscore (``ip_2001:db8::1``), not a letter or
# a digit (``std::vector``).
_IPV4: Final = r"\d{1,3}(?:\.\d{1,3}){3}"
_ADDRESS_LIKE: Final = re.compile(
    rf"(?<![0-9])(?<!\d\.){_IPV4}(?![0-9]|\.\d)|"
    r"(?<![A-Za-z0-9])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}(?:%[\w-]+)?(?![\w:]|\.\d)"
)
_IPV4_ONLY: Final = re.compile(_IPV4)
ADDRESS_SHOWN: Final = "<address>"


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _address_shown(match: re.Match[str]) -> str:
    token = match[0]
    if _IPV4_ONLY.fullmatch(token):
        return ADDRESS_SHOWN
    return _ipv6_shown(match)  # or colons, but no address (a time, say)


def without_addresses(text: str) -> str:
    """``text`` with every IP address in it shown as ``<address>``: for messages that quote what
    an imported line held, which must not keep a raw IP in the import's log."""
    if "." not in text and ":" not in text:
        return text
    return _ADDRESS_LIKE.sub(_address_shown, text)


# Stored request headers are searched harder than messages: an address glued to a word
# (``ip:203.0.113.9``, ``proxy_198.51.100.7``, ``client:2001:db8::1``) is one all the same. So
# is a version spelled like one (``Chrome/120.0.0.0``): a header keeps no raw address, whatever
# else it loses.
_IPV4_ANYWHERE: Final = re.compile(rf"(?<![0-9]){_IPV4}(?![0-9])")
_IPV6_CANDIDATE: Final = re.compile(
    r"[0-9A-Fa-f]*(?::[0-9A-Fa-f]*){2,}(?:\.\d{1,3}){0,3}(?:%[\w.-]+)?"
)


def _ipv6_shown(match: re.Match[str]) -> str:
    token = match[0]
    # a word's colon may lead it ("client:2001:db8::1"), where "::" would begin an address
    glued = token.startswith(":") and not token.startswith("::")
    for start in (0, 1) if glued else (0,):
        if _is_address(token[start:].split("%", 1)[0]):
            return token[:start] + ADDRESS_SHOWN
    return token


def without_any_addresses(text: str) -> str:
    """``text`` with every IPv4-shaped run of four dotted numbers and every valid IPv6 address
    shown as ``<address>``, wherever it stands: for stored request headers."""
    if "." not in text and ":" not in text:
        return text
    return _IPV6_CANDIDATE.sub(_ipv6_shown, _IPV4_ANYWHERE.sub(ADDRESS_SHOWN, text))


QUOTED_CHARS: Final = 80
_ADDRESS_CHARS: Final = 64  # past the cut, enough for the longest IPv6 address with a zone


def head_without_addresses(text: str) -> str:
    """The start of ``text``, enough for a message's cut to ``QUOTED_CHARS``, its addresses
    shown as ``<address>``: hidden before the cut, so an address across it is not shown in
    part."""
    return without_addresses(text[: QUOTED_CHARS + _ADDRESS_CHARS])


def quoted(value: str) -> str:
    """``value`` quoted for a message, addresses hidden, cut to ``QUOTED_CHARS``."""
    return repr(head_without_addresses(value)[:QUOTED_CHARS])
