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
from typing import Any

from kaito_core import validation
from kaito_core.api.workspace import Workspace
from kaito_core.plugins import Registry


def context(registry: Registry, *, cloud: str = "azure", provisioner: str = "gpu-provisioner") -> validation.ValidationContext:
    """The validation context of this operator: its cloud, bring-your-own mode when its
    provisioner creates no nodes (by capability), and the chosen backend must be installed.

    An uninstalled provisioner counts as creating nodes (the operator refuses to start without it)."""
    installed = provisioner if provisioner in registry.provisioners() else None
    return validation.installed_context(registry, cloud=cloud, provisioner=installed, require_backend=True)


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
