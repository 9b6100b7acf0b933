"""A minimal, dependency-free Kubernetes REST client for the local cluster.

It is what :class:`~kaito_localcluster.cluster.LocalCluster` uses for readiness
checks and helpers (so tests do not pay for a ``kubectl`` process per call).  It
only talks to the loopback apiserver it was given.
"""

from __future__ import annotations

import http.client
import json
import logging
import ssl
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from .nodeconfig import BRIDGE_IP

log = logging.getLogger(__name__)

T = TypeVar("T")

JSON = dict[str, Any]


class ApiError(RuntimeError):
    """The apiserver answered with an HTTP error status."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.body = body
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{method} {path} -> HTTP {status}: {message}")

    @property
    def reason(self) -> str:
        """The ``Status.reason`` (e.g. ``NotFound``, ``Invalid``, ``AlreadyExists``)."""
        return str(self.body.get("reason", "")) if isinstance(self.body, dict) else ""


class KubeApi:
    """HTTPS+JSON client authenticated with a client certificate."""

    def __init__(self, host: str, port: int, ca_file: Path, cert_file: Path, key_file: Path, timeout: float = 30.0) -> None:
        if host not in ("127.0.0.1", "localhost", BRIDGE_IP):
            raise ValueError(f"KubeApi only talks to the local cluster, not {host!r}")
        self.host = host
        self.port = port
        self.timeout = timeout
        self._ctx = ssl.create_default_context(cafile=str(ca_file))
        self._ctx.load_cert_chain(str(cert_file), str(key_file))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> Any:
        """Send one request; return the decoded JSON (or text) or raise :class:`ApiError`."""
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        payload = None if body is None else (body if isinstance(body, (bytes, str)) else json.dumps(body))
        headers = {"Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = content_type
        conn = http.client.HTTPSConnection(self.host, self.port, context=self._ctx, timeout=timeout or self.timeout)
        try:
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        text = raw.decode("utf-8", errors="replace")
        try:
            data: Any = json.loads(text) if text else None
        except json.JSONDecodeError:
            data = text
        if resp.status >= 400:
            raise ApiError(method, path, resp.status, data)
        return data

    def get(self, path: str, **query: str) -> Any:
        """GET ``path``."""
        return self.request("GET", path, query=query or None)

    def create(self, path: str, obj: Mapping[str, Any]) -> Any:
        """POST ``obj`` to the collection ``path``."""
        return self.request("POST", path, dict(obj))

    def replace(self, path: str, obj: Mapping[str, Any]) -> Any:
        """PUT ``obj`` to ``path``."""
        return self.request("PUT", path, dict(obj))

    def patch(self, path: str, patch: Any, patch_type: str = "merge") -> Any:
        """PATCH ``path``; ``patch_type`` is ``merge``, ``strategic`` or ``json``."""
        ctype = {
            "merge": "application/merge-patch+json",
            "strategic": "application/strategic-merge-patch+json",
            "json": "application/json-patch+json",
        }[patch_type]
        return self.request("PATCH", path, patch, content_type=ctype)

    def delete(self, path: str, *, missing_ok: bool = True, **query: str) -> Any:
        """DELETE ``path`` (a 404 is ignored when ``missing_ok``)."""
        try:
            return self.request("DELETE", path, query=query or None)
        except ApiError as exc:
            if missing_ok and exc.status == 404:
                return None
            raise

    def exists(self, path: str) -> bool:
        """Whether GET ``path`` succeeds."""
        try:
            self.get(path)
            return True
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.2,
    what: str,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns a truthy value; raise ``TimeoutError`` naming ``what``.

    Exceptions from ``probe`` (e.g. connection refused while a server starts) count
    as "not yet"; the last one is included in the timeout message.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except (OSError, ApiError, ValueError, KeyError) as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc})" if last_exc else ""
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{extra}")
        time.sleep(interval)
