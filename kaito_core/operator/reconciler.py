"""The level-based reconciler: read the cluster, compute what should exist, make it so.

It is plain synchronous code over the ``kubernetes`` client (kopf runs it in worker threads);
the kopf handlers in :mod:`kaito_core.operator.handlers` only call it and translate its errors.
Each step reads the current state instead of remembering anything, so a restart at any point
converges: NodeClaims are found by labels, children by name and owner, and an unchanged
workspace causes no write at all.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

from kaito_core.api.labels import ANNOTATION_HASH, ANNOTATION_NODE_IMAGE_FAMILY, ANNOTATION_REVISION, ANNOTATION_RUNTIME, LABEL_WORKSPACE, RESERVED_SELECTOR_KEYS
from kaito_core.api.workspace import Workspace
from kaito_core.backends import AdapterRef, InferenceBackend, ServingContext
from kaito_core.errors import KaitoError, NotFoundError, NotReadyError, PluginError, ProvisioningError, ValidationError
from kaito_core.operator import contracts
from kaito_core.operator.kube import Kube
from kaito_core.operator.manifests import WorkloadInputs, build_inference_objects, spec_hash
from kaito_core.operator.metrics import OperatorMetrics
from kaito_core.operator.settings import OperatorSettings
from kaito_core.operator.status import Facts, WorkloadFacts, build_status, classify_pods, status_changed
from kaito_core.plugins import Registry
from kaito_core.presets import Preset
from kaito_core.provisioners import NodeRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """Result of one successful reconcile: the workspace is where it should be for now."""

    ready: bool
    requeue_after: float
    """Seconds until the next level-based check (events of owned objects wake it earlier)."""


class Reconciler:
    """Reconciles one Workspace at a time; safe to use from several threads."""

    def __init__(self, kube: Kube, registry: Registry, settings: OperatorSettings, metrics: OperatorMetrics | None = None) -> None:
        self.kube = kube
        self.registry = registry
        self.settings = settings
        self.metrics = metrics

    # -- public -----------------------------------------------------------------------------------

    def reconcile(self, obj: dict[str, Any]) -> Outcome:
        """Bring the cluster in line with the Workspace ``obj`` (a wire dict, as read).

        Raises:
            ValidationError: the spec is invalid (status says which fields).
            NotReadyError: nodes or the workload are not ready yet (status says what is missing).
            ProvisioningError, NotFoundError, PluginError: something a person must fix.
        """
        obj = copy.deepcopy(obj)
        meta = obj.get("metadata") or {}
        generation = int(meta.get("generation") or 1)
        old_status = obj.get("status") or {}
        try:
            ws = contracts.check(
                {k: v for k, v in obj.items() if k != "status"}, self.registry,
                cloud=self.settings.cloud.provider, provisioner=self.settings.node_provisioner.name,
            )
        except ValidationError as exc:
            self._write_status(obj, Facts(generation=generation, invalid_message=exc.render()), old_status)
            raise
        self._ensure_revision(obj)
        if ws.tuning is not None:
            self._write_status(obj, Facts(generation=generation, tuning=True), old_status)
            return Outcome(ready=False, requeue_after=self.settings.requeue.resync_s)
        try:
            return self._reconcile_inference(obj, ws, generation, old_status)
        except (ProvisioningError, NotFoundError, PluginError) as exc:
            reason = getattr(exc, "reason", type(exc).__name__)
            self._write_status(obj, Facts(generation=generation, blocked_reason=reason, blocked_message=str(exc)), old_status)
            raise

    def finalize(self, obj: dict[str, Any]) -> None:
        """Stop the inference pods, then delete what the provisioner created for the workspace.

        The workload goes first so the servers shut down while their nodes still exist (no pods
        stranded on vanished nodes); the Services and the rest go by owner references.

        Raises:
            NotReadyError: pods are still terminating, or NodeClaims (and their cloud nodes) are
                still being deleted.
        """
        meta = obj["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta.get("uid", "")
        for kind in ("Deployment", "StatefulSet"):
            self.kube.delete_if_owned(kind, namespace, name, uid)
        pods = self.kube.list_pods(namespace, f"{LABEL_WORKSPACE}={name}")
        if pods:
            raise NotReadyError(
                f"waiting for {len(pods)} inference pod(s) of workspace {namespace}/{name} to terminate",
                delay=self.settings.requeue.delete_s,
                reason="PodsTerminating",
            )
        provisioner = self.registry.provisioner(self.settings.node_provisioner.name)
        if not provisioner.delete_nodes(self.kube.api, workspace=name, namespace=namespace):
            raise NotReadyError(
                f"waiting for the nodes of workspace {namespace}/{name} to be deleted by {provisioner.name}",
                delay=self.settings.requeue.delete_s,
                reason="NodesDeleting",
            )

    # -- steps ------------------------------------------------------------------------------------

    def _reconcile_inference(self, obj: dict[str, Any], ws: Workspace, generation: int, old_status: dict[str, Any]) -> Outcome:
        assert ws.inference is not None
        if ws.inference.preset is None:
            raise ProvisioningError(
                "inference.template (custom pod templates) is not supported by this operator version; use inference.preset",
                reason="TemplateNotSupported",
                retryable=False,
            )
        preset = self.registry.preset(ws.inference.preset.name)
        backend = self._backend(ws, preset)
        provisioner = self.registry.provisioner(self.settings.node_provisioner.name)
        plan = contracts.plan(ws, preset, backend, cloud=self.settings.cloud.provider)
        request = self._node_request(ws, preset, plan.nodes)

        result = provisioner.ensure_nodes(self.kube.api, request)
        kind = "Deployment" if plan.nodes == 1 else "StatefulSet"
        if not result.ready:
            existing = self.kube.get(kind, ws.namespace, ws.name)
            workload = self._observe(existing, ws) if existing else WorkloadFacts()
            self._write_status(obj, Facts(generation=generation, target_nodes=plan.nodes, provision=result, workload=workload), old_status)
            raise NotReadyError(result.message or "nodes are not ready", delay=result.retry_after_s, reason=result.reason or "NodesNotReady")

        adapters = tuple(
            AdapterRef(name=a.source.name or "", strength=float(a.strength) if a.strength is not None else 1.0)
            for a in ws.inference.adapters
        )
        server = backend.server_spec(
            preset,
            ServingContext(
                workspace=ws.name, namespace=ws.namespace, gpus_per_node=plan.gpus_per_node, node_count=plan.nodes, adapters=adapters
            ),
        )
        inputs = WorkloadInputs(
            workspace=ws,
            preset=preset,
            server=server,
            nodes=plan.nodes,
            gpus_per_node=plan.gpus_per_node,
            affinity_terms=provisioner.node_affinity_terms(request),
            revision=obj["metadata"].get("annotations", {}).get(ANNOTATION_REVISION, "1"),
            image=self.settings.images.inference,
            backend_name=backend.name,
            distributed=plan.nodes > 1 and backend.supports_multi_node,
            adapter_puller_image=self.settings.images.adapter_puller,
            cpus=self.settings.cpu_inference.cpus if plan.gpus_per_node == 0 else 0,
        )
        uid = ws.metadata.uid or ""
        workload_obj: dict[str, Any] | None = None
        for desired in build_inference_objects(inputs):
            applied, written = self.kube.apply(desired, uid)
            if written:
                log.info("%s %s/%s %s", desired["kind"], ws.namespace, desired["metadata"]["name"], "written")
            if desired["kind"] == kind:
                workload_obj = applied
        workload = self._observe(workload_obj, ws) if workload_obj else WorkloadFacts()
        self._write_status(obj, Facts(generation=generation, target_nodes=plan.nodes, provision=result, workload=workload), old_status)
        if not workload.ready:
            raise NotReadyError(
                workload.problem_message or "the inference workload is not ready yet",
                delay=self.settings.requeue.workload_s,
                reason=workload.problem_reason or "WorkloadNotReady",
            )
        return Outcome(ready=True, requeue_after=self.settings.requeue.resync_s)

    def _backend(self, ws: Workspace, preset: Preset) -> InferenceBackend:
        name = ws.metadata.annotations.get(ANNOTATION_RUNTIME) or preset.default_backend
        return self.registry.backend(name)

    def _node_request(self, ws: Workspace, preset: Preset, count: int) -> NodeRequest:
        selector = ws.resource.label_selector
        return NodeRequest(
            workspace=ws.name,
            namespace=ws.namespace,
            instance_type=ws.resource.instance_type,
            count=count,
            match_labels={k: v for k, v in selector.match_labels.items() if k not in RESERVED_SELECTOR_KEYS},
            match_expressions=tuple(e.to_wire() for e in selector.match_expressions),
            disk_gib=preset.disk_gib,
            node_image_family=ws.metadata.annotations.get(ANNOTATION_NODE_IMAGE_FAMILY)
            or self.settings.node_provisioner.default_node_image_family,
            gpu=preset.requires_gpu,
            cloud=self.settings.cloud.provider,
        )

    def _ensure_revision(self, obj: dict[str, Any]) -> None:
        """Set workspace.kaito.io/hash and bump workspace.kaito.io/revision when the spec changed."""
        meta = obj["metadata"]
        annotations = meta.setdefault("annotations", {})
        digest = spec_hash(obj)
        if annotations.get(ANNOTATION_HASH) == digest:
            return
        try:
            revision = int(annotations.get(ANNOTATION_REVISION, "0")) + 1
        except ValueError:
            revision = 1
        patch = {ANNOTATION_HASH: digest, ANNOTATION_REVISION: str(revision)}
        self.kube.patch_workspace_annotations(meta["namespace"], meta["name"], dict(patch))
        annotations.update(patch)

    def _observe(self, workload: dict[str, Any], ws: Workspace) -> WorkloadFacts:
        """Readiness of the Deployment/StatefulSet, and the first actionable pod failure."""
        spec, status = workload.get("spec") or {}, workload.get("status") or {}
        want = int(spec.get("replicas", 1))
        ready_n = int(status.get("readyReplicas") or 0)
        current = int(status.get("observedGeneration") or 0) >= int(workload["metadata"].get("generation") or 1)
        updated = int(status.get("updatedReplicas") or 0) >= want
        if workload.get("kind") == "Deployment":
            settled = int(status.get("replicas") or 0) == want
        else:
            settled = status.get("currentRevision") == status.get("updateRevision") or updated
        ready = current and updated and settled and ready_n >= want
        if ready:
            return WorkloadFacts(exists=True, ready=True, ready_replicas=ready_n, replicas=want)
        problem = classify_pods(self.kube.list_pods(ws.namespace, f"{LABEL_WORKSPACE}={ws.name}"))
        return WorkloadFacts(
            exists=True, ready=False, ready_replicas=ready_n, replicas=want,
            problem_reason=problem[0] if problem else "", problem_message=problem[1] if problem else "",
        )

    def _write_status(self, obj: dict[str, Any], facts: Facts, old_status: dict[str, Any]) -> None:
        new = build_status(facts, old_status)
        if status_changed(old_status, new):
            meta = obj["metadata"]
            self.kube.patch_workspace_status(meta["namespace"], meta["name"], new, old_status)
            obj["status"] = new
        if self.metrics is not None:
            self.metrics.workspace_seen(obj, str(new["state"]))


def is_permanent(exc: KaitoError) -> bool:
    """Whether retrying cannot help until the spec, the plugins or the cluster change."""
    if isinstance(exc, (ValidationError, NotFoundError, PluginError)):
        return True
    return isinstance(exc, ProvisioningError) and not exc.retryable

