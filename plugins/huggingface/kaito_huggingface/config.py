"""From a model's config.json and weight size to a preset: pure functions, no I/O.

The rules are upstream KAITO's generator (``presets/workspace/generator/generator.go``,
kaito.md §2.2), the same ones the family presets' numbers come from:

* multimodal configs: ``text_config`` (or ``llm_config``) fields are promoted to the top level
  unless already there;
* context = ``max_position_embeddings`` (or n_ctx, seq_length, ...), default 2048;
* head dim = ``head_dim`` or hidden / heads; KV heads = ``num_key_value_heads`` (or n_head_kv,
  n_kv_heads, Falcon's ``num_kv_heads``), else 1 when ``multi_query``, else the head count;
* MLA (``kv_lora_rank`` present): the cache holds kv_lora_rank + qk_rope_head_dim per layer;
* weights = the checkpoint's bytes in GiB (2 decimals); disk = int(weights + 80) GiB;
  readiness = clamp(15 min + 18 s/GiB, 30 min, 180 min);
* quantization = ``quantization_config.quant_method`` (or format / quant_algo);
* vLLM: dtype auto when quantized else bfloat16, Mistral-format checkpoints load with
  format ``mistral``; tool-call and reasoning parsers by architecture (upstream's maps, for
  the architectures supported here).

One difference: upstream ignores Falcon's ``num_kv_heads`` (new decoder architecture, 40B/180B)
and so sizes its KV cache as full multi-head attention; here it counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kaito_core.preset_sources import PresetGenerationError
from kaito_core.presets import BackendParams, ModelArchitecture, Preset, sized, vllm_params

GIB = 1024**3
DEFAULT_CONTEXT = 2048
"""Upstream's DefaultModelTokenLimit, used when config.json names no context length."""

CONTEXT_KEYS = ("max_position_embeddings", "n_ctx", "seq_length", "max_seq_len", "max_sequence_length", "model_max_length")
HIDDEN_KEYS = ("hidden_size", "n_embd", "d_model", "dim")
LAYER_KEYS = ("num_hidden_layers", "n_layer", "n_layers")
HEAD_KEYS = ("num_attention_heads", "n_head", "n_heads")
KV_HEAD_KEYS = ("num_key_value_heads", "n_head_kv", "n_kv_heads", "num_kv_heads")
HEAD_DIM_KEYS = ("head_dim", "attention_head_dim")
QUANT_KEYS = ("quant_method", "format", "quant_algo")

SUPPORTED_ARCHITECTURES: Mapping[str, tuple[str | None, str | None]] = {
    "LlamaForCausalLM": ("llama3_json", None),
    "MistralForCausalLM": ("mistral", None),
    "Mistral3ForConditionalGeneration": (None, None),
    "MistralLarge3ForCausalLM": ("mistral", None),
    "Qwen2ForCausalLM": ("hermes", None),
    "Qwen3ForCausalLM": ("hermes", "qwen3"),
    "Qwen3MoeForCausalLM": ("qwen3_xml", "qwen3"),
    "Phi3ForCausalLM": (None, None),
    "Gemma3ForCausalLM": ("functiongemma", None),
    "Gemma3ForConditionalGeneration": (None, None),
    "GptOssForCausalLM": ("openai", "openai_gptoss"),
    "DeepseekV3ForCausalLM": ("deepseek_v3", "deepseek_v3"),
    "FalconForCausalLM": (None, None),
}
"""Architectures the generic preset accepts -> (vLLM tool-call parser, reasoning parser), as
upstream's generator maps them. These are the architectures of the first-party families; the
transformers backend loads each of them natively (no trust_remote_code)."""


def _int(config: Mapping[str, Any], keys: tuple[str, ...], default: int = 0) -> int:
    for key in keys:
        value = config.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            return int(value)
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return default


def flatten_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """config.json with a multimodal model's text_config / llm_config promoted to the top level."""
    flat = dict(config)
    nested = config.get("text_config") or config.get("llm_config")
    if isinstance(nested, Mapping):
        for key, value in nested.items():
            flat.setdefault(key, value)
    return flat


def architecture_of(repo_id: str, config: Mapping[str, Any]) -> ModelArchitecture:
    """The attention shape from a (flattened) config.json.

    Raises:
        PresetGenerationError: the architecture is not supported, or a size field is missing.
    """
    names = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    supported = ", ".join(sorted(SUPPORTED_ARCHITECTURES))
    if not names:
        raise PresetGenerationError(
            f"config.json of {repo_id} names no architecture (its 'architectures' list is missing)",
            f"use a model whose config.json has one of the supported architectures: {supported}",
        )
    arch = next((a for a in names if a in SUPPORTED_ARCHITECTURES), None)
    if arch is None:
        raise PresetGenerationError(
            f"unsupported model architecture for {repo_id}: {', '.join(names)}",
            f"use a model of a supported architecture ({supported}), or serve it with inference.template",
        )
    hidden = _int(config, HIDDEN_KEYS)
    layers = _int(config, LAYER_KEYS)
    heads = _int(config, HEAD_KEYS)
    missing = [n for n, v in (("hidden_size", hidden), ("num_hidden_layers", layers), ("num_attention_heads", heads)) if v <= 0]
    if missing:
        raise PresetGenerationError(
            f"config.json of {repo_id} lacks {', '.join(missing)}",
            "check that the directory holds the model's own config.json",
        )
    kv_heads = _int(config, KV_HEAD_KEYS)
    if kv_heads <= 0:
        kv_heads = 1 if config.get("multi_query") is True else heads
    kv_lora_rank = _int(config, ("kv_lora_rank",)) or None
    rope = _int(config, ("qk_rope_head_dim",))
    head_dim = _int(config, HEAD_DIM_KEYS)
    if head_dim <= 0 and kv_lora_rank is not None and _int(config, ("qk_nope_head_dim",)):
        head_dim = _int(config, ("qk_nope_head_dim",)) + rope
    if head_dim <= 0:
        head_dim = hidden // heads
    return ModelArchitecture(
        architecture=arch,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        hidden_size=hidden,
        context_length=_int(config, CONTEXT_KEYS, DEFAULT_CONTEXT),
        kv_lora_rank=kv_lora_rank,
        qk_rope_head_dim=rope if kv_lora_rank is not None else 0,
    )


def quantization_of(config: Mapping[str, Any]) -> str | None:
    """The checkpoint's quantization method, None for plain 16/32-bit weights."""
    qc = config.get("quantization_config")
    if not isinstance(qc, Mapping):
        return None
    for key in QUANT_KEYS:
        value = qc.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def preset_from_files(
    repo_id: str,
    config: Mapping[str, Any],
    weight_bytes: int,
    *,
    gated: bool = False,
    mistral_format: bool = False,
    revision: str = "main",
    license_name: str = "",
) -> Preset:
    """The preset for ``repo_id`` from its config.json and the bytes of its weight files.

    Raises:
        PresetGenerationError: unsupported architecture, missing fields, or no weights.
    """
    if weight_bytes <= 0:
        raise PresetGenerationError(
            f"no weights found for {repo_id} (no *.safetensors, safetensors index or *.bin)",
            "include model.safetensors.index.json (or the *.safetensors files) next to config.json",
        )
    flat = flatten_config(config)
    arch = architecture_of(repo_id, flat)
    quant = quantization_of(flat)
    tool_parser, reasoning_parser = SUPPORTED_ARCHITECTURES[arch.architecture]
    weights_gib = round(weight_bytes / GIB, 2) or 0.01
    return Preset(
        name=repo_id.lower(),
        family="huggingface",
        description=f"{repo_id} (generated from its config.json)",
        source_repo=repo_id,
        revision=revision,
        license=license_name,
        arch=arch,
        quantization=quant,
        backends={
            "transformers": BackendParams(dtype="auto" if quant else "bfloat16"),
            "vllm": vllm_params(quantized=quant is not None, mistral_format=mistral_format),
        },
        download_auth_required=gated,
        download_at_runtime=True,
        tool_call_parser=tool_parser,
        reasoning_parser=reasoning_parser,
        **sized(weights_gib),
    )
