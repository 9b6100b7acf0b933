"""The ``kaito`` entry point of the azure-agentpool provisioner (its own, so the azure extra stays optional:
nothing Azure is imported until the provisioner is used)."""

from __future__ import annotations

from collections.abc import Callable

from kaito_core.plugins import hookimpl
from kaito_core.provisioners import NodeProvisioner
from kaito_provisioners.aks import AksProvisioner


@hookimpl
def register_provisioners(register: Callable[[NodeProvisioner], None]) -> None:
    """Register azure-agentpool."""
    register(AksProvisioner())
