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
from typing import Literal

import kopf

from kaito_core.api.labels import FINALIZER
from kaito_core.errors import KaitoError
from kaito_core.operator import plugin_packages
from kaito_core.operator.certs import ensure_certificates
from kaito_core.operator.context import OperatorContext
from kaito_core.operator.election import LeaseElector, LeaseRef, default_identity, lease_namespace
from kaito_core.operator.metrics import MetricsServer, OperatorMetrics, Readiness
from kaito_core.operator.settings import OperatorSettings
from kaito_core.operator.wiring import make_admission_registry, make_registry
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


class LeadershipLost(KaitoError):
    """The lease was not renewed in time: this replica stopped reconciling and must restart."""


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
    names the package until the pod is replaced (:func:`wait_not_ready`). With leader election
    on, reconciling waits for the lease (:func:`_run_elected`).

    Raises:
        LeadershipLost: the lease was lost while reconciling (the process should exit non-zero).
    """
    added = plugin_packages.activate(settings.plugins.prefix)
    if added:
        log.info("plugin packages from %s", ", ".join(map(str, added)))
    problems = plugin_packages.check(settings.plugins.packages)
    if problems:
        await wait_not_ready(settings, problems, stop_flag)
        return
    ctx = OperatorContext.create(settings, registry=registry, kubeconfig=kubeconfig)
    server: MetricsServer | None = None
    if settings.metrics.port:
        server = ctx.metrics.serve(settings.metrics.host, settings.metrics.port, webhook_readiness(settings))
        log.info("serving metrics on http://%s:%d/metrics", settings.metrics.host, server.port)
    try:
        if settings.leader_election.enabled:
            await _run_elected(ctx, stop_flag=stop_flag, ready_flag=ready_flag)
        else:
            await _kopf(ctx, make_registry(ctx.reconciler.provisioner.capabilities), stop_flag=stop_flag, ready_flag=ready_flag)
    finally:
        ctx.executor.shutdown(wait=False, cancel_futures=True)
        if server is not None:
            server.stop()


async def _kopf(
    ctx: OperatorContext,
    registry: kopf.OperatorRegistry,
    *,
    stop_flag: asyncio.Event | None,
    ready_flag: asyncio.Event | None,
    standby: bool = False,
) -> None:
    kopf_settings = kopf.OperatorSettings()
    configure_kopf(ctx.settings, kopf_settings)
    if standby:
        kopf_settings.admission.managed = None  # a follower writes nothing, not even the webhook configuration
    namespaces = ctx.settings.scope.namespaces
    await kopf.operator(
        registry=registry,
        settings=kopf_settings,
        memo=kopf.Memo(ctx=ctx),
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


async def _run_elected(ctx: OperatorContext, *, stop_flag: asyncio.Event | None, ready_flag: asyncio.Event | None) -> None:
    """Follower, then leader: kopf with the admission handler only until the lease is ours, then
    kopf with every handler until stopped. Signals end whichever kopf runs (kopf handles them),
    and then this. The lease is given back after reconciling stopped."""
    election = ctx.settings.leader_election
    api = ctx.reconciler.kube.api
    if api is None:
        raise KaitoError("leader election needs a Kubernetes API client")
    ref = LeaseRef(election.lease_name, lease_namespace(election.lease_namespace), default_identity())
    elector = LeaseElector(api, election, ref)
    stop = stop_flag or asyncio.Event()
    standby_stop, leader_stop = asyncio.Event(), asyncio.Event()
    lost = False
    # Waiters exist before kopf starts: kopf cancels the tasks created while it ran when it stops.
    external = asyncio.ensure_future(stop.wait())
    elected = asyncio.ensure_future(elector.elected.wait())
    lost_lease = asyncio.ensure_future(elector.lost.wait())
    elector.start()
    try:
        if ctx.settings.webhook.enabled:
            standby = asyncio.ensure_future(_kopf(ctx, make_admission_registry(), stop_flag=standby_stop, ready_flag=None, standby=True))
            await asyncio.wait([standby, external, elected], return_when=asyncio.FIRST_COMPLETED)
            signalled = standby.done()  # kopf ended by itself: a signal (or a failure, re-raised below)
            standby_stop.set()
            await standby
            if signalled:
                return
        else:
            await asyncio.wait([external, elected], return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set() or not elector.elected.is_set():
            return
        relay = asyncio.ensure_future(_relay(external, lost_lease, leader_stop))
        try:
            await _kopf(ctx, make_registry(ctx.reconciler.provisioner.capabilities), stop_flag=leader_stop, ready_flag=ready_flag)
        finally:
            relay.cancel()
        lost = elector.lost.is_set()
    finally:
        for waiter in (external, elected, lost_lease):
            waiter.cancel()
        await elector.stop(release=not lost)
    if lost:
        raise LeadershipLost(
            f"lease {ref.namespace}/{ref.name} was not renewed within {election.renew_deadline_s}s; "
            "stopped reconciling (the pod restarts and campaigns again)"
        )


async def _relay(stop: asyncio.Future[Literal[True]], lost: asyncio.Future[Literal[True]], leader_stop: asyncio.Event) -> None:
    """Stop the leader's kopf when asked to, or when the lease is lost."""
    await asyncio.wait([stop, lost], return_when=asyncio.FIRST_COMPLETED)
    leader_stop.set()
