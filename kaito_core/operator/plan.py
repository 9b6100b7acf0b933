"""The planner: pure functions from a Workspace and what was observed to what should exist.

``(Workspace, Preset, backend, provisioner, settings, observed facts) -> Desired``: the node
request, every object to create or update (in order), and the status to write. No I/O happens
here. The reconciler (:mod:`kaito_core.operator.reconciler`) is a thin shell around it:
read (from the watch caches) -> plan -> apply -> write status; the golden-file tests call the
very same functions, so the golden files pin what the operator really creates.

Inference runs in two planning steps because the provisioner's answer is an observed fact:
:func:`plan_nodes` says which nodes to ask the provisioner for, the provisioner reports how far
they are, and :func:`plan_inference` turns that report and the observed workload into the
objects and the status. Tuning follows the same two steps: :func:`plan_tuning_nodes`, then
:func:`plan_tuning` turns the provisioner's report, the existing Job and the training ConfigMap
into the Job (:mod:`kaito_core.operator.tuning` builds and reads it) and the status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from kaito_core import fit, sku
from kaito_core.api.labels import ANNOTATION_NODE_IMAGE_FAMILY, RESERVED_SELECTOR_KEYS
from kaito_core.api.reasons import Reason, WaitReason
from kaito_core.api.workspace import Workspace
from kaito_core.backends import AdapterRef, InferenceBackend, ServingContext
from kaito_core.operator.manifests import WorkloadInputs, build_inference_objects
from kaito_core.operator.settings import OperatorSettings
from kaito_core.operator.status import Facts, TuningFacts, WorkloadFacts, classify_pods
from kaito_core.operator.tuning import (
    JobAction,
    TuningInputs,
    build_config_copy,
    build_tuning_job,
    config_field_errors,
    copied_config_name,
    default_config_name,
    job_action,
    observe_job,
    secret_name_problems,
    training_config_problems,
)
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
    spec_hash: str = ""
    """The workspace.kaito.io/hash annotation (sha256 of the spec): a tuning Job of another hash is replaced."""
    training_config: Mapping[str, Any] | None = None
    """The training ConfigMap a new tuning Job would mount: tuning.config's, or the chart's default
    for the method (read only when a Job is to be created; None: not found)."""


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
    """The tuning Job to create (with ``job_action`` create)."""
    job_action: JobAction = "keep"
    """What the reconciler does with the tuning Job: create ``job``, keep the existing one, delete
    the existing one (replace: it belongs to an older spec), or wait while it is deleted."""
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
        nodes_wait = Wait(provision.reason if provision and provision.reason else WaitReason.NODES_NOT_READY, message,
                          provision.retry_after_s if provision else settings.requeue.nodes_s)
        return Desired(facts=facts, node_request=nodes.request, workload_kind=nodes.workload_kind, wait=nodes_wait)
    objects = build_inference_objects(workload_inputs(ws, preset, backend, provisioner, settings, nodes, observed.revision))
    wait: Wait | None = None
    if not workload.ready:
        wait = Wait(workload.problem_reason or WaitReason.WORKLOAD_NOT_READY, workload.problem_message or "the inference workload is not ready yet",
                    settings.requeue.workload_s)
    return Desired(facts=facts, node_request=nodes.request, objects=tuple(objects), workload_kind=nodes.workload_kind, wait=wait)


# -- tuning --------------------------------------------------------------------------------------


def plan_tuning_nodes(ws: Workspace, preset: Preset, settings: OperatorSettings) -> NodePlan:
    """One node for the tuning Job: a GPU node of resource.instanceType (all its GPUs go to the
    trainer), or a CPU node for presets that tune on CPU (Gemma 3 270M), through the same
    provisioner as inference."""
    cloud = settings.cloud.provider
    instance = sku.lookup(ws.resource.instance_type, cast(Any, cloud)) if ws.resource.instance_type else None
    gpus = (instance.gpu_count if instance is not None else 1) if preset.requires_gpu else 0
    selector = ws.resource.label_selector
    request = NodeRequest(
        workspace=ws.name,
        namespace=ws.namespace,
        instance_type=ws.resource.instance_type,
        count=1,
        match_labels={k: v for k, v in selector.match_labels.items() if k not in RESERVED_SELECTOR_KEYS},
        match_expressions=tuple(e.to_wire() for e in selector.match_expressions),
        disk_gib=preset.tuning.disk_gib if preset.tuning else preset.disk_gib,
        node_image_family=ws.metadata.annotations.get(ANNOTATION_NODE_IMAGE_FAMILY) or settings.node_provisioner.default_node_image_family,
        gpu=preset.requires_gpu,
        cloud=cloud,
        preferred_nodes=tuple(ws.resource.preferred_nodes),
    )
    return NodePlan(nodes=1, gpus_per_node=gpus, request=request)


def tuning_inputs(
    ws: Workspace, preset: Preset, provisioner: NodeProvisioner, settings: OperatorSettings, nodes: NodePlan, observed: Observed
) -> TuningInputs:
    """What the Job builder needs: images, the ConfigMap to mount, the provisioner's affinity."""
    assert ws.tuning is not None
    return TuningInputs(
        workspace=ws,
        preset=preset,
        image=settings.images.tuning_image,
        config_map=ws.tuning.config or copied_config_name(ws),
        revision=observed.revision,
        spec_hash=observed.spec_hash,
        affinity_terms=provisioner.node_affinity_terms(nodes.request),
        gpus=nodes.gpus_per_node,
        backoff_limit=settings.tuning.backoff_limit,
        allow_hosts=tuple(settings.tuning.allow_data_hosts),
        gguf=preset.weight_format == "gguf",
        registry_ca=(settings.adapter_pull.ca_config_map, settings.adapter_pull.ca_config_map_key)
        if settings.adapter_pull.ca_config_map else None,
    )


def plan_tuning(
    ws: Workspace, preset: Preset, provisioner: NodeProvisioner, settings: OperatorSettings, observed: Observed
) -> Desired:
    """The Job and status of a tuning workspace, given what was observed.

    A Job of this spec is kept and read (started, running which step, succeeded, failed where
    and why); one of an older spec is deleted first (its pods may hold the node's GPUs). A new
    Job is planned once the nodes are ready and the training ConfigMap is usable (tuning.config's
    or the chart's default for the method, copied into the workspace's namespace).
    """
    assert ws.tuning is not None
    nodes = plan_tuning_nodes(ws, preset, settings)
    provision = observed.provision
    output = ws.tuning.output.image or "the output volume"
    action = job_action(observed.job, observed.spec_hash)

    def desired(tuning: TuningFacts, wait: Wait | None, **more: Any) -> Desired:
        facts = Facts(generation=observed.generation, target_nodes=1, provision=provision, tuning=tuning)
        return Desired(facts=facts, node_request=nodes.request, workload_kind="Job", wait=wait, job_action=action, **more)

    requeue = settings.requeue
    if action == "keep":
        seen = replace(observe_job(observed.job, observed.pods), output=output)
        if seen.succeeded or seen.failed:
            return desired(seen, None)
        wait = Wait(seen.problem_reason or WaitReason.TUNING_JOB_RUNNING, seen.problem_message or f"the tuning Job is at step {seen.step or '(starting)'}",
                    requeue.workload_s)
        return desired(seen, wait)
    if action != "create":
        return desired(TuningFacts(job_exists=True, replacing=True), Wait(WaitReason.TUNING_JOB_REPLACING, "deleting the Job of the previous spec",
                                                                         requeue.delete_s))
    bad_secrets = secret_name_problems(ws)
    if bad_secrets:
        message = "; ".join(str(e) for e in bad_secrets)
        return desired(TuningFacts(problem_reason=Reason.TUNING_SECRET_INVALID, problem_message=message),
                       Wait(Reason.TUNING_SECRET_INVALID, message, requeue.invalid_s))
    if provision is None or not provision.ready:
        message = (provision.message if provision else "") or "nodes are not ready"
        wait = Wait(provision.reason if provision and provision.reason else WaitReason.NODES_NOT_READY, message,
                    provision.retry_after_s if provision else requeue.nodes_s)
        return desired(TuningFacts(nodes_message=message), wait)
    method = ws.tuning.method.value
    config = observed.training_config
    source = ws.tuning.config or f"{settings.tuning.default_config_namespace}/{default_config_name(method)}"
    if config is None:
        fix = ("create it (key training_config.yaml) or unset tuning.config" if ws.tuning.config else
               "install the chart's default training configurations (tuning.defaultConfigMaps), or set tuning.config")
        message = f"the training configuration ConfigMap {source} does not exist; {fix}"
        return desired(TuningFacts(problem_reason=Reason.TUNING_CONFIG_NOT_FOUND, problem_message=message),
                       Wait(Reason.TUNING_CONFIG_NOT_FOUND, message, requeue.provisioning_s))
    problems = training_config_problems(config, method)
    if problems:
        errors = config_field_errors(problems, user_config=ws.tuning.config, method=method, namespace=settings.tuning.default_config_namespace)
        message = "; ".join(str(e) for e in errors)
        return desired(TuningFacts(problem_reason=Reason.TUNING_CONFIG_INVALID, problem_message=message),
                       Wait(Reason.TUNING_CONFIG_INVALID, message, requeue.provisioning_s))
    objects = () if ws.tuning.config else (build_config_copy(ws, config),)
    job = build_tuning_job(tuning_inputs(ws, preset, provisioner, settings, nodes, observed))
    return desired(TuningFacts(), Wait(WaitReason.TUNING_JOB_CREATED, "the tuning Job was created", requeue.workload_s), objects=objects, job=job)
