"""The model-family plugins: every upstream legacy preset name, the facts behind the fit, and
a table of (preset, instance type) -> nodes/GPUs worked out by hand from kaito.md §2.4."""

from __future__ import annotations

import math

import pytest

import kaito_deepseek
import kaito_falcon
import kaito_gemma3
import kaito_gptoss
import kaito_llama
import kaito_mistral
import kaito_phi3
import kaito_qwen
from kaito_core.fit import plan_nodes
from kaito_core.plugins import Registry
from kaito_core.preset_providers import KNOWN_PRESET_PACKAGES, install_line, package_for_preset
from kaito_core.presets import Preset, disk_gib_for
from kaito_core.sku import get_instance_type
from tests.fakes import FakeMultiNode, FakeTransformers

FAMILY_MODULES = (kaito_phi3, kaito_llama, kaito_mistral, kaito_qwen, kaito_deepseek, kaito_gemma3, kaito_gptoss, kaito_falcon)

UPSTREAM_LEGACY_NAMES = {
    # kaito.md §2.1 supported_models.yaml (phi-2 is deprecated upstream and not offered)
    "llama-3.1-8b-instruct", "llama-3.3-70b-instruct",
    "deepseek-r1-0528", "deepseek-v3-0324", "deepseek-r1-distill-qwen-14b", "deepseek-r1-distill-llama-8b",
    "falcon-7b", "falcon-7b-instruct", "falcon-40b", "falcon-40b-instruct",
    "mistral-7b", "mistral-7b-instruct", "ministral-3-3b-instruct", "ministral-3-8b-instruct",
    "ministral-3-14b-instruct", "mistral-large-3-675b-instruct",
    "phi-3-mini-4k-instruct", "phi-3-mini-128k-instruct", "phi-3-medium-4k-instruct", "phi-3-medium-128k-instruct",
    "phi-3.5-mini-instruct", "phi-4", "phi-4-mini-instruct",
    "qwen2.5-coder-7b-instruct", "qwen2.5-coder-32b-instruct",
    "gemma-3-4b-instruct", "gemma-3-27b-instruct",
    "gpt-oss-20b", "gpt-oss-120b",
}  # fmt: skip


class VLLMLike(FakeMultiNode):
    """Stands in for a backend that splits a model across nodes, as upstream's vLLM (PP over Ray)."""

    name = "vllm"


@pytest.fixture(scope="module")
def families() -> Registry:
    return Registry.from_plugins(*FAMILY_MODULES, FakeTransformers())


def test_every_upstream_legacy_name_is_a_preset(families: Registry) -> None:
    assert UPSTREAM_LEGACY_NAMES <= set(families.presets())


def test_the_provider_table_names_the_package_that_registers_each_preset() -> None:
    installed = Registry.from_entry_points()
    first_party = {n: installed.source("preset", n).distribution for n in installed.presets() if "/" not in n}
    assert first_party == dict(KNOWN_PRESET_PACKAGES)
    assert install_line("llama-3.1-8b-instruct") == "pip install kaito-llama"
    assert package_for_preset("Falcon-7B") == "kaito-falcon"  # upstream lower-cases names
    assert package_for_preset("llama-4-scout") == "kaito-llama"
    assert package_for_preset("meta-llama/Llama-3.1-8B-Instruct") == "kaito-huggingface"
    assert package_for_preset("no-such-model") is None


def test_presets_are_valid_data(families: Registry) -> None:
    """model_copy skips validation: re-validate every variant, and keep upstream's disk rule."""
    for preset in families.presets().values():
        assert Preset.model_validate(preset.model_dump()) == preset
        # falcon: upstream's last recorded disks; gpt-oss: the whole repository (original/ too);
        # gemma-3-270m: a CPU GGUF with no system files
        if preset.family not in ("falcon", "gpt-oss") and preset.name != "gemma-3-270m":
            assert preset.disk_gib == disk_gib_for(preset.weights_gib), preset.name


# (preset, HF repo, pinned commit (supported_models.yaml), weights GiB, context, KV bytes per token)
# KV bytes per token by hand: 2 × kv_heads × head_dim × layers × 2, or MLA (512 + 64) × layers × 2.
FACTS = [
    ("llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct", "0e9e39f249a16976918f6564b8830bc894c89659", 14.96, 131072, 2 * 8 * 128 * 32 * 2),
    ("llama-3.3-70b-instruct", "meta-llama/Llama-3.3-70B-Instruct", "6f6073b423013f6a7d4d9f39144961bfbfbc386b", 131.42, 131072, 2 * 8 * 128 * 80 * 2),
    ("mistral-7b", "mistralai/Mistral-7B-v0.3", "d8cadc02ac76bd617a919d50b092e59d2d110aff", 13.50, 32768, 2 * 8 * 128 * 32 * 2),
    ("mistral-7b-instruct", "mistralai/Mistral-7B-Instruct-v0.3", "e0bc86c23ce5aae1db576c8cca6f06f1f73af2db", 13.50, 32768, 131072),
    ("ministral-3-3b-instruct", "mistralai/Ministral-3-3B-Instruct-2512", "83e15808ff6a115f18ff8e68123db3ab35035714", 4.35, 262144, 2 * 8 * 128 * 26 * 2),
    ("ministral-3-8b-instruct", "mistralai/Ministral-3-8B-Instruct-2512", "df904c183734f8760042c708d3629a4ed68b103a", 9.70, 262144, 2 * 8 * 128 * 34 * 2),
    ("ministral-3-14b-instruct", "mistralai/Ministral-3-14B-Instruct-2512", "6aa4534f7bb46d16753bd12a08b32810a06b7a14", 14.65, 262144, 2 * 8 * 128 * 40 * 2),
    ("mistral-large-3-675b-instruct", "mistralai/Mistral-Large-3-675B-Instruct-2512", "7f13ed24ab52a2a1c35bb26a749ef9d891ee98dd", 634.70, 294912, (512 + 64) * 61 * 2),
    ("qwen2.5-coder-7b-instruct", "Qwen/Qwen2.5-Coder-7B-Instruct", "c03e6d358207e414f1eca0bb1891e29f1db0e242", 14.19, 32768, 2 * 4 * 128 * 28 * 2),
    ("qwen2.5-coder-32b-instruct", "Qwen/Qwen2.5-Coder-32B-Instruct", "381fc969f78efac66bc87ff7ddeadb7e73c218a7", 61.03, 32768, 2 * 8 * 128 * 64 * 2),
    ("deepseek-r1-distill-llama-8b", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "6a6f4aa4197940add57724a7707d069478df56b1", 14.96, 131072, 131072),
    ("deepseek-r1-distill-qwen-14b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "1df8507178afcc1bef68cd8c393f61a886323761", 27.51, 131072, 2 * 8 * 128 * 48 * 2),
    ("deepseek-r1-0528", "deepseek-ai/DeepSeek-R1-0528", "4236a6af538feda4548eca9ab308586007567f52", 641.30, 163840, 70272),
    ("deepseek-v3-0324", "deepseek-ai/DeepSeek-V3-0324", "e9b33add76883f293d6bf61f6bd89b497e80e335", 641.30, 163840, 70272),
    ("gemma-3-4b-instruct", "google/gemma-3-4b-it", "093f9f388b31de276ce2de164bdc2081324b9767", 8.01, 131072, 2 * 4 * 256 * 34 * 2),
    ("gemma-3-27b-instruct", "google/gemma-3-27b-it", "005ad3404e59d6023443cb575daa05336842228a", 51.10, 131072, 2 * 16 * 128 * 62 * 2),
    ("gpt-oss-20b", "openai/gpt-oss-20b", "db6852caddef0cf0c1f729034ed700c84eab376e", 25.63 / 2, 131072, 2 * 8 * 64 * 24 * 2),
    ("gpt-oss-120b", "openai/gpt-oss-120b", "b5c939de8f754692c1647ca79fbf85e8c1e70f8a", 121.54 / 2, 131072, 2 * 8 * 64 * 36 * 2),
    ("falcon-7b", "tiiuae/falcon-7b", "898df1396f35e447d5fe44e0a3ccaaaa69f30d36", 13.44, 2048, 8192),
    ("falcon-7b-instruct", "tiiuae/falcon-7b-instruct", "cf4b3c42ce2fdfe24f753f0f0d179202fea59c99", 13.44, 2048, 8192),
    ("falcon-40b", "tiiuae/falcon-40b", "4a70170c215b36a3cce4b4253f6d0612bb7d4146", 77.9, 2048, 2 * 8 * 64 * 60 * 2),
    ("falcon-40b-instruct", "tiiuae/falcon-40b-instruct", "ecb78d97ac356d098e79f0db222c9ce7c5d9ee5f", 77.9, 2048, 122880),
]


@pytest.mark.parametrize(("name", "repo", "commit", "weights", "context", "bpt"), FACTS, ids=[f[0] for f in FACTS])
def test_preset_facts(families: Registry, name: str, repo: str, commit: str, weights: float, context: int, bpt: int) -> None:
    preset = families.preset(name)
    assert (preset.source_repo, preset.revision) == (repo, commit)
    assert preset.weights_gib == pytest.approx(weights, abs=0.006)
    assert preset.context_length == context
    assert preset.arch.kv_bytes_per_token() == bpt


def test_upstream_flags_and_parsers(families: Registry) -> None:
    p = families.presets()
    gated = {n for n, x in p.items() if x.download_auth_required}
    assert gated == {"llama-3.1-8b-instruct", "llama-3.3-70b-instruct", "gemma-3-4b-instruct", "gemma-3-27b-instruct"}
    assert p["deepseek-r1-0528"].arch.attention_type == "MLA" and p["falcon-7b"].arch.attention_type == "MQA"
    assert (p["deepseek-r1-distill-llama-8b"].reasoning_parser, p["deepseek-r1-distill-llama-8b"].tool_call_parser) == ("deepseek_r1", "deepseek_v3")
    assert (p["gpt-oss-20b"].reasoning_parser, p["gpt-oss-20b"].tool_call_parser) == ("openai_gptoss", "openai")
    assert p["llama-3.1-8b-instruct"].tool_call_parser == "llama3_json"
    assert p["qwen2.5-coder-7b-instruct"].tool_call_parser == "hermes"
    assert p["mistral-7b-instruct"].reasoning_parser is None  # upstream: non-reasoning
    assert ("load_format", "mistral") in p["mistral-7b"].backends["vllm"].extra_args
    assert ("tokenizer_mode", "deepseek_v32") in p["deepseek-v3-0324"].backends["vllm"].extra_args
    assert list(p["ministral-3-8b-instruct"].backends) == ["vllm"]  # upstream: transformers 5 needed
    tunable = {n for n, x in p.items() if x.tuning is not None and x.family != "phi3"}
    # gemma-3-270m is this project's CPU preset (not upstream's), tunable on all attention projections.
    assert tunable == {"mistral-7b", "qwen2.5-coder-7b-instruct", "qwen2.5-coder-32b-instruct", "falcon-7b", "falcon-40b", "gemma-3-270m"}
    assert p["gemma-3-270m"].tuning is not None and p["gemma-3-270m"].tuning.default_target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert p["falcon-7b"].tuning is not None and p["falcon-7b"].tuning.default_target_modules == ("query_key_value",)


# (preset, instance type, backend splits across nodes?) -> (nodes, GPUs needed), or None: refused.
# By hand, with kaito.md §2.4: need per GPU = (weights × 1.02 + KV(2048 tokens)) / g + 2.3 GiB,
# usable per GPU = GPU memory × 0.84; g = the fewest GPUs that fit; nodes = ceil(g / GPUs per node).
FIT_TABLE = [
    # phi-3-mini on an A10 (24 GiB, usable 20.16): 7.12×1.02 = 7.26 + KV 2048×393216 B = 0.75 -> 8.01 + 2.3 <= 20.16: 1 GPU.
    ("phi-3-mini-4k-instruct", "Standard_NV36ads_A10_v5", False, (1, 1)),
    # phi-3-medium on an A10: 26×1.02 = 26.52 + 0.39 = 26.91; 26.91/17.86 = 1.5 -> 2 GPUs on 1-GPU nodes: 2 nodes (vLLM PP=2) ...
    ("phi-3-medium-4k-instruct", "Standard_NV36ads_A10_v5", True, (2, 2)),
    # ... and refused by a backend that cannot split.
    ("phi-3-medium-4k-instruct", "Standard_NV36ads_A10_v5", False, None),
    # llama-3.1-8b on an A10: 14.96×1.02 = 15.26 + KV 2048×131072 B = 0.25 -> 15.51 <= 17.86: 1.
    ("llama-3.1-8b-instruct", "Standard_NV36ads_A10_v5", False, (1, 1)),
    # llama-3.3-70b on 1×A100 80 (usable 67.2, room 64.9): 131.42×1.02 = 134.05 + 0.63 = 134.68 / 64.9 = 2.08 -> 3 GPUs, 3 nodes.
    ("llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4", True, (3, 3)),
    ("llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4", False, None),
    # ... on 4×A100 80: the same 3 GPUs fit one node.
    ("llama-3.3-70b-instruct", "Standard_NC96ads_A100_v4", False, (1, 3)),
    # gpt-oss-20b on an A10: 12.82×1.02 = 13.07 + KV 2048×49152 B = 0.09 -> 13.17 <= 17.86: 1.
    ("gpt-oss-20b", "Standard_NV36ads_A10_v5", False, (1, 1)),
    # gpt-oss-120b on 1×A100 80: 60.77×1.02 = 61.99 + 0.14 = 62.13 <= 64.9: 1.
    ("gpt-oss-120b", "Standard_NC24ads_A100_v4", False, (1, 1)),
    # qwen2.5-coder-32b on 1×A100 80: 61.03×1.02 = 62.25 + KV 2048×262144 B = 0.5 -> 62.75 <= 64.9: 1.
    ("qwen2.5-coder-32b-instruct", "Standard_NC24ads_A100_v4", False, (1, 1)),
    # falcon-40b on 1×A100 80: 77.9×1.02 = 79.46 + 0.23 = 79.69 / 64.9 = 1.23 -> 2 GPUs, 2 nodes.
    ("falcon-40b", "Standard_NC24ads_A100_v4", True, (2, 2)),
    # deepseek-r1 on 2×H100 94 (usable 78.96, room 76.66): 641.3×1.02 = 654.13 + 0.13 = 654.26 / 76.66 = 8.53 -> 9 GPUs, 5 nodes.
    ("deepseek-r1-0528", "Standard_NC80adis_H100_v5", True, (5, 9)),
    # ... on 8×H200 141 (usable 118.44, room 116.14): 654.26 / 116.14 = 5.63 -> 6 GPUs: one node.
    ("deepseek-r1-0528", "Standard_ND96isr_H200_v5", False, (1, 6)),
    # mistral-large-3 on 8×H200: 634.7×1.02 = 647.39 + 0.13 = 647.52 / 116.14 = 5.58 -> 6 GPUs: one node.
    ("mistral-large-3-675b-instruct", "Standard_ND96isr_H200_v5", False, (1, 6)),
    # gemma-3-27b on 1×A100 80: 51.1×1.02 = 52.12 + KV 2048×507904 B = 0.97 -> 53.09 <= 64.9: 1.
    ("gemma-3-27b-instruct", "Standard_NC24ads_A100_v4", False, (1, 1)),
]


@pytest.mark.parametrize(("name", "sku", "splits", "expected"), FIT_TABLE, ids=[f"{r[0]}@{r[1]}{'-split' if r[2] else ''}" for r in FIT_TABLE])
def test_nodes_and_gpus_by_hand(families: Registry, name: str, sku: str, splits: bool, expected: tuple[int, int] | None) -> None:
    backend = VLLMLike() if splits else FakeTransformers()
    plan = plan_nodes(families.preset(name), get_instance_type(sku), backend=backend, suggest=False)
    if expected is None:
        assert not plan.fits
        assert "cannot split a model across nodes" in plan.explanation
    else:
        assert plan.fits, plan.explanation
        assert (plan.nodes, plan.gpus_needed) == expected


def _upstream_estimator(preset: Preset, sku: str) -> int:
    """pkg/workspace/estimator/nodesestimator (kaito.md §2.4), literally."""
    gpu = get_instance_type(sku)
    model = preset.weights_gib * 1.02
    avail = gpu.per_gpu_mem_gib * 0.84
    fixed = 2.3 + 2048 * preset.arch.kv_bytes_per_token() / 1024**3 / gpu.gpu_count
    min_gpus = int(model / ((avail - fixed) / 1.05)) + 1
    return max(1, math.ceil(min_gpus / gpu.gpu_count))


@pytest.mark.parametrize(("name", "nodes"), [("phi-3-mini-4k-instruct", 1), ("phi-3-medium-4k-instruct", 2)])
def test_agrees_with_upstreams_estimator_on_its_worked_examples(families: Registry, name: str, nodes: int) -> None:
    preset = families.preset(name)
    plan = plan_nodes(preset, get_instance_type("Standard_NV36ads_A10_v5"), backend=VLLMLike(), suggest=False)
    assert plan.nodes == _upstream_estimator(preset, "Standard_NV36ads_A10_v5") == nodes
