"""The NodeClaim is shaped exactly like upstream KAITO's (kaito.md §4.2, test-infra.md §4)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from kaito_core.provisioners import NodeRequest
from kaito_provisioners import GpuProvisioner
from kaito_provisioners.nodeclaim import build_nodeclaim, first_failing_condition, nodeclaim_name

GOLDEN = Path(__file__).parent / "golden" / "nodeclaim-phi3.yaml"
REQUEST = NodeRequest(
    workspace="workspace-phi-3-mini", namespace="default", instance_type="Standard_NC6s_v3", count=1,
    match_labels={"apps": "phi-3"}, disk_gib=87,
)


def test_name_is_ws_plus_nine_hex_and_a_valid_agent_pool_name() -> None:
    names = {nodeclaim_name("default", "workspace-phi-3-mini", now=t) for t in (1.0, 2.0, 3.0)}
    assert len(names) == 3
    for name in names:
        assert re.fullmatch(r"ws[0-9a-f]{9}", name)
        assert re.fullmatch(r"[a-z][a-z0-9]{0,11}", name)  # gpu-provisioner's agent pool rule


def test_azure_nodeclaim_matches_golden() -> None:
    claim = build_nodeclaim(REQUEST, "ws012345678")
    assert yaml.safe_dump(claim, sort_keys=False) == GOLDEN.read_text()


def test_aws_nodeclaim_uses_ec2_node_class_and_gpu_count_requirement() -> None:
    claim = build_nodeclaim(REQUEST.model_copy(update={"cloud": "aws", "instance_type": "g5.xlarge"}), "ws000000001")
    assert claim["spec"]["nodeClassRef"] == {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}
    assert {"key": "karpenter.k8s.aws/instance-gpu-count", "operator": "Gt", "values": ["0"]} in claim["spec"]["requirements"]


def test_reserved_labels_are_not_overridden_by_match_labels() -> None:
    claim = build_nodeclaim(REQUEST.model_copy(update={"match_labels": {"kaito.sh/workspace": "other", "apps": "x"}}), "ws000000001")
    assert claim["metadata"]["labels"]["kaito.sh/workspace"] == "workspace-phi-3-mini"


def test_first_failing_condition_names_the_lifecycle_step() -> None:
    claim = {"status": {"conditions": [
        {"type": "Launched", "status": "True", "reason": "Launched"},
        {"type": "Registered", "status": "False", "reason": "RegistrationFailed", "message": "quota exceeded for NCv3"},
    ]}}
    assert first_failing_condition(claim) == "Registered=False (RegistrationFailed): quota exceeded for NCv3"
    assert first_failing_condition({}).startswith("Launched=Unknown")


def test_pods_are_pinned_to_the_workspace_nodes() -> None:
    terms = GpuProvisioner().node_affinity_terms(REQUEST)
    assert {"key": "kaito.sh/workspace", "operator": "In", "values": ["workspace-phi-3-mini"]} in terms
    assert {"key": "kaito.sh/workspacenamespace", "operator": "In", "values": ["default"]} in terms
