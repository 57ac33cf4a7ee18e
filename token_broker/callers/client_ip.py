"""The client address of a request as the platform saw it, for per-address rate limiting.

App Service's front end appends the address of the connection it accepted to ``X-Forwarded-For``
(as ``ip:port`` for IPv4, ``[ip]:port`` for IPv6); entries to its left were sent by the client or by
proxies in front and can be forged. ``CALLER_TRUSTED_PROXY_HOPS`` says how many entries at the right
were appended by proxies you run in front of the app (Front Door, API Management...): the entry just
left of them is the client. The address is normalised (port dropped, IPv4-mapped IPv6 unwrapped) and
IPv6 is grouped by /64, the smallest prefix a host is normally given, so one host cannot rotate
addresses to get fresh buckets. A missing or unparseable entry maps to one shared ``unknown`` key:
never a key chosen by the request.
"""

from __future__ import annotations

import ipaddress

UNKNOWN = "unknown"
IPV6_GROUP_PREFIX = 64
MAX_ENTRY_LENGTH = 64  # "[" + 45-character IPv6 text + "]:65535", with room for a zone id


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and int(text) <= 65535


def parse_address(entry: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in one ``X-Forwarded-For`` entry (``1.2.3.4``, ``1.2.3.4:5678``, ``[::1]:5678``, ``::1``)."""
    text = entry.strip()
    if not text or len(text) > MAX_ENTRY_LENGTH:
        return None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and _is_port(rest[1:]))):
            return None
        text = host
    elif text.count(":") == 1:  # IPv4 with a port; bare IPv6 has at least two colons
        text, _, port = text.partition(":")
        if not _is_port(port):
            return None
    text = text.partition("%")[0]  # an IPv6 zone id names a local interface, not a host
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_key(forwarded_for: str | None, *, trusted_proxy_hops: int = 0) -> str:
    """The rate-limit key of the client: its IPv4 address, its IPv6 /64, or :data:`UNKNOWN`."""
    if not forwarded_for:
        return UNKNOWN
    entries = forwarded_for.split(",")
    if len(entries) <= trusted_proxy_hops:
        return UNKNOWN
    address = parse_address(entries[-1 - trusted_proxy_hops])
    if address is None:
        return UNKNOWN
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_GROUP_PREFIX), strict=False))
    return str(address)
