"""Client address resolution: X-Forwarded-For is believed only from trusted proxies, walked from the right."""

from __future__ import annotations

import pytest

from app.api.ratelimit import route_class_of
from app.infra.client_address import address_bucket, parse_ip, parse_networks, resolve_client_address
from app.infra.settings import Settings

TRUSTED = parse_networks(["10.0.0.0/8", "192.168.1.1", "2001:db8:ffff::/48"])


@pytest.mark.parametrize(
    "peer, forwarded, expected",
    [
        # Untrusted peer: the header is whatever the client chose, so it is ignored.
        ("203.0.113.9", [], "203.0.113.9"),
        ("203.0.113.9", ["1.1.1.1"], "203.0.113.9"),
        ("203.0.113.9", ["10.0.0.1"], "203.0.113.9"),
        # Trusted peer: the first untrusted hop from the right.
        ("10.0.0.5", ["198.51.100.7"], "198.51.100.7"),
        ("10.0.0.5", ["6.6.6.6, 198.51.100.7"], "198.51.100.7"),  # a spoofed left entry does not win
        ("10.0.0.5", ["6.6.6.6, 198.51.100.7, 10.1.2.3"], "198.51.100.7"),  # trusted hops skipped
        ("10.0.0.5", ["6.6.6.6", "198.51.100.7, 192.168.1.1"], "198.51.100.7"),  # several header lines
        ("10.0.0.5", ["198.51.100.7:5555"], "198.51.100.7"),  # a port on the hop
        ("10.0.0.5", ["[2001:db8::1]:443"], "2001:db8::1"),
        ("10.0.0.5", ["2001:db8::1"], "2001:db8::1"),
        # Every hop trusted: the leftmost (the client is one of ours).
        ("10.0.0.5", ["10.9.9.9, 10.1.1.1"], "10.9.9.9"),
        # No header, or garbage: the last address we could vouch for.
        ("10.0.0.5", [], "10.0.0.5"),
        ("10.0.0.5", ["not-an-ip"], "10.0.0.5"),
        ("10.0.0.5", ["unknown, 10.1.1.1"], "10.1.1.1"),
        ("10.0.0.5", ["198.51.100.7, garbage"], "10.0.0.5"),
        ("10.0.0.5", [" , "], "10.0.0.5"),
        # Peers that are not IP addresses are never trusted.
        ("testclient", ["198.51.100.7"], "testclient"),
        (None, ["198.51.100.7"], "unknown"),
        ("", [], "unknown"),
        # IPv4-mapped IPv6 peers are their IPv4 address (and trusted as such).
        ("::ffff:10.0.0.5", ["198.51.100.7"], "198.51.100.7"),
        ("::ffff:203.0.113.9", ["198.51.100.7"], "203.0.113.9"),
        ("2001:db8:ffff::1", ["198.51.100.7"], "198.51.100.7"),
    ],
)
def test_resolution_rule(peer: str | None, forwarded: list[str], expected: str) -> None:
    assert resolve_client_address(peer, forwarded, TRUSTED) == expected


def test_nothing_trusted_by_default() -> None:
    assert (
        resolve_client_address("127.0.0.1", ["198.51.100.7"], parse_networks(Settings().trusted_proxies))
        == "127.0.0.1"
    )


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4:80 ", "1.2.3.4"),
        ("[::1]:8000", "::1"),
        ("[::1", None),
        ("1.2.3.4:x", None),
        ("999.1.1.1", None),
        ("", None),
    ],
)
def test_parse_ip(value: str, expected: str | None) -> None:
    ip = parse_ip(value)
    assert (str(ip) if ip else None) == expected


@pytest.mark.parametrize(
    "address, bucket",
    [
        ("198.51.100.7", "198.51.100.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
        ("testclient", "testclient"),
    ],
)
def test_ipv6_clients_share_their_64(address: str, bucket: str) -> None:
    assert address_bucket(address) == bucket


def test_settings_refuse_a_bad_proxy_entry() -> None:
    with pytest.raises(ValueError, match="trusted_proxies"):
        Settings(trusted_proxies=["10.0.0.0/8", "not-a-network"])
    assert Settings(trusted_proxies=["10.0.0.1", "fd00::/8"]).trusted_proxies == ["10.0.0.1", "fd00::/8"]


@pytest.mark.parametrize(
    "path, route_class",
    [
        ("/api/user/authenticate", "auth"),
        ("/api/user/authenticate/", "auth"),
        ("/api/user/create", "auth"),
        ("/api/user/verify/abc", "auth"),
        ("/api/user/reset-password/request", "auth"),
        ("/api/user/createx", "default"),
        ("/api/user/get", "default"),
        ("/api/completion/request", "completion"),
        ("/api/completion/multi-file-context/update", "completion"),
        ("/api/chat/request", "completion"),
        ("/api/ws/completion", "completion"),
        ("/api/project/create", "default"),
        ("/api/unknown", "default"),
        ("/api", "default"),
        ("/api/ping", None),
        ("/docs", None),
        ("/openapi.json", None),
        ("/apis", None),
    ],
)
def test_route_classes(path: str, route_class: str | None) -> None:
    assert route_class_of(path) == route_class
