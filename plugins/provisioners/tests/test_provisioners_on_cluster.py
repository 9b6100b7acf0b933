"""The provisioners against a real API server (kaito_localcluster): byo counts labelled kwok
nodes; gpu-provisioner creates, finds again and deletes NodeClaims by labels only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kaito_core.operator.kube import Kube, make_api_client
from kaito_core.operator.nodeclient import KubeNodeClient
from kaito_localcluster.kubeapi import wait_for
from kaito_core.provisioners import NodeRequest
from kaito_provisioners import ByoProvisioner, GpuProvisioner

pytestmark = pytest.mark.cluster


@pytest.fixture
def api(local_cluster: Any) -> Iterator[KubeNodeClient]:
    """The operator's node client over the real API server (no watch caches: every read is a request)."""
    client = make_api_client(str(local_cluster.kubeconfig))
    yield KubeNodeClient(Kube(client))
    client.close()


def test_byo_is_ready_when_enough_labelled_gpu_nodes_are_ready(local_cluster: Any, api: Any) -> None:
    label = f"byo-{uuid.uuid4().hex[:6]}"
    request = NodeRequest(workspace="ws", namespace="default", instance_type=None, count=2, match_labels={"apps": label})
    byo = ByoProvisioner()
    first = byo.ensure_nodes(api, request)
    assert not first.ready and f"no nodes match the label selector apps={label}" in first.message

    local_cluster.create_fake_node(f"{label}-gpu", labels={"apps": label}, capacity={"nvidia.com/gpu": "1"})
    local_cluster.create_fake_node(f"{label}-cpu", labels={"apps": label})
    half = byo.ensure_nodes(api, request)
    assert not half.ready and half.ready_nodes == (f"{label}-gpu",)
    assert f"node {label}-cpu has no nvidia.com/gpu capacity" in half.message

    local_cluster.create_fake_node(f"{label}-gpu2", labels={"apps": label}, capacity={"nvidia.com/gpu": "2"})
    done = byo.ensure_nodes(api, request)
    assert done.ready and done.ready_nodes == (f"{label}-gpu", f"{label}-gpu2")
    assert byo.delete_nodes(api, workspace="ws", namespace="default") is True
    for name in (f"{label}-gpu", f"{label}-cpu", f"{label}-gpu2"):
        local_cluster.api.delete(f"/api/v1/nodes/{name}")


def test_gpu_provisioner_is_idempotent_and_deletes_by_labels(local_cluster: Any, api: Any) -> None:
    local_cluster.install_crds([Path(__file__).resolve().parents[3] / "charts/kaito/crds/karpenter.sh_nodeclaims.yaml"])
    ws = f"ws-{uuid.uuid4().hex[:6]}"
    request = NodeRequest(workspace=ws, namespace="team-a", instance_type="Standard_NC6s_v3", count=2, match_labels={"apps": ws}, disk_gib=87)
    gp = GpuProvisioner()
    first = gp.ensure_nodes(api, request)
    assert not first.ready and first.reason == "NodeClaimNotReady"
    names = {c["metadata"]["name"] for c in gp.list_nodeclaims(api, workspace=ws, namespace="team-a")}
    assert len(names) == 2 and all(f"NodeClaim {n} created" in first.message for n in names)
    # A second call (e.g. after an operator restart) finds them by labels and creates nothing.
    again = gp.ensure_nodes(api, request)
    assert {c["metadata"]["name"] for c in gp.list_nodeclaims(api, workspace=ws, namespace="team-a")} == names
    assert not again.ready and all(f"NodeClaim {n}" in again.message for n in names)
    assert gp.delete_nodes(api, workspace=ws, namespace="team-a") is False  # deletion started
    # Gone at once without a node provisioner; with the test stand-in running in the same
    # session it first removes the node and its finalizer.
    wait_for(lambda: gp.delete_nodes(api, workspace=ws, namespace="team-a"), timeout=60, what="NodeClaims deleted")
