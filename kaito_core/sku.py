"""The instance-type (SKU) catalogue: what each cloud VM size offers in GPUs, memory and CPUs.

Facts for Azure, AWS and Azure Arc follow upstream KAITO's ``pkg/sku`` tables (v0.12), plus the
older Azure GPU sizes upstream dropped that our users still run (V100 ``Standard_NC*s_v3``, T4
``Standard_NC*as_T4_v3``, P100, P40, K80 and M60 sizes), plus common Azure CPU sizes (D- and
E-series) for presets that can be served without a GPU.

Lookup is case-insensitive (``standard_nc6s_v3`` finds ``Standard_NC6s_v3``). GPU memory is
given per node in GiB (``gpu_mem_gib``) and per GPU (``per_gpu_mem_gib``).

Nodes brought by the user (BYO) are described by :class:`NodeGPUFacts`, read from the labels
NVIDIA's GPU Feature Discovery puts on nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kaito_core.errors import NotFoundError

Cloud = Literal["azure", "aws", "arc"]
CLOUDS: tuple[Cloud, ...] = ("azure", "aws", "arc")
Vendor = Literal["nvidia", "amd", "aws-neuron", "none"]


class InstanceType(BaseModel):
    """One VM size: its accelerators, CPUs and memory."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    sku: str
    """The cloud's name for the size, e.g. Standard_NC6s_v3 or g5.xlarge."""
    cloud: Cloud
    """The cloud that offers it."""
    gpu_count: int = Field(default=0, ge=0)
    """Accelerators (GPUs, or Neuron chips on AWS Trainium/Inferentia) per node; 0 for CPU sizes."""
    gpu_mem_gib: float = Field(default=0.0, ge=0)
    """Accelerator memory per node in GiB, all GPUs together."""
    gpu_model: str = ""
    """The accelerator, e.g. "NVIDIA V100"; empty for CPU sizes."""
    vendor: Vendor = "none"
    """Who makes the accelerator; CUDA backends need nvidia."""
    cuda_cc: str | None = None
    """CUDA compute capability ("7.0" for V100, "8.0" for A100); None when not NVIDIA."""
    nvme: bool = False
    """Whether the size has local NVMe disks (used for the model-weights cache)."""
    vcpus: int = Field(default=0, ge=0)
    """Virtual CPUs per node."""
    memory_gib: float = Field(default=0.0, ge=0)
    """System memory (RAM) per node in GiB."""

    @property
    def has_gpu(self) -> bool:
        """True when the size has accelerators."""
        return self.gpu_count > 0

    @property
    def per_gpu_mem_gib(self) -> float:
        """Memory of one accelerator in GiB (0 for CPU sizes)."""
        return self.gpu_mem_gib / self.gpu_count if self.gpu_count else 0.0

    @property
    def cuda_cc_value(self) -> float:
        """The compute capability as a number (0.0 when not NVIDIA)."""
        return float(self.cuda_cc) if self.cuda_cc else 0.0

    def describe(self) -> str:
        """A short human description, e.g. "1× NVIDIA V100 16 GiB" or "8 vCPU, 32 GiB RAM"."""
        if self.has_gpu:
            return f"{self.gpu_count}× {self.gpu_model} {_num(self.per_gpu_mem_gib)} GiB"
        return f"{self.vcpus} vCPU, {_num(self.memory_gib)} GiB RAM, no GPU"


GPUConfig = InstanceType
"""Upstream's name for the same facts (``pkg/sku.GPUConfig``)."""


def _num(value: float) -> str:
    return f"{value:g}"


def _gpu(
    cloud: Cloud,
    sku: str,
    count: int,
    total_gib: float,
    model: str,
    cc: str | None,
    vcpus: int,
    memory_gib: float,
    *,
    nvme: bool = False,
    vendor: Vendor = "nvidia",
) -> InstanceType:
    return InstanceType(
        sku=sku,
        cloud=cloud,
        gpu_count=count,
        gpu_mem_gib=total_gib,
        gpu_model=model,
        vendor=vendor,
        cuda_cc=cc if vendor == "nvidia" else None,
        nvme=nvme,
        vcpus=vcpus,
        memory_gib=memory_gib,
    )


def _cpu(cloud: Cloud, sku: str, vcpus: int, memory_gib: float) -> InstanceType:
    return InstanceType(sku=sku, cloud=cloud, vcpus=vcpus, memory_gib=memory_gib)


_V100, _T4, _A10, _A100, _H100, _H200 = "NVIDIA V100", "NVIDIA T4", "NVIDIA A10", "NVIDIA A100", "NVIDIA H100", "NVIDIA H200"

_AZURE: tuple[InstanceType, ...] = (
    # -- upstream v0.12 (compute capability >= 8.0, plus AMD V620) --------------------------
    _gpu("azure", "Standard_NV36ads_A10_v5", 1, 24, _A10, "8.6", 36, 440),
    _gpu("azure", "Standard_NV36adms_A10_v5", 1, 24, _A10, "8.6", 36, 880),
    _gpu("azure", "Standard_NV72ads_A10_v5", 2, 48, _A10, "8.6", 72, 880),
    _gpu("azure", "Standard_NC24ads_A100_v4", 1, 80, _A100, "8.0", 24, 220, nvme=True),
    _gpu("azure", "Standard_NC48ads_A100_v4", 2, 160, _A100, "8.0", 48, 440, nvme=True),
    _gpu("azure", "Standard_NC96ads_A100_v4", 4, 320, _A100, "8.0", 96, 880, nvme=True),
    _gpu("azure", "Standard_ND96asr_A100_v4", 8, 320, _A100, "8.0", 96, 900),
    _gpu("azure", "Standard_ND96amsr_A100_v4", 8, 640, _A100, "8.0", 96, 1900, nvme=True),
    _gpu("azure", "Standard_NC40ads_H100_v5", 1, 94, _H100, "9.0", 40, 320, nvme=True),
    _gpu("azure", "Standard_NCC40ads_H100_v5", 1, 94, _H100, "9.0", 40, 320, nvme=True),
    _gpu("azure", "Standard_NC80adis_H100_v5", 2, 188, _H100, "9.0", 80, 640, nvme=True),
    _gpu("azure", "Standard_ND96isr_H100_v5", 8, 640, _H100, "9.0", 96, 1900, nvme=True),
    _gpu("azure", "Standard_ND96isr_H200_v5", 8, 1128, _H200, "9.0", 96, 1850, nvme=True),
    _gpu("azure", "Standard_NG32ads_V620_v1", 1, 32, "AMD Radeon PRO V620", None, 32, 64, vendor="amd"),
    _gpu("azure", "Standard_NG32adms_V620_v1", 1, 32, "AMD Radeon PRO V620", None, 32, 176, vendor="amd"),
    # -- older sizes upstream dropped (RFC #1381) but the Phi-3 cookbook examples use --------
    _gpu("azure", "Standard_NC6s_v3", 1, 16, _V100, "7.0", 6, 112),
    _gpu("azure", "Standard_NC12s_v3", 2, 32, _V100, "7.0", 12, 224),
    _gpu("azure", "Standard_NC24s_v3", 4, 64, _V100, "7.0", 24, 448),
    _gpu("azure", "Standard_NC24rs_v3", 4, 64, _V100, "7.0", 24, 448),
    _gpu("azure", "Standard_ND40rs_v2", 8, 256, "NVIDIA V100", "7.0", 40, 672),
    _gpu("azure", "Standard_NC4as_T4_v3", 1, 16, _T4, "7.5", 4, 28),
    _gpu("azure", "Standard_NC8as_T4_v3", 1, 16, _T4, "7.5", 8, 56),
    _gpu("azure", "Standard_NC16as_T4_v3", 1, 16, _T4, "7.5", 16, 110),
    _gpu("azure", "Standard_NC64as_T4_v3", 4, 64, _T4, "7.5", 64, 440),
    _gpu("azure", "Standard_NC6s_v2", 1, 16, "NVIDIA P100", "6.0", 6, 112),
    _gpu("azure", "Standard_NC12s_v2", 2, 32, "NVIDIA P100", "6.0", 12, 224),
    _gpu("azure", "Standard_NC24s_v2", 4, 64, "NVIDIA P100", "6.0", 24, 448),
    _gpu("azure", "Standard_NC24rs_v2", 4, 64, "NVIDIA P100", "6.0", 24, 448),
    _gpu("azure", "Standard_ND6s", 1, 24, "NVIDIA P40", "6.1", 6, 112),
    _gpu("azure", "Standard_ND12s", 2, 48, "NVIDIA P40", "6.1", 12, 224),
    _gpu("azure", "Standard_ND24s", 4, 96, "NVIDIA P40", "6.1", 24, 448),
    _gpu("azure", "Standard_ND24rs", 4, 96, "NVIDIA P40", "6.1", 24, 448),
    _gpu("azure", "Standard_NC6", 1, 12, "NVIDIA K80", "3.7", 6, 56),
    _gpu("azure", "Standard_NC12", 2, 24, "NVIDIA K80", "3.7", 12, 112),
    _gpu("azure", "Standard_NC24", 4, 48, "NVIDIA K80", "3.7", 24, 224),
    _gpu("azure", "Standard_NC24r", 4, 48, "NVIDIA K80", "3.7", 24, 224),
    _gpu("azure", "Standard_NV6", 1, 8, "NVIDIA M60", "5.2", 6, 56),
    _gpu("azure", "Standard_NV12", 2, 16, "NVIDIA M60", "5.2", 12, 112),
    _gpu("azure", "Standard_NV24", 4, 32, "NVIDIA M60", "5.2", 24, 224),
    _gpu("azure", "Standard_NV12s_v3", 1, 8, "NVIDIA M60", "5.2", 12, 112),
    _gpu("azure", "Standard_NV24s_v3", 2, 16, "NVIDIA M60", "5.2", 24, 224),
    _gpu("azure", "Standard_NV48s_v3", 4, 32, "NVIDIA M60", "5.2", 48, 448),
    # -- CPU sizes, for presets that run without a GPU --------------------------------------
    _cpu("azure", "Standard_D4s_v5", 4, 16),
    _cpu("azure", "Standard_D8s_v5", 8, 32),
    _cpu("azure", "Standard_D16s_v5", 16, 64),
    _cpu("azure", "Standard_D32s_v5", 32, 128),
    _cpu("azure", "Standard_D48s_v5", 48, 192),
    _cpu("azure", "Standard_D64s_v5", 64, 256),
    _cpu("azure", "Standard_D4ds_v5", 4, 16),
    _cpu("azure", "Standard_D8ds_v5", 8, 32),
    _cpu("azure", "Standard_D16ds_v5", 16, 64),
    _cpu("azure", "Standard_D8as_v5", 8, 32),
    _cpu("azure", "Standard_D16as_v5", 16, 64),
    _cpu("azure", "Standard_E4s_v5", 4, 32),
    _cpu("azure", "Standard_E8s_v5", 8, 64),
    _cpu("azure", "Standard_E16s_v5", 16, 128),
    _cpu("azure", "Standard_E32s_v5", 32, 256),
    _cpu("azure", "Standard_E64s_v5", 64, 512),
)

_L4, _A10G = "NVIDIA L4", "NVIDIA A10G"


def _aws_family(prefix: str, model: str, cc: str | None, per_gpu: float, vendor: Vendor = "nvidia") -> list[InstanceType]:
    """g5/g6-style families: size -> (GPUs, vCPUs, RAM GiB)."""
    shapes = {
        "xlarge": (1, 4, 16),
        "2xlarge": (1, 8, 32),
        "4xlarge": (1, 16, 64),
        "8xlarge": (1, 32, 128),
        "16xlarge": (1, 64, 256),
        "12xlarge": (4, 48, 192),
        "24xlarge": (4, 96, 384),
        "48xlarge": (8, 192, 768),
    }
    return [
        _gpu("aws", f"{prefix}.{size}", gpus, gpus * per_gpu, model, cc, vcpus, mem, nvme=True, vendor=vendor)
        for size, (gpus, vcpus, mem) in shapes.items()
    ]


_AWS: tuple[InstanceType, ...] = (
    _gpu("aws", "p4d.24xlarge", 8, 320, _A100, "8.0", 96, 1152, nvme=True),
    _gpu("aws", "p4de.24xlarge", 8, 640, _A100, "8.0", 96, 1152, nvme=True),
    _gpu("aws", "p5.48xlarge", 8, 640, _H100, "9.0", 192, 2048, nvme=True),
    _gpu("aws", "p5e.48xlarge", 8, 1128, _H200, "9.0", 192, 2048, nvme=True),
    _gpu("aws", "p5en.48xlarge", 8, 1128, _H200, "9.0", 192, 2048, nvme=True),
    *_aws_family("g6", _L4, "8.9", 24),
    _gpu("aws", "gr6.4xlarge", 1, 24, _L4, "8.9", 16, 128, nvme=True),
    _gpu("aws", "gr6.8xlarge", 1, 24, _L4, "8.9", 32, 256, nvme=True),
    *_aws_family("g5", _A10G, "8.6", 24),
    _gpu("aws", "g4ad.xlarge", 1, 8, "AMD Radeon Pro V520", None, 4, 16, nvme=True, vendor="amd"),
    _gpu("aws", "g4ad.2xlarge", 1, 8, "AMD Radeon Pro V520", None, 8, 32, nvme=True, vendor="amd"),
    _gpu("aws", "g4ad.4xlarge", 1, 8, "AMD Radeon Pro V520", None, 16, 64, nvme=True, vendor="amd"),
    _gpu("aws", "g4ad.8xlarge", 2, 16, "AMD Radeon Pro V520", None, 32, 128, nvme=True, vendor="amd"),
    _gpu("aws", "g4ad.16xlarge", 4, 32, "AMD Radeon Pro V520", None, 64, 256, nvme=True, vendor="amd"),
    _gpu("aws", "trn1.2xlarge", 1, 32, "AWS Trainium", None, 8, 32, nvme=True, vendor="aws-neuron"),
    _gpu("aws", "trn1.32xlarge", 16, 512, "AWS Trainium", None, 128, 512, nvme=True, vendor="aws-neuron"),
    _gpu("aws", "inf2.xlarge", 1, 32, "AWS Inferentia2", None, 4, 16, vendor="aws-neuron"),
    _gpu("aws", "inf2.8xlarge", 1, 32, "AWS Inferentia2", None, 32, 128, vendor="aws-neuron"),
    _gpu("aws", "inf2.24xlarge", 6, 192, "AWS Inferentia2", None, 96, 384, vendor="aws-neuron"),
    _gpu("aws", "inf2.48xlarge", 12, 384, "AWS Inferentia2", None, 192, 768, vendor="aws-neuron"),
    _cpu("aws", "m6i.2xlarge", 8, 32),
    _cpu("aws", "m6i.4xlarge", 16, 64),
    _cpu("aws", "r6i.2xlarge", 8, 64),
)

_ARC: tuple[InstanceType, ...] = (
    _gpu("arc", "Standard_NC4_A2", 1, 16, "NVIDIA A2", "8.6", 4, 8),
    _gpu("arc", "Standard_NC8_A2", 1, 16, "NVIDIA A2", "8.6", 8, 16),
    _gpu("arc", "Standard_NC16_A2", 2, 32, "NVIDIA A2", "8.6", 16, 64),
    _gpu("arc", "Standard_NC32_A2", 2, 32, "NVIDIA A2", "8.6", 32, 128),
    _gpu("arc", "Standard_NC4_A16", 1, 16, "NVIDIA A16", "8.6", 4, 8),
    _gpu("arc", "Standard_NC8_A16", 1, 16, "NVIDIA A16", "8.6", 8, 16),
    _gpu("arc", "Standard_NC16_A16", 2, 32, "NVIDIA A16", "8.6", 16, 64),
    _gpu("arc", "Standard_NC32_A16", 2, 32, "NVIDIA A16", "8.6", 32, 128),
)

_CATALOGUE: dict[Cloud, dict[str, InstanceType]] = {
    "azure": {t.sku.lower(): t for t in _AZURE},
    "aws": {t.sku.lower(): t for t in _AWS},
    "arc": {t.sku.lower(): t for t in _ARC},
}


def instance_types(cloud: Cloud = "azure") -> list[InstanceType]:
    """Every known instance type of ``cloud``, in catalogue order."""
    return list(_CATALOGUE[cloud].values())


def lookup(sku: str, cloud: Cloud = "azure") -> InstanceType | None:
    """The instance type called ``sku`` (case-insensitive) in ``cloud``, or None when unknown."""
    return _CATALOGUE[cloud].get(sku.strip().lower())


def get_instance_type(sku: str, cloud: Cloud = "azure") -> InstanceType:
    """The instance type called ``sku`` in ``cloud``.

    Raises:
        NotFoundError: unknown; the message lists the known GPU sizes of that cloud.
    """
    found = lookup(sku, cloud)
    if found is None:
        raise NotFoundError(f"unsupported instance type {sku!r} on {cloud}; supported GPU SKUs: {supported_gpu_skus(cloud)}")
    return found


def supported_gpu_skus(cloud: Cloud = "azure") -> str:
    """The GPU instance types of ``cloud`` as one comma-separated line (for messages)."""
    return ", ".join(t.sku for t in _CATALOGUE[cloud].values() if t.has_gpu)


def is_azure_lenient(sku: str) -> bool:
    """Upstream's leniency: on Azure, unknown sizes named Standard_N* or Standard_D* are accepted
    (without GPU facts), so new VM sizes work before the catalogue knows them."""
    lowered = sku.lower()
    return lowered.startswith("standard_n") or lowered.startswith("standard_d")


# -- bring-your-own nodes -----------------------------------------------------------------------

LABEL_GPU_PRODUCT = "nvidia.com/gpu.product"
LABEL_GPU_COUNT = "nvidia.com/gpu.count"
LABEL_GPU_MEMORY = "nvidia.com/gpu.memory"
LABEL_CUDA_MAJOR = "nvidia.com/cuda.compute.major"
LABEL_CUDA_MINOR = "nvidia.com/cuda.compute.minor"


class NodeGPUFacts(BaseModel):
    """GPU facts of one existing node, as GPU Feature Discovery labels describe it."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    name: str
    """The node's name."""
    gpu_product: str = ""
    """nvidia.com/gpu.product, e.g. Tesla-V100-PCIE-16GB; empty when the node has no GPU labels."""
    gpu_count: int = Field(default=0, ge=0)
    """nvidia.com/gpu.count."""
    gpu_memory_mib: int = Field(default=0, ge=0)
    """nvidia.com/gpu.memory: memory of one GPU in MiB."""
    cuda_cc: str | None = None
    """Compute capability from nvidia.com/cuda.compute.major/minor."""
    memory_gib: float = 0.0
    """The node's allocatable memory in GiB (0 when unknown)."""

    @classmethod
    def from_labels(cls, name: str, labels: Mapping[str, str], *, memory_gib: float = 0.0) -> NodeGPUFacts:
        """Read the facts from a node's labels; missing GPU labels give a node without GPUs."""
        major, minor = labels.get(LABEL_CUDA_MAJOR), labels.get(LABEL_CUDA_MINOR)
        return cls(
            name=name,
            gpu_product=labels.get(LABEL_GPU_PRODUCT, ""),
            gpu_count=_int(labels.get(LABEL_GPU_COUNT)),
            gpu_memory_mib=_int(labels.get(LABEL_GPU_MEMORY)),
            cuda_cc=f"{major}.{minor or 0}" if major else None,
            memory_gib=memory_gib,
        )

    @property
    def has_gpu_labels(self) -> bool:
        """True when the three GPU labels are present and non-zero."""
        return bool(self.gpu_product) and self.gpu_count > 0 and self.gpu_memory_mib > 0

    def as_instance_type(self, cloud: Cloud = "azure") -> InstanceType:
        """The node as an instance type (memory per GPU rounded to whole GiB, as upstream does)."""
        per_gpu = round(self.gpu_memory_mib / 1024)
        return InstanceType(
            sku=f"node/{self.name}",
            cloud=cloud,
            gpu_count=self.gpu_count,
            gpu_mem_gib=per_gpu * self.gpu_count,
            gpu_model=self.gpu_product,
            vendor="nvidia" if self.gpu_count else "none",
            cuda_cc=self.cuda_cc,
            memory_gib=self.memory_gib,
        )


def _int(text: str | None) -> int:
    try:
        return max(int(text or "0"), 0)
    except ValueError:
        return 0


def uniform_node_type(nodes: Iterable[NodeGPUFacts], cloud: Cloud = "azure") -> tuple[InstanceType | None, list[str]]:
    """One instance type describing all BYO nodes, and the problems found (upstream's messages).

    Returns ``(type, problems)``: ``type`` is None when the nodes lack GPU labels or differ.
    """
    listed = list(nodes)
    problems: list[str] = []
    for node in listed:
        if not node.has_gpu_labels:
            problems.append(
                f"Failed to get GPU config from nvidia labels on node {node.name}: labels {LABEL_GPU_PRODUCT}, "
                f"{LABEL_GPU_COUNT} and {LABEL_GPU_MEMORY} are required (installed by GPU Feature Discovery)"
            )
    if problems or not listed:
        return None, problems
    for attr, what in (("gpu_product", "product"), ("gpu_count", "count"), ("gpu_memory_mib", "memory")):
        values = sorted({str(getattr(n, attr)) for n in listed})
        if len(values) > 1:
            problems.append(f"Non-uniform GPU {what}: {', '.join(values)}")
    if problems:
        return None, problems
    return listed[0].as_instance_type(cloud), []
