"""The operator's context: settings, plugins, API client and caches, the reconcile thread pool,
the pokes, the metrics, and one reconcile round through the error boundary."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import kopf

from kaito_core.errors import PrerequisiteError
from kaito_core.operator import boundary
from kaito_core.operator.cache import ObjectCache
from kaito_core.operator.kube import Kube, make_api_client
from kaito_core.operator.metrics import OperatorMetrics
from kaito_core.operator.pokes import Pokes
from kaito_core.operator.reconciler import Reconciler
from kaito_core.operator.settings import OperatorSettings
from kaito_core.plugins import Registry

log = logging.getLogger("kaito.operator")
T = TypeVar("T")


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
        """Load plugins, connect to the cluster and build the reconciler (its reads are served by
        the watch caches once kopf binds them).

        Raises:
            NotFoundError: the configured provisioner is not installed.
            PrerequisiteError: what the provisioner needs in the cluster (its CRDs) is missing.
        """
        registry = registry or Registry.from_entry_points()
        provisioner = registry.provisioner(settings.node_provisioner.name)  # fail at start-up, not per workspace
        provisioner.configure(azure=settings.node_provisioner.azure)
        metrics = OperatorMetrics()
        kube = Kube(make_api_client(kubeconfig), on_request=metrics.api_request, cache=ObjectCache())
        missing = provisioner.missing_prerequisites(kube.crd_installed)
        if missing:
            raise PrerequisiteError(
                "; ".join(missing) + f" (or choose another provisioner with nodeProvisioner.name / "
                f"KAITO_NODE_PROVISIONER__NAME; installed: {', '.join(sorted(registry.provisioners()))})"
            )
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=settings.concurrency.workers, thread_name_prefix="reconcile")
        reconciler = Reconciler(kube, registry, settings, metrics)
        return cls(settings=settings, registry=registry, reconciler=reconciler, executor=executor, metrics=metrics)

    @property
    def cache(self) -> ObjectCache:
        """The watch caches the reconciler reads from."""
        return self.reconciler.kube.cache

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking ``fn`` in the reconcile pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def reconcile_once(self, obj: dict[str, Any]) -> float:
        """One reconcile round through the error boundary; returns seconds until the next round.

        Each round is counted in ``kaito_workspace_reconcile_total`` by result: ok, requeue (not
        ready yet), invalid (needs a person: bad spec, missing plugin) or error (a bug); the
        boundary's table (:mod:`kaito_core.operator.boundary`) decides which and how long to wait."""
        meta = obj["metadata"]
        name = f"{meta.get('namespace')}/{meta.get('name')}"
        where = {"namespace": meta.get("namespace") or "", "workspace": meta.get("name") or ""}
        started = time.monotonic()
        result = "error"
        try:
            outcome = await self.in_thread(self.reconciler.reconcile, obj)
            result = "ok"
            return outcome.requeue_after
        except Exception as exc:
            verdict = boundary.classify(exc, self.settings.requeue)
            result = verdict.result
            if verdict.result == "requeue":
                log.info("workspace %s not ready: %s (next look in %.0fs)", name, verdict.message, verdict.delay_s, extra=where)
            elif verdict.result == "invalid":
                log.warning("workspace %s needs attention: %s", name, verdict.message, extra=where)
            else:
                log.exception("workspace %s: unexpected error, retrying in %.0fs", name, verdict.delay_s, extra=where)
            if verdict.event_reason:
                post_warning(obj, verdict.event_reason, verdict.message)
            return verdict.delay_s
        finally:
            self.metrics.reconciled(result, time.monotonic() - started)


def post_warning(obj: dict[str, Any], reason: str, message: str) -> None:
    """A Warning event on the Workspace, through kopf's event queue (outside a kopf handler,
    e.g. in unit tests, there is no queue and nothing is posted)."""
    try:
        kopf.warn(cast(Any, obj), reason=reason, message=message[:1024])
    except LookupError:
        log.debug("no kopf event queue here; event %s not posted", reason)
