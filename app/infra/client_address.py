"""Which address a request really comes from, given the proxies we trust.

The rule (also in README "Client addresses"):

1. The *peer* is the ASGI scope's `client` host: the socket peer of the server in front of the app.
2. If the peer is not inside one of `settings.trusted_proxies` (CIDRs), it is the client address;
   any `X-Forwarded-For` is ignored, because anyone can send that header.
3. If the peer is trusted, `X-Forwarded-For` (all header lines, comma-joined in order) is walked from
   the right: each trusted hop is skipped, the first untrusted hop is the client. A hop that cannot be
   parsed as an IP address ends the walk and the last address we could vouch for stands. When every
   hop is trusted, the leftmost one is the client (it is itself one of our hosts).

Ray Serve's HTTP proxy runs uvicorn with `proxy_headers` on and trusts the addresses in the
environment variable `FORWARDED_ALLOW_IPS` (default `127.0.0.1,::1`): for a loopback peer it has
already replaced the scope's `client` with the right-most non-loopback `X-Forwarded-For` entry
before the ingress sees the request. `code4me up` and the Docker image therefore start Ray with
`FORWARDED_ALLOW_IPS=""`, so the scope's `client` is the real socket peer and the rule above is the
only one applied; deployments started otherwise must export it themselves.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from starlette.requests import HTTPConnection

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# IPv6 clients usually own a whole /64: keying on one address would let them rotate freely.
IPV6_BUCKET_PREFIX = 64


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs (or bare addresses) as networks; raises ValueError for anything else."""
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)


def parse_ip(value: str) -> IPAddress | None:
    """An address from a peer or forwarded hop (`1.2.3.4`, `1.2.3.4:80`, `[::1]:80`, `::1`), else None."""
    value = value.strip()
    port = ""
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return None
        value, port = value[1:end], value[end + 1 :].removeprefix(":")
    elif value.count(":") == 1:
        value, port = value.split(":", 1)  # IPv4 with a port
    if port and not port.isdigit():
        return None
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    # ::ffff:1.2.3.4 is the IPv4 client seen through a dual-stack socket.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_trusted(ip: IPAddress | None, trusted: Sequence[IPNetwork]) -> bool:
    """Whether an address lies in one of the trusted proxy networks."""
    return ip is not None and any(ip.version == net.version and ip in net for net in trusted)


def forwarded_hops(header_values: Iterable[str]) -> list[str]:
    """The hops of every `X-Forwarded-For` line, left to right."""
    return [hop.strip() for value in header_values for hop in value.split(",") if hop.strip()]


def resolve_client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted: Sequence[IPNetwork]
) -> str:
    """The client address by the rule in this module's docstring; the peer text when it is not an IP."""
    if not peer:
        return "unknown"
    peer_ip = parse_ip(peer)
    if peer_ip is None:
        return peer  # a unix socket or a test client name: never trusted
    if not is_trusted(peer_ip, trusted):
        return str(peer_ip)
    address = peer_ip
    for hop in reversed(forwarded_hops(forwarded_for)):
        ip = parse_ip(hop)
        if ip is None:
            break
        address = ip
        if not is_trusted(ip, trusted):
            break
    return str(address)


def address_bucket(address: str) -> str:
    """What rate limits key on: the IPv4 address, the IPv6 /64, or the text of a non-IP peer."""
    ip = parse_ip(address)
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, IPV6_BUCKET_PREFIX), strict=False))
    return str(ip) if ip is not None else address


def client_address_of(conn: HTTPConnection, trusted: Sequence[IPNetwork]) -> str:
    """The client address of a request or WebSocket by the rule above."""
    peer = conn.client.host if conn.client else None
    return resolve_client_address(peer, conn.headers.getlist("x-forwarded-for"), trusted)
