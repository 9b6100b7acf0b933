"""The tuning runner's configuration: upstream's training_config.yaml, defaults, and every refusal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kaito_servers.tuning.config import (
    TrainingConfigError,
    check,
    default_config_path,
    library_field_problems,
    load_training_config,
    parse_training_config,
)


def _parse(body: dict) -> object:
    return parse_training_config({"training_config": body}, source="test.yaml")


def _error(body: dict | str, method: str = "lora", tmp_path: Path | None = None) -> TrainingConfigError:
    with pytest.raises(TrainingConfigError) as info:
        config = _parse(body) if isinstance(body, dict) else None
        check(config, method, source="test.yaml")  # type: ignore[arg-type]
    return info.value


def test_shipped_defaults_match_upstream_and_their_methods() -> None:
    lora = load_training_config(default_config_path("lora"))
    qlora = load_training_config(default_config_path("qlora"))
    check(lora, "lora")
    check(qlora, "qlora")
    assert (lora.LoraConfig.r, lora.LoraConfig.lora_alpha, lora.LoraConfig.lora_dropout) == (8, 8, 0.0)
    assert lora.ModelConfig.torch_dtype == "bfloat16" and lora.ModelConfig.local_files_only is True
    assert not lora.QuantizationConfig.quantized
    q = qlora.QuantizationConfig
    assert (q.load_in_4bit, q.bnb_4bit_quant_type, q.bnb_4bit_compute_dtype, q.bnb_4bit_use_double_quant) == (True, "nf4", "bfloat16", True)
    for config in (lora, qlora):
        assert config.TrainingArguments.output_dir == "/mnt/results"
        assert config.TrainingArguments.trainer_arguments()["per_device_train_batch_size"] == 1
        assert config.TrainingArguments.trainer_arguments()["save_strategy"] == "steps"  # so a restarted pod resumes
        assert config.DatasetConfig.train_test_split == 1
    # The files are what a ConfigMap's training_config.yaml key holds.
    assert set(yaml.safe_load(default_config_path("qlora").read_text())) == {"training_config"}


def test_upstream_example_configmap_parses() -> None:
    """examples/fine-tuning/kaito_configmap_tuning_phi_3.yaml of upstream KAITO (its training_config.yaml key)."""
    config = _parse({
        "ModelConfig": {"torch_dtype": "bfloat16", "local_files_only": True, "device_map": "auto"},
        "QuantizationConfig": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "bfloat16",
                               "bnb_4bit_use_double_quant": True},
        "LoraConfig": {"r": 8, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        "TrainingArguments": {"output_dir": "/mnt/results", "save_strategy": "epoch", "per_device_train_batch_size": 2,
                              "ddp_find_unused_parameters": False},
        "DataCollator": {"mlm": True},
        "DatasetConfig": {"shuffle_dataset": True, "train_test_split": 1},
    })
    check(config, "qlora")  # type: ignore[arg-type]
    assert config.LoraConfig.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]  # type: ignore[attr-defined]


def test_qlora_without_quantization_is_refused_with_the_fix() -> None:
    err = _error({"QuantizationConfig": {"load_in_4bit": False}}, "qlora")
    assert err.paths == ["QuantizationConfig.load_in_4bit"]
    assert "method qlora needs a quantized base model" in str(err) and "load_in_4bit: true" in str(err)
    assert "or use method lora" in str(err)


def test_lora_with_4bit_and_both_bit_widths_are_refused() -> None:
    err = _error({"QuantizationConfig": {"load_in_4bit": True}}, "lora")
    assert err.paths == ["QuantizationConfig.load_in_4bit"] and "set load_in_4bit: false, or use method qlora" in str(err)
    err = _error({"QuantizationConfig": {"load_in_4bit": True, "load_in_8bit": True}}, "qlora")
    assert "both true" in str(err)


def test_unknown_sections_keys_and_bad_values_name_the_field_and_fix() -> None:
    err = _error({"TrainingArgs": {}, "DatasetConfig": {"messages_col": "m"},
                  "QuantizationConfig": {"load_in_4bit": "yes"}, "ModelConfig": {"torch_dtype": "float64"},
                  "LoraConfig": {"r": 0}})
    text = str(err)
    assert set(err.paths) == {"TrainingArgs", "DatasetConfig.messages_col", "QuantizationConfig.load_in_4bit",
                              "ModelConfig.torch_dtype", "LoraConfig.r"}
    assert "did you mean TrainingArguments?" in text
    assert "did you mean messages_column?" in text
    assert "write true or false" in text
    assert "use one of auto, float32, bfloat16, float16" in text
    assert "greater than 0" in text


def test_document_shape_errors(tmp_path: Path) -> None:
    with pytest.raises(TrainingConfigError, match="put every section under `training_config:`"):
        parse_training_config({"ModelConfig": {}})
    with pytest.raises(TrainingConfigError, match="start the file with `training_config:`"):
        parse_training_config(["a"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("training_config:\n  LoraConfig:\n    r: 8\n   lora_alpha: 16\n")
    with pytest.raises(TrainingConfigError, match=r"not valid YAML at line 4"):
        load_training_config(bad)
    with pytest.raises(TrainingConfigError, match="mount the ConfigMap key training_config.yaml"):
        load_training_config(tmp_path / "missing.yaml")
    assert parse_training_config({"training_config": {"LoraConfig": None}}).LoraConfig.r == 8  # empty section = defaults


def test_preset_must_support_the_method() -> None:
    from kaito_core.plugins import Registry
    from kaito_core.presets import TuningSupport

    import kaito_phi3

    preset = Registry.from_plugins(kaito_phi3).preset("phi-3-mini-4k-instruct")
    config = load_training_config(default_config_path("qlora"))
    check(config, "qlora", preset=preset)
    untunable = preset.model_copy(update={"tuning": None})
    with pytest.raises(TrainingConfigError, match="does not support fine-tuning") as info:
        check(config, "qlora", preset=untunable)
    assert info.value.paths == ["preset"] and "kaito presets" in str(info.value)
    lora_only = preset.model_copy(update={"tuning": TuningSupport(methods=("lora",))})
    with pytest.raises(TrainingConfigError, match="supports lora, not qlora"):
        check(config, "qlora", preset=lora_only)


def test_gemma_3_270m_is_tunable_with_lora_and_qlora_on_all_attention_projections(tmp_path: Path) -> None:
    import json

    from kaito_core.plugins import Registry

    import kaito_gemma3
    from kaito_servers.tuning.cli import _default_targets

    preset = Registry.from_plugins(kaito_gemma3).preset("gemma-3-270m")
    for method in ("lora", "qlora"):
        check(load_training_config(default_config_path(method)), method, preset=preset)  # type: ignore[arg-type]
    assert _default_targets(preset) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    # The runner itself, as the tuning Job starts it (installed plugins found by entry point).
    (tmp_path / "data.jsonl").write_text(json.dumps({"prompt": "What is a Pod?", "completion": "The smallest unit."}) + "\n")
    for method in ("lora", "qlora"):
        result = _tune("--preset", "gemma-3-270m", "--method", method, "--data-dir", str(tmp_path), "--check-only",
                       "--log-format", "text")
        assert result.returncode == 0, result.stderr
        assert "config and data are valid" in result.stderr + result.stdout


def test_library_keys_are_checked_against_the_library() -> None:
    problems = library_field_problems("TrainingArguments", ["learning_rat", "max_steps"], ["learning_rate", "max_steps"])
    assert [str(p) for p in problems] == [
        "TrainingArguments.learning_rat: unknown key. Fix: did you mean learning_rate? see the TrainingArguments fields of transformers"]


def _tune(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "kaito_servers", "tune", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, check=False)


def test_cli_help_and_check_only_refusals(tmp_path: Path) -> None:
    help_text = _tune("--help").stdout
    for needle in ("--method {lora,qlora}", "KAITO_TUNING_DATA_DIR", "YAML_FILE_PATH", "adapter_model.safetensors",
                   "fine_tuning_completed.txt", "--check-only"):
        assert needle in help_text
    config = tmp_path / "training_config.yaml"
    config.write_text("training_config:\n  QuantizationConfig:\n    load_in_4bit: false\n")
    term = tmp_path / "termination-log"
    result = _tune("--config", str(config), "--method", "qlora", "--data-dir", str(tmp_path), "--check-only",
                   "--log-format", "text", env={"KAITO_TUNING_TERMINATION_LOG": str(term)})
    assert result.returncode == 2, result.stderr
    assert "QuantizationConfig.load_in_4bit: method qlora needs a quantized base model" in result.stderr
    assert "QuantizationConfig.load_in_4bit" in term.read_text()


def test_config_data_and_fetch_import_no_ml_library() -> None:
    """The operator (no torch in its image) can check configs and data with these modules."""
    code = ("import sys, kaito_servers.tuning.config, kaito_servers.tuning.data, kaito_servers.tuning.fetch, "
            "kaito_servers.tuning.cli, kaito_servers.tuning.metrics\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft', 'bitsandbytes')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
