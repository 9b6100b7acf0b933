"""Prometheus metrics of the operator, in a registry of their own (one per operator context).

The workspace gauges are kept from what the reconciler writes and from deletions, so they cost
no API calls: each reconcile reports the workspace's ``status.state`` and preset, and a deletion
forgets it. :meth:`OperatorMetrics.serve` exposes ``/metrics`` over HTTP, and ``/readyz`` (the
pod's readiness probe) from a callable that says whether the operator is ready and why not.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

#: Whether the operator is ready, and what is wrong when it is not (for ``/readyz``).
Readiness = Callable[[], tuple[bool, str]]
READY_PATH = "/readyz"

RECONCILE_RESULTS = ("ok", "requeue", "invalid", "error")
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass
class MetricsServer:
    """A running ``/metrics`` HTTP server; :meth:`stop` shuts it down."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        """The port it listens on (useful when started on port 0)."""
        return int(self.server.server_address[1])

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class OperatorMetrics:
    """The operator's metric families; thread-safe (reconciles run in a thread pool)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        reg = self.registry
        self.reconciles = Counter("kaito_workspace_reconcile", "Workspace reconcile rounds by result.", ["result"], registry=reg)
        self.reconcile_seconds = Histogram(
            "kaito_workspace_reconcile_duration_seconds", "Duration of one workspace reconcile round.", registry=reg,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        )
        self.workspaces = Gauge("kaito_workspaces", "Workspaces known to the operator by status.state.", ["state"], registry=reg)
        self.presets = Gauge("kaito_workspace_preset_count", "Workspaces known to the operator by inference preset.", ["preset"], registry=reg)
        self.admissions = Counter("kaito_admission_requests", "Validating admission requests by result.", ["result"], registry=reg)
        self.api_requests = Counter("kaito_api_requests", "Kubernetes API requests of the reconciler.", ["verb", "resource"], registry=reg)
        for result in RECONCILE_RESULTS:
            self.reconciles.labels(result)
        for result in ("allowed", "denied"):
            self.admissions.labels(result)
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str], tuple[str, str]] = {}
        self._states: set[str] = set()
        self._presets: set[str] = set()

    # -- recording ------------------------------------------------------------------------------

    def reconciled(self, result: str, seconds: float) -> None:
        """Count one reconcile round (``result`` is one of :data:`RECONCILE_RESULTS`)."""
        self.reconciles.labels(result).inc()
        self.reconcile_seconds.observe(seconds)

    def workspace_seen(self, obj: Mapping[str, Any], state: str) -> None:
        """Record the state (and preset) of a workspace after a reconcile wrote or kept its status."""
        meta = obj.get("metadata") or {}
        preset = ((obj.get("inference") or {}).get("preset") or {}).get("name") or ""
        with self._lock:
            self._known[(meta.get("namespace") or "", meta.get("name") or "")] = (state, preset)
            self._refresh()

    def workspace_gone(self, namespace: str, name: str) -> None:
        """Forget a deleted workspace."""
        with self._lock:
            if self._known.pop((namespace, name), None) is not None:
                self._refresh()

    def admission(self, allowed: bool) -> None:
        """Count one admission review."""
        self.admissions.labels("allowed" if allowed else "denied").inc()

    def api_request(self, method: str, path: str) -> None:
        """Count one API request by Kubernetes verb and resource (from the HTTP method and path)."""
        verb, resource = api_verb_and_resource(method, path)
        self.api_requests.labels(verb, resource).inc()

    def _refresh(self) -> None:
        states = Tally(state for state, _ in self._known.values())
        presets = Tally(preset for _, preset in self._known.values() if preset)
        for gauge, counts, seen in ((self.workspaces, states, self._states), (self.presets, presets, self._presets)):
            seen.update(counts)  # labels that dropped to zero stay, at 0
            for label in seen:
                gauge.labels(label).set(counts.get(label, 0))

    # -- exposition -----------------------------------------------------------------------------

    def exposition(self) -> str:
        """The text exposition format of every family."""
        return generate_latest(self.registry).decode()

    def serve(self, host: str, port: int, readiness: Readiness | None = None) -> MetricsServer:
        """Serve ``/metrics`` (and ``/readyz`` from ``readiness``: 200 ``ok`` or 503 with the reason)
        on ``host:port`` in a background thread (port 0 picks a free one)."""
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") != READY_PATH:
                return metrics_app(environ, start_response)  # type: ignore[no-any-return]
            ready, message = readiness() if readiness is not None else (True, "ok")
            body = (message or ("ok" if ready else "not ready")).encode() + b"\n"
            status = "200 OK" if ready else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
            return [body]

        server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
        thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
        thread.start()
        return MetricsServer(server, thread)


class _QuietHandler(WSGIRequestHandler):
    """No access log line per probe and scrape."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        return


def api_verb_and_resource(method: str, path: str) -> tuple[str, str]:
    """``("get", "deployments")`` for ``GET /apis/apps/v1/namespaces/ns/deployments/name``;
    collection GETs are ``list``, subresources read ``workspaces/status``."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if "namespaces" in parts and len(parts) > parts.index("namespaces") + 2:
        rest = parts[parts.index("namespaces") + 2 :]
    else:
        rest = parts[3:] if parts[:1] == ["apis"] else parts[2:]
    resource = rest[0] if rest else "unknown"
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    verb = _VERBS.get(method.upper(), "get" if len(rest) > 1 else "list")
    return verb, resource
