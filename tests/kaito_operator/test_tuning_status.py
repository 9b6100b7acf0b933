"""Tuning status, every transition: the Job and its pod as the API server shows them ->
observe_job -> build_status. JobStarted -> WorkspaceSucceeded (WORKSPACEREADY) on success; a
failure names the step, its exit code and the runner's message (cause and fix); state Pending ->
Running -> Succeeded / Failed."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kaito_core.operator import status as status_module
from kaito_core.operator.status import Facts, TuningFacts, status_changed
from kaito_core.operator.tuning import current_step, failed_step, observe_job
from kaito_core.provisioners import ProvisionResult

T0, T1 = "2026-12-06T15:00:00Z", "2026-12-06T15:05:00Z"
READY = ProvisionResult(ready=True, ready_nodes=("node-0",))
JOB_UID = "job-uid-1"
OUTPUT = "myregistry.azurecr.io/adapters/phi-3-dolly:0.0.1"
HTML_ERROR = ("tuning refused: https://example.com/train.parquet: the server sent an HTML page (text/html), not data. "
              "Fix: use the link to the raw file (not its web page), and make sure it needs no sign-in")


def job(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "ws", "namespace": "ns", "uid": JOB_UID}, "status": status}


def finished(type_: str, reason: str = "", message: str = "") -> list[dict[str, str]]:
    return [{"type": type_, "status": "True", "reason": reason, "message": message}]


def done(exit_code: int = 0, message: str = "", reason: str = "") -> dict[str, Any]:
    return {"terminated": {"exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0 else "Error"), "message": message}}


RUNNING: dict[str, Any] = {"running": {"startedAt": T0}}
WAITING: dict[str, Any] = {"waiting": {"reason": "PodInitializing"}}


def pod(phase: str, *, fetch: dict[str, Any] = WAITING, weights: dict[str, Any] = WAITING, trainer: dict[str, Any] = WAITING,
        push: dict[str, Any] = WAITING, name: str = "ws-abcde", created: str = T0) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": created, "ownerReferences": [{"kind": "Job", "uid": JOB_UID}]},
        "status": {
            "phase": phase,
            "initContainerStatuses": [{"name": "data-fetch", "state": fetch}, {"name": "model-weights", "state": weights},
                                      {"name": "trainer", "state": trainer}],
            "containerStatuses": [{"name": "push", "state": push}],
        },
    }


def status(tuning: TuningFacts, old: dict[str, Any] | None = None, now: str = T0, provision: ProvisionResult | None = READY) -> dict[str, Any]:
    facts = Facts(generation=1, target_nodes=1, provision=provision, tuning=tuning)
    return status_module.build_status(facts, old, now=now).to_wire()


def conds(wire: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in wire["conditions"]}


def observed(j: dict[str, Any], *pods: dict[str, Any]) -> TuningFacts:
    seen = observe_job(j, list(pods))
    return replace(seen, output=OUTPUT)


def test_waiting_for_nodes_is_pending_with_the_provisioners_message() -> None:
    waiting = ProvisionResult(reason="NodeClaimNotReady", message="0/1 nodes ready")
    wire = status(TuningFacts(nodes_message="0/1 nodes ready"), provision=waiting)
    c = conds(wire)
    assert wire["state"] == "Pending"
    assert c["ResourceReady"]["status"] == "False" and c["ResourceReady"]["reason"] == "NodeClaimNotReady"
    assert c["JobStarted"]["status"] == "False" and c["JobStarted"]["message"] == "waiting for nodes: 0/1 nodes ready"
    assert c["WorkspaceSucceeded"]["status"] == "False" and c["WorkspaceReady"] == {**c["WorkspaceSucceeded"], "type": "WorkspaceReady"}


def test_a_created_job_without_a_pod_has_not_started() -> None:
    wire = status(observed(job()))
    assert wire["state"] == "Pending" and conds(wire)["JobStarted"]["status"] == "False"
    assert conds(wire)["ResourceReady"]["status"] == "True"


def test_running_names_the_step_and_keeps_the_start_time() -> None:
    fetching = status(observed(job(active=1), pod("Pending", fetch=RUNNING)))
    c = conds(fetching)
    assert fetching["state"] == "Running"
    assert c["JobStarted"]["status"] == "True" and c["JobStarted"]["reason"] == "WorkspaceTuningJobStatusStarted"
    assert c["WorkspaceSucceeded"]["message"] == "the tuning Job is running: step data-fetch (fetching and checking the training data and configuration)"
    training = status(observed(job(active=1), pod("Pending", fetch=done(), weights=done(), trainer=RUNNING)), old=fetching, now=T1)
    c2 = conds(training)
    assert "step trainer (training the adapter)" in c2["WorkspaceSucceeded"]["message"]
    assert c2["JobStarted"]["lastTransitionTime"] == T0 and c2["WorkspaceSucceeded"]["lastTransitionTime"] == T0
    pushing = observed(job(active=1), pod("Running", fetch=done(), weights=done(), trainer=done(), push=RUNNING))
    assert pushing.step == "push"


def test_success_is_workspaceready_and_names_the_adapter() -> None:
    running = status(observed(job(active=1), pod("Running", fetch=done(), weights=done(), trainer=done(), push=RUNNING)))
    wire = status(observed(job(succeeded=1, conditions=finished("Complete"))), old=running, now=T1)
    c = conds(wire)
    assert wire["state"] == "Succeeded"
    assert c["WorkspaceSucceeded"]["status"] == "True" and c["WorkspaceSucceeded"]["reason"] == "workspaceSucceeded"
    assert c["WorkspaceSucceeded"]["message"] == f"the tuning Job has succeeded: the adapter is in {OUTPUT}"
    assert c["WorkspaceSucceeded"]["lastTransitionTime"] == T1 and c["JobStarted"]["lastTransitionTime"] == T0
    assert not status_changed(wire, status(observed(job(succeeded=1, conditions=finished("Complete"))), old=wire, now=T1))


def test_a_data_failure_names_the_step_the_exit_code_and_the_runners_fix() -> None:
    failed_pod = pod("Failed", fetch=done(2, "some json log line\n" + HTML_ERROR))
    facts = observed(job(failed=1, conditions=finished("Failed", "PodFailurePolicy", "Container data-fetch ... exit code 2")), failed_pod)
    assert (facts.failed, facts.step, facts.exit_code) == (True, "data-fetch", 2)
    wire = status(facts)
    c = conds(wire)
    assert wire["state"] == "Failed"
    message = c["WorkspaceSucceeded"]["message"]
    assert c["WorkspaceSucceeded"]["reason"] == "TuningJobFailed"
    assert message.startswith("the tuning Job failed at step data-fetch (fetching and checking the training data and configuration): "
                              "it exited with code 2; log tail: ")
    assert "HTML page" in message and "Fix: use the link to the raw file" in message and "\n" not in message
    assert c["JobStarted"]["status"] == "False" and c["JobStarted"]["reason"] == "WorkspaceTuningJobStatusFailed"


def test_a_push_failure_names_the_push_step() -> None:
    failed_pod = pod("Failed", fetch=done(), weights=done(), trainer=done(),
                     push=done(2, "push-adapter: the registry refused the push to r.io/a:1: 401 Unauthorized. "
                                  "Fix: check that tuning.output.imagePushSecret may push to this repository"))
    message = conds(status(observed(job(failed=1, conditions=finished("Failed")), failed_pod)))["WorkspaceSucceeded"]["message"]
    assert "failed at step push (pushing the adapter image)" in message and "imagePushSecret" in message


def test_an_oom_killed_trainer_says_so() -> None:
    failed_pod = pod("Failed", fetch=done(), weights=done(), trainer=done(137, reason="OOMKilled"))
    message = conds(status(observed(job(failed=1, conditions=finished("Failed")), failed_pod)))["WorkspaceSucceeded"]["message"]
    assert "failed at step trainer (training the adapter): it was killed for running out of memory (OOMKilled)" in message


def test_the_latest_failed_pod_tells_after_retries() -> None:
    first = pod("Failed", fetch=done(1, "connection reset"), name="ws-1", created=T0)
    second = pod("Failed", fetch=done(), weights=done(1, "HTTP 503 from the hub"), name="ws-2", created=T1)
    facts = observed(job(failed=2, conditions=finished("Failed", "BackoffLimitExceeded")), second, first)
    assert facts.step == "model-weights" and "HTTP 503" in facts.failure_message


def test_a_failed_job_whose_pods_are_gone_gives_the_jobs_reason() -> None:
    facts = observed(job(failed=1, conditions=finished("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")))
    message = conds(status(facts))["WorkspaceSucceeded"]["message"]
    assert "BackoffLimitExceeded: Job has reached the specified backoff limit" in message


def test_a_stuck_pod_is_a_condition_while_the_job_waits() -> None:
    """A missing push Secret stops the first step at once (secretKeyRef): named, Job still running."""
    stuck = pod("Pending", fetch={"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "acr-push" not found'}})
    wire = status(observed(job(active=1), stuck))
    c = conds(wire)
    assert wire["state"] == "Running" and c["WorkspaceSucceeded"]["reason"] == "ContainerStartError"
    assert 'secret "acr-push" not found' in c["WorkspaceSucceeded"]["message"]


def test_only_the_jobs_own_pods_count() -> None:
    other = pod("Failed", fetch=done(2, "old revision"))
    other["metadata"]["ownerReferences"] = [{"kind": "Job", "uid": "older-job"}]
    facts = observed(job(active=1), other, pod("Pending", fetch=RUNNING))
    assert not facts.failed and facts.step == "data-fetch"


def test_config_and_secret_problems_fail_the_workspace_before_a_job() -> None:
    for reason in ("TuningConfigInvalid", "TuningSecretInvalid"):
        wire = status(TuningFacts(problem_reason=reason, problem_message="tuning.config: ... Fix: ..."))
        assert wire["state"] == "Failed" and conds(wire)["WorkspaceSucceeded"]["reason"] == reason
    missing = status(TuningFacts(problem_reason="TuningConfigNotFound", problem_message="create it"))
    assert missing["state"] == "Pending" and conds(missing)["WorkspaceSucceeded"]["reason"] == "TuningConfigNotFound"


def test_a_spec_change_says_the_old_job_is_being_replaced() -> None:
    wire = status(TuningFacts(job_exists=True, replacing=True))
    assert "deleting the tuning Job of the previous revision" in conds(wire)["WorkspaceSucceeded"]["message"]


def test_step_helpers_on_a_pod_without_statuses() -> None:
    bare = {"metadata": {"name": "p"}, "status": {"phase": "Pending"}}
    assert failed_step(bare) is None and current_step(bare) == ""
