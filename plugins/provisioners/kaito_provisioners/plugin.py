"""The ``kaito`` entry point of kaito-provisioners: registers its node provisioners."""

from __future__ import annotations

from collections.abc import Callable

from kaito_core.plugins import hookimpl
from kaito_core.provisioners import NodeProvisioner
from kaito_provisioners.byo import ByoProvisioner
from kaito_provisioners.gpu_provisioner import GpuProvisioner
from kaito_provisioners.karpenter import KarpenterProvisioner


@hookimpl
def register_provisioners(register: Callable[[NodeProvisioner], None]) -> None:
    """Register gpu-provisioner, karpenter and byo."""
    register(GpuProvisioner())
    register(KarpenterProvisioner())
    register(ByoProvisioner())
