"""The DeepSeek family as data: the R1 distills (Llama 8B, Qwen 14B) and the full 671B MoE
models DeepSeek-R1-0528 and DeepSeek-V3-0324.

Facts from upstream KAITO v0.12 (``supported_models.yaml``, ``model_catalog.yaml``, generator):

============================ ======= ======= ==================== ====== ===== ======== ====
preset                       weights context layers/heads/kv/hd   hidden quant KV B/tok disk
============================ ======= ======= ==================== ====== ===== ======== ====
deepseek-r1-distill-llama-8b 14.96   131072  32/32/8/128 (GQA)    4096   -     131072   94
deepseek-r1-distill-qwen-14b 27.51   131072  48/40/8/128 (GQA)    5120   -     196608   107
deepseek-r1-0528             641.30  163840  61 layers, MLA       7168   fp8   70272    721
deepseek-v3-0324             641.30  163840  61 layers, MLA       7168   fp8   70272    721
============================ ======= ======= ==================== ====== ===== ======== ====

Multi-head latent attention caches one (kv_lora_rank 512 + qk_rope_head_dim 64) vector per
layer and token: 576 × 61 × 2 bytes = 70,272 bytes (upstream's formula). MIT licence, not
gated; the full models are downloaded when the server starts.

vLLM parameters follow upstream's generator prefixes: R1 models get the ``deepseek_r1``
reasoning parser and ``tool-chat-deepseekr1.jinja``, V3 ``deepseek_v3`` and
``tool-chat-deepseekv3.jinja``; all four the ``deepseek_v3`` tool-call parser and the
``deepseek_v32`` tokenizer mode (upstream issue #1976: special-token decoding). Transformers
runs bf16 (upstream's deepseekDistillRunParams / deepseekLargeRunParams). No tuning upstream.
"""

from __future__ import annotations

from kaito_core.presets import BackendParams, ModelArchitecture, Preset, sized, vllm_params

TRANSFORMERS = BackendParams(dtype="bfloat16")
R1_VLLM = vllm_params(tokenizer_mode="deepseek_v32", chat_template_file="tool-chat-deepseekr1.jinja")

DEEPSEEK_R1_DISTILL_LLAMA_8B = Preset(
    name="deepseek-r1-distill-llama-8b",
    family="deepseek",
    description="DeepSeek-R1 distilled into Llama 3.1 8B, 128k context, reasoning",
    source_repo="deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
    revision="6a6f4aa4197940add57724a7707d069478df56b1",
    license="MIT",
    arch=ModelArchitecture(
        architecture="LlamaForCausalLM",
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        hidden_size=4096,
        context_length=131072,
    ),
    backends={"transformers": TRANSFORMERS, "vllm": R1_VLLM},
    tool_call_parser="deepseek_v3",
    reasoning_parser="deepseek_r1",
    **sized(14.96),
)

DEEPSEEK_R1_DISTILL_QWEN_14B = DEEPSEEK_R1_DISTILL_LLAMA_8B.model_copy(
    update={
        "name": "deepseek-r1-distill-qwen-14b",
        "description": "DeepSeek-R1 distilled into Qwen2.5 14B, 128k context, reasoning",
        "source_repo": "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
        "revision": "1df8507178afcc1bef68cd8c393f61a886323761",
        "arch": ModelArchitecture(
            architecture="Qwen2ForCausalLM",
            num_hidden_layers=48,
            num_attention_heads=40,
            num_key_value_heads=8,
            head_dim=128,
            hidden_size=5120,
            context_length=131072,
        ),
        **sized(27.51),
    }
)

_MLA_ARCH = ModelArchitecture(
    architecture="DeepseekV3ForCausalLM",
    num_hidden_layers=61,
    num_attention_heads=128,
    num_key_value_heads=128,
    head_dim=192,
    hidden_size=7168,
    context_length=163840,
    kv_lora_rank=512,
    qk_rope_head_dim=64,
)
"""DeepSeek V3's attention: 128 heads of qk_nope 128 + qk_rope 64 = 192, cached as MLA."""

DEEPSEEK_R1_0528 = DEEPSEEK_R1_DISTILL_LLAMA_8B.model_copy(
    update={
        "name": "deepseek-r1-0528",
        "description": "DeepSeek-R1-0528 671B MoE, FP8, 160k context, reasoning",
        "source_repo": "deepseek-ai/DeepSeek-R1-0528",
        "revision": "4236a6af538feda4548eca9ab308586007567f52",
        "arch": _MLA_ARCH,
        "quantization": "fp8",
        "download_at_runtime": True,
        "backends": {
            "transformers": TRANSFORMERS,
            "vllm": vllm_params(quantized=True, tokenizer_mode="deepseek_v32", chat_template_file="tool-chat-deepseekr1.jinja"),
        },
        **sized(641.30),
    }
)

DEEPSEEK_V3_0324 = DEEPSEEK_R1_0528.model_copy(
    update={
        "name": "deepseek-v3-0324",
        "description": "DeepSeek-V3-0324 671B MoE, FP8, 160k context",
        "source_repo": "deepseek-ai/DeepSeek-V3-0324",
        "revision": "e9b33add76883f293d6bf61f6bd89b497e80e335",
        "reasoning_parser": "deepseek_v3",
        "backends": {
            "transformers": TRANSFORMERS,
            "vllm": vllm_params(quantized=True, tokenizer_mode="deepseek_v32", chat_template_file="tool-chat-deepseekv3.jinja"),
        },
    }
)

PRESETS: tuple[Preset, ...] = (
    DEEPSEEK_R1_DISTILL_LLAMA_8B,
    DEEPSEEK_R1_DISTILL_QWEN_14B,
    DEEPSEEK_R1_0528,
    DEEPSEEK_V3_0324,
)
"""Every preset this plugin registers."""
