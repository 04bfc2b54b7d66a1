"""Text rules the stores and the import's messages share (domain/text.py)."""

from __future__ import annotations

import pytest

from eventport.domain.text import quoted, without_addresses, without_any_addresses


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ('{"$remote_address": "52.94.76.41"}', '{"$remote_address": "<address>"}'),
        ("152.241.796.177", "<address>"),  # not a valid address, still someone's attempt
        ("10.0.0.1,10.0.0.2", "<address>,<address>"),
        ("1.2.3.4:8080", "<address>:8080"),
        ("http://1.2.3.4/x", "http://<address>/x"),
        ("from 1.2.3.4.", "from <address>."),
        ("2001:4860:4860::8844", "<address>"),
        ("2a03:2880:f10c:83:face:b00c:0:25de", "<address>"),
        ("::ffff:52.94.76.46", "<address>"),
        ("[2001:db8::1]:443", "[<address>]:443"),
        ("fe80::1%eth0 and ::1", "<address> and <address>"),
        # glued to a word or a colon (an enrichment hunt found these kept raw in the log)
        ('{"$remote_address":45.33.88.99,"$time":1}', '{"$remote_address":<address>,"$time":1}'),
        ('{"$remote_address":2600:3c00::beef,"x":1}', '{"$remote_address":<address>,"x":1}'),
        ('{"a":2600:1f18::1}', '{"a":<address>}'),
        ("client:2001:db8::abcd", "client:<address>"),
        ("ip_45.79.33.44 x:45.33.77.7", "ip_<address> x:<address>"),
        ("v1.2.3.4", "v<address>"),
        # an IPv6 address after an underscore (a verification hunt: raw, or its first group)
        ("ip_2600:1f18:abcd:1234:5678:9abc:def0:1234", "ip_<address>"),
        ("leak ip_2001:db8::1", "leak ip_<address>"),
        # not addresses: left as they are
        ("2024-06-04T00:00:00.123Z", "2024-06-04T00:00:00.123Z"),
        ("12:30:00", "12:30:00"),
        ("1.2.3", "1.2.3"),
        ("1.2.3.4.5", "1.2.3.4.5"),
        ("std::vector", "std::vector"),
        ("deadbeef::", "deadbeef::"),
        ("00:1a:2b:3c:4d:5e", "00:1a:2b:3c:4d:5e"),
        ("no address here", "no address here"),
    ],
)
def test_addresses_are_left_out(text: str, shown: str) -> None:
    assert without_addresses(text) == shown


def test_quoted_hides_an_address_before_cutting() -> None:
    """An address across the 80-character cut is hidden whole, not shown in part."""
    across = "p" * 70 + " 81.169.145.105 and more"
    assert quoted(across) == repr("p" * 70 + " <address>")
    assert "81.169" not in quoted(across)
    assert quoted("left-pad") == "'left-pad'"
    assert quoted("x" * 200) == repr("x" * 80)


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        # glued to a word, which a message's search leaves alone (a live probe found them raw)
        ("ip:203.0.113.99", "ip:<address>"),
        ("client:2001:db8::abcd", "client:<address>"),
        ("proxy_198.51.100.77", "proxy_<address>"),
        (
            "hop 52.94.76.30 then [2a03:2880:f10c:83:face:b00c:0:2549]:443",
            "hop <address> then [<address>]:443",
        ),
        ("fe80::1%eth0 x", "<address> x"),
        ("::ffff:1.2.3.4", "::ffff:<address>"),
        # a version spelled as an address goes too: a header keeps no raw address
        ("Chrome/120.0.0.0 Safari/537.36", "Chrome/<address> Safari/537.36"),
        # not addresses
        ("1.1 vegur", "1.1 vegur"),
        ("Tue, 08 Dec 2026 08:12:31 GMT", "Tue, 08 Dec 2026 08:12:31 GMT"),
        ("00:1a:2b:3c:4d:5e", "00:1a:2b:3c:4d:5e"),
        ("10.0.19041.1", "10.0.19041.1"),
        ("a::b::c", "a::b::c"),
    ],
)
def test_stored_headers_keep_no_address_anywhere(text: str, stored: str) -> None:
    assert without_any_addresses(text) == stored
