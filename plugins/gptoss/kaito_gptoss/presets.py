"""The gpt-oss family as data: OpenAI's gpt-oss-20b and gpt-oss-120b (MoE, MXFP4 experts).

Facts from upstream KAITO v0.12 (``supported_models.yaml``, ``model_catalog.yaml``, generator)
and the repositories' file listings:

============= ======= ======= ================== ====== ===== ======== ====
preset        weights context layers/heads/kv/hd hidden quant KV B/tok disk
============= ======= ======= ================== ====== ===== ======== ====
gpt-oss-20b   12.82   131072  24/64/8/64 (GQA)   2880   mxfp4 49152    105
gpt-oss-120b  60.77   131072  36/64/8/64 (GQA)   2880   mxfp4 73728    201
============= ======= ======= ================== ====== ===== ======== ====

Weights: upstream's catalog records 25.63 / 121.54 GiB, which sums every ``*.safetensors``
in the repository, including ``original/`` (the same checkpoint a second time in OpenAI's
layout): exactly twice the weights a server loads. The sizes here are the loaded checkpoint
(half of upstream's sums), which is what the GPU must hold; with them upstream's own examples
fit (gpt-oss-20b on one A10, gpt-oss-120b on one A100 80 GB). Disk stays upstream's
``int(repository + 80)`` GiB, since a full download fetches ``original/`` too.

vLLM: the ``openai_gptoss`` reasoning parser and the ``openai`` tool-call parser
(by architecture, as upstream's generator). Apache-2.0, not gated; upstream downloads
gpt-oss-120b at start-up (a modelAccessSecret is optional). No tuning upstream.
"""

from __future__ import annotations

from kaito_core.presets import BackendParams, ModelArchitecture, Preset, disk_gib_for, readiness_timeout_for, vllm_params

GPT_OSS_20B = Preset(
    name="gpt-oss-20b",
    family="gpt-oss",
    description="gpt-oss 20B MoE (3.6B active), MXFP4, 128k context, reasoning",
    source_repo="openai/gpt-oss-20b",
    revision="db6852caddef0cf0c1f729034ed700c84eab376e",
    license="Apache-2.0",
    weights_gib=12.82,
    disk_gib=disk_gib_for(25.63),
    readiness_timeout_s=readiness_timeout_for(12.82),
    quantization="mxfp4",
    arch=ModelArchitecture(
        architecture="GptOssForCausalLM",
        num_hidden_layers=24,
        num_attention_heads=64,
        num_key_value_heads=8,
        head_dim=64,
        hidden_size=2880,
        context_length=131072,
    ),
    backends={"transformers": BackendParams(dtype="auto"), "vllm": vllm_params(quantized=True)},
    tool_call_parser="openai",
    reasoning_parser="openai_gptoss",
)

GPT_OSS_120B = GPT_OSS_20B.model_copy(
    update={
        "name": "gpt-oss-120b",
        "description": "gpt-oss 120B MoE (5.1B active), MXFP4, 128k context, reasoning",
        "source_repo": "openai/gpt-oss-120b",
        "revision": "b5c939de8f754692c1647ca79fbf85e8c1e70f8a",
        "weights_gib": 60.77,
        "disk_gib": disk_gib_for(121.54),
        "readiness_timeout_s": readiness_timeout_for(60.77),
        "download_at_runtime": True,
        "arch": GPT_OSS_20B.arch.model_copy(update={"num_hidden_layers": 36}),
    }
)

PRESETS: tuple[Preset, ...] = (GPT_OSS_20B, GPT_OSS_120B)
"""Every preset this plugin registers."""
