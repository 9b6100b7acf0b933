"""kaito-smollm2: the SmolLM2 135M Instruct preset, as a minimal out-of-tree KAITO plugin.

A preset is data (a frozen pydantic model); the plugin registers it through the ``kaito``
entry point's ``register_presets`` hook. Facts from the model's config.json on Hugging Face
(HuggingFaceTB/SmolLM2-135M-Instruct): LlamaForCausalLM, 30 layers, 9 attention heads, 3 KV
heads of 64, hidden size 576, 8192 tokens of context; model.safetensors is 269 MB (bf16).
"""

from __future__ import annotations

from collections.abc import Callable

from kaito_core.plugins import hookimpl
from kaito_core.presets import BackendParams, ModelArchitecture, Preset, TuningSupport, disk_gib_for, readiness_timeout_for

WEIGHTS_GIB = 0.25
"""model.safetensors: 269,060,552 bytes."""

SMOLLM2_135M_INSTRUCT = Preset(
    name="smollm2-135m-instruct",
    family="smollm2",
    description="SmolLM2 135M instruct, 8k context (Hugging Face)",
    source_repo="HuggingFaceTB/SmolLM2-135M-Instruct",
    license="Apache-2.0",
    weights_gib=WEIGHTS_GIB,
    disk_gib=disk_gib_for(WEIGHTS_GIB),
    readiness_timeout_s=readiness_timeout_for(WEIGHTS_GIB),
    arch=ModelArchitecture(
        architecture="LlamaForCausalLM",
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        hidden_size=576,
        context_length=8192,
    ),
    backends={"transformers": BackendParams(dtype="bfloat16")},
    tuning=TuningSupport(
        methods=("lora", "qlora"),
        default_target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    ),
)
"""The family's one preset; more sizes would be ``SMOLLM2_135M_INSTRUCT.model_copy(update=...)``."""

PRESETS: tuple[Preset, ...] = (SMOLLM2_135M_INSTRUCT,)


@hookimpl
def register_presets(register: Callable[[Preset], None]) -> None:
    """Register this family's presets (called once by KAITO's registry)."""
    for preset in PRESETS:
        register(preset)
