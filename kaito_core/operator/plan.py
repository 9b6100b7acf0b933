"""The planner: pure functions from a Workspace and what was observed to what should exist.

``(Workspace, Preset, backend, provisioner, settings, observed facts) -> Desired``: the node
request, every object to create or update (in order), and the status to write. No I/O happens
here. The reconciler (:mod:`kaito_core.operator.reconciler`) is a thin shell around it:
read (from the watch caches) -> plan -> apply -> write status; the golden-file tests call the
very same functions, so the golden files pin what the operator really creates.

Inference runs in two planning steps because the provisioner's answer is an observed fact:
:func:`plan_nodes` says which nodes to ask the provisioner for, the provisioner reports how far
they are, and :func:`plan_inference` turns that report and the observed workload into the
objects and the status. :func:`plan_tuning` is the slot of the tuning controller: it plans the
status of a tuning Workspace today and will plan its Job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from kaito_core import fit, sku
from kaito_core.api.labels import ANNOTATION_NODE_IMAGE_FAMILY, RESERVED_SELECTOR_KEYS
from kaito_core.api.workspace import Workspace
from kaito_core.backends import AdapterRef, InferenceBackend, ServingContext
from kaito_core.operator.manifests import WorkloadInputs, build_inference_objects
from kaito_core.operator.settings import OperatorSettings
from kaito_core.operator.status import Facts, TuningFacts, WorkloadFacts, classify_pods
from kaito_core.presets import Preset
from kaito_core.provisioners import NodeProvisioner, NodeRequest, ProvisionResult


@dataclass(frozen=True)
class NodePlan:
    """How many nodes a workspace gets, how many GPUs each has, and the request to the provisioner."""

    nodes: int
    gpus_per_node: int
    request: NodeRequest

    @property
    def workload_kind(self) -> str:
        """Deployment for one node, StatefulSet for several."""
        return "Deployment" if self.nodes == 1 else "StatefulSet"


@dataclass(frozen=True)
class Observed:
    """What the reconciler read about a workspace (from the watch caches and the provisioner)."""

    generation: int = 1
    """metadata.generation of the Workspace."""
    revision: str = "1"
    """The workspace.kaito.io/revision annotation (bumped when the spec changes)."""
    provision: ProvisionResult | None = None
    """The provisioner's report on the workspace's nodes."""
    workload: Mapping[str, Any] | None = None
    """The existing Deployment/StatefulSet, if any."""
    pods: Sequence[Mapping[str, Any]] = ()
    """The workspace's pods (only needed while the workload is not ready)."""
    job: Mapping[str, Any] | None = None
    """The tuning Job, if any (tuning workspaces)."""


@dataclass(frozen=True)
class Wait:
    """Why the workspace is not done yet and when to look again."""

    reason: str
    message: str
    delay_s: float


@dataclass(frozen=True)
class Desired:
    """What should exist for a workspace and what its status should say."""

    facts: Facts
    """The status to write, as facts (:func:`kaito_core.operator.status.build_status` renders them)."""
    node_request: NodeRequest | None = None
    """What to ask the provisioner for (None: no nodes, e.g. tuning without a controller)."""
    objects: tuple[dict[str, Any], ...] = ()
    """Objects to create or update, in creation order (owned by the workspace, applied-hash stamped)."""
    workload_kind: str | None = None
    """Kind of the object whose readiness decides the workspace's (Deployment, StatefulSet, Job)."""
    job: dict[str, Any] | None = None
    """The tuning Job (filled by the tuning controller; None until then)."""
    wait: Wait | None = None
    """Set while the workspace is not ready: the reconciler requeues after ``wait.delay_s``."""


# -- nodes ---------------------------------------------------------------------------------------


def plan_nodes(ws: Workspace, preset: Preset, backend: InferenceBackend, settings: OperatorSettings) -> NodePlan:
    """Target node count, GPUs per node and the provisioner request for ``ws`` served by ``backend``.

    The count is ``resource.count`` unless the model needs more nodes of this instance type
    (validation refuses that unless kaito.sh/bypass-resource-checks is set). An instance type
    missing from the catalogue (upstream tolerates unknown Azure ``Standard_N*`` sizes) is
    treated as one GPU per node.
    """
    cloud = settings.cloud.provider
    count = ws.resource.count
    instance = sku.lookup(ws.resource.instance_type, cast(Any, cloud)) if ws.resource.instance_type else None
    if instance is None:
        nodes, gpus = count, 1 if preset.requires_gpu else 0
    else:
        node_plan = fit.plan_nodes(preset, instance, count=count, backend=backend, suggest=False)
        nodes = max(count, node_plan.nodes) if node_plan.fits else count
        gpus = instance.gpu_count if preset.requires_gpu or instance.has_gpu else 0
    selector = ws.resource.label_selector
    request = NodeRequest(
        workspace=ws.name,
        namespace=ws.namespace,
        instance_type=ws.resource.instance_type,
        count=nodes,
        match_labels={k: v for k, v in selector.match_labels.items() if k not in RESERVED_SELECTOR_KEYS},
        match_expressions=tuple(e.to_wire() for e in selector.match_expressions),
        disk_gib=preset.disk_gib,
        node_image_family=ws.metadata.annotations.get(ANNOTATION_NODE_IMAGE_FAMILY) or settings.node_provisioner.default_node_image_family,
        gpu=preset.requires_gpu,
        cloud=cloud,
        preferred_nodes=tuple(ws.resource.preferred_nodes),
        gpu_memory_gib=_byo_gpu_need_gib(preset, nodes) if preset.requires_gpu else 0.0,
    )
    return NodePlan(nodes=nodes, gpus_per_node=gpus, request=request)


def _byo_gpu_need_gib(preset: Preset, nodes: int) -> float:
    """Raw GPU memory ``nodes`` nodes (one GPU each at least) need for ``preset``: weights and KV
    cache plus the runtime on each, over the usable fraction (as :mod:`kaito_core.fit` plans it)."""
    need = preset.weights_gib * fit.WEIGHT_OVERHEAD + preset.kv_cache_gib(fit.DEFAULT_CONTEXT_TOKENS) + fit.RUNTIME_GIB_PER_GPU * nodes
    return round(need / fit.GPU_MEMORY_UTILIZATION, 3)


# -- inference -----------------------------------------------------------------------------------


def workload_inputs(
    ws: Workspace, preset: Preset, backend: InferenceBackend, provisioner: NodeProvisioner, settings: OperatorSettings, nodes: NodePlan, revision: str
) -> WorkloadInputs:
    """What the manifest builders need: the backend's server spec, the provisioner's affinity, images."""
    assert ws.inference is not None
    adapters = tuple(
        AdapterRef(name=a.source.name or "", strength=float(a.strength) if a.strength is not None else 1.0) for a in ws.inference.adapters
    )
    server = backend.server_spec(
        preset,
        ServingContext(workspace=ws.name, namespace=ws.namespace, gpus_per_node=nodes.gpus_per_node, node_count=nodes.nodes, adapters=adapters),
    )
    return WorkloadInputs(
        workspace=ws,
        preset=preset,
        server=server,
        nodes=nodes.nodes,
        gpus_per_node=nodes.gpus_per_node,
        affinity_terms=provisioner.node_affinity_terms(nodes.request),
        revision=revision,
        image=settings.images.inference,
        backend_name=backend.name,
        distributed=nodes.nodes > 1 and backend.supports_multi_node,
        adapter_puller_image=settings.images.adapter_puller,
        adapter_ca=(settings.adapter_pull.ca_config_map, settings.adapter_pull.ca_config_map_key) if settings.adapter_pull.ca_config_map else None,
        cpus=settings.cpu_inference.cpus if nodes.gpus_per_node == 0 else 0,
    )


def observe_workload(workload: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> WorkloadFacts:
    """Readiness of the Deployment/StatefulSet, and the first actionable pod failure."""
    if not workload:
        return WorkloadFacts()
    spec, status = workload.get("spec") or {}, workload.get("status") or {}
    want = int(spec.get("replicas", 1))
    ready_n = int(status.get("readyReplicas") or 0)
    current = int(status.get("observedGeneration") or 0) >= int((workload.get("metadata") or {}).get("generation") or 1)
    updated = int(status.get("updatedReplicas") or 0) >= want
    if workload.get("kind") == "Deployment":
        settled = int(status.get("replicas") or 0) == want
    else:
        settled = status.get("currentRevision") == status.get("updateRevision") or updated
    if current and updated and settled and ready_n >= want:
        return WorkloadFacts(exists=True, ready=True, ready_replicas=ready_n, replicas=want)
    problem = classify_pods(pods)
    return WorkloadFacts(
        exists=True, ready=False, ready_replicas=ready_n, replicas=want,
        problem_reason=problem[0] if problem else "", problem_message=problem[1] if problem else "",
    )


def plan_inference(
    ws: Workspace,
    preset: Preset,
    backend: InferenceBackend,
    provisioner: NodeProvisioner,
    settings: OperatorSettings,
    observed: Observed,
) -> Desired:
    """The objects and status of an inference workspace, given what was observed.

    Until the provisioner reports the nodes ready no object is planned (pods could not
    schedule); then the Services and the Deployment/StatefulSet are planned on every round
    (applying an unchanged object writes nothing). The status reflects the workload as observed
    before this round's writes; the watch on the workload wakes the next round when it moves.
    """
    nodes = plan_nodes(ws, preset, backend, settings)
    provision = observed.provision
    workload = observe_workload(observed.workload, observed.pods)
    facts = Facts(generation=observed.generation, target_nodes=nodes.nodes, provision=provision, workload=workload)
    if provision is None or not provision.ready:
        message = (provision.message if provision else "") or "nodes are not ready"
        nodes_wait = Wait(provision.reason if provision and provision.reason else "NodesNotReady", message,
                          provision.retry_after_s if provision else settings.requeue.nodes_s)
        return Desired(facts=facts, node_request=nodes.request, workload_kind=nodes.workload_kind, wait=nodes_wait)
    objects = build_inference_objects(workload_inputs(ws, preset, backend, provisioner, settings, nodes, observed.revision))
    wait: Wait | None = None
    if not workload.ready:
        wait = Wait(workload.problem_reason or "WorkloadNotReady", workload.problem_message or "the inference workload is not ready yet",
                    settings.requeue.workload_s)
    return Desired(facts=facts, node_request=nodes.request, objects=tuple(objects), workload_kind=nodes.workload_kind, wait=wait)


# -- tuning --------------------------------------------------------------------------------------


def plan_tuning(ws: Workspace, preset: Preset | None, settings: OperatorSettings, observed: Observed) -> Desired:
    """The Job and status of a tuning workspace.

    This operator version has no tuning controller: the plan is no nodes, no Job, and a status
    that says so (JobStarted=False, TuningControllerNotInstalled). The tuning controller fills
    ``Desired.node_request``, ``Desired.job`` and ``TuningFacts`` from ``observed.job`` here.
    """
    facts = Facts(generation=observed.generation, tuning=TuningFacts(controller_available=False))
    return Desired(facts=facts, workload_kind="Job")
