"""Which URLs and addresses a download may reach.

A URL from a source table is untrusted input: fetched naively, `http://169.254.169.254/...`
reads a cloud machine's credentials and `http://10.0.0.5/admin` probes the cluster's network.
So only http/https is fetched, and every address a connection is about to use (first hop and
every redirect, after DNS resolution, so a name that resolves to a private address is caught)
must be globally routable, unless its host is in `download.allow_hosts`.
"""
from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from udfs.fetch_base import BLOCKED_URL, CONNECTION_ERROR, INVALID_URL, FetchFailure

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance-metadata services of the big clouds. The IPv4 ones mostly sit in link-local or shared
# space (blocked anyway); they are named so the error says what the URL was after.
CLOUD_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.123",  # AWS time sync
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (classic)
        "fd00:ec2::254",  # AWS over IPv6
    )
)

# IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64 translates them to it).
NAT64_PREFIXES = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
# Characters left as they are in a request path: the URL syntax, and existing %XX escapes. Spaces,
# control characters and non-ASCII text are percent-encoded.
URL_SAFE = "!#$%&'()*+,/:;=?@[]~"


@dataclass(frozen=True)
class HttpTarget:
    """A checked http(s) URL: scheme, host (lower case, no brackets), port, and the request path."""

    url: str
    scheme: str
    host: str
    port: int
    path: str


def blocked_reason(address: IPAddress) -> str | None:
    """Why a connection to `address` is refused, or None when it is a public unicast address.

    An IPv6 address that reaches an IPv4 one (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible,
    NAT64) is judged as that IPv4 address, so `::ffff:127.0.0.1` is loopback; one that tunnels to
    an IPv4 address (6to4, Teredo) is refused when either address is."""
    if address in CLOUD_METADATA:
        return "a cloud metadata address"
    translated = _translated_ipv4(address)
    if translated is not None:
        reason = _own_reason(translated)
        return f"{reason} ({translated} inside {address})" if reason else None
    for candidate in (address, *_tunnelled_ipv4(address)):
        reason = _own_reason(candidate)
        if reason:
            return reason if candidate == address else f"{reason} ({candidate} inside {address})"
    return None


def _own_reason(address: IPAddress) -> str | None:
    if address in CLOUD_METADATA:
        return "a cloud metadata address"
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("not globally routable", not address.is_global),
    )
    for name, hit in checks:
        if hit:
            return f"a {name} address"
    return None


def _translated_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address a connection to this IPv6 address actually reaches, if any."""
    if address.version != 6:
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if any(address in net for net in NAT64_PREFIXES) or (address in IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _tunnelled_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    if address.version != 6:
        return []
    found = [address.sixtofour] if address.sixtofour is not None else []
    return found + list(address.teredo or ())


def host_allowed(host: str, address: IPAddress | None, allow_hosts: Sequence[str]) -> bool:
    """True when the URL's host name, or the address it resolved to, is in `allow_hosts`
    (entries are host names, IP addresses or CIDR networks)."""
    host = host.lower().strip("[]")
    candidates = [a for a in (address, _as_address(host)) if a is not None]
    for entry in allow_hosts:
        network = _as_network(entry)
        if network is None:
            if host == entry:
                return True
        elif any(a.version == network.version and a in network for a in candidates):
            return True
    return False


@functools.lru_cache(maxsize=1024)  # the same few allow_hosts entries, on every connection
def _as_network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(entry.strip("[]"), strict=False)
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)  # the same hosts, on every connection
def _as_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_address(host: str, address: IPAddress, allow_hosts: Sequence[str]) -> None:
    """Raises blocked_url when `host` may not be reached at `address`."""
    if host_allowed(host, address, allow_hosts):
        return
    reason = blocked_reason(address)
    if reason:
        where = f"{host} is" if _as_address(host) == address else f"{host} resolves to {address},"
        raise FetchFailure(BLOCKED_URL, f"{where} {reason}; add the host to download.allow_hosts to allow it")


def parse_http_url(url: str, allow_hosts: Sequence[str]) -> HttpTarget:
    """Checks the parts of an http(s) URL that need no network: scheme, host, port, and the host
    itself when it is an IP literal. Names are checked when they resolve (`resolve_checked`)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as err:
        raise FetchFailure(INVALID_URL, f"not a valid URL: {url!r} ({err})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        shown = scheme or "(none)"
        raise FetchFailure(BLOCKED_URL, f"scheme {shown!r} is not fetched; only http and https are")
    host = _ascii_host(parts.hostname or "", url)
    if parts.username or parts.password:
        raise FetchFailure(BLOCKED_URL, "URLs with credentials (user:password@host) are not fetched")
    literal = _as_address(host)
    if literal is not None:
        check_address(host, literal, allow_hosts)
    path = quote(parts.path or "/", safe=URL_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=URL_SAFE)
    return HttpTarget(url, scheme, host, port or (443 if scheme == "https" else 80), path)


def _ascii_host(host: str, url: str) -> str:
    """The host in the ASCII form DNS and the Host header take (IDNA for international names)."""
    if not host:
        raise FetchFailure(INVALID_URL, f"URL has no host: {url!r}")
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise FetchFailure(INVALID_URL, f"host {host!r} is not a valid domain name") from None


def resolve_checked(host: str, port: int, allow_hosts: Sequence[str]) -> list[tuple]:
    """The host's addresses as getaddrinfo sockaddr tuples, each checked; blocked_url when none is
    allowed. Addresses that are refused are dropped, so a connection can only use allowed ones."""
    allowed, refused = [], None
    for family, sockaddr in _resolve(host, port):
        try:
            check_address(host, _as_address(sockaddr[0].split("%")[0]), allow_hosts)
        except FetchFailure as failure:
            refused = refused or failure
            continue
        allowed.append((family, sockaddr))
    if not allowed:
        raise refused or FetchFailure(CONNECTION_ERROR, f"{host} has no address", retryable=True)
    return allowed


def check_every_address(host: str, port: int, allow_hosts: Sequence[str]) -> None:
    """Raises blocked_url unless every address `host` resolves to is allowed: for a host that
    another client (yt-dlp) connects to on its own and may reach at any of its addresses, where
    `resolve_checked` drops the refused ones because vidlake connects itself."""
    for _family, sockaddr in _resolve(host, port):
        check_address(host, _as_address(sockaddr[0].split("%")[0]), allow_hosts)


def _resolve(host: str, port: int) -> list[tuple]:
    """(family, sockaddr) of every TCP address of `host`; connection_error when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as err:
        raise FetchFailure(CONNECTION_ERROR, f"cannot resolve {host}: {err}", retryable=True) from None
    if not infos:
        raise FetchFailure(CONNECTION_ERROR, f"{host} has no address", retryable=True)
    return [(family, sockaddr) for family, _type, _proto, _name, sockaddr in infos]
