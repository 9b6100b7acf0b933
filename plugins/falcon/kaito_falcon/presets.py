"""The Falcon family as data: TII's Falcon 7B and 40B, base and instruct.

Upstream KAITO dropped Falcon in v0.11 (its legacy-name table no longer lists it), but
Workspaces written for v0.4–v0.10 still name these presets, so this package keeps them with
upstream's last facts (``presets/workspace/models/falcon/model.go`` before the removal, the
commits pinned in ``supported_models.yaml``) and the models' ``config.json``:

=================== ======= ======= ===================== ====== ======== ====
preset              weights context layers/heads/kv/hd    hidden KV B/tok disk
=================== ======= ======= ===================== ====== ======== ====
falcon-7b           13.44   2048    32/71/1/64 (MQA)      4544   8192     90
falcon-7b-instruct  13.44   2048    32/71/1/64 (MQA)      4544   8192     90
falcon-40b          77.90   2048    60/128/8/64 (GQA)     8192   122880   280
falcon-40b-instruct 77.90   2048    60/128/8/64 (GQA)     8192   122880   280
=================== ======= ======= ===================== ====== ======== ====

Falcon 40B's ``new_decoder_architecture`` keeps ``num_kv_heads`` = 8 key/value groups; upstream's
last preset recorded 8192 bytes per token for it (the 7B's multi-query figure), which
underestimates its KV cache 15-fold, so the real shape is used here. Apache-2.0, not gated.

The base models can be fine-tuned (as upstream's v0.4–v0.10 did, and upstream's own tuning
examples still do); LoRA attaches to the fused attention projection ``query_key_value``.
"""

from __future__ import annotations

from kaito_core.presets import BackendParams, ModelArchitecture, Preset, TuningSupport, readiness_timeout_for, vllm_params

FALCON_TARGET_MODULES: tuple[str, ...] = ("query_key_value",)
"""LoRA target module of transformers' FalconForCausalLM (fused q/k/v projection)."""

FALCON_7B = Preset(
    name="falcon-7b",
    family="falcon",
    description="Falcon 7B base, 2k context",
    source_repo="tiiuae/falcon-7b",
    revision="898df1396f35e447d5fe44e0a3ccaaaa69f30d36",
    license="Apache-2.0",
    weights_gib=13.44,
    disk_gib=90,
    readiness_timeout_s=readiness_timeout_for(13.44),
    arch=ModelArchitecture(
        architecture="FalconForCausalLM",
        num_hidden_layers=32,
        num_attention_heads=71,
        num_key_value_heads=1,
        head_dim=64,
        hidden_size=4544,
        context_length=2048,
    ),
    backends={"transformers": BackendParams(dtype="bfloat16"), "vllm": vllm_params()},
    tuning=TuningSupport(methods=("lora", "qlora"), default_target_modules=FALCON_TARGET_MODULES, disk_gib=90),
)

FALCON_7B_INSTRUCT = FALCON_7B.model_copy(
    update={
        "name": "falcon-7b-instruct",
        "description": "Falcon 7B instruct, 2k context",
        "source_repo": "tiiuae/falcon-7b-instruct",
        "revision": "cf4b3c42ce2fdfe24f753f0f0d179202fea59c99",
        "tuning": None,
    }
)

FALCON_40B = FALCON_7B.model_copy(
    update={
        "name": "falcon-40b",
        "description": "Falcon 40B base, 2k context",
        "source_repo": "tiiuae/falcon-40b",
        "revision": "4a70170c215b36a3cce4b4253f6d0612bb7d4146",
        "weights_gib": 77.9,
        "disk_gib": 280,
        "readiness_timeout_s": readiness_timeout_for(77.9),
        "arch": FALCON_7B.arch.model_copy(
            update={"num_hidden_layers": 60, "num_attention_heads": 128, "num_key_value_heads": 8, "hidden_size": 8192}
        ),
        "tuning": TuningSupport(methods=("lora", "qlora"), default_target_modules=FALCON_TARGET_MODULES, disk_gib=280),
    }
)

FALCON_40B_INSTRUCT = FALCON_40B.model_copy(
    update={
        "name": "falcon-40b-instruct",
        "description": "Falcon 40B instruct, 2k context",
        "source_repo": "tiiuae/falcon-40b-instruct",
        "revision": "ecb78d97ac356d098e79f0db222c9ce7c5d9ee5f",
        "tuning": None,
    }
)

PRESETS: tuple[Preset, ...] = (FALCON_7B, FALCON_7B_INSTRUCT, FALCON_40B, FALCON_40B_INSTRUCT)
"""Every preset this plugin registers."""
