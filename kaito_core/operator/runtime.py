"""The running operator: :func:`run` configures kopf from our settings and starts it with the
handlers of :mod:`kaito_core.operator.wiring` and the context of :mod:`kaito_core.operator.context`.

Before anything else it puts the plugin packages the chart's init container installed on the
path and checks the expected ones (:mod:`kaito_core.operator.plugin_packages`): when one is
missing or broken the operator does not reconcile, and ``/readyz`` answers 503 naming the package,
so the pod is not Ready; the log and the ``/readyz`` body say why."""

from __future__ import annotations

import asyncio
import logging
import socket

import kopf

from kaito_core.api.labels import FINALIZER
from kaito_core.operator import plugin_packages
from kaito_core.operator.certs import ensure_certificates
from kaito_core.operator.context import OperatorContext
from kaito_core.operator.metrics import MetricsServer, OperatorMetrics, Readiness
from kaito_core.operator.settings import OperatorSettings
from kaito_core.operator.wiring import make_registry
from kaito_core.plugins import Registry

log = logging.getLogger("kaito.operator")


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


def webhook_readiness(settings: OperatorSettings) -> Readiness:
    """Ready once the admission webhook accepts connections (the webhook Service sends admission
    requests only to ready pods); always ready without the webhook."""

    def ready() -> tuple[bool, str]:
        if not settings.webhook.enabled:
            return True, "ok"
        host = "127.0.0.1" if settings.webhook.listen_addr in ("0.0.0.0", "") else settings.webhook.listen_addr
        try:
            with socket.create_connection((host, settings.webhook.port), timeout=1.0):
                return True, "ok"
        except OSError as exc:
            return False, f"the admission webhook does not accept connections on {host}:{settings.webhook.port} yet ({exc})"

    return ready


async def wait_not_ready(settings: OperatorSettings, problems: list[plugin_packages.PackageProblem], stop_flag: asyncio.Event | None) -> None:
    """Serve ``/metrics`` and a failing ``/readyz`` naming each problem until stopped; reconcile nothing."""
    message = "not ready: " + "; ".join(str(p) for p in problems)
    for problem in problems:
        log.error("%s", problem)
    server = OperatorMetrics().serve(settings.metrics.host, settings.metrics.port, lambda: (False, message)) if settings.metrics.port else None
    try:
        await (stop_flag or asyncio.Event()).wait()
    finally:
        if server is not None:
            server.stop()


async def run(
    settings: OperatorSettings,
    *,
    registry: Registry | None = None,
    kubeconfig: str | None = None,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
) -> None:
    """Run the operator until ``stop_flag`` is set (or a signal arrives).

    With ``plugins.packages`` set and one of them unusable, nothing is reconciled: ``/readyz``
    names the package until the pod is replaced (:func:`wait_not_ready`)."""
    added = plugin_packages.activate(settings.plugins.prefix)
    if added:
        log.info("plugin packages from %s", ", ".join(map(str, added)))
    problems = plugin_packages.check(settings.plugins.packages)
    if problems:
        await wait_not_ready(settings, problems, stop_flag)
        return
    ctx = OperatorContext.create(settings, registry=registry, kubeconfig=kubeconfig)
    kopf_settings = kopf.OperatorSettings()
    configure_kopf(settings, kopf_settings)
    namespaces = settings.scope.namespaces
    server: MetricsServer | None = None
    if settings.metrics.port:
        server = ctx.metrics.serve(settings.metrics.host, settings.metrics.port, webhook_readiness(settings))
        log.info("serving metrics on http://%s:%d/metrics", settings.metrics.host, server.port)
    try:
        await kopf.operator(
            registry=make_registry(ctx.reconciler.provisioner.capabilities),
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
