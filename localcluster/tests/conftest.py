"""Shared helpers for the kaito_localcluster tests.

The ``local_cluster`` and ``kube_namespace`` fixtures come from the package's own
pytest plugin (``pytest11`` entry point), exactly as other test suites get them.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def gpu_node(local_cluster: Any, request: pytest.FixtureRequest) -> dict[str, Any]:
    """A fake kwok GPU node (tainted sku=gpu:NoSchedule, labelled like an AKS GPU pool)."""
    import uuid

    name = f"gpu-{uuid.uuid4().hex[:6]}"
    node: dict[str, Any] = local_cluster.create_fake_node(
        name,
        labels={"node.kubernetes.io/instance-type": "Standard_NC24ads_A100_v4", "kaito.sh/machine-type": "gpu", "pool": name},
        taints=[{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
        capacity={"cpu": "24", "memory": "220Gi", "pods": "110", "nvidia.com/gpu": "1"},
        provider_id=f"azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/aks-{name}-12345678-vmss/virtualMachines/0",
    )
    request.addfinalizer(lambda: local_cluster.api.delete(f"/api/v1/nodes/{name}"))
    return node
