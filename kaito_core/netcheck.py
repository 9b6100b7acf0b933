"""Is a data-source URL safe to fetch from inside the cluster?

A tuning job downloads ``tuning.input.urls`` from a pod in the cluster, so a URL pointing at
the node, the cluster network or the cloud's metadata service would let a workspace author
read what they should not (server-side request forgery). Admission refuses:

* schemes other than http and https;
* host names that always mean "this machine" or "the metadata service" (``localhost``,
  ``*.localhost``, ``metadata.google.internal``, ``instance-data.ec2.internal``, ...) and
  in-cluster service names (``*.svc``, ``*.cluster.local``);
* IP literals that are not globally routable: loopback, private, link-local (which includes
  169.254.169.254, the metadata address of every big cloud), unspecified, multicast, reserved,
  shared (100.64.0.0/10), and the same addresses hidden in IPv4-mapped (``::ffff:127.0.0.1``),
  NAT64 (``64:ff9b::7f00:1``) and 6to4 IPv6 forms, or written the ways ``inet_aton`` accepts
  (``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``); plus Azure's wire server
  168.63.129.16 and Alibaba's 100.100.100.200.

Host names are **not** resolved here: admission must not depend on DNS, and an answer could
change before the download anyway (DNS rebinding). The downloader therefore re-checks every
address a name resolves to with :func:`forbidden_address_reason` right before it connects.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

BLOCKED_HOSTS = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "ip6-localhost",
        "ip6-loopback",
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.com",
        "metadata.tencentyun.com",
        "kubernetes",
        "kubernetes.default",
    }
)
"""Host names that always mean this machine, a cloud metadata service or the API server."""
BLOCKED_HOST_SUFFIXES = (".localhost", ".svc", ".cluster.local", ".internal")
"""Suffixes of such names (``.internal`` covers every cloud's private DNS zone)."""
BLOCKED_ADDRESSES = frozenset({ipaddress.ip_address("168.63.129.16"), ipaddress.ip_address("100.100.100.200")})
"""Public-looking addresses that are metadata/control endpoints (Azure wire server, Alibaba)."""
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

MSG_SCHEME = "data source URL must use HTTP or HTTPS"
MSG_LOCAL = "data source URL must not target a local or metadata endpoint"
MSG_PRIVATE = "data source URL must not target a loopback, private, or link-local address"


def parse_ipv4_lenient(text: str) -> ipaddress.IPv4Address | None:
    """Parse an IPv4 address the way ``inet_aton`` does: 1 to 4 parts, each decimal, octal
    (leading 0) or hex (0x), the last part filling the remaining bytes. None if it is not one."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or any(p == "" for p in parts):
        return None
    values: list[int] = []
    for part in parts:
        try:
            if part.lower().startswith("0x"):
                values.append(int(part[2:] or "0", 16))
            elif len(part) > 1 and part.startswith("0"):
                values.append(int(part[1:], 8))
            else:
                values.append(int(part, 10))
        except ValueError:
            return None
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = 0
    for v in head:
        number = number * 256 + v
    number = (number << (8 * (4 - len(head)))) + last
    return ipaddress.IPv4Address(number)


def parse_ip_host(host: str) -> IPAddress | None:
    """The IP address a URL host denotes, if it is an IP literal in any accepted spelling."""
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fA-FxX.]+", bare) and any(c.isdigit() for c in bare):
        return parse_ipv4_lenient(bare)
    return None


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def forbidden_address_reason(ip: IPAddress) -> str | None:
    """Why connecting to ``ip`` is refused (e.g. "127.0.0.1 is loopback"), or None if allowed.

    The downloader calls this for every address a host name resolves to.
    """
    inner = _embedded_ipv4(ip)
    if inner is not None:
        reason = forbidden_address_reason(inner)
        return f"{ip} embeds {reason}" if reason else None
    if ip in BLOCKED_ADDRESSES:
        return f"{ip} is a cloud metadata/control endpoint"
    for attr, what in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_private", "private"),
        ("is_unspecified", "unspecified"),
        ("is_multicast", "multicast"),
        ("is_reserved", "reserved"),
    ):
        if getattr(ip, attr):
            return f"{ip} is {what}"
    if not ip.is_global:
        return f"{ip} is not globally routable"
    return None


def data_url_problem(url: str) -> tuple[str, str] | None:
    """Check one data-source URL without DNS; returns ``(message, detail)`` or None when allowed."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return MSG_SCHEME, f"{url!r} is not a valid URL ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        shown = parts.scheme or "none"
        return MSG_SCHEME, f"{url!r} uses scheme {shown}"
    if not host:
        return MSG_SCHEME, f"{url!r} has no host"
    host = host.rstrip(".").lower()
    if host in BLOCKED_HOSTS or host.endswith(BLOCKED_HOST_SUFFIXES):
        return MSG_LOCAL, f"host {host} is local, in-cluster or a metadata service"
    ip = parse_ip_host(host)
    if ip is not None:
        reason = forbidden_address_reason(ip)
        if reason:
            return MSG_PRIVATE, reason
    return None
