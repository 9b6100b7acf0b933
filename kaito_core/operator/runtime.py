"""The running operator: its context (settings, plugins, API client, thread pool, pokes) and
:func:`run`, which configures kopf and starts it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import kopf

from kaito_core.api.labels import FINALIZER
from kaito_core.errors import KaitoError
from kaito_core.operator.boundary import to_kopf
from kaito_core.operator.certs import ensure_certificates
from kaito_core.operator.kube import Kube, make_api_client
from kaito_core.operator.metrics import MetricsServer, OperatorMetrics
from kaito_core.operator.reconciler import Reconciler
from kaito_core.operator.settings import OperatorSettings
from kaito_core.plugins import Registry

log = logging.getLogger("kaito.operator")
T = TypeVar("T")
Key = tuple[str, str]


class Pokes:
    """Wake-up events of the per-workspace daemons, keyed by (namespace, name)."""

    def __init__(self) -> None:
        self._events: dict[Key, asyncio.Event] = {}
        self._prints: dict[tuple[str, str, str], object] = {}

    def register(self, key: Key) -> asyncio.Event:
        """The event a workspace's daemon sleeps on."""
        event = self._events.get(key) or asyncio.Event()
        self._events[key] = event
        return event

    def unregister(self, key: Key, event: asyncio.Event) -> None:
        """Forget a stopped daemon's event."""
        if self._events.get(key) is event:
            del self._events[key]

    def poke(self, key: Key) -> None:
        """Wake the workspace's daemon (no-op when it has none)."""
        event = self._events.get(key)
        if event is not None:
            event.set()

    def poke_if_changed(self, ident: tuple[str, str, str], key: Key, print_: object, *, deleted: bool = False) -> None:
        """Poke ``key`` when the fingerprint of object ``ident`` differs from the last one seen
        (a deleted object always pokes, and its fingerprint is forgotten)."""
        if deleted:
            self._prints.pop(ident, None)
            self.poke(key)
        elif self._prints.get(ident) != print_:
            self._prints[ident] = print_
            self.poke(key)

    @staticmethod
    async def sleep(event: asyncio.Event, stopped: Any, delay: float) -> None:
        """Sleep up to ``delay`` seconds, less if poked or the daemon is stopped."""
        waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stopped.wait())]
        try:
            await asyncio.wait(waiters, timeout=max(delay, 0.05), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()


class fingerprint:  # noqa: N801 - a namespace of small pure functions
    """What about an owned object matters to its workspace; pokes happen only when it changes."""

    @staticmethod
    def conditions(body: Mapping[str, Any]) -> object:
        """Condition statuses and deletion (NodeClaims)."""
        conds = tuple(sorted((c.get("type"), c.get("status"), c.get("reason")) for c in (body.get("status") or {}).get("conditions") or []))
        return conds, bool(body.get("metadata", {}).get("deletionTimestamp")), (body.get("status") or {}).get("nodeName")

    @staticmethod
    def node(body: Mapping[str, Any]) -> object:
        """Ready status, GPU capacity, schedulability and deletion (Nodes)."""
        status = body.get("status") or {}
        ready = next((c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        gpus = (status.get("capacity") or {}).get("nvidia.com/gpu")
        return ready, gpus, bool((body.get("spec") or {}).get("unschedulable")), bool(body.get("metadata", {}).get("deletionTimestamp"))

    @staticmethod
    def pod(body: Mapping[str, Any]) -> object:
        """Phase, readiness and container states (Pods)."""
        status = body.get("status") or {}
        conds = tuple(sorted((c.get("type"), c.get("status"), c.get("reason")) for c in status.get("conditions") or []))
        states = tuple(
            (cs.get("name"), cs.get("ready"), tuple(sorted((cs.get("state") or {}).keys())),
             ((cs.get("state") or {}).get("waiting") or {}).get("reason"), cs.get("restartCount"))
            for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
        )
        return status.get("phase"), status.get("reason"), conds, states, body.get("spec", {}).get("nodeName")

    @staticmethod
    def workload(body: Mapping[str, Any]) -> object:
        """Generation and rollout counters (Deployments, StatefulSets)."""
        status = body.get("status") or {}
        keys = ("observedGeneration", "replicas", "readyReplicas", "updatedReplicas", "availableReplicas", "currentRevision", "updateRevision")
        return body.get("metadata", {}).get("generation"), tuple(status.get(k) for k in keys)

    @staticmethod
    def workspace(body: Mapping[str, Any]) -> object:
        """Generation, annotations and deletion (Workspaces): not the status the operator writes."""
        meta = body.get("metadata") or {}
        annotations = tuple(sorted((k, v) for k, v in (meta.get("annotations") or {}).items() if not k.startswith("kaito.sh/") or k == "kaito.sh/runtime"))
        return meta.get("generation"), annotations, bool(meta.get("deletionTimestamp"))


@dataclass
class OperatorContext:
    """Everything the handlers need; passed to kopf as ``memo.ctx``."""

    settings: OperatorSettings
    registry: Registry
    reconciler: Reconciler
    executor: concurrent.futures.ThreadPoolExecutor
    pokes: Pokes = field(default_factory=Pokes)
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)

    @classmethod
    def create(cls, settings: OperatorSettings, *, registry: Registry | None = None, kubeconfig: str | None = None) -> OperatorContext:
        """Load plugins, connect to the cluster and build the reconciler."""
        registry = registry or Registry.from_entry_points()
        registry.provisioner(settings.node_provisioner.name)  # fail at start-up, not per workspace
        metrics = OperatorMetrics()
        kube = Kube(make_api_client(kubeconfig), on_request=metrics.api_request)
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=settings.concurrency.workers, thread_name_prefix="reconcile")
        reconciler = Reconciler(kube, registry, settings, metrics)
        return cls(settings=settings, registry=registry, reconciler=reconciler, executor=executor, metrics=metrics)

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking ``fn`` in the reconcile pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def reconcile_once(self, obj: dict[str, Any]) -> float:
        """One reconcile round through the error boundary; returns seconds until the next round.

        Each round is counted in ``kaito_workspace_reconcile_total`` by result: ok, requeue (not
        ready yet), invalid (needs a person: bad spec, missing plugin) or error (a bug)."""
        meta = obj["metadata"]
        name = f"{meta.get('namespace')}/{meta.get('name')}"
        where = {"namespace": meta.get("namespace") or "", "workspace": meta.get("name") or ""}
        requeue = self.settings.requeue
        started = time.monotonic()
        result = "error"
        try:
            outcome = await self.in_thread(self.reconciler.reconcile, obj)
            result = "ok"
            return outcome.requeue_after
        except Exception as exc:
            mapped = to_kopf(exc, default_delay=requeue.nodes_s)
            if isinstance(mapped, kopf.TemporaryError):
                result = "requeue"
                log.info("workspace %s not ready: %s (next look in %.0fs)", name, mapped, mapped.delay or requeue.nodes_s, extra=where)
                return float(mapped.delay or requeue.nodes_s)
            if isinstance(mapped, kopf.PermanentError):
                result = "invalid"
                log.warning("workspace %s needs attention: %s", name, mapped, extra=where)
                return requeue.invalid_s
            if isinstance(exc, KaitoError):
                raise
            log.exception("workspace %s: unexpected error, retrying in %.0fs", name, requeue.workload_s, extra=where)
            return requeue.workload_s
        finally:
            self.metrics.reconciled(result, time.monotonic() - started)


def configure_kopf(settings: OperatorSettings, kopf_settings: kopf.OperatorSettings) -> None:
    """kopf settings from ours: finalizer name, annotation storage, quiet events, webhook server."""
    kopf_settings.persistence.finalizer = FINALIZER
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kaito.sh")
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kaito.sh", key="last-handled-configuration")
    kopf_settings.posting.level = logging.WARNING  # only problems become Kubernetes Events
    kopf_settings.background.instant_exit_timeout = 0.5
    kopf_settings.watching.server_timeout = 300
    kopf_settings.execution.max_workers = settings.concurrency.workers
    kopf_settings.peering.standalone = True
    if settings.webhook.enabled:
        hosts = [settings.webhook.host, "localhost", "127.0.0.1"]
        certs = ensure_certificates(settings.webhook.cert_dir, hosts)
        kopf_settings.admission.server = kopf.WebhookServer(
            addr=settings.webhook.listen_addr,
            port=settings.webhook.port,
            host=settings.webhook.host,
            certfile=str(certs.cert),
            pkeyfile=str(certs.key),
            cafile=str(certs.ca),
        )
        if settings.webhook.manage_configuration:
            kopf_settings.admission.managed = settings.webhook.configuration_name


async def run(
    settings: OperatorSettings,
    *,
    registry: Registry | None = None,
    kubeconfig: str | None = None,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
) -> None:
    """Run the operator until ``stop_flag`` is set (or a signal arrives)."""
    from kaito_core.operator.handlers import make_registry

    ctx = OperatorContext.create(settings, registry=registry, kubeconfig=kubeconfig)
    kopf_settings = kopf.OperatorSettings()
    configure_kopf(settings, kopf_settings)
    namespaces = settings.scope.namespaces
    server: MetricsServer | None = None
    if settings.metrics.port:
        server = ctx.metrics.serve(settings.metrics.host, settings.metrics.port)
        log.info("serving metrics on http://%s:%d/metrics", settings.metrics.host, server.port)
    try:
        await kopf.operator(
            registry=make_registry(),
            settings=kopf_settings,
            memo=kopf.Memo(ctx=ctx),
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        ctx.executor.shutdown(wait=False, cancel_futures=True)
        if server is not None:
            server.stop()
