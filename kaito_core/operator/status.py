"""Pure status computation: facts observed by the reconciler -> the Workspace status.

Conditions follow upstream KAITO's types and reasons (kaito.md §1.7): NodeClaimReady (from the
provisioner), ResourceReady, InferenceReady and WorkspaceSucceeded (shown by ``kubectl get`` as
WORKSPACEREADY), mirrored as WorkspaceReady; JobStarted for tuning. ``lastTransitionTime`` changes only when a condition's status
changes, so recomputing an unchanged status yields an identical dict and no API write. The
status is built as the API models (:class:`~kaito_core.api.workspace.WorkspaceStatus`), the
same models the CRD is generated from, so a condition type or state the CRD does not know
cannot be written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kaito_core.api.workspace import Condition, ConditionType, WorkspaceState, WorkspaceStatus
from kaito_core.provisioners import ProvisionResult
from kaito_core.serving import TUNING_STEPS

MAX_MESSAGE = 1024
CT = ConditionType

IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
START_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})


def now_rfc3339() -> str:
    """The current UTC time as Kubernetes writes it (seconds, Z)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class WorkloadFacts:
    """What the reconciler saw of the inference workload."""

    exists: bool = False
    ready: bool = False
    ready_replicas: int = 0
    replicas: int = 0
    problem_reason: str = ""
    problem_message: str = ""


@dataclass(frozen=True)
class TuningFacts:
    """What the reconciler saw of a tuning workspace's Job and its pod
    (:func:`kaito_core.operator.tuning.observe_job`), or why no Job can be created yet."""

    job_exists: bool = False
    started: bool = False
    """The Job has an active pod or has finished (upstream: active, ready or succeeded)."""
    active: int = 0
    """Pods of the Job running now."""
    step: str = ""
    """The step running now, or the one that failed (a container name of :data:`TUNING_STEPS`)."""
    succeeded: bool = False
    failed: bool = False
    exit_code: int | None = None
    """Exit code of the failed step."""
    failure_reason: str = ""
    """The kubelet's reason for the failed step (Error, OOMKilled), or the Job's Failed reason."""
    failure_message: str = ""
    """The failed step's termination message (the runner's error, or the tail of its log)."""
    problem_reason: str = ""
    """Set while the Job cannot go on: a pod problem (ImagePullError, ContainerStartError for a
    missing Secret, Unschedulable) or no usable training config (TuningConfigNotFound/Invalid)."""
    problem_message: str = ""
    nodes_message: str = ""
    """Non-empty while the nodes are not ready (no Job is created before)."""
    replacing: bool = False
    """The Job of an older spec is being deleted before the new one is created."""
    output: str = ""
    """Where the adapter goes (for the success message)."""


@dataclass(frozen=True)
class Facts:
    """Everything status depends on."""

    generation: int
    target_nodes: int | None = None
    invalid_message: str = ""
    """Non-empty when the spec failed validation (rendered field errors)."""
    blocked_reason: str = ""
    """Set when something needs a person before provisioning (unknown plugin, provisioning refused)."""
    blocked_message: str = ""
    tuning: TuningFacts | None = None
    """Set for tuning workspaces."""
    provision: ProvisionResult | None = None
    workload: WorkloadFacts = field(default_factory=WorkloadFacts)


def _cond(type_: ConditionType, ok: bool, reason: str, message: str, generation: int) -> Condition:
    return Condition(
        type=type_, status="True" if ok else "False", reason=reason, message=message[:MAX_MESSAGE], observed_generation=generation
    )


def _overall(ok: bool, reason: str, message: str, generation: int) -> list[Condition]:
    """WorkspaceSucceeded (upstream's name; ``kubectl get`` shows it as WORKSPACEREADY) and
    WorkspaceReady (the same verdict under the column's name)."""
    return [_cond(t, ok, reason, message, generation) for t in (CT.WORKSPACE_SUCCEEDED, CT.WORKSPACE_READY)]


def tuning_failure_message(tuning: TuningFacts) -> str:
    """One line naming the failed step, its exit code and its termination message (the cause and
    the fix, as the runner writes them)."""
    if not tuning.step:
        detail = f"{tuning.failure_reason}: {tuning.failure_message}".strip(": ")
        return f"the tuning Job failed ({detail or 'no pod left to say why'}); see kubectl describe job"
    what = TUNING_STEPS.get(tuning.step, tuning.step)
    how = "was killed for running out of memory (OOMKilled); use nodes with more memory" if tuning.failure_reason == "OOMKilled" \
        else f"exited with code {tuning.exit_code}"
    tail = _log_tail(tuning.failure_message).removesuffix("; ")
    return f"the tuning Job failed at step {tuning.step} ({what}): it {how}" + (f"; {tail}" if tail else "")


def _tuning_conditions(tuning: TuningFacts, gen: int) -> list[Condition]:
    started = tuning.started
    if tuning.failed:
        message = tuning_failure_message(tuning)
        return [_cond(CT.JOB_STARTED, False, "WorkspaceTuningJobStatusFailed", message, gen),
                *_overall(False, "TuningJobFailed", message, gen)]
    if started:
        job = _cond(CT.JOB_STARTED, True, "WorkspaceTuningJobStatusStarted", "the tuning Job has started", gen)
    elif tuning.nodes_message:
        job = _cond(CT.JOB_STARTED, False, "WorkspaceTuningJobStatusPending", f"waiting for nodes: {tuning.nodes_message}", gen)
    else:
        job = _cond(CT.JOB_STARTED, False, "WorkspaceTuningJobStatusPending", "the tuning Job has not started", gen)
    if tuning.succeeded:
        where = f": the adapter is in {tuning.output}" if tuning.output else ""
        return [job, *_overall(True, "workspaceSucceeded", f"the tuning Job has succeeded{where}", gen)]
    if tuning.problem_reason:
        return [job, *_overall(False, tuning.problem_reason, tuning.problem_message, gen)]
    if tuning.replacing:
        message = "the spec changed: deleting the tuning Job of the previous revision before starting a new one"
    elif tuning.nodes_message:
        message = f"waiting for nodes: {tuning.nodes_message}"
    elif tuning.step:
        message = f"the tuning Job is running: step {tuning.step} ({TUNING_STEPS.get(tuning.step, tuning.step)})"
    else:
        message = "the tuning Job is starting"
    return [job, *_overall(False, "workspacePending", message, gen)]


def _resource_conditions(prov: ProvisionResult | None, gen: int) -> list[Condition]:
    """The provisioner's own conditions, then ResourceReady (last)."""
    conds = [_cond(extra.type, extra.status == "True", extra.reason, extra.message, gen) for extra in (prov.conditions if prov else ())]
    if prov is not None and prov.ready:
        return [*conds, _cond(CT.RESOURCE_READY, True, "workspaceResourceStatusSuccess", "workspace resource is ready", gen)]
    reason = (prov.reason if prov else "") or "workspaceResourceStatusNotReady"
    message = (prov.message if prov else "") or "node claim or node status condition not ready"
    return [*conds, _cond(CT.RESOURCE_READY, False, reason, message, gen)]


def desired_conditions(facts: Facts) -> list[Condition]:
    """The conditions for ``facts``, without lastTransitionTime."""
    gen = facts.generation
    if facts.invalid_message:
        return _overall(False, "WorkspaceInvalid", facts.invalid_message, gen)
    if facts.tuning is not None:
        return [*_resource_conditions(facts.provision, gen), *_tuning_conditions(facts.tuning, gen)] if facts.provision else \
            _tuning_conditions(facts.tuning, gen)
    if facts.blocked_reason:
        return [
            _cond(CT.RESOURCE_READY, False, facts.blocked_reason, facts.blocked_message, gen),
            _cond(CT.INFERENCE_READY, False, "WorkspaceInferenceStatusPending", "waiting for resources: " + facts.blocked_message, gen),
            *_overall(False, "workspacePending", facts.blocked_message, gen),
        ]

    prov = facts.provision
    resource_ok = bool(prov and prov.ready)
    *conds, resource = _resource_conditions(prov, gen)

    wl = facts.workload
    pending = "WorkspaceInferenceStatusPending"
    if wl.ready and resource_ok:
        inference = _cond(CT.INFERENCE_READY, True, "WorkspaceInferenceStatusSuccess", "Inference has been deployed successfully", gen)
    elif wl.problem_reason:
        inference = _cond(CT.INFERENCE_READY, False, wl.problem_reason, wl.problem_message, gen)
    elif not resource_ok and not wl.exists:
        inference = _cond(CT.INFERENCE_READY, False, pending, "waiting for nodes before creating the inference workload", gen)
    else:
        # Before the workload exists (the round that creates it) the count is of the planned pods, so
        # the next round, which reads the new workload with no pod ready, writes nothing new.
        wanted = wl.replicas if wl.exists else facts.target_nodes
        detail = f" ({wl.ready_replicas}/{wanted} pods ready)" if wanted else ""
        inference = _cond(CT.INFERENCE_READY, False, pending, f"Inference workload is not ready{detail}", gen)
    conds += [resource, inference]

    if resource_ok and inference.status == "True":
        conds += _overall(True, "workspaceSucceeded", "workspace succeeds: the inference workload is ready", gen)
    elif not resource_ok:
        conds += _overall(False, "workspacePending", f"waiting for nodes: {resource.message}", gen)
    else:
        conds += _overall(False, "workspacePending", f"waiting for the inference workload: {inference.message}", gen)
    return conds


def _state(facts: Facts, conds: Sequence[Condition], previous: str | None) -> WorkspaceState:
    if facts.invalid_message:
        return WorkspaceState.FAILED
    ready = any(c.type == CT.WORKSPACE_READY and c.status == "True" for c in conds)
    if facts.tuning is not None:
        if facts.tuning.failed or facts.tuning.problem_reason in ("TuningConfigInvalid", "TuningSecretInvalid"):
            return WorkspaceState.FAILED
        if ready:
            return WorkspaceState.SUCCEEDED
        return WorkspaceState.RUNNING if facts.tuning.started else WorkspaceState.PENDING
    if ready:
        return WorkspaceState.READY
    return WorkspaceState.NOT_READY if previous in ("Ready", "NotReady") else WorkspaceState.PENDING


def build_status(facts: Facts, old: Mapping[str, Any] | None, *, now: str | None = None) -> WorkspaceStatus:
    """The full status for ``facts``; conditions whose status did not change keep their time."""
    old = old or {}
    old_conds = {c.get("type"): c for c in old.get("conditions") or []}
    stamp = now or now_rfc3339()
    conditions = []
    for cond in desired_conditions(facts):
        prior = old_conds.get(cond.type.value)
        same = prior is not None and prior.get("status") == cond.status and prior.get("lastTransitionTime")
        conditions.append(cond.model_copy(update={"last_transition_time": prior["lastTransitionTime"] if same and prior else stamp}))
    return WorkspaceStatus(
        conditions=conditions,
        state=_state(facts, conditions, old.get("state")),
        observed_generation=facts.generation,
        worker_nodes=sorted(facts.provision.ready_nodes) if facts.provision else [],
        target_node_count=facts.target_nodes,
    )


def status_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether writing ``new`` (wire form) would change anything (conditions compared as a set by type)."""
    old = dict(old or {})

    def norm(s: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in s.items() if k != "conditions" and v not in (None, [])}
        out["conditions"] = sorted((dict(c) for c in s.get("conditions") or []), key=lambda c: str(c.get("type")))
        return out

    return norm(old) != norm(new)


# -- pod failure classification --------------------------------------------------------------------


def _statuses(pod: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    status = pod.get("status") or {}
    yield from status.get("initContainerStatuses") or []
    yield from status.get("containerStatuses") or []


LOG_TAIL_CHARS = 1000
"""How much of a crashed container's termination message (with ``FallbackToLogsOnError``: the
tail of its log) goes into the condition message."""


def _log_tail(message: str) -> str:
    """``"log tail: ...; "`` from the kubelet's termination message: the last lines that fit in
    :data:`LOG_TAIL_CHARS`, joined with `` | `` so the condition stays one line; ``""`` if empty."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        if size + len(line) > LOG_TAIL_CHARS:
            if not kept:
                kept.append("..." + line[-(LOG_TAIL_CHARS - 3):])
            break
        kept.append(line)
        size += len(line) + 3
    return f"log tail: {' | '.join(reversed(kept))}; " if kept else ""


def classify_pod(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) when the pod is failing in a way a person must act on, else None."""
    name = (pod.get("metadata") or {}).get("name", "?")
    status = pod.get("status") or {}
    if status.get("reason") == "Evicted":
        return "PodEvicted", f"pod {name} was evicted: {status.get('message', '')}".strip()
    for cs in _statuses(pod):
        cname = cs.get("name", "?")
        state = cs.get("state") or {}
        last = cs.get("lastState") or {}
        waiting = state.get("waiting") or {}
        for term in (state.get("terminated") or {}, last.get("terminated") or {}):
            if term.get("reason") == "OOMKilled":
                return "ContainerOOMKilled", (
                    f"container {cname} of pod {name} was killed for running out of memory (OOMKilled); "
                    "use an instance type with more memory or a smaller model"
                )
        wreason = waiting.get("reason", "")
        if wreason in IMAGE_PULL_REASONS:
            return "ImagePullError", f"pod {name} cannot pull image {cs.get('image', '')} of container {cname}: {wreason}: {waiting.get('message', '')}".strip()
        if wreason == "CrashLoopBackOff":
            exit_info = last.get("terminated") or {}
            detail = f" (last exit code {exit_info.get('exitCode')}, {exit_info.get('reason', '')})" if exit_info else ""
            return "ContainerCrashLoopBackOff", (
                f"container {cname} of pod {name} keeps crashing{detail}; "
                f"{_log_tail(exit_info.get('message', ''))}see kubectl logs {name} -c {cname} --previous"
            )
        if wreason in START_REASONS:
            return "ContainerStartError", f"container {cname} of pod {name} cannot start: {wreason}: {waiting.get('message', '')}".strip()
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
            return "Unschedulable", f"pod {name} cannot be scheduled: {cond.get('message', '')}".strip()
    return None


def classify_pods(pods: Iterable[Mapping[str, Any]]) -> tuple[str, str] | None:
    """The first actionable failure among ``pods`` (sorted by name)."""
    for pod in sorted(pods, key=lambda p: (p.get("metadata") or {}).get("name", "")):
        found = classify_pod(pod)
        if found:
            return found
    return None
