"""Keep webhooks from becoming a way into the internal network.

Only http and https; the host is resolved and every address must be public (no private,
loopback, link-local — which includes the 169.254.169.254 metadata service —, multicast,
reserved or unspecified ranges, nor an IPv6 address embedding such an IPv4 one) unless the
host is listed in WEBHOOK_ALLOWED_HOSTS. The check runs when a URL is registered and again
right before each POST, and the POST goes to the address that was checked, so a DNS answer
that changes in between (rebinding) cannot redirect it.
"""

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings


class UnsafeUrl(ValueError):
    pass


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    address: str  # the checked IP to connect to
    path: str  # path and query


def _host_allowed(host: str, port: int) -> bool:
    allowed = settings.WEBHOOK_ALLOWED_HOSTS
    return host in allowed or f"{host}:{port}" in allowed


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """IPv4 addresses that an IPv6 address carries and that a relay or gateway would reach.

    6to4 (2002::/16) and Teredo (2001::/32) are globally routed prefixes, so Python counts
    2002:7f00:1:: as public although a 6to4 relay delivers it to 127.0.0.1. NAT64
    (64:ff9b::/96) and IPv4-compatible addresses sit in ::/8, which is refused as reserved
    whatever they embed.
    """
    embedded = []
    if address.ipv4_mapped:
        embedded.append(("IPv4-mapped", address.ipv4_mapped))
    if address.sixtofour:
        embedded.append(("6to4", address.sixtofour))
    if address.teredo:
        server, client = address.teredo
        embedded += [("Teredo server", server), ("Teredo client", client)]
    return embedded


def _refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address):
        for label, ipv4 in _embedded_ipv4(address):
            reason = _refusal(ipv4)
            if reason:
                return reason if label == "IPv4-mapped" else f"{label} (embedding {reason} {ipv4})"
    for label, flag in (
        ("loopback", address.is_loopback),
        ("link-local (cloud metadata)", address.is_link_local),
        ("private", address.is_private),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("unspecified", address.is_unspecified),
    ):
        if flag:
            return label
    if not address.is_global:
        return "non-public"
    return None


def check_url(url: str) -> Target:
    """Resolve and vet a webhook URL; raises UnsafeUrl with a reason a user can act on."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"Not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("Only http:// and https:// URLs are allowed.")
    if not parts.hostname:
        raise UnsafeUrl("The URL has no host.")
    if parts.username or parts.password:
        raise UnsafeUrl("Credentials in the URL are not allowed; authenticate with the signature instead.")
    host = parts.hostname
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UnsafeUrl(f"The host {host!r} cannot be resolved.") from None
    addresses = sorted({info[4][0] for info in infos})
    if not _host_allowed(host, port):
        for raw in addresses:
            reason = _refusal(ipaddress.ip_address(raw.split("%")[0]))
            if reason:
                raise UnsafeUrl(f"The host {host!r} resolves to a {reason} address ({raw}); that is refused.")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(scheme=parts.scheme, host=host, port=port, address=addresses[0], path=path)
