"""The Qwen family as data: Qwen2.5-Coder 7B and 32B instruct.

Facts from upstream KAITO v0.12 (``supported_models.yaml``, ``model_catalog.yaml``, generator,
``transformer_runtime_tuning_parameters.go``):

========================== ======= ======= ================== ====== ======== ==== ===========
preset                     weights context layers/heads/kv/hd hidden KV B/tok  disk tuning disk
========================== ======= ======= ================== ====== ======== ==== ===========
qwen2.5-coder-7b-instruct  14.19   32768   28/28/4/128 (GQA)  3584   57344    94   110
qwen2.5-coder-32b-instruct 61.03   32768   64/40/8/128 (GQA)  5120   262144   141  230
========================== ======= ======= ================== ====== ======== ==== ===========

Apache-2.0, not gated. vLLM gets the ``hermes`` tool-call parser and upstream's
``tool-chat-hermes.jinja`` template (generator prefix ``qwen2.5``); transformers runs bf16 with
the tokenizer's own template. Both can be fine-tuned (LoRA/QLoRA on the separate q/k/v/o and
MLP projections of transformers' Qwen2 implementation).
"""

from __future__ import annotations

from kaito_core.presets import BackendParams, ModelArchitecture, Preset, TuningSupport, sized, vllm_params

QWEN2_TARGET_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""LoRA target modules of transformers' Qwen2ForCausalLM."""

QWEN2_5_CODER_7B_INSTRUCT = Preset(
    name="qwen2.5-coder-7b-instruct",
    family="qwen",
    description="Qwen2.5-Coder 7B instruct, 32k context",
    source_repo="Qwen/Qwen2.5-Coder-7B-Instruct",
    revision="c03e6d358207e414f1eca0bb1891e29f1db0e242",
    license="Apache-2.0",
    arch=ModelArchitecture(
        architecture="Qwen2ForCausalLM",
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        head_dim=128,
        hidden_size=3584,
        context_length=32768,
    ),
    backends={
        "transformers": BackendParams(dtype="bfloat16"),
        "vllm": vllm_params(chat_template_file="tool-chat-hermes.jinja"),
    },
    tool_call_parser="hermes",
    tuning=TuningSupport(methods=("lora", "qlora"), default_target_modules=QWEN2_TARGET_MODULES, disk_gib=110),
    **sized(14.19),
)

QWEN2_5_CODER_32B_INSTRUCT = QWEN2_5_CODER_7B_INSTRUCT.model_copy(
    update={
        "name": "qwen2.5-coder-32b-instruct",
        "description": "Qwen2.5-Coder 32B instruct, 32k context",
        "source_repo": "Qwen/Qwen2.5-Coder-32B-Instruct",
        "revision": "381fc969f78efac66bc87ff7ddeadb7e73c218a7",
        "arch": QWEN2_5_CODER_7B_INSTRUCT.arch.model_copy(
            update={"num_hidden_layers": 64, "num_attention_heads": 40, "num_key_value_heads": 8, "hidden_size": 5120}
        ),
        "tuning": TuningSupport(methods=("lora", "qlora"), default_target_modules=QWEN2_TARGET_MODULES, disk_gib=230),
        **sized(61.03),
    }
)

PRESETS: tuple[Preset, ...] = (QWEN2_5_CODER_7B_INSTRUCT, QWEN2_5_CODER_32B_INSTRUCT)
"""Every preset this plugin registers."""
