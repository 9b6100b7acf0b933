"""LoRA adapters with strength on the transformers backend (random peft adapters for the tiny Phi-3)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

PROMPTS = ["What is Kubernetes?", "Hello, world!", "def main():"]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory, tiny_phi3: Path) -> dict[str, Path]:
    """Two random LoRA adapters ("kube-docs" and "style") saved by peft."""
    from kaito_servers.testing import build_random_lora

    root = tmp_path_factory.mktemp("lora-src")
    return {
        "kube-docs": build_random_lora(tiny_phi3, root / "kube-docs", seed=1),
        "style": build_random_lora(tiny_phi3, root / "style", seed=2, r=4, alpha=4, target_modules=("o_proj", "down_proj")),
    }


def _mount(tmp_path: Path, adapters: dict[str, Path], names: list[str]) -> Path:
    mount = tmp_path / "adapter"
    mount.mkdir()
    for name in names:
        shutil.copytree(adapters[name], mount / name)
    return mount


def _outputs(server: Any) -> list[str]:
    texts = []
    for prompt in PROMPTS:
        r = httpx.post(server.base_url + "/v1/completions",
                       json={"model": "tiny-phi3", "prompt": prompt, "max_tokens": 16, "temperature": 0})
        assert r.status_code == 200, r.text
        texts.append(r.json()["choices"][0]["text"])
    return texts


def test_strength_0_equals_base_and_strengths_differ(
    start_server: Any, tiny_phi3: Path, empty_dir: Path, adapters: dict[str, Path], tmp_path: Path
) -> None:
    mount = _mount(tmp_path, adapters, ["kube-docs"])
    common = dict(backend="transformers", model=str(tiny_phi3), served_model_name="tiny-phi3", threads=1)
    base = _outputs(start_server(adapters_dir=empty_dir, **common))
    outputs = {}
    for strength in (0.0, 0.5, 1.0):
        server = start_server(adapters_dir=mount, adapter_strengths={"kube-docs": strength}, **common)
        health = httpx.get(server.base_url + "/health").json()
        assert health["adapters"] == [{"name": "kube-docs", "strength": strength}]
        assert 'kaito_server_adapter_strength{adapter="kube-docs"}' in httpx.get(server.base_url + "/metrics").text
        outputs[strength] = _outputs(server)
    assert outputs[0.0] == base
    assert outputs[0.5] != base
    assert outputs[1.0] != base
    assert outputs[0.5] != outputs[1.0]


def test_strength_0_logits_equal_base_and_adapters_combine(tiny_phi3: Path, adapters: dict[str, Path]) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from kaito_servers.engine.base import AdapterInfo
    from kaito_servers.engine.transformers import apply_adapters

    ids = torch.tensor([[5, 17, 99, 240, 31]])

    def logits(adapter_list: list[AdapterInfo]) -> torch.Tensor:
        model = AutoModelForCausalLM.from_pretrained(tiny_phi3, local_files_only=True)
        model = apply_adapters(model, adapter_list)
        with torch.inference_mode():
            return model(ids).logits

    kube, style = str(adapters["kube-docs"]), str(adapters["style"])
    base = logits([])
    assert torch.equal(logits([AdapterInfo("kube-docs", kube, 0.0)]), base)
    one = logits([AdapterInfo("kube-docs", kube, 1.0)])
    half = logits([AdapterInfo("kube-docs", kube, 0.5)])
    both = logits([AdapterInfo("kube-docs", kube, 1.0), AdapterInfo("style", style, 1.0)])
    style_only = logits([AdapterInfo("style", style, 1.0)])
    assert not torch.allclose(one, base)
    assert not torch.allclose(half, base) and not torch.allclose(half, one)
    assert not torch.allclose(both, one) and not torch.allclose(both, style_only)
    assert torch.allclose(logits([AdapterInfo("kube-docs", kube, 1.0), AdapterInfo("style", style, 0.0)]), one, atol=1e-5)


def test_upstream_env_var_strength_and_env_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, adapters: dict[str, Path]) -> None:
    from kaito_servers.adapters import discover_adapters
    from kaito_servers.settings import ServerSettings

    mount = _mount(tmp_path, adapters, ["kube-docs", "style"])
    found = discover_adapters(mount, {"style": 0.25}, weight_format="peft", environ={"kube-docs": "0.5"})
    assert [(a.name, a.strength) for a in found] == [("kube-docs", 0.5), ("style", 0.25)]
    monkeypatch.setenv("KAITO_ADAPTER_STRENGTHS", '{"kube-docs": 0.75}')
    assert ServerSettings().adapter_strengths == {"kube-docs": 0.75}


def test_broken_adapters_fail_loading_with_a_clear_message(start_server: Any, tiny_phi3: Path, tmp_path: Path) -> None:
    mount = tmp_path / "adapter"
    (mount / "not-an-adapter").mkdir(parents=True)
    server = start_server(backend="transformers", model=str(tiny_phi3), adapters_dir=mount, wait_ready=False)
    for _ in range(200):
        r = httpx.get(server.base_url + "/health")
        if r.json()["status"] != "loading":
            break
        import time

        time.sleep(0.05)
    assert r.status_code == 503
    assert r.json()["status"] == "failed"
    assert "adapter_config.json" in r.json()["error"]
    r = httpx.post(server.base_url + "/chat", json={"prompt": "hi"})
    assert r.status_code == 503
    assert "failed to load" in r.json()["detail"]


def test_llamacpp_gguf_lora_strengths(start_server: Any, gemma_gguf: Path, tmp_path: Path) -> None:
    """llama.cpp applies GGUF LoRA adapters with their strength: 0 equals base, 0.5 and 1 differ."""
    from kaito_servers.testing import build_random_gguf_lora

    mount = tmp_path / "adapter"
    build_random_gguf_lora(gemma_gguf, mount / "kube-docs" / "kube-docs.gguf")
    common = dict(backend="llamacpp", model=str(gemma_gguf), served_model_name="gemma", max_batch_size=2,
                  context_length=256, threads=2)
    outputs = {}
    for strength in (0.0, 0.5, 1.0):
        server = start_server(adapters_dir=mount, adapter_strengths={"kube-docs": strength}, **common)
        assert httpx.get(server.base_url + "/health").json()["adapters"] == [{"name": "kube-docs", "strength": strength}]
        r = httpx.post(server.base_url + "/v1/completions",
                       json={"model": "gemma", "prompt": "What is Kubernetes?", "max_tokens": 16, "temperature": 0})
        outputs[strength] = r.json()["choices"][0]["text"]
        server.stop()
    base_server = start_server(adapters_dir=tmp_path / "none", **common)
    r = httpx.post(base_server.base_url + "/v1/completions",
                   json={"model": "gemma", "prompt": "What is Kubernetes?", "max_tokens": 16, "temperature": 0})
    base = r.json()["choices"][0]["text"]
    base_server.stop()
    assert outputs[0.0] == base
    assert outputs[0.5] != base and outputs[1.0] != base and outputs[0.5] != outputs[1.0]
