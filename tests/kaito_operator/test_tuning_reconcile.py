"""The reconciler's tuning shell against the in-memory API server: it creates exactly the planned
ConfigMap copy and Job, reads the Job back into the status, replaces a Job of an older spec
(foreground delete first), and the finalizer deletes the Job (background) before the nodes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fakeapi import FakeApiServer
from test_tuning_job import REGISTRY, phi3_example, plan_tuning_for, template

from kaito_core.errors import NotReadyError
from kaito_core.operator.kube import Kube
from kaito_core.operator.manifests import spec_hash
from kaito_core.operator.reconciler import Reconciler
from kaito_core.operator.settings import OperatorSettings

NAME = "workspace-tuning-phi-3"
JOB = f"/apis/batch/v1/namespaces/default/jobs/{NAME}"
READY_CLAIM = {
    "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
    "metadata": {"name": "ws0123abcde", "labels": {"kaito.sh/workspace": NAME, "kaito.sh/workspacenamespace": "default"}},
    "status": {"nodeName": "node-0", "conditions": [{"type": t, "status": "True"} for t in ("Launched", "Registered", "Initialized", "Ready")]},
}
READY_NODE = {
    "apiVersion": "v1", "kind": "Node",
    "metadata": {"name": "node-0", "labels": {"kaito.sh/workspace": NAME, "kaito.sh/workspacenamespace": "default",
                                              "node.kubernetes.io/instance-type": "Standard_NC6s_v3"}},
    "status": {"conditions": [{"type": "Ready", "status": "True"}], "capacity": {"nvidia.com/gpu": "1"}},
}


@pytest.fixture()
def api() -> FakeApiServer:
    return FakeApiServer(READY_CLAIM, READY_NODE, template("qlora"))


def reconcile(reconciler: Reconciler, obj: dict[str, Any]) -> str:
    """One round; the reason it waits, or "done"."""
    try:
        reconciler.reconcile(copy.deepcopy(obj))
    except NotReadyError as exc:
        return str(exc.reason)
    return "done"


def test_create_succeed_replace_and_finalize(api: FakeApiServer) -> None:
    reconciler = Reconciler(Kube(None, send=api), REGISTRY, OperatorSettings())
    obj = phi3_example()
    assert reconcile(reconciler, obj) == "TuningJobCreated"
    assert [o["kind"] for o in api.created] == ["ConfigMap", "Job"]
    planned = plan_tuning_for(phi3_example(), config=template("qlora"), spec_hash=spec_hash(obj))
    assert api.created == [*planned.objects, planned.job]  # exactly what the golden tests pin

    # Running, then complete: nothing else is written, and the workspace is done.
    api.objects[JOB]["status"] = {"active": 1}
    assert reconcile(reconciler, obj) == "TuningJobRunning"
    api.objects[JOB]["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    before = len(api.created)
    assert reconcile(reconciler, obj) == "done"
    assert len(api.created) == before and not api.deletes

    # A spec change: the old Job is deleted (foreground) before the new one is created.
    changed = copy.deepcopy(obj)
    changed["metadata"]["annotations"] = {"workspace.kaito.io/revision": "1", "workspace.kaito.io/hash": spec_hash(obj)}  # as watched
    changed["tuning"]["input"]["urls"] = ["https://example.com/other.parquet"]
    assert reconcile(reconciler, changed) == "TuningJobReplacing"
    assert api.deletes == [(JOB, "Foreground")]
    assert reconcile(reconciler, changed) == "TuningJobCreated"
    new_job = api.objects[JOB]
    assert new_job["metadata"]["labels"]["workspace.kaito.io/hash"] == spec_hash(changed)[:16]
    assert new_job["metadata"]["annotations"]["workspace.kaito.io/revision"] == "2"

    # Deletion: the Job goes first (background), then the NodeClaim.
    with pytest.raises(NotReadyError):
        reconciler.finalize(copy.deepcopy(changed))  # the NodeClaim is being deleted
    assert api.deletes[1] == (JOB, "Background")
    assert any(path.endswith("/nodeclaims/ws0123abcde") for path, _ in api.deletes[2:])


def test_no_job_and_a_named_condition_without_the_default_config() -> None:
    api = FakeApiServer(READY_CLAIM, READY_NODE)
    reconciler = Reconciler(Kube(None, send=api), REGISTRY, OperatorSettings())
    assert reconcile(reconciler, phi3_example()) == "TuningConfigNotFound"
    assert api.created == []
    assert ("GET", "/api/v1/namespaces/kaito-system/configmaps/qlora-params-template") in api.calls
