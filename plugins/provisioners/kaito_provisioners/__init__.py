"""KAITO node provisioner plugins: ``gpu-provisioner`` (Karpenter NodeClaims) and ``byo``."""

from kaito_provisioners.byo import ByoProvisioner
from kaito_provisioners.gpu_provisioner import GpuProvisioner

__all__ = ["ByoProvisioner", "GpuProvisioner"]
