"""The client's address behind trusted proxies: what limits by ``ip``, login throttling, the audit log and the
access log call the client."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_address

__all__ = ["TrustedProxies", "client_ip"]

TrustedProxies = tuple[IPv4Network | IPv6Network, ...]


def client_ip(peer: str, headers: list[tuple[bytes, bytes]], trusted: TrustedProxies) -> str:
    """The client's address. X-Forwarded-For is believed only when the peer is a trusted proxy, and then read
    from the right, skipping trusted proxies: everything left of the first untrusted hop could be forged."""
    if not _trusted(peer, trusted):
        return peer
    forwarded = [v.decode("latin-1") for k, v in headers if k == b"x-forwarded-for"]
    hops = [h.strip() for value in forwarded for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


def _trusted(address: str, trusted: TrustedProxies) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)
