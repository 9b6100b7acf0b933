"""The kopf wiring: every handler of the operator, thin, each with an explicit ``id=``; they
translate between kopf and the reconciler and nothing else.

The indexes (``@kopf.index``) are the watch caches of :mod:`kaito_core.operator.cache`: kopf
keeps the latest body of every NodeClaim, Node, Deployment, StatefulSet, Service, tuning Job and
workspace Pod in memory and starts no other handler before all of them are listed, so the reconciler
reads from memory. The event handlers on the same objects wake the owning workspace.

Why a daemon per Workspace rather than ``on.create``/``on.update`` with retries: kopf's retry
delay of a change handler cannot be cut short by an event on *another* resource, but a
Workspace must react at once when its NodeClaim turns Ready or its pod starts. So each
Workspace gets one async daemon that runs the level-based reconcile (in a bounded thread pool)
and then sleeps until the requeue delay passes or an owned object pokes it. Errors still go
through the one boundary (:mod:`kaito_core.operator.boundary`): ``kopf.TemporaryError.delay`` is
the sleep, ``kopf.PermanentError`` sleeps until the spec changes. Deletion runs as a regular
``on.delete`` handler behind the finalizer ``workspace.finalizer.kaito.sh``.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from kaito_core.api.labels import FINALIZER, LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE
from kaito_core.api.reasons import WaitReason
from kaito_core.api.workspace import GROUP, PLURAL, STORAGE_VERSION
from kaito_core.errors import NotReadyError, ValidationError
from kaito_core.operator import checks
from kaito_core.operator.boundary import kopf_errors, to_kopf
from kaito_core.operator.cache import ALL, INDEX_IDS, object_key, slim
from kaito_core.operator.context import OperatorContext
from kaito_core.operator.pokes import fingerprint
from kaito_core.provisioners import ProvisionerCapabilities

log = logging.getLogger(__name__)
SPEC_FIELDS = ("resource", "inference", "tuning")
#: How often a new Workspace's daemon looks for the finalizer kopf is adding (seconds).
FINALIZER_WAIT_S = 0.5


def _ctx(memo: Any) -> OperatorContext:
    ctx: OperatorContext = memo.ctx
    return ctx


def make_registry(capabilities: ProvisionerCapabilities | None = None) -> kopf.OperatorRegistry:
    """A kopf registry with every handler of the operator (no global registry is touched).

    NodeClaims are watched only when the provisioner reads them (``capabilities``)."""
    registry = kopf.OperatorRegistry()
    capabilities = capabilities or ProvisionerCapabilities(watches_nodeclaims=True)
    owner_labels = {LABEL_WORKSPACE: kopf.PRESENT, LABEL_WORKSPACE_NAMESPACE: kopf.PRESENT}
    workspace_label = {LABEL_WORKSPACE: kopf.PRESENT}

    _add_login(registry)

    # -- watch caches (kopf lists these before any other handler runs) ----------------------------

    if capabilities.watches_nodeclaims:

        @kopf.index("karpenter.sh", "v1", "nodeclaims", id=INDEX_IDS["NodeClaim"], labels=owner_labels, registry=registry)
        def index_nodeclaims(*, body: kopf.Body, **_: Any) -> dict[object, dict[str, Any]]:
            """Every NodeClaim of a workspace."""
            return {ALL: slim("NodeClaim", body)}

    @kopf.index("", "v1", "nodes", id=INDEX_IDS["Node"], registry=registry)
    def index_nodes(*, body: kopf.Body, **_: Any) -> dict[object, dict[str, Any]]:
        """Every Node (bring-your-own nodes are selected by the user's labels)."""
        return {ALL: slim("Node", body)}

    @kopf.index("apps", "v1", "deployments", id=INDEX_IDS["Deployment"], labels=workspace_label, registry=registry)
    def index_deployments(*, body: kopf.Body, **_: Any) -> dict[object, dict[str, Any]]:
        """The single-node inference workloads by (namespace, name)."""
        return {object_key(body): slim("Deployment", body)}

    @kopf.index("apps", "v1", "statefulsets", id=INDEX_IDS["StatefulSet"], labels=workspace_label, registry=registry)
    def index_statefulsets(*, body: kopf.Body, **_: Any) -> dict[object, dict[str, Any]]:
        """The multi-node inference workloads by (namespace, name)."""
        return {object_key(body): slim("StatefulSet", body)}

    @kopf.index("", "v1", "services", id=INDEX_IDS["Service"], labels=workspace_label, registry=registry)
    def index_services(*, body: kopf.Body, **_: Any) -> dict[object, dict[str, Any]]:
        """The workspaces' Services by (namespace, name)."""
        return {object_key(body): slim("Service", body)}

    @kopf.index("", "v1", "pods", id=INDEX_IDS["Pod"], labels=workspace_label, registry=registry)
    def index_pods(*, body: kopf.Body, **_: Any) -> dict[object, dict[str, Any]]:
        """The inference pods by (namespace, name)."""
        return {object_key(body): slim("Pod", body)}

    @kopf.index("batch", "v1", "jobs", id=INDEX_IDS["Job"], labels=workspace_label, registry=registry)
    def index_jobs(*, body: kopf.Body, **_: Any) -> dict[object, dict[str, Any]]:
        """The tuning Jobs by (namespace, name)."""
        return {object_key(body): slim("Job", body)}

    # -- workspaces ---------------------------------------------------------------------------

    @kopf.daemon(GROUP, STORAGE_VERSION, PLURAL, id="reconcile", registry=registry, cancellation_timeout=30.0)
    async def reconcile_workspace(
        *, stopped: kopf.DaemonStopped, body: kopf.Body, namespace: str | None, name: str, memo: Any, **kwargs: Any
    ) -> None:
        """Reconcile until stopped; sleep between rounds until the delay passes or something is poked."""
        ctx = _ctx(memo)
        ctx.cache.bind(kwargs)
        key = (namespace or "", name)
        poke = ctx.pokes.register(key)
        try:
            while not stopped:
                poke.clear()
                if FINALIZER in (body.get("metadata", {}).get("finalizers") or []):
                    delay = await ctx.reconcile_once(copy.deepcopy(dict(body)))
                else:
                    # kopf spawns this daemon and adds the finalizer in the same pass: create
                    # nothing (a NodeClaim, a cloud node) until a deletion would wait for us.
                    log.debug("workspace %s/%s: waiting for the finalizer before reconciling", namespace, name)
                    delay = FINALIZER_WAIT_S
                await ctx.pokes.sleep(poke, stopped, delay)
        finally:
            ctx.pokes.unregister(key, poke)

    @kopf.on.event(GROUP, STORAGE_VERSION, PLURAL, id="watch-workspace", registry=registry)
    async def workspace_event(*, type: str, body: kopf.Body, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
        """Wake the workspace's daemon when its spec or annotations change (not on our own status writes)."""
        ns = namespace or ""
        ctx = _ctx(memo)
        ctx.pokes.poke_if_changed(("Workspace", ns, name), (ns, name), fingerprint.workspace(body), deleted=type == "DELETED")
        if type == "DELETED":
            ctx.metrics.workspace_gone(ns, name)

    @kopf.on.delete(GROUP, STORAGE_VERSION, PLURAL, id="finalize", registry=registry)
    async def finalize_workspace(*, body: kopf.Body, namespace: str | None, name: str, memo: Any, **kwargs: Any) -> None:
        """Delete the workspace's NodeClaims (and cloud nodes) before the finalizer is removed, once
        its reconcile daemon has stopped: kopf signals the daemon and calls this handler at the same
        moment, and a round still in flight could create a NodeClaim after the last look here."""
        ctx = _ctx(memo)
        ctx.cache.bind(kwargs)
        with kopf_errors(ctx.settings.requeue):
            if ctx.pokes.running((namespace or "", name)):
                raise NotReadyError(f"waiting for the reconcile loop of workspace {namespace}/{name} to stop",
                                    delay=1.0, reason=WaitReason.RECONCILE_STOPPING)
            await ctx.in_thread(ctx.reconciler.finalize, copy.deepcopy(dict(body)))

    # -- owned objects poke their workspace -----------------------------------------------------

    if capabilities.watches_nodeclaims:

        @kopf.on.event("karpenter.sh", "v1", "nodeclaims", id="watch-nodeclaim", labels=owner_labels, registry=registry)
        async def nodeclaim_event(*, type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
            """A NodeClaim moved: wake its workspace."""
            _poke_by_labels(memo, "NodeClaim", body, fingerprint.conditions(body), deleted=type == "DELETED")

    @kopf.on.event("", "v1", "nodes", id="watch-node", labels=owner_labels, registry=registry)
    async def node_event(*, type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
        """A workspace's node changed readiness or GPU capacity: wake its workspace."""
        _poke_by_labels(memo, "Node", body, fingerprint.node(body), deleted=type == "DELETED")

    @kopf.on.event("", "v1", "pods", id="watch-pod", labels={LABEL_WORKSPACE: kopf.PRESENT}, registry=registry)
    async def pod_event(*, type: str, body: kopf.Body, namespace: str | None, labels: Mapping[str, str], memo: Any, **_: Any) -> None:
        """An inference pod changed state: wake its workspace."""
        ns = namespace or ""
        key = (ns, labels[LABEL_WORKSPACE])
        _ctx(memo).pokes.poke_if_changed(("Pod", ns, body["metadata"]["name"]), key, fingerprint.pod(body), deleted=type == "DELETED")

    for plural in ("deployments", "statefulsets"):

        @kopf.on.event("apps", "v1", plural, id=f"watch-{plural}", labels={LABEL_WORKSPACE: kopf.PRESENT}, registry=registry)
        async def workload_event(
            *, type: str, body: kopf.Body, namespace: str | None, labels: Mapping[str, str], memo: Any, **_: Any
        ) -> None:
            """The workload's rollout moved: wake its workspace."""
            ns = namespace or ""
            key = (ns, labels[LABEL_WORKSPACE])
            ident = (str(body.get("kind", "Workload")), ns, body["metadata"]["name"])
            _ctx(memo).pokes.poke_if_changed(ident, key, fingerprint.workload(body), deleted=type == "DELETED")

    @kopf.on.event("batch", "v1", "jobs", id="watch-jobs", labels={LABEL_WORKSPACE: kopf.PRESENT}, registry=registry)
    async def job_event(*, type: str, body: kopf.Body, namespace: str | None, labels: Mapping[str, str], memo: Any, **_: Any) -> None:
        """A tuning Job started, finished or went away: wake its workspace."""
        ns = namespace or ""
        key = (ns, labels[LABEL_WORKSPACE])
        _ctx(memo).pokes.poke_if_changed(("Job", ns, body["metadata"]["name"]), key, fingerprint.job(body), deleted=type == "DELETED")

    _add_admission(registry)
    return registry


def make_admission_registry() -> kopf.OperatorRegistry:
    """A kopf registry that only serves the admission webhook: what a replica that is not the
    leader runs (it watches no Workspace and writes nothing; see :mod:`kaito_core.operator.election`)."""
    registry = kopf.OperatorRegistry()
    _add_login(registry)
    _add_admission(registry)
    return registry


def _add_login(registry: kopf.OperatorRegistry) -> None:
    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """The same credentials as the reconciler's client: in-cluster, else $KUBECONFIG."""
        return kopf.login_via_client(**kwargs)


def _add_admission(registry: kopf.OperatorRegistry) -> None:
    @kopf.on.validate(GROUP, PLURAL, id="validate-workspace", operations=["CREATE", "UPDATE"], registry=registry)
    def validate_workspace(
        *, body: kopf.Body, memo: Any, old: kopf.Body | None = None, operation: str | None = None, **_: Any
    ) -> None:
        """Refuse invalid Workspaces at kubectl-apply time with every field-named problem."""
        admit(_ctx(memo), body, old, operation)


def admit(ctx: OperatorContext, body: Mapping[str, Any], old: Mapping[str, Any] | None, operation: str | None) -> None:
    """The admission decision for a Workspace, counted in ``kaito_admission_requests_total``.

    Raises:
        kopf.AdmissionError: the workspace is invalid (every field-named problem, code 422).
    """
    try:
        _check_admission(ctx, body, old, operation)
    except kopf.AdmissionError:
        ctx.metrics.admission(allowed=False)
        raise
    ctx.metrics.admission(allowed=True)


def _check_admission(ctx: OperatorContext, body: Mapping[str, Any], old: Mapping[str, Any] | None, operation: str | None) -> None:
    obj = {k: v for k, v in copy.deepcopy(dict(body)).items() if k != "status"}
    if old is not None and operation == "UPDATE" and (
        body.get("metadata", {}).get("deletionTimestamp") or all(body.get(f) == old.get(f) for f in SPEC_FIELDS)
    ):
        return  # metadata-only updates (finalizers, annotations) and deletions always pass
    previous = {k: v for k, v in copy.deepcopy(dict(old)).items() if k != "status"} if old and operation == "UPDATE" else None
    try:
        checks.check(
            obj, ctx.registry, old=previous, cloud=ctx.settings.cloud.provider, provisioner=ctx.settings.node_provisioner.name,
            resolve_preset=ctx.reconciler.presets.resolver(obj), allowed_data_hosts=ctx.settings.tuning.allow_data_hosts,
        )
    except ValidationError as exc:
        raise kopf.AdmissionError(exc.render(), code=422) from exc
    except Exception as exc:  # plugin trouble must not block the API: report it instead
        mapped = to_kopf(exc)
        raise kopf.AdmissionError(str(mapped or exc), code=422) from exc


def _poke_by_labels(memo: Any, kind: str, body: kopf.Body, print_: object, *, deleted: bool) -> None:
    labels = body.get("metadata", {}).get("labels") or {}
    key = (labels[LABEL_WORKSPACE_NAMESPACE], labels[LABEL_WORKSPACE])
    _ctx(memo).pokes.poke_if_changed((kind, "", body["metadata"]["name"]), key, print_, deleted=deleted)
