"""The operator's one door to the validation, SKU and fit libraries.

The reconciler and the admission webhook call only these functions, so the libraries behind
them can change without touching the operator. The validation library is
:mod:`kaito_core.validation` (``check_workspace``), GPU facts come from :mod:`kaito_core.sku`
and the node count from :mod:`kaito_core.fit`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from kaito_core.api.workspace import Workspace
from kaito_core.backends import InferenceBackend
from kaito_core.errors import FieldError, ValidationError
from kaito_core.plugins import Registry
from kaito_core.presets import Preset


@dataclass(frozen=True)
class Plan:
    """How many nodes a workspace gets and how many GPUs each has."""

    nodes: int
    gpus_per_node: int


def _pydantic_errors(exc: PydanticValidationError) -> list[FieldError]:
    out = []
    for err in exc.errors():
        path = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in err["loc"]).replace(".[", "[")
        out.append(FieldError(path=path, message=err["msg"]))
    return out


def check(obj: dict[str, Any], registry: Registry, *, old: dict[str, Any] | None = None, cloud: str = "azure") -> Workspace:
    """Parse and validate a Workspace given as a wire dict (``old`` on update).

    Raises:
        ValidationError: with every problem found, each naming its field.
    """
    try:
        from kaito_core import validation
    except ImportError:  # the validation library is not installed yet: schema checks only
        try:
            return Workspace.model_validate(obj)
        except PydanticValidationError as exc:
            raise ValidationError(_pydantic_errors(exc), name=(obj.get("metadata") or {}).get("name", "")) from exc
    ctx = validation.ValidationContext(cloud=cloud) if hasattr(validation, "ValidationContext") else None
    kwargs: dict[str, Any] = {"old": old}
    if ctx is not None:
        kwargs["ctx"] = ctx
    result: Workspace = validation.check_workspace(obj, registry, **kwargs)
    return result


def plan(ws: Workspace, preset: Preset, backend: InferenceBackend, *, cloud: str = "azure") -> Plan:
    """Target node count and GPUs per node for ``ws`` served by ``backend``."""
    count = ws.resource.count
    if not preset.requires_gpu:
        return Plan(nodes=count, gpus_per_node=0)
    try:
        from kaito_core import fit, sku
    except ImportError:  # fit/SKU libraries not installed yet: trust resource.count, one GPU per node
        return Plan(nodes=count, gpus_per_node=1)
    instance = sku.lookup(ws.resource.instance_type, cloud=cloud) if ws.resource.instance_type else None
    if instance is None:
        return Plan(nodes=count, gpus_per_node=1)
    node_plan = fit.plan_nodes(preset, instance, count=count, backend=backend)
    return Plan(nodes=max(count, int(node_plan.nodes)), gpus_per_node=int(node_plan.gpus_per_node))
