"""KAITO node provisioner plugins: ``gpu-provisioner`` (Karpenter NodeClaims), ``karpenter`` (NodePools) and ``byo``."""

from kaito_provisioners.byo import ByoProvisioner
from kaito_provisioners.gpu_provisioner import GpuProvisioner
from kaito_provisioners.karpenter import KarpenterProvisioner

__all__ = ["ByoProvisioner", "GpuProvisioner", "KarpenterProvisioner"]
