"""Status is a pure function of facts; unchanged facts give an identical status (zero writes)."""

from __future__ import annotations

from kaito_core.operator.status import Facts, WorkloadFacts, build_status, classify_pod, status_changed
from kaito_core.provisioners import NodeCondition, ProvisionResult

T0, T1 = "2026-11-22T04:00:00Z", "2026-11-22T04:05:00Z"
NOT_READY = ProvisionResult(
    reason="NodeClaimNotReady",
    message="0/1 nodes ready; NodeClaim ws0123abcde is not ready: Launched=False (LaunchFailed): quota exceeded",
    conditions=(NodeCondition(type="NodeClaimReady", status="False", reason="NodeClaimNotReady", message="quota exceeded"),),
)
READY = ProvisionResult(
    ready=True, ready_nodes=("aks-ws0123abcde-12345678-vmss000000",),
    conditions=(NodeCondition(type="NodeClaimReady", status="True", reason="NodeClaimsReady", message="Enough NodeClaims are ready"),),
)


def conds(status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in status["conditions"]}


def test_pending_status_names_the_nodeclaim_and_the_cloud_error() -> None:
    status = build_status(Facts(generation=1, target_nodes=1, provision=NOT_READY), None, now=T0)
    c = conds(status)
    assert status["state"] == "Pending" and status["targetNodeCount"] == 1 and status["observedGeneration"] == 1
    assert c["ResourceReady"]["status"] == "False" and "ws0123abcde" in c["ResourceReady"]["message"]
    assert "quota exceeded" in c["WorkspaceReady"]["message"]
    assert c["NodeClaimReady"]["reason"] == "NodeClaimNotReady"


def test_ready_status_and_transition_times() -> None:
    pending = build_status(Facts(generation=1, target_nodes=1, provision=NOT_READY), None, now=T0)
    ready = build_status(Facts(generation=1, target_nodes=1, provision=READY, workload=WorkloadFacts(exists=True, ready=True, ready_replicas=1, replicas=1)), pending, now=T1)
    c = conds(ready)
    assert ready["state"] == "Ready" and ready["workerNodes"] == ["aks-ws0123abcde-12345678-vmss000000"]
    assert all(c[t]["status"] == "True" for t in ("ResourceReady", "InferenceReady", "WorkspaceReady", "WorkspaceSucceeded", "NodeClaimReady"))
    assert all(c[t]["lastTransitionTime"] == T1 for t in c)
    # Recomputing from the same facts later changes nothing: no write.
    again = build_status(Facts(generation=1, target_nodes=1, provision=READY, workload=WorkloadFacts(exists=True, ready=True, ready_replicas=1, replicas=1)), ready, now="2026-11-22T05:00:00Z")
    assert again == ready and not status_changed(ready, again)


def test_message_change_keeps_transition_time_and_not_ready_after_ready() -> None:
    ready = build_status(Facts(generation=1, provision=READY, workload=WorkloadFacts(exists=True, ready=True, replicas=1, ready_replicas=1)), None, now=T0)
    broken = build_status(
        Facts(generation=1, provision=READY, workload=WorkloadFacts(exists=True, replicas=1, problem_reason="ContainerOOMKilled", problem_message="OOM")),
        ready, now=T1,
    )
    assert broken["state"] == "NotReady"
    assert conds(broken)["InferenceReady"]["reason"] == "ContainerOOMKilled" and conds(broken)["InferenceReady"]["lastTransitionTime"] == T1
    assert conds(broken)["ResourceReady"]["lastTransitionTime"] == T0


def test_invalid_and_tuning_workspaces_say_so() -> None:
    invalid = build_status(Facts(generation=2, invalid_message="Workspace 'x' is invalid (1 problem):\n  - resource.instanceType: unknown"), None, now=T0)
    assert invalid["state"] == "Failed" and "resource.instanceType" in conds(invalid)["WorkspaceReady"]["message"]
    tuning = build_status(Facts(generation=1, tuning=True), None, now=T0)
    assert conds(tuning)["JobStarted"]["reason"] == "TuningControllerNotInstalled"


def pod(**status: object) -> dict:
    return {"metadata": {"name": "ws-abc"}, "status": status}


def test_pod_failures_are_classified() -> None:
    assert classify_pod(pod(containerStatuses=[{"name": "c", "image": "bad:1", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}]))[0] == "ImagePullError"
    assert classify_pod(pod(containerStatuses=[{"name": "c", "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]))[0] == "ContainerOOMKilled"
    assert classify_pod(pod(containerStatuses=[{"name": "c", "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": {"reason": "Error", "exitCode": 1}}}]))[0] == "ContainerCrashLoopBackOff"
    unsched = classify_pod(pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]))
    assert unsched and unsched[0] == "Unschedulable" and "Insufficient nvidia.com/gpu" in unsched[1]
    assert classify_pod(pod(reason="Evicted", message="low on memory"))[0] == "PodEvicted"
    assert classify_pod(pod(phase="Running")) is None
