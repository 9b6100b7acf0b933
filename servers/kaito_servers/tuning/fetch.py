"""Download tuning data from URLs safely: SSRF guard, retries, a size limit, a content check.

Each URL is checked with :func:`kaito_core.netcheck.data_url_problem` (scheme, local and metadata
names, private IP literals); its host name is then resolved and *every* address is checked with
:func:`~kaito_core.netcheck.forbidden_address_reason`, and the connection goes to the checked
address (the TLS name is still the host's), so a DNS answer cannot change between check and
connect (rebinding). Redirects are followed by hand (at most 5), each target checked the same
way. ``allow_hosts`` (the operator setting ``KAITO_TUNING_ALLOW_HOSTS``, used by tests to reach
a loopback server) lists host names or IPs exempt from the address rules, never from the scheme.

Transient failures (connection errors, 429/5xx) are retried with backoff by urllib3's ``Retry``.
The body is streamed to a temporary file and refused past ``max_bytes``; an HTML page (the
usual result of a sign-in wall or a "view" link) is refused by content type and by its first
bytes; a ``.parquet`` name must hold a parquet file (``PAR1`` magic).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Collection
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin, urlsplit

from kaito_core.errors import KaitoError
from kaito_core.netcheck import data_url_problem, forbidden_address_reason

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 10 * 1024**3
MAX_REDIRECTS = 5
ALLOW_HOSTS_ENV = "KAITO_TUNING_ALLOW_HOSTS"


class FetchError(KaitoError):
    """A data URL was refused or could not be downloaded; the message names the URL and the fix."""


def allowed_hosts_from_env() -> frozenset[str]:
    """The operator's exemption list (comma-separated host names or IPs), empty by default."""
    return frozenset(h.strip().lower() for h in os.environ.get(ALLOW_HOSTS_ENV, "").split(",") if h.strip())


def _resolve_checked(url: str, host: str, port: int, allow_hosts: Collection[str]) -> str:
    """The address to connect to: every resolved address must pass the guard (unless allowed)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"{url}: cannot resolve {host} ({exc.strerror}). Fix: check the host name") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if host.lower() not in allow_hosts:
        for address in addresses:
            reason = forbidden_address_reason(ipaddress.ip_address(address.split("%")[0]))
            if reason:
                raise FetchError(f"{url}: refused, {host} resolves to {reason}; data URLs must be public. Fix: host "
                                 "the file on a public address, or use a volume or image input")
    return addresses[0]


def check_url(url: str, allow_hosts: Collection[str] = ()) -> None:
    """Refuse a URL by scheme/host rules without DNS (as admission does), unless its host is allowed."""
    problem = data_url_problem(url)
    if problem is None:
        return
    host = (urlsplit(url).hostname or "").lower()
    message, detail = problem
    if host and host in allow_hosts and "HTTP or HTTPS" not in message:
        return
    raise FetchError(f"{url}: {message} ({detail}). Fix: use a public http(s) URL, or a volume or image input")


def _file_name(url: str) -> str:
    name = PurePosixPath(urlsplit(url).path).name
    if not name or name in (".", ".."):
        raise FetchError(f"{url}: the URL path has no file name. Fix: link to the file itself (…/train.parquet)")
    return name


def _check_content(url: str, path: Path, name: str, content_type: str) -> None:
    with path.open("rb") as f:
        head = f.read(512)
        f.seek(max(0, path.stat().st_size - 4))
        tail = f.read(4)
    lowered = head.lstrip().lower()
    if content_type.startswith("text/html") or lowered.startswith((b"<!doctype html", b"<html")):
        raise FetchError(f"{url}: the server sent an HTML page ({content_type or 'no content type'}), not data. "
                         "Fix: use the link to the raw file (not its web page), and make sure it needs no sign-in")
    if name.lower().endswith(".parquet") and not (head.startswith(b"PAR1") and tail == b"PAR1"):
        raise FetchError(f"{url}: {name} is not a parquet file (no PAR1 magic). Fix: check the link and the file")


def fetch_url(url: str, dest_dir: Path, *, allow_hosts: Collection[str] = (), max_bytes: int = DEFAULT_MAX_BYTES,
              retries: int = 3, timeout_s: float = 60.0, backoff_s: float = 0.5) -> Path:
    """Download ``url`` into ``dest_dir`` (file name = the URL's last path segment); returns the file.

    Raises:
        FetchError: refused by the guard, too large, HTML or not the format its name says, or the
            server kept failing after the retries.
    """
    import urllib3
    from urllib3.util import Retry, Timeout

    allow = frozenset(h.lower() for h in allow_hosts)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / _file_name(url)
    tmp = target.with_name(f".{target.name}.part")
    retry = Retry(total=retries, connect=retries, read=retries, status=retries, backoff_factor=backoff_s,
                  status_forcelist=(429, 500, 502, 503, 504), redirect=False, raise_on_status=False)
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        check_url(current, allow)
        parts = urlsplit(current)
        host = parts.hostname or ""
        https = parts.scheme.lower() == "https"
        port = parts.port or (443 if https else 80)
        address = _resolve_checked(current, host, port, allow)
        timeout = Timeout(connect=10.0, read=timeout_s)
        pool: urllib3.HTTPConnectionPool
        if https:  # connect to the checked address, verify the certificate for the host name
            pool = urllib3.HTTPSConnectionPool(address, port, timeout=timeout, retries=retry, server_hostname=host,
                                               assert_hostname=host)
        else:
            pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=retry)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        try:
            response = pool.urlopen("GET", path, headers={"Host": parts.netloc.rsplit("@", 1)[-1]}, preload_content=False,
                                    redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            raise FetchError(f"{url}: download failed after {retries} retries: {exc}. Fix: check that the server is "
                             "reachable from the cluster") from None
        try:
            if response.status in (301, 302, 303, 307, 308) and response.headers.get("Location"):
                current = urljoin(current, response.headers["Location"])
                log.info("following a redirect", extra={"url": url, "to": current})
                continue
            if response.status != 200:
                raise FetchError(f"{url}: the server answered HTTP {response.status}"
                                 f"{' after retries' if response.status >= 500 or response.status == 429 else ''}. "
                                 "Fix: check the URL and that the file is public")
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise FetchError(f"{url}: {int(length)} bytes is over the limit of {max_bytes}. Fix: use a smaller file or "
                                 "a volume input")
            size = 0
            with tmp.open("wb") as f:
                for chunk in response.stream(1 << 20):
                    size += len(chunk)
                    if size > max_bytes:
                        raise FetchError(f"{url}: more than {max_bytes} bytes. Fix: use a smaller file or a volume input")
                    f.write(chunk)
            _check_content(url, tmp, target.name, response.headers.get("Content-Type", "").lower())
            tmp.replace(target)
            log.info("downloaded", extra={"url": url, "file": str(target), "bytes": size})
            return target
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            response.release_conn()
            pool.close()
    raise FetchError(f"{url}: more than {MAX_REDIRECTS} redirects. Fix: link to the file's final location")
