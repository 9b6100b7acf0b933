"""The gemma-3-270m preset: registered through its entry point, CPU-servable, with a chat template."""

from __future__ import annotations

from kaito_core.plugins import Registry
from kaito_gemma3 import GEMMA3_CHAT_TEMPLATE, GEMMA_3_270M


def test_registered_through_the_entry_point() -> None:
    registry = Registry.from_entry_points()
    assert registry.preset("gemma-3-270m") == GEMMA_3_270M
    assert registry.source("preset", "gemma-3-270m").distribution == "kaito-gemma3"


def test_cpu_gguf_preset_facts() -> None:
    p = GEMMA_3_270M
    assert p.requires_gpu is False
    assert p.weight_format == "gguf"
    assert p.default_backend == "llamacpp"
    assert p.backends["llamacpp"].model_file == "gemma-3-270m-q4_k_m.gguf"
    assert 0.23 < p.weights_gib < 0.24
    assert p.arch.attention_type == "MQA"
    assert p.arch.kv_bytes_per_token() == 2 * 1 * 256 * 18 * 2


def test_chat_template_renders_gemma_turns() -> None:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment()
    env.globals["raise_exception"] = lambda m: (_ for _ in ()).throw(ValueError(m))
    text = env.from_string(GEMMA3_CHAT_TEMPLATE).render(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        bos_token="<bos>", add_generation_prompt=True,
    )
    assert text == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
