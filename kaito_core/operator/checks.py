"""The operator's one door to validation: the reconciler and the admission webhook both call
:func:`check`, with the same context, so they cannot disagree about a Workspace.

Rules that depend on what is installed where the operator runs (the chosen backend must be
installed; bring-your-own mode when the configured provisioner creates no nodes) come from the
:class:`~kaito_core.validation.ValidationContext` built here. ``kaito validate`` uses the same
validation code and reports what it could not check on the user's machine
(:func:`kaito_core.validation.operator_requirements`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kaito_core import validation
from kaito_core.api.workspace import Workspace
from kaito_core.plugins import Registry
from kaito_core.presets import Preset


def context(
    registry: Registry,
    *,
    cloud: str = "azure",
    provisioner: str = "gpu-provisioner",
    resolve_preset: Callable[[str], Preset] | None = None,
) -> validation.ValidationContext:
    """The validation context of this operator: its cloud, bring-your-own mode when its
    provisioner creates no nodes (by capability), the chosen backend must be installed, and
    preset names resolve through ``resolve_preset`` (the operator's
    :class:`~kaito_core.operator.presets.PresetSource`, so model ids are generated as at reconcile).

    An uninstalled provisioner counts as creating nodes (the operator refuses to start without it)."""
    installed = provisioner if provisioner in registry.provisioners() else None
    ctx = validation.installed_context(registry, cloud=cloud, provisioner=installed, require_backend=True)
    return ctx.model_copy(update={"resolve_preset": resolve_preset}) if resolve_preset is not None else ctx


def check(
    obj: Mapping[str, Any],
    registry: Registry,
    *,
    old: Mapping[str, Any] | None = None,
    cloud: str = "azure",
    provisioner: str = "gpu-provisioner",
    resolve_preset: Callable[[str], Preset] | None = None,
) -> Workspace:
    """Parse and validate a Workspace given as a wire dict (``old`` on update); preset names
    resolve through ``resolve_preset`` when given (see :func:`context`).

    Raises:
        ValidationError: with every problem found, each naming its field and the fix.
    """
    ctx = context(registry, cloud=cloud, provisioner=provisioner, resolve_preset=resolve_preset)
    return validation.check_workspace(obj, registry, old=old, ctx=ctx)
