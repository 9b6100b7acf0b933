"""The operator's one door to validation: the reconciler and the admission webhook both call
:func:`check`, with the same context, so they cannot disagree about a Workspace.

Rules that depend on what is installed where the operator runs (the chosen backend must be
installed; bring-your-own mode when the configured provisioner creates no nodes) come from the
:class:`~kaito_core.validation.ValidationContext` built here. ``kaito validate`` uses the same
validation code and reports what it could not check on the user's machine
(:func:`kaito_core.validation.operator_requirements`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
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
    allowed_data_hosts: Collection[str] = (),
) -> validation.ValidationContext:
    """The validation context of this operator: its cloud, bring-your-own mode when its
    provisioner creates no nodes (by capability), the chosen backend must be installed, and
    preset names resolve through ``resolve_preset`` (the operator's
    :class:`~kaito_core.operator.presets.PresetSource`, so model ids are generated as at reconcile);
    tuning.input URLs on ``allowed_data_hosts`` pass the address rules (settings.tuning.allow_data_hosts).

    An uninstalled provisioner counts as creating nodes (the operator refuses to start without it)."""
    installed = provisioner if provisioner in registry.provisioners() else None
    ctx = validation.installed_context(registry, cloud=cloud, provisioner=installed, require_backend=True)
    update: dict[str, Any] = {"allowed_data_hosts": frozenset(h.lower() for h in allowed_data_hosts)}
    if resolve_preset is not None:
        update["resolve_preset"] = resolve_preset
    return ctx.model_copy(update=update)


def check(
    obj: Mapping[str, Any],
    registry: Registry,
    *,
    old: Mapping[str, Any] | None = None,
    cloud: str = "azure",
    provisioner: str = "gpu-provisioner",
    resolve_preset: Callable[[str], Preset] | None = None,
    allowed_data_hosts: Collection[str] = (),
) -> Workspace:
    """Parse and validate a Workspace given as a wire dict (``old`` on update); preset names
    resolve through ``resolve_preset`` when given (see :func:`context`).

    Raises:
        ValidationError: with every problem found, each naming its field and the fix.
    """
    ctx = context(registry, cloud=cloud, provisioner=provisioner, resolve_preset=resolve_preset, allowed_data_hosts=allowed_data_hosts)
    return validation.check_workspace(obj, registry, old=old, ctx=ctx)
