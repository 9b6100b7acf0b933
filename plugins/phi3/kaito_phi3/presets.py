"""The Phi family as data: one base preset per size, variants by ``model_copy(update=...)``.

Facts come from upstream KAITO v0.12 (``model_catalog.yaml`` and ``supported_models.yaml``)
and the models' ``config.json`` on Hugging Face:

=========================== ======= ======= =================== ====== =====
preset                      weights context layers/heads/kv/hd  hidden disk
=========================== ======= ======= =================== ====== =====
phi-3-mini-4k-instruct      7.12    4096    32/32/32/96 (MHA)   3072   87
phi-3-mini-128k-instruct    7.12    131072  32/32/32/96         3072   87
phi-3-medium-4k-instruct    26.00   4096    40/40/10/128 (GQA)  5120   106
phi-3-medium-128k-instruct  26.00   131072  40/40/10/128        5120   106
phi-3.5-mini-instruct       7.12    131072  32/32/32/96         3072   87
phi-4                       27.31   16384   40/40/10/128        5120   107
phi-4-mini-instruct         7.15    131072  32/24/8/128         3072   87
=========================== ======= ======= =================== ====== =====

Every model is ``Phi3ForCausalLM``, which transformers supports natively (no
``trust_remote_code``): Phi-3 since transformers 4.40, Phi-4-mini's partial rotary embedding
since 4.49 (upstream KAITO's older base image could not serve Phi-4-mini with transformers;
ours can, given transformers >= 4.49).

LoRA target modules: transformers' Phi-3 implementation fuses the attention projections into
``qkv_proj`` and the MLP's gate and up projections into ``gate_up_proj``, so the modules LoRA
can attach to are ``qkv_proj``, ``o_proj``, ``gate_up_proj`` and ``down_proj``. (Upstream KAITO
passes the Llama-style names ``q_proj,k_proj,v_proj,gate_proj,up_proj``, which match nothing
but ``o_proj``/``down_proj`` in a Phi-3 model.)
"""

from __future__ import annotations

from kaito_core.presets import (
    BackendParams,
    ModelArchitecture,
    Preset,
    TuningSupport,
    disk_gib_for,
    readiness_timeout_for,
)

PHI3_TARGET_MODULES: tuple[str, ...] = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
"""LoRA target modules of transformers' Phi3ForCausalLM (fused qkv and gate/up projections)."""

TRANSFORMERS = BackendParams(dtype="auto", trust_remote_code=False)
"""How the transformers backend runs every Phi model: native Phi3 code, the checkpoint's dtype."""

_MINI_ARCH = ModelArchitecture(
    architecture="Phi3ForCausalLM",
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    head_dim=96,
    hidden_size=3072,
    context_length=4096,
)
_MEDIUM_ARCH = ModelArchitecture(
    architecture="Phi3ForCausalLM",
    num_hidden_layers=40,
    num_attention_heads=40,
    num_key_value_heads=10,
    head_dim=128,
    hidden_size=5120,
    context_length=4096,
)


def _sized(weights_gib: float) -> dict[str, object]:
    """The fields that follow from the weight size (upstream's generator rules)."""
    return {
        "weights_gib": weights_gib,
        "disk_gib": disk_gib_for(weights_gib),
        "readiness_timeout_s": readiness_timeout_for(weights_gib),
    }


PHI_3_MINI_4K = Preset(
    name="phi-3-mini-4k-instruct",
    family="phi3",
    description="Phi-3 mini (3.8B) instruct, 4k context",
    source_repo="microsoft/Phi-3-mini-4k-instruct",
    revision="0a67737cc96d2554230f90338b163bc6380a2a85",
    license="MIT",
    weights_gib=7.12,
    disk_gib=disk_gib_for(7.12),
    readiness_timeout_s=readiness_timeout_for(7.12),
    arch=_MINI_ARCH,
    backends={"transformers": TRANSFORMERS},
    tuning=TuningSupport(methods=("lora", "qlora"), default_target_modules=PHI3_TARGET_MODULES, disk_gib=80),
)

PHI_3_MINI_128K = PHI_3_MINI_4K.model_copy(
    update={
        "name": "phi-3-mini-128k-instruct",
        "description": "Phi-3 mini (3.8B) instruct, 128k context",
        "source_repo": "microsoft/Phi-3-mini-128k-instruct",
        "revision": "072cb7562cb8c4adf682a8e186aaafa49469eb5d",
        "arch": _MINI_ARCH.model_copy(update={"context_length": 131072}),
    }
)

PHI_3_MEDIUM_4K = PHI_3_MINI_4K.model_copy(
    update={
        "name": "phi-3-medium-4k-instruct",
        "description": "Phi-3 medium (14B) instruct, 4k context",
        "source_repo": "microsoft/Phi-3-medium-4k-instruct",
        "revision": "b64223aaea6fbf273c0c8cd0801d5e732dce8897",
        "arch": _MEDIUM_ARCH,
        "tuning": TuningSupport(methods=("lora", "qlora"), default_target_modules=PHI3_TARGET_MODULES, disk_gib=120),
        **_sized(26.00),
    }
)

PHI_3_MEDIUM_128K = PHI_3_MEDIUM_4K.model_copy(
    update={
        "name": "phi-3-medium-128k-instruct",
        "description": "Phi-3 medium (14B) instruct, 128k context",
        "source_repo": "microsoft/Phi-3-medium-128k-instruct",
        "revision": "fa7d2aa4f5ea69b2e36b20d050cdae79c9bfbb3f",
        "arch": _MEDIUM_ARCH.model_copy(update={"context_length": 131072}),
    }
)

PHI_3_5_MINI = PHI_3_MINI_128K.model_copy(
    update={
        "name": "phi-3.5-mini-instruct",
        "description": "Phi-3.5 mini (3.8B) instruct, 128k context",
        "source_repo": "microsoft/Phi-3.5-mini-instruct",
        "revision": "3145e03a9fd4cdd7cd953c34d9bbf7ad606122ca",
        "tuning": TuningSupport(methods=("lora", "qlora"), default_target_modules=PHI3_TARGET_MODULES, disk_gib=70),
    }
)

PHI_4 = PHI_3_MEDIUM_4K.model_copy(
    update={
        "name": "phi-4",
        "description": "Phi-4 (14B), 16k context",
        "source_repo": "microsoft/phi-4",
        "revision": "187ef0342fff0eb3333be9f00389385e95ef0b61",
        "arch": _MEDIUM_ARCH.model_copy(update={"context_length": 16384}),
        "tuning": TuningSupport(methods=("lora", "qlora"), default_target_modules=PHI3_TARGET_MODULES, disk_gib=150),
        **_sized(27.31),
    }
)

PHI_4_MINI = PHI_3_MINI_4K.model_copy(
    update={
        "name": "phi-4-mini-instruct",
        "description": "Phi-4 mini (3.8B) instruct, 128k context; transformers >= 4.49",
        "source_repo": "microsoft/Phi-4-mini-instruct",
        "revision": "c0fb9e74abda11b496b7907a9c6c9009a7a0488f",
        "arch": ModelArchitecture(
            architecture="Phi3ForCausalLM",
            num_hidden_layers=32,
            num_attention_heads=24,
            num_key_value_heads=8,
            head_dim=128,
            hidden_size=3072,
            context_length=131072,
        ),
        "tuning": TuningSupport(methods=("lora", "qlora"), default_target_modules=PHI3_TARGET_MODULES, disk_gib=70),
        **_sized(7.15),
    }
)

PRESETS: tuple[Preset, ...] = (
    PHI_3_MINI_4K,
    PHI_3_MINI_128K,
    PHI_3_MEDIUM_4K,
    PHI_3_MEDIUM_128K,
    PHI_3_5_MINI,
    PHI_4,
    PHI_4_MINI,
)
"""Every preset this plugin registers."""
