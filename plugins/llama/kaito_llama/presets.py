"""The Llama family as data: Llama 3.1 8B and Llama 3.3 70B instruct.

Facts from upstream KAITO v0.12 (``supported_models.yaml`` for the pinned commit and the gate,
``model_catalog.yaml`` for sizes and shapes, the generator for vLLM's parsers and template):

====================== ======= ======= ================== ====== ======== ======
preset                 weights context layers/heads/kv/hd hidden KV B/tok  disk
====================== ======= ======= ================== ====== ======== ======
llama-3.1-8b-instruct  14.96   131072  32/32/8/128 (GQA)  4096   131072   94
llama-3.3-70b-instruct 131.42  131072  80/64/8/128 (GQA)  8192   327680   211
====================== ======= ======= ================== ====== ======== ======

Both repositories are gated on Hugging Face (Meta's licence must be accepted), so a Workspace
needs ``presetOptions.modelAccessSecret`` naming a Secret with an ``HF_TOKEN`` key. The weights
are downloaded when the server starts. Upstream does not offer tuning for Llama.
"""

from __future__ import annotations

from kaito_core.presets import BackendParams, ModelArchitecture, Preset, sized, vllm_params

TRANSFORMERS = BackendParams(dtype="bfloat16")
"""Upstream's llamaRunParams: bf16; the tokenizer's own Llama 3 chat template."""
VLLM = vllm_params(chat_template_file="tool-chat-llama3.1-json.jinja")
"""Generated params: tool calls through the llama3_json parser and its JSON chat template."""

LLAMA_3_1_8B_INSTRUCT = Preset(
    name="llama-3.1-8b-instruct",
    family="llama",
    description="Llama 3.1 8B instruct, 128k context (gated: needs an HF token)",
    source_repo="meta-llama/Llama-3.1-8B-Instruct",
    revision="0e9e39f249a16976918f6564b8830bc894c89659",
    license="Llama 3.1 Community License",
    arch=ModelArchitecture(
        architecture="LlamaForCausalLM",
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        hidden_size=4096,
        context_length=131072,
    ),
    backends={"transformers": TRANSFORMERS, "vllm": VLLM},
    download_auth_required=True,
    download_at_runtime=True,
    tool_call_parser="llama3_json",
    **sized(14.96),
)

LLAMA_3_3_70B_INSTRUCT = LLAMA_3_1_8B_INSTRUCT.model_copy(
    update={
        "name": "llama-3.3-70b-instruct",
        "description": "Llama 3.3 70B instruct, 128k context (gated: needs an HF token)",
        "source_repo": "meta-llama/Llama-3.3-70B-Instruct",
        "revision": "6f6073b423013f6a7d4d9f39144961bfbfbc386b",
        "license": "Llama 3.3 Community License",
        "arch": LLAMA_3_1_8B_INSTRUCT.arch.model_copy(
            update={"num_hidden_layers": 80, "num_attention_heads": 64, "hidden_size": 8192}
        ),
        **sized(131.42),
    }
)

PRESETS: tuple[Preset, ...] = (LLAMA_3_1_8B_INSTRUCT, LLAMA_3_3_70B_INSTRUCT)
"""Every preset this plugin registers."""
