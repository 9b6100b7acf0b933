"""The Mistral family as data: Mistral 7B v0.3 (base, instruct), Ministral 3 (3B/8B/14B
instruct, December 2025) and Mistral Large 3 (675B instruct).

Facts from upstream KAITO v0.12 (``supported_models.yaml``, ``model_catalog.yaml``, generator):

============================== ======= ======= ===================== ====== ===== ======
preset                         weights context layers/heads/kv/hd     hidden quant disk
============================== ======= ======= ===================== ====== ===== ======
mistral-7b                     13.50   32768   32/32/8/128 (GQA)     4096   -     93
mistral-7b-instruct            13.50   32768   32/32/8/128 (GQA)     4096   -     93
ministral-3-3b-instruct        4.35    262144  26/32/8/128 (GQA)     3072   fp8   84
ministral-3-8b-instruct        9.70    262144  34/32/8/128 (GQA)     4096   fp8   89
ministral-3-14b-instruct       14.65   262144  40/32/8/128 (GQA)     5120   fp8   94
mistral-large-3-675b-instruct  634.70  294912  61 layers, MLA 512+64 7168   fp8*  714
============================== ======= ======= ===================== ====== ===== ======

(*) compressed-tensors ``float-quantized`` (FP8), as upstream's catalog records it.

Sizes count only the Mistral-format ``consolidated*.safetensors`` files (the repositories also
hold the same weights in Hugging Face format), and vLLM loads them with ``load_format``,
``config_format`` and ``tokenizer_mode`` ``mistral``. Tool calls use vLLM's ``mistral``
parser where upstream's generator sets it (by the ``mistral`` name prefix: not for Ministral);
none of these gets a reasoning parser (upstream lists them as non-reasoning).

Runtimes: upstream serves Mistral 7B and Mistral Large 3 with transformers too (bf16, its
``mistral-instruct.jinja`` template); the Ministral 3 models need transformers 5 and are
vLLM-only upstream, and are vLLM-only here as well. Upstream fine-tunes only ``mistral-7b``.
"""

from __future__ import annotations

from kaito_core.presets import BackendParams, ModelArchitecture, Preset, TuningSupport, sized, vllm_params

LLAMA_STYLE_TARGET_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""LoRA target modules of transformers' MistralForCausalLM (separate projections)."""

TRANSFORMERS = BackendParams(dtype="bfloat16")
"""Upstream's mistralRunParams: bf16."""
VLLM = vllm_params(mistral_format=True)
"""Mistral-format weights, config and tokenizer."""

MISTRAL_7B = Preset(
    name="mistral-7b",
    family="mistral",
    description="Mistral 7B v0.3 base, 32k context",
    source_repo="mistralai/Mistral-7B-v0.3",
    revision="d8cadc02ac76bd617a919d50b092e59d2d110aff",
    license="Apache-2.0",
    arch=ModelArchitecture(
        architecture="MistralForCausalLM",
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        hidden_size=4096,
        context_length=32768,
    ),
    backends={"transformers": TRANSFORMERS, "vllm": VLLM},
    tool_call_parser="mistral",
    tuning=TuningSupport(methods=("lora", "qlora"), default_target_modules=LLAMA_STYLE_TARGET_MODULES, disk_gib=90),
    **sized(13.50),
)

MISTRAL_7B_INSTRUCT = MISTRAL_7B.model_copy(
    update={
        "name": "mistral-7b-instruct",
        "description": "Mistral 7B v0.3 instruct, 32k context",
        "source_repo": "mistralai/Mistral-7B-Instruct-v0.3",
        "revision": "e0bc86c23ce5aae1db576c8cca6f06f1f73af2db",
        "tuning": None,
    }
)

_MINISTRAL_ARCH = ModelArchitecture(
    architecture="Mistral3ForConditionalGeneration",
    num_hidden_layers=26,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    hidden_size=3072,
    context_length=262144,
)

MINISTRAL_3_3B_INSTRUCT = MISTRAL_7B.model_copy(
    update={
        "name": "ministral-3-3b-instruct",
        "description": "Ministral 3 3B instruct (2512), FP8, 256k context; vLLM only",
        "source_repo": "mistralai/Ministral-3-3B-Instruct-2512",
        "revision": "83e15808ff6a115f18ff8e68123db3ab35035714",
        "arch": _MINISTRAL_ARCH,
        "backends": {"vllm": vllm_params(mistral_format=True, quantized=True)},
        "quantization": "fp8",
        "download_at_runtime": True,
        "tool_call_parser": None,
        "tuning": None,
        **sized(4.35),
    }
)

MINISTRAL_3_8B_INSTRUCT = MINISTRAL_3_3B_INSTRUCT.model_copy(
    update={
        "name": "ministral-3-8b-instruct",
        "description": "Ministral 3 8B instruct (2512), FP8, 256k context; vLLM only",
        "source_repo": "mistralai/Ministral-3-8B-Instruct-2512",
        "revision": "df904c183734f8760042c708d3629a4ed68b103a",
        "arch": _MINISTRAL_ARCH.model_copy(update={"num_hidden_layers": 34, "hidden_size": 4096}),
        **sized(9.70),
    }
)

MINISTRAL_3_14B_INSTRUCT = MINISTRAL_3_3B_INSTRUCT.model_copy(
    update={
        "name": "ministral-3-14b-instruct",
        "description": "Ministral 3 14B instruct (2512), FP8, 256k context; vLLM only",
        "source_repo": "mistralai/Ministral-3-14B-Instruct-2512",
        "revision": "6aa4534f7bb46d16753bd12a08b32810a06b7a14",
        "arch": _MINISTRAL_ARCH.model_copy(update={"num_hidden_layers": 40, "hidden_size": 5120}),
        **sized(14.65),
    }
)

MISTRAL_LARGE_3_675B_INSTRUCT = MISTRAL_7B.model_copy(
    update={
        "name": "mistral-large-3-675b-instruct",
        "description": "Mistral Large 3 675B MoE instruct (2512), FP8, MLA attention",
        "source_repo": "mistralai/Mistral-Large-3-675B-Instruct-2512",
        "revision": "7f13ed24ab52a2a1c35bb26a749ef9d891ee98dd",
        "arch": ModelArchitecture(
            architecture="MistralLarge3ForCausalLM",
            num_hidden_layers=61,
            num_attention_heads=128,
            num_key_value_heads=128,
            head_dim=192,
            hidden_size=7168,
            context_length=294912,
            kv_lora_rank=512,
            qk_rope_head_dim=64,
        ),
        "backends": {"transformers": TRANSFORMERS, "vllm": vllm_params(mistral_format=True, quantized=True)},
        "quantization": "float-quantized",
        "download_at_runtime": True,
        "tuning": None,
        **sized(634.70),
    }
)

PRESETS: tuple[Preset, ...] = (
    MISTRAL_7B,
    MISTRAL_7B_INSTRUCT,
    MINISTRAL_3_3B_INSTRUCT,
    MINISTRAL_3_8B_INSTRUCT,
    MINISTRAL_3_14B_INSTRUCT,
    MISTRAL_LARGE_3_675B_INSTRUCT,
)
"""Every preset this plugin registers."""
