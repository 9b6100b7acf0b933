"""The operator's one door to the validation, SKU and fit libraries.

The reconciler and the admission webhook call only these functions, so the libraries behind
them (:mod:`kaito_core.validation`, :mod:`kaito_core.sku`, :mod:`kaito_core.fit`) can change
without touching the operator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from kaito_core import fit, sku, validation
from kaito_core.api.workspace import Workspace
from kaito_core.backends import InferenceBackend
from kaito_core.plugins import Registry
from kaito_core.presets import Preset

BYO_PROVISIONERS = frozenset({"byo"})
"""Provisioners that create no nodes: validation then runs in bring-your-own mode."""


@dataclass(frozen=True)
class Plan:
    """How many nodes a workspace gets and how many GPUs each has."""

    nodes: int
    gpus_per_node: int


def context(*, cloud: str = "azure", provisioner: str = "gpu-provisioner") -> validation.ValidationContext:
    """The validation context of this operator (cloud, node auto-provisioning or BYO)."""
    return validation.ValidationContext(
        cloud=cast(Any, cloud),
        node_auto_provisioning=provisioner not in BYO_PROVISIONERS,
        require_backend=True,
    )


def check(
    obj: Mapping[str, Any],
    registry: Registry,
    *,
    old: Mapping[str, Any] | None = None,
    cloud: str = "azure",
    provisioner: str = "gpu-provisioner",
) -> Workspace:
    """Parse and validate a Workspace given as a wire dict (``old`` on update).

    Raises:
        ValidationError: with every problem found, each naming its field and the fix.
    """
    return validation.check_workspace(obj, registry, old=old, ctx=context(cloud=cloud, provisioner=provisioner))


def plan(ws: Workspace, preset: Preset, backend: InferenceBackend, *, cloud: str = "azure") -> Plan:
    """Target node count and GPUs per node for ``ws`` served by ``backend``.

    The count is ``resource.count`` unless the model needs more nodes of this instance type
    (validation refuses that unless kaito.sh/bypass-resource-checks is set). An instance type
    missing from the catalogue (upstream tolerates unknown Azure ``Standard_N*`` sizes) is
    treated as one GPU per node.
    """
    count = ws.resource.count
    instance = sku.lookup(ws.resource.instance_type, cast(Any, cloud)) if ws.resource.instance_type else None
    if instance is None:
        return Plan(nodes=count, gpus_per_node=1 if preset.requires_gpu else 0)
    node_plan = fit.plan_nodes(preset, instance, count=count, backend=backend, suggest=False)
    nodes = max(count, node_plan.nodes) if node_plan.fits else count
    return Plan(nodes=nodes, gpus_per_node=instance.gpu_count if preset.requires_gpu or instance.has_gpu else 0)
