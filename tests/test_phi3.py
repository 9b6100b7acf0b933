"""The kaito-phi3 presets: accurate facts, valid data, derived by copy from one base."""

from __future__ import annotations

import pytest

from kaito_core.presets import Preset
from kaito_phi3.presets import PHI3_TARGET_MODULES, PRESETS

EXPECTED = {
    # name: (repo, revision, weights GiB, context, layers, heads, kv heads, head dim, hidden, disk, KV bytes/token)
    "phi-3-mini-4k-instruct": ("microsoft/Phi-3-mini-4k-instruct", "0a67737cc96d2554230f90338b163bc6380a2a85", 7.12, 4096, 32, 32, 32, 96, 3072, 87, 393216),
    "phi-3-mini-128k-instruct": ("microsoft/Phi-3-mini-128k-instruct", "072cb7562cb8c4adf682a8e186aaafa49469eb5d", 7.12, 131072, 32, 32, 32, 96, 3072, 87, 393216),
    "phi-3-medium-4k-instruct": ("microsoft/Phi-3-medium-4k-instruct", "b64223aaea6fbf273c0c8cd0801d5e732dce8897", 26.00, 4096, 40, 40, 10, 128, 5120, 106, 204800),
    "phi-3-medium-128k-instruct": ("microsoft/Phi-3-medium-128k-instruct", "fa7d2aa4f5ea69b2e36b20d050cdae79c9bfbb3f", 26.00, 131072, 40, 40, 10, 128, 5120, 106, 204800),
    "phi-3.5-mini-instruct": ("microsoft/Phi-3.5-mini-instruct", "3145e03a9fd4cdd7cd953c34d9bbf7ad606122ca", 7.12, 131072, 32, 32, 32, 96, 3072, 87, 393216),
    "phi-4": ("microsoft/phi-4", "187ef0342fff0eb3333be9f00389385e95ef0b61", 27.31, 16384, 40, 40, 10, 128, 5120, 107, 204800),
    "phi-4-mini-instruct": ("microsoft/Phi-4-mini-instruct", "c0fb9e74abda11b496b7907a9c6c9009a7a0488f", 7.15, 131072, 32, 24, 8, 128, 3072, 87, 131072),
}


@pytest.mark.parametrize("preset", PRESETS, ids=[p.name for p in PRESETS])
def test_facts(preset: Preset) -> None:
    repo, revision, weights, context, layers, heads, kv, hd, hidden, disk, bpt = EXPECTED[preset.name]
    arch = preset.arch
    assert (preset.source_repo, preset.revision, preset.weights_gib, preset.context_length) == (repo, revision, weights, context)
    assert (arch.num_hidden_layers, arch.num_attention_heads, arch.num_key_value_heads, arch.head_dim, arch.hidden_size) == (layers, heads, kv, hd, hidden)
    assert arch.architecture == "Phi3ForCausalLM"
    assert (preset.disk_gib, arch.kv_bytes_per_token(), preset.readiness_timeout_s) == (disk, bpt, 1800)
    assert preset.backends["transformers"].trust_remote_code is False
    assert preset.tuning is not None and preset.tuning.default_target_modules == PHI3_TARGET_MODULES
    assert preset.family == "phi3" and preset.license == "MIT"


def test_variants_are_valid_presets() -> None:
    # model_copy(update=...) does not validate; re-validating proves every variant is well-formed.
    for preset in PRESETS:
        assert Preset.model_validate(preset.model_dump()) == preset
    assert len({p.name for p in PRESETS}) == 7


def test_target_modules_are_phi3s_fused_projections() -> None:
    assert PHI3_TARGET_MODULES == ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
