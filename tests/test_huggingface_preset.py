"""The generic Hugging Face preset: computed from a model's config.json and safetensors index
with the family presets' formulas, offline from a local copy or a hub cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import kaito_deepseek
import kaito_gemma3
import kaito_huggingface
import kaito_llama
from kaito_core.errors import ValidationError
from kaito_core.plugins import Registry
from kaito_core.preset_sources import ModelLocation, PresetGenerationError
from kaito_core.validation import ValidationContext, check_workspace
from kaito_deepseek.presets import DEEPSEEK_V3_0324
from kaito_gemma3.presets import GEMMA_3_4B_INSTRUCT
from kaito_huggingface.config import preset_from_files
from kaito_huggingface.files import read_local, select_weight_bytes
from kaito_llama.presets import LLAMA_3_1_8B_INSTRUCT
from tests.conftest import FIXTURES, run_kaito
from tests.fakes import BackendsPlugin

LLAMA_DIR = FIXTURES / "hf_models" / "llama-3.1-8b-instruct"
LLAMA_ID = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_plugins(kaito_llama, kaito_gemma3, kaito_deepseek, kaito_huggingface, BackendsPlugin())


def _workspace(name: str, secret: bool = True, sku: str = "Standard_NV36ads_A10_v5") -> dict[str, Any]:
    preset: dict[str, Any] = {"name": name}
    if secret:
        preset["presetOptions"] = {"modelAccessSecret": "hf-token"}
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "workspace-llama"},
        "resource": {"instanceType": sku, "labelSelector": {"matchLabels": {"apps": "llama"}}},
        "inference": {"preset": preset},
    }


def test_generated_from_config_equals_the_family_preset(registry: Registry) -> None:
    generated = registry.resolve_preset(LLAMA_ID, ModelLocation(model_dir=LLAMA_DIR))
    family = LLAMA_3_1_8B_INSTRUCT
    assert generated.name == "meta-llama/llama-3.1-8b-instruct" and generated.family == "huggingface"
    assert generated.arch == family.arch
    assert (generated.weights_gib, generated.disk_gib, generated.readiness_timeout_s) == (family.weights_gib, family.disk_gib, family.readiness_timeout_s)
    assert generated.arch.kv_bytes_per_token() == family.arch.kv_bytes_per_token() == 131072
    assert generated.download_auth_required is True  # the card's extra_gated_* fields
    assert generated.tool_call_parser == family.tool_call_parser == "llama3_json"
    assert generated.license == "llama3.1"


def test_kaito_validate_with_a_local_config_computes_the_presets_sizes(tmp_path: Path) -> None:
    ws = tmp_path / "ws.yaml"
    ws.write_text(json.dumps(_workspace(LLAMA_ID)))
    result = run_kaito("validate", str(ws), "--model-dir", str(LLAMA_DIR))
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout
    out = run_kaito("presets", "--instance-type", "Standard_NV36ads_A10_v5", "-o", "json")
    assert out.returncode == 0, out.stderr
    llama = next(p for p in json.loads(out.stdout) if p["name"] == "llama-3.1-8b-instruct")
    assert (llama["weightsGiB"], llama["fit"]["nodes"], llama["fit"]["gpus"]) == (14.96, 1, 1)
    # the same workspace on a too-small GPU: the message carries the generated preset's numbers
    ws.write_text(json.dumps(_workspace(LLAMA_ID, sku="Standard_NC4as_T4_v3")))
    small = run_kaito("validate", str(ws), "--model-dir", str(LLAMA_DIR))
    assert small.returncode == 1
    assert "preset meta-llama/llama-3.1-8b-instruct needs" in small.stderr and "14.96 GiB weights" in small.stderr


def test_a_gated_model_without_a_token_secret_is_refused_saying_how(registry: Registry) -> None:
    ctx = ValidationContext(model_location=ModelLocation(model_dir=LLAMA_DIR))
    with pytest.raises(ValidationError) as info:
        check_workspace(_workspace(LLAMA_ID, secret=False), registry, ctx=ctx)
    (error,) = info.value.errors
    assert error.path == "inference.preset.presetOptions.modelAccessSecret"
    assert "requires authentication" in error.message and "HF_TOKEN" in error.fix


def test_an_unsupported_architecture_is_refused_listing_the_supported_ones(registry: Registry, tmp_path: Path) -> None:
    config = {"architectures": ["MambaForCausalLM"], "hidden_size": 768, "num_hidden_layers": 24, "vocab_size": 50280}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 1024)
    ctx = ValidationContext(model_location=ModelLocation(model_dir=tmp_path))
    with pytest.raises(ValidationError) as info:
        check_workspace(_workspace("state-spaces/mamba-130m-hf", secret=False), registry, ctx=ctx)
    (error,) = info.value.errors
    assert error.path == "inference.preset.name"
    assert "unsupported model architecture for state-spaces/mamba-130m-hf: MambaForCausalLM" in error.message
    assert "LlamaForCausalLM" in error.fix and "Qwen2ForCausalLM" in error.fix and "inference.template" in error.fix


def test_offline_without_files_an_unknown_id_says_how_to_provide_them(registry: Registry) -> None:
    with pytest.raises(ValidationError) as info:
        check_workspace(_workspace("some-org/some-model", secret=False), registry)
    (error,) = info.value.errors
    assert error.path == "inference.preset.name"
    assert "--model-dir" in error.fix and "--hf-cache" in error.fix


def test_an_id_served_by_an_installed_family_uses_that_preset_offline(registry: Registry) -> None:
    assert registry.resolve_preset(LLAMA_ID) is LLAMA_3_1_8B_INSTRUCT
    assert registry.resolve_preset("meta-llama/llama-3.1-8b-instruct") is LLAMA_3_1_8B_INSTRUCT
    assert registry.resolve_preset("Llama-3.1-8B-Instruct") is LLAMA_3_1_8B_INSTRUCT  # upstream lower-cases names


def test_without_the_plugin_an_id_names_the_package_to_install() -> None:
    registry = Registry.from_plugins(kaito_llama)
    with pytest.raises(ValidationError) as info:
        check_workspace(_workspace("some-org/some-model", secret=False), registry)
    assert "pip install kaito-huggingface" in info.value.errors[0].fix


def test_read_from_a_hugging_face_cache_offline(registry: Registry, tmp_path: Path) -> None:
    """The cache layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<sha>/...}."""
    sha = "0e9e39f249a16976918f6564b8830bc894c89659"
    repo = tmp_path / "models--meta-llama--Llama-3.1-8B-Instruct"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    shutil.copytree(LLAMA_DIR, repo / "snapshots" / sha)
    generated = registry.resolve_preset(LLAMA_ID, ModelLocation(cache_dir=tmp_path))
    assert (generated.weights_gib, generated.arch) == (LLAMA_3_1_8B_INSTRUCT.weights_gib, LLAMA_3_1_8B_INSTRUCT.arch)
    with pytest.raises(PresetGenerationError, match="not in the Hugging Face cache"):
        registry.resolve_preset("other/model", ModelLocation(cache_dir=tmp_path))


def test_mla_config_sizes_the_kv_cache_like_the_deepseek_preset() -> None:
    config = {  # DeepSeek-V3-0324's config.json, the fields that matter
        "architectures": ["DeepseekV3ForCausalLM"], "hidden_size": 7168, "num_hidden_layers": 61,
        "num_attention_heads": 128, "num_key_value_heads": 128, "kv_lora_rank": 512, "qk_rope_head_dim": 64,
        "qk_nope_head_dim": 128, "v_head_dim": 128, "max_position_embeddings": 163840,
        "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]},
    }  # fmt: skip
    preset = preset_from_files("deepseek-ai/DeepSeek-V3-0324", config, int(641.30 * 1024**3))
    assert preset.arch == DEEPSEEK_V3_0324.arch
    assert preset.arch.kv_bytes_per_token() == 70272
    assert (preset.quantization, preset.weights_gib, preset.disk_gib) == ("fp8", 641.30, DEEPSEEK_V3_0324.disk_gib)
    assert preset.backends["vllm"].dtype == "auto"


def test_multimodal_text_config_is_promoted_like_upstream() -> None:
    config = {  # google/gemma-3-4b-it: the text model's shape lives in text_config
        "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
        "text_config": {"hidden_size": 2560, "num_hidden_layers": 34, "num_attention_heads": 8, "num_key_value_heads": 4,
                        "head_dim": 256, "max_position_embeddings": 131072},
        "vision_config": {"hidden_size": 1152, "num_hidden_layers": 27},
    }  # fmt: skip
    preset = preset_from_files("google/gemma-3-4b-it", config, int(8.01 * 1024**3), gated=True)
    assert preset.arch == GEMMA_3_4B_INSTRUCT.arch
    assert preset.download_auth_required


def test_multi_query_and_falcon_kv_groups() -> None:
    falcon7 = {"architectures": ["FalconForCausalLM"], "hidden_size": 4544, "num_attention_heads": 71, "num_hidden_layers": 32, "multi_query": True}
    falcon40 = {"architectures": ["FalconForCausalLM"], "hidden_size": 8192, "num_attention_heads": 128, "num_hidden_layers": 60, "num_kv_heads": 8}
    p7 = preset_from_files("tiiuae/falcon-7b", falcon7, 10 * 1024**3)
    p40 = preset_from_files("tiiuae/falcon-40b", falcon40, 10 * 1024**3)
    assert (p7.arch.num_key_value_heads, p7.arch.head_dim, p7.arch.context_length, p7.arch.kv_bytes_per_token()) == (1, 64, 2048, 8192)
    assert (p40.arch.num_key_value_heads, p40.arch.kv_bytes_per_token()) == (8, 122880)


def test_weight_selection_follows_upstream() -> None:
    mistral = [("consolidated.safetensors", 100), ("model-00001-of-00002.safetensors", 60), ("model-00002-of-00002.safetensors", 40)]
    assert select_weight_bytes(mistral) == (100, True)
    assert select_weight_bytes([("model.safetensors", 7), ("pytorch_model.bin", 9)]) == (7, False)
    assert select_weight_bytes([("pytorch_model-1.bin", 9), ("pytorch_model-2.bin", 1)]) == (10, False)


def test_local_copy_with_only_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    files = read_local("a/b", tmp_path)
    with pytest.raises(PresetGenerationError, match="no weights found for a/b"):
        preset_from_files("a/b", files.config, files.weight_bytes)
