"""The tuning runner end to end on a tiny Phi-3 built here and a dolly-shaped parquet made here.

The runner runs as a Job would run it: ``python -m kaito_servers tune`` in a subprocess, with its
JSON log on stderr. Then the adapter is served by the transformers backend at strength 0 and 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from kaito_servers.tuning.sample_data import QA, SYSTEM, dolly_rows, write_parquet

ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _config(tmp: Path, *, steps: int, save_steps: int = 50, quant: str = "", lr: float = 0.02) -> Path:
    path = tmp / "training_config.yaml"
    path.write_text(f"""training_config:
  ModelConfig: {{torch_dtype: bfloat16}}
  QuantizationConfig: {quant or '{load_in_4bit: false}'}
  LoraConfig: {{r: 8, lora_alpha: 16, lora_dropout: 0.0}}
  TrainingArguments:
    max_steps: {steps}
    learning_rate: {lr}
    lr_scheduler_type: constant
    per_device_train_batch_size: 4
    save_strategy: steps
    save_steps: {save_steps}
    seed: 0
  DatasetConfig: {{train_test_split: 1}}
""")
    return path


def _command(config: Path, model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "kaito_servers", "tune", "--config", str(config), "--model-dir", str(model),
            "--data-dir", str(data), "--output-dir", str(out), "--log-format", "json", *extra]


def _converter_env() -> dict[str, str]:
    """Where llama.cpp's converter is: set by make (mk/servers.mk), else the cached copy."""
    if os.environ.get("KAITO_LLAMA_CPP_CONVERT_DIR"):
        return {}
    found = sorted(Path.home().glob(".cache/kaito/llama.cpp-convert/*/convert_lora_to_gguf.py"))
    if not found:
        pytest.fail("llama.cpp's convert_lora_to_gguf.py is not set up: run `make servers-lora-converter`")
    return {"KAITO_LLAMA_CPP_CONVERT_DIR": str(found[-1].parent)}


def _run(cmd: list[str]) -> tuple[int, list[dict[str, Any]], str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **ENV, **_converter_env()},
                          check=False)
    return proc.returncode, _records(proc.stderr), proc.stderr


def _records(stderr: str) -> list[dict[str, Any]]:
    out = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def _done(records: list[dict[str, Any]]) -> dict[str, Any]:
    found = [r for r in records if r["message"] == "tuning done"]
    assert found, records[-5:]
    return found[-1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tuning-data")
    write_parquet(dolly_rows(64), root / "dolly-15k-oai-style.parquet")
    return root


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory, tiny_phi3: Path, data_dir: Path) -> tuple[Path, list[dict[str, Any]], Path]:
    """One LoRA run of 12 steps with a metrics textfile and the GGUF export."""
    tmp = tmp_path_factory.mktemp("lora-run")
    out, metrics = tmp / "out", tmp / "metrics.prom"
    code, records, stderr = _run(_command(_config(tmp, steps=12, save_steps=5), tiny_phi3, data_dir, out,
                                          "--metrics-file", str(metrics), "--gguf"))
    assert code == 0, stderr[-3000:]
    return out, records, metrics


def test_lora_run_writes_the_adapter_progress_and_metrics(lora_run: tuple[Path, list[dict[str, Any]], Path]) -> None:
    out, records, metrics = lora_run
    assert {"adapter_config.json", "adapter_model.safetensors", "adapter.gguf", "fine_tuning_completed.txt"} <= {
        p.name for p in out.iterdir()}
    assert not list(out.glob("checkpoint-*"))  # removed after success
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 8 and config["lora_alpha"] == 16
    progress = [r for r in records if "tokens_per_s" in r]
    assert [r["step"] for r in progress] == list(range(1, 13))
    assert all(r["loss"] > 0 and r["max_steps"] == 12 for r in progress)
    assert all(r["tokens_per_s"] > 0 and r["eta_s"] is not None for r in progress[1:])
    assert progress[-1]["loss"] < progress[0]["loss"]
    assert [r["step"] for r in records if r["message"] == "checkpoint saved"] == [5, 10, 12]
    done = _done(records)
    assert done["step"] == 12 and done["resumed_from"] == 0
    # Phi-3 is not in peft's target table and no preset was named: every linear layer but the head.
    assert next(r for r in records if r["message"] == "LoRA attached")["targets_from"] == "all linear layers"
    text = metrics.read_text()
    for line in ("kaito_tuning_step 12.0", "kaito_tuning_max_steps 12.0", 'kaito_tuning_phase{phase="done"} 1.0',
                 'kaito_tuning_info{method="lora"} 1.0', "kaito_tuning_checkpoints_total 3.0"):
        assert line in text
    assert "kaito_tuning_tokens_per_second" in text and "kaito_tuning_loss" in text


def test_gguf_lora_is_llama_cpp_lora_format(lora_run: tuple[Path, list[dict[str, Any]], Path]) -> None:
    import gguf

    reader = gguf.GGUFReader(str(lora_run[0] / "adapter.gguf"))

    def field(name: str) -> Any:
        f = reader.get_field(name)
        assert f is not None, name
        return f.contents()

    assert field("general.architecture") == "phi3"
    assert field("general.type") == "adapter" and field("adapter.type") == "lora"
    assert field("adapter.lora.alpha") == 16
    names = {t.name for t in reader.tensors}
    assert {"blk.0.attn_qkv.weight.lora_a", "blk.0.attn_qkv.weight.lora_b", "blk.1.ffn_down.weight.lora_b"} <= names


def _chat(server: Any, question: str) -> str:
    r = httpx.post(server.base_url + "/v1/chat/completions", timeout=60, json={
        "model": "tiny-phi3", "max_tokens": 12, "temperature": 0,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]})
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["message"]["content"])


def test_trained_adapter_changes_the_answer_between_strength_0_and_1(
    lora_run: tuple[Path, list[dict[str, Any]], Path], start_server: Any, tiny_phi3: Path, empty_dir: Path, tmp_path: Path,
) -> None:
    import shutil

    mount = tmp_path / "adapter"
    shutil.copytree(lora_run[0], mount / "kube-qa", ignore=shutil.ignore_patterns("*.gguf", "*.txt"))
    common = dict(backend="transformers", model=str(tiny_phi3), served_model_name="tiny-phi3", threads=1)
    questions = [q for q, _ in QA[:3]]
    base_server = start_server(adapters_dir=empty_dir, **common)
    base = [_chat(base_server, q) for q in questions]
    base_server.stop()
    answers = {}
    for strength in (0.0, 1.0):
        server = start_server(adapters_dir=mount, adapter_strengths={"kube-qa": strength}, **common)
        answers[strength] = [_chat(server, q) for q in questions]
        server.stop()
    assert answers[0.0] == base
    assert answers[1.0] != base


def test_qlora_trains_4bit_layers_on_cpu(tmp_path: Path, tiny_phi3: Path, data_dir: Path) -> None:
    quant = "{load_in_4bit: true, bnb_4bit_quant_type: nf4, bnb_4bit_compute_dtype: bfloat16, bnb_4bit_use_double_quant: true}"
    code, records, stderr = _run(_command(_config(tmp_path, steps=3, quant=quant), tiny_phi3, data_dir, tmp_path / "out",
                                          "--method", "qlora", "--preset", "phi-3-mini-4k-instruct",
                                          "--metrics-port", "0", "--metrics-host", "127.0.0.1"))
    assert code == 0, stderr[-3000:]
    loaded = next(r for r in records if r["message"] == "base model loaded")
    assert loaded["method"] == "qlora" and loaded["quantized_layers"] > 0  # bitsandbytes Linear4bit layers
    attached = next(r for r in records if r["message"] == "LoRA attached")
    assert attached["targets_from"] == "preset / DEFAULT_TARGET_MODULES"
    assert attached["target_modules"] == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    assert any(r.get("metrics_port", 0) > 0 for r in records)
    assert _done(records)["step"] == 3
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path: Path, tiny_phi3: Path, data_dir: Path) -> None:
    out = tmp_path / "out"
    cmd = _command(_config(tmp_path, steps=12, save_steps=2), tiny_phi3, data_dir, out, "--keep-checkpoints")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV})
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob("checkpoint-*/trainer_state.json")):
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # a node failure: no chance to clean up
    finally:
        proc.wait(timeout=30)
        first_log = proc.stderr.read() if proc.stderr else ""
    assert not (out / "fine_tuning_completed.txt").exists(), first_log[-2000:]
    code, records, stderr = _run(cmd)
    assert code == 0, stderr[-3000:]
    resumed = next(r for r in records if r["message"].startswith("resuming from checkpoint-"))
    step = int(resumed["message"].split("checkpoint-")[1].split()[0])
    assert step >= 2
    progress = [r["step"] for r in records if "tokens_per_s" in r]
    assert progress == list(range(step + 1, 13))  # continues after the checkpoint, does not start over
    done = _done(records)
    assert done["step"] == 12 and done["resumed_from"] == step
    state = json.loads((out / "checkpoint-12" / "trainer_state.json").read_text())
    assert state["global_step"] == 12


def test_runner_refuses_bad_data_before_loading_the_model(tmp_path: Path, tiny_phi3: Path) -> None:
    data = tmp_path / "data"
    write_parquet([{"conversation": "x"}], data / "d.parquet")
    code, records, stderr = _run(_command(_config(tmp_path, steps=2), tiny_phi3, data, tmp_path / "out"))
    assert code == 2
    assert "no usable columns: expected 'messages'" in stderr and "d.parquet" in stderr
    assert not any(r["message"] == "base model loaded" for r in records)
    assert not (tmp_path / "out").exists()


def test_metrics_endpoint_and_progress_math() -> None:
    from kaito_servers.tuning.metrics import Progress, TuningMetrics

    now = [100.0]
    progress = Progress(max_steps=10, clock=lambda: now[0])
    progress.started_at(2, 500)  # resumed at step 2
    now[0] = 104.0
    snap = progress.update(6, 1300, loss=1.5)
    assert (snap.steps_per_s, snap.tokens_per_s, snap.eta_s) == (1.0, 200.0, 4.0)
    assert snap.line() == "step 6/10 loss 1.5000 200 tokens/s 1.00 steps/s ETA 4s"
    metrics = TuningMetrics(method="qlora")
    port = metrics.serve(0, "127.0.0.1")
    try:
        metrics.record(snap)
        body = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        metrics.stop()
    assert "kaito_tuning_step 6.0" in body and "kaito_tuning_eta_seconds 4.0" in body
    assert 'kaito_tuning_info{method="qlora"} 1.0' in body
