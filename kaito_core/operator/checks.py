"""The operator's one door to validation: the reconciler and the admission webhook both call
:func:`check`, with the same context, so they cannot disagree about a Workspace.

Rules that depend on what is installed where the operator runs (the chosen backend must be
installed; bring-your-own mode when the configured provisioner creates no nodes) come from the
:class:`~kaito_core.validation.ValidationContext` built here. ``kaito validate`` uses the same
validation code and reports what it could not check on the user's machine
(:func:`kaito_core.validation.operator_requirements`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from kaito_core import validation
from kaito_core.api.workspace import Workspace
from kaito_core.errors import NotFoundError
from kaito_core.plugins import Registry


def creates_nodes(registry: Registry, provisioner: str) -> bool:
    """Whether the provisioner creates nodes (else validation runs in bring-your-own mode).

    An uninstalled provisioner counts as creating nodes (the operator refuses to start without it)."""
    try:
        return registry.provisioner(provisioner).capabilities.creates_nodes
    except NotFoundError:
        return True


def context(registry: Registry, *, cloud: str = "azure", provisioner: str = "gpu-provisioner") -> validation.ValidationContext:
    """The validation context of this operator (cloud, node auto-provisioning or BYO, backend required)."""
    return validation.ValidationContext(
        cloud=cast(Any, cloud),
        node_auto_provisioning=creates_nodes(registry, provisioner),
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
    ctx = context(registry, cloud=cloud, provisioner=provisioner)
    return validation.check_workspace(obj, registry, old=old, ctx=ctx)
