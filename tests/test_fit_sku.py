"""The SKU catalogue and the GPU-memory fit."""

from __future__ import annotations

import pytest

from kaito_core.errors import NotFoundError
from kaito_core.fit import plan_nodes
from kaito_core.presets import Preset
from kaito_core.sku import CLOUDS, NodeGPUFacts, get_instance_type, instance_types, is_azure_lenient, lookup, uniform_node_type
from kaito_phi3.presets import PHI_3_MEDIUM_4K, PHI_3_MINI_4K, PHI_3_MINI_128K, PHI_4
from tests.fakes import FakeMultiNode, FakeTransformers


@pytest.mark.parametrize(
    ("sku", "cloud", "gpus", "total", "per_gpu", "model"),
    [
        ("Standard_NC6s_v3", "azure", 1, 16, 16, "NVIDIA V100"),
        ("Standard_NC24rs_v3", "azure", 4, 64, 16, "NVIDIA V100"),
        ("Standard_NC4as_T4_v3", "azure", 1, 16, 16, "NVIDIA T4"),
        ("Standard_NC64as_T4_v3", "azure", 4, 64, 16, "NVIDIA T4"),
        ("Standard_NV36ads_A10_v5", "azure", 1, 24, 24, "NVIDIA A10"),
        ("Standard_NC24ads_A100_v4", "azure", 1, 80, 80, "NVIDIA A100"),
        ("Standard_ND96asr_A100_v4", "azure", 8, 320, 40, "NVIDIA A100"),
        ("Standard_ND96isr_H200_v5", "azure", 8, 1128, 141, "NVIDIA H200"),
        ("g5.12xlarge", "aws", 4, 96, 24, "NVIDIA A10G"),
        ("p4d.24xlarge", "aws", 8, 320, 40, "NVIDIA A100"),
        ("Standard_NC16_A2", "arc", 2, 32, 16, "NVIDIA A2"),
    ],
)
def test_catalogue_facts(sku: str, cloud: str, gpus: int, total: float, per_gpu: float, model: str) -> None:
    found = get_instance_type(sku, cloud)  # type: ignore[arg-type]
    assert (found.gpu_count, found.gpu_mem_gib, found.per_gpu_mem_gib, found.gpu_model) == (gpus, total, per_gpu, model)


def test_lookup_is_case_insensitive_and_per_cloud() -> None:
    assert lookup("STANDARD_nc6S_V3") == lookup("Standard_NC6s_v3")
    assert lookup("Standard_NC6s_v3", "aws") is None
    assert all(instance_types(c) for c in CLOUDS)
    with pytest.raises(NotFoundError, match="unsupported instance type 'nope' on azure; supported GPU SKUs: .*Standard_NC6s_v3"):
        get_instance_type("nope")


def test_cpu_sizes_and_leniency() -> None:
    d8 = get_instance_type("Standard_D8s_v5")
    assert (d8.has_gpu, d8.vcpus, d8.memory_gib) == (False, 8, 32)
    assert d8.describe() == "8 vCPU, 32 GiB RAM, no GPU"
    assert is_azure_lenient("standard_nd1000_future") and is_azure_lenient("Standard_D2_v9")
    assert not is_azure_lenient("Standard_E8s_v5")


def test_nodes_from_gpu_feature_discovery_labels() -> None:
    labels = {
        "nvidia.com/gpu.product": "NVIDIA-A10",
        "nvidia.com/gpu.count": "2",
        "nvidia.com/gpu.memory": "23028",
        "nvidia.com/cuda.compute.major": "8",
        "nvidia.com/cuda.compute.minor": "6",
    }
    node = NodeGPUFacts.from_labels("n1", labels)
    assert node.as_instance_type().gpu_mem_gib == 44  # round(23028/1024)=22 per GPU, x2
    assert node.cuda_cc == "8.6"
    same, problems = uniform_node_type([node, node.model_copy(update={"name": "n2"})])
    assert problems == [] and same is not None and same.gpu_count == 2


def test_examples_fit_on_a_v100() -> None:
    v100 = get_instance_type("Standard_NC6s_v3")
    for preset in (PHI_3_MINI_4K, PHI_3_MINI_128K):
        plan = plan_nodes(preset, v100, backend=FakeTransformers())
        assert plan.fits and plan.nodes == 1 and plan.gpus_needed == 1
        assert plan.kv_tokens == 2048
    qlora = plan_nodes(PHI_3_MINI_128K, v100, tuning_method="qlora")
    assert qlora.fits and qlora.per_gpu_need_gib == pytest.approx(7.12 * 0.28 + 2.3 + 7.12 * 0.15, abs=1e-3)


def test_phi3_medium_on_a_v100_explains_with_numbers() -> None:
    plan = plan_nodes(PHI_3_MEDIUM_4K, get_instance_type("Standard_NC6s_v3"), backend=FakeTransformers())
    assert not plan.fits and plan.nodes == 0
    assert plan.explanation == (
        "preset phi-3-medium-4k-instruct needs ≥ 29.21 GiB of GPU memory on one node (26.00 GiB weights ×1.02 + "
        "2.3 GiB runtime + 0.39 GiB KV cache for 2048 tokens), but Standard_NC6s_v3 has 16 GiB (1× NVIDIA V100 16 GiB), "
        "of which 84% (13.44 GiB) is usable; backend transformers cannot split a model across nodes"
    )
    assert "Standard_NC24ads_A100_v4 (1× NVIDIA A100 80 GiB)" in plan.suggestions


def test_a_backend_that_splits_plans_several_nodes() -> None:
    plan = plan_nodes(PHI_3_MEDIUM_4K, get_instance_type("Standard_NC6s_v3"), backend=FakeMultiNode())
    # (26 x 1.02 + 0.39) / (16 x 0.84 - 2.3) = 26.91 / 11.14 -> 3 GPUs, one per node
    assert plan.fits and plan.gpus_needed == 3 and plan.nodes == 3
    assert "3 nodes are needed" in plan.explanation
    assert plan_nodes(PHI_3_MEDIUM_4K, get_instance_type("Standard_NC6s_v3"), backend=FakeMultiNode(), count=5).nodes == 5


def test_several_gpus_on_one_node() -> None:
    plan = plan_nodes(PHI_4, get_instance_type("Standard_NC24s_v3"), backend=FakeTransformers())
    assert plan.fits and plan.nodes == 1 and plan.gpus_needed == 3 and plan.gpus_per_node == 4


def test_max_model_len_sizes_the_kv_cache() -> None:
    a10 = get_instance_type("Standard_NV36ads_A10_v5")
    short = plan_nodes(PHI_3_MINI_128K, a10, backend=FakeTransformers())
    long = plan_nodes(PHI_3_MINI_128K, a10, backend=FakeTransformers(), max_model_len=32768)
    assert short.fits and not long.fits
    assert long.kv_tokens == 32768 and long.kv_gib == pytest.approx(12.0)
    capped = plan_nodes(PHI_3_MINI_4K, a10, backend=FakeTransformers(), max_model_len=100000)
    assert capped.kv_tokens == 4096


def test_cpu_presets_check_node_memory() -> None:
    cpu_preset = Preset.model_validate({**PHI_3_MINI_4K.model_dump(), "name": "tiny-cpu", "weights_gib": 11.0, "requires_gpu": False})
    fits = plan_nodes(cpu_preset, get_instance_type("Standard_D8s_v5"))
    assert fits.fits and fits.memory == "cpu" and fits.nodes == 1
    too_small = plan_nodes(cpu_preset, get_instance_type("Standard_D4s_v5"), max_model_len=4096)
    assert not too_small.fits and "of RAM" in too_small.explanation
    assert too_small.suggestions and "Standard_D8s_v5" in too_small.suggestions[0]


def test_gpu_preset_on_cpu_node_does_not_fit() -> None:
    plan = plan_nodes(PHI_3_MINI_4K, get_instance_type("Standard_E16s_v5"))
    assert not plan.fits and "needs a GPU" in plan.explanation
