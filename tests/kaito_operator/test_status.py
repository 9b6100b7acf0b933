"""Status is a pure function of facts; unchanged facts give an identical status (zero writes)."""

from __future__ import annotations

import re

import yaml
from opgolden import ROOT

from kaito_core.operator import status as status_module
from kaito_core.operator.status import Facts, TuningFacts, WorkloadFacts, classify_pod, status_changed
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


def build_status(facts: Facts, old: dict | None, *, now: str) -> dict:
    """The status as written (wire form)."""
    return status_module.build_status(facts, old, now=now).to_wire()


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
    tuning = build_status(Facts(generation=1, tuning=TuningFacts()), None, now=T0)
    assert conds(tuning)["JobStarted"]["reason"] == "WorkspaceTuningJobStatusPending" and tuning["state"] == "Pending"


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


def test_a_crash_loop_carries_the_log_tail_from_the_termination_message() -> None:
    """With FallbackToLogsOnError the kubelet puts the log tail into lastState.terminated.message;
    the condition quotes its last lines (one line, bounded), the exit code and the kubectl hint."""
    log = "\n".join(f'{{"level": "info", "msg": "line {i}"}}' for i in range(200))
    log += "\nkaito-serve: the model failed to load, exiting: no GGUF model found at /models/x.gguf\n"
    crashed = pod(containerStatuses=[{"name": "ws", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                      "lastState": {"terminated": {"reason": "Error", "exitCode": 3, "message": log}}}])
    reason, message = classify_pod(crashed)
    assert reason == "ContainerCrashLoopBackOff"
    assert "last exit code 3, Error" in message and "\n" not in message
    assert message.count("line ") < 200 and "line 199" in message and "line 0\"" not in message
    assert "log tail: " in message and "no GGUF model found at /models/x.gguf; see kubectl logs ws-abc -c ws --previous" in message
    # One huge line is cut from the front; no message means no "log tail" part.
    huge = pod(containerStatuses=[{"name": "ws", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                   "lastState": {"terminated": {"reason": "Error", "exitCode": 1, "message": "x" * 5000 + "THE END"}}}])
    assert "...x" in classify_pod(huge)[1] and "THE END;" in classify_pod(huge)[1] and len(classify_pod(huge)[1]) < 1200
    bare = pod(containerStatuses=[{"name": "ws", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                   "lastState": {"terminated": {"reason": "Error", "exitCode": 1}}}])
    assert "log tail" not in classify_pod(bare)[1]


def written_condition_types() -> set[str]:
    """Every condition type the operator writes, over every branch of the status builder
    (invalid, tuning, blocked, waiting for nodes, waiting for the workload, failing, ready)."""
    scenarios = [
        Facts(generation=1, invalid_message="bad"),
        Facts(generation=1, tuning=TuningFacts()),
        Facts(generation=1, tuning=TuningFacts(job_exists=True, started=True, succeeded=True)),
        Facts(generation=1, provision=READY, tuning=TuningFacts(job_exists=True, started=True, failed=True, step="trainer", exit_code=2)),
        Facts(generation=1, blocked_reason="PluginMissing", blocked_message="install it"),
        Facts(generation=1, provision=NOT_READY),
        Facts(generation=1, provision=READY, workload=WorkloadFacts(exists=True, problem_reason="ImagePullError", problem_message="x")),
        Facts(generation=1, provision=READY, workload=WorkloadFacts(exists=True, ready=True, replicas=1, ready_replicas=1)),
    ]
    return {c["type"] for f in scenarios for c in build_status(f, None, now=T0)["conditions"]}


def test_every_condition_the_operator_writes_is_in_the_crd_enum_and_every_column_is_written() -> None:
    crd = yaml.safe_load((ROOT / "charts/kaito/crds/kaito.sh_workspaces.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v["storage"])
    schema = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"]["items"]["properties"]
    enum = set(schema["type"]["enum"])
    written = written_condition_types()
    assert written <= enum, f"written but refused by the CRD: {written - enum}"
    assert {"ResourceReady", "InferenceReady", "JobStarted", "WorkspaceSucceeded", "WorkspaceReady", "NodeClaimReady"} <= written
    columns = [c["jsonPath"] for c in version["additionalPrinterColumns"] if "conditions" in c["jsonPath"]]
    shown = {re.search(r'@\.type=="(\w+)"', p).group(1) for p in columns}  # type: ignore[union-attr]
    assert shown <= written, f"printer columns nothing writes: {shown - written}"
    states = set(version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["state"]["enum"])
    assert {"Pending", "Ready", "NotReady", "Failed", "Succeeded"} <= states


def test_creating_the_workload_and_reading_it_back_unready_write_the_same_status() -> None:
    creating = build_status(Facts(generation=1, target_nodes=1, provision=READY), None, now=T0)
    read_back = build_status(Facts(generation=1, target_nodes=1, provision=READY, workload=WorkloadFacts(exists=True, replicas=1)), creating, now=T1)
    assert "(0/1 pods ready)" in conds(creating)["InferenceReady"]["message"]
    assert not status_changed(creating, read_back)
