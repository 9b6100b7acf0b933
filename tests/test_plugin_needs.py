"""`kaito plugins` says, for each node provisioner, what it needs and whether it is there: CRDs
asked of the cluster (or "not checked" without one), the azure extra importable, the AKS
coordinates read from the operator's settings, an identity."""

from __future__ import annotations

import json
import os
from unittest import mock

from kaito_core.provisioners import AzureSettings, NeedStatus
from kaito_provisioners.aks import AksProvisioner
from kaito_provisioners.byo import ByoProvisioner
from kaito_provisioners.karpenter import KarpenterProvisioner
from tests.conftest import run_kaito


def test_crds_are_present_missing_or_not_checked() -> None:
    karpenter = KarpenterProvisioner()
    served = {"nodeclaims.karpenter.sh"}
    found = karpenter.need_status(crd_installed=served.__contains__)
    assert [(n.need, n.present) for n in found] == [("CRD nodepools.karpenter.sh", False), ("CRD nodeclaims.karpenter.sh", True)]
    assert "the cluster does not serve it: install Karpenter v1" in found[0].detail
    assert {n.present for n in karpenter.need_status()} == {None}
    assert ByoProvisioner().need_status(crd_installed=served.__contains__) == []


def test_aks_needs_follow_the_settings_and_environment() -> None:
    aks = AksProvisioner()
    with mock.patch.dict(os.environ, {}, clear=False):
        os.environ.pop("AZURE_CLIENT_ID", None)
        os.environ.pop("AZURE_FEDERATED_TOKEN_FILE", None)
        bare = {n.need: n for n in aks.need_status(azure=AzureSettings())}
        configured = {n.need: n for n in aks.need_status(azure=AzureSettings(subscription_id="s", resource_group="rg", cluster_name="c", client_id="id"))}
    fields = "nodeProvisioner.azure.subscriptionId, nodeProvisioner.azure.resourceGroup, nodeProvisioner.azure.clusterName"
    assert bare[fields].present is False and "KAITO_NODE_PROVISIONER__AZURE__SUBSCRIPTION_ID" in bare[fields].detail
    assert bare["an Azure identity (workload or managed identity)"].present is None
    assert configured[fields] == NeedStatus(need=fields, present=True)
    assert configured["an Azure identity (workload or managed identity)"].present is True
    assert bare["kaito-provisioners[azure]"].present is True  # installed in the dev environment


def test_kaito_plugins_prints_each_need_with_its_status() -> None:
    env = {"KAITO_NODE_PROVISIONER__AZURE": json.dumps({"subscriptionId": "s", "resourceGroup": "rg", "clusterName": "c"})}
    with mock.patch.dict(os.environ, env):
        result = run_kaito("plugins", "--no-cluster")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "  byo needs nothing" in out
    assert "  karpenter needs:\n    CRD nodepools.karpenter.sh: not checked (not asked (--no-cluster))" in out
    assert "nodeProvisioner.azure.clusterName: present" in out
    bare = run_kaito("plugins", "--no-cluster")
    assert "nodeProvisioner.azure.clusterName: MISSING (the azure-agentpool provisioner needs" in bare.stdout
