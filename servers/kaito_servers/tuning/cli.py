"""``python -m kaito_servers tune``: the tuning runner a tuning Workspace's Job runs.

Every option also reads an environment variable (shown in ``--help``), so a Job can pass
either; a flag wins over its variable. Upstream KAITO's variable names (``YAML_FILE_PATH``,
``DATASET_FOLDER_PATH``, ``DEFAULT_TARGET_MODULES``) are honoured as fallbacks.

Exit codes: 0 done; 2 bad configuration, data or preset (the message names the field, file,
column or row and the fix); 1 training or export failed. On failure the message is also written
to ``$KAITO_TUNING_TERMINATION_LOG`` (default ``/dev/termination-log`` when it exists), which
Kubernetes shows in the pod status for the operator's failure condition.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from kaito_core.serving import CONFIG_DIR, TUNING_DATA_DIR, TUNING_OUTPUT_DIR, WEIGHTS_DIR

from kaito_servers.tuning.container import termination_log
from kaito_servers.tuning.export import GGUF_ENV

log = logging.getLogger("kaito_servers.tuning")

DEFAULT_CONFIG = f"{CONFIG_DIR}/training_config.yaml"
DEFAULT_DATA_DIR = TUNING_DATA_DIR
DEFAULT_OUTPUT_DIR = TUNING_OUTPUT_DIR
DEFAULT_MODEL_DIR = WEIGHTS_DIR

EPILOG = """\
environment (a flag wins over its variable; upstream names in parentheses are fallbacks):
  KAITO_TUNING_CONFIG (YAML_FILE_PATH)     training_config.yaml    [/mnt/config/training_config.yaml]
  KAITO_TUNING_METHOD                      lora | qlora            [from QuantizationConfig]
  KAITO_TUNING_PRESET                      preset name (checked: it must support the method)
  KAITO_TUNING_MODEL_DIR                   base model folder       [ModelConfig.pretrained_model_name_or_path, /workspace/weights]
  KAITO_TUNING_DATA_DIR (DATASET_FOLDER_PATH)  input data          [/mnt/data]
  KAITO_TUNING_DATA_URLS (DATA_URLS)       space-separated URLs downloaded into the data dir first
  KAITO_TUNING_ALLOW_HOSTS                 hosts exempt from the SSRF address rules (tests only)
  KAITO_TUNING_DATA_IMAGE                  OCI image/artifact with the data, pulled into the data dir first
  KAITO_TUNING_PULL_AUTH_<n>               .dockerconfigjson of its pull secrets (set by the operator)
  KAITO_TUNING_PUSH_IMAGE, KAITO_TUNING_PUSH_AUTH   with --check-only: the push secret must have
                                           credentials for the output image's registry, and the
                                           registry must accept them (KAITO_ADAPTER_CA_FILE: its CA)
  KAITO_TUNING_OUTPUT_DIR                  adapter + checkpoints   [TrainingArguments.output_dir, /mnt/results]
  KAITO_TUNING_METRICS_PORT / _HOST        Prometheus /metrics     [off / 0.0.0.0]
  KAITO_TUNING_METRICS_FILE                Prometheus textfile     [off]
  KAITO_TUNING_GGUF=1, KAITO_LLAMA_CPP_CONVERT_DIR   also write adapter.gguf for llama.cpp
  KAITO_TUNING_THREADS (OMP_NUM_THREADS)   torch threads           [min(CPUs usable, the cgroup CPU limit)]
  DEFAULT_TARGET_MODULES                   comma-separated LoRA targets when neither config nor preset names any

output directory when done:
  adapter_config.json, adapter_model.safetensors   (the OCI artifact's files, at its root)
  adapter.gguf                                     (with --gguf)
  fine_tuning_completed.txt                        (written last; upstream's push step waits for it)
  checkpoint-N/ while running; an interrupted run resumes from the newest complete one

examples:
  # LoRA on a local model folder with the shipped defaults and a dolly-style parquet in ./data
  python -m kaito_servers tune --method lora --model-dir ./phi3 --data-dir ./data --output-dir ./out
  # check a config and its data without training
  python -m kaito_servers tune --config training_config.yaml --data-dir ./data --check-only
"""


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``tune`` subcommand to the top-level subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "tune",
        help="fine-tune a LoRA/QLoRA adapter (the tuning Job's runner)",
        description="Fine-tune a LoRA (or QLoRA: 4-bit base) adapter with peft and transformers' Trainer from upstream "
                    "KAITO's training_config.yaml; resumable from checkpoints; progress in the log and as Prometheus "
                    "metrics; writes adapter_config.json + adapter_model.safetensors (+ a GGUF LoRA).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default=_env("KAITO_TUNING_CONFIG", "YAML_FILE_PATH"), metavar="PATH",
                   help="training_config.yaml (the ConfigMap key); when absent, the shipped default of the method")
    p.add_argument("--method", choices=["lora", "qlora"], default=_env("KAITO_TUNING_METHOD"),
                   help="tuning method; checked against QuantizationConfig (qlora needs load_in_4bit/8bit)")
    p.add_argument("--preset", default=_env("KAITO_TUNING_PRESET"), help="the Workspace's preset: must support the method; "
                   "supplies default LoRA target modules and a chat template for tokenizers without one")
    p.add_argument("--model-dir", default=_env("KAITO_TUNING_MODEL_DIR"), metavar="DIR", help="base model folder (transformers format)")
    p.add_argument("--data-dir", default=_env("KAITO_TUNING_DATA_DIR", "DATASET_FOLDER_PATH") or DEFAULT_DATA_DIR, metavar="DIR",
                   help="input data folder (parquet, jsonl, json or csv)")
    p.add_argument("--data-url", action="append", default=(_env("KAITO_TUNING_DATA_URLS", "DATA_URLS") or "").split() or None,
                   metavar="URL", help="download this file into --data-dir first (repeatable; SSRF-guarded, retried, "
                   "size-limited; hosts in KAITO_TUNING_ALLOW_HOSTS are exempt from the address rules)")
    p.add_argument("--data-image", default=_env("KAITO_TUNING_DATA_IMAGE"), metavar="REF",
                   help="pull this OCI artifact/image (files at its root, or an image's /data) into --data-dir first; "
                   "credentials from KAITO_TUNING_PULL_AUTH_<n>")
    p.add_argument("--output-dir", default=_env("KAITO_TUNING_OUTPUT_DIR"), metavar="DIR", help="where the adapter and checkpoints go")
    p.add_argument("--metrics-port", type=int, default=int(_env("KAITO_TUNING_METRICS_PORT") or -1), metavar="N",
                   help="serve Prometheus metrics on this port (0 picks a free one; -1 off)")
    p.add_argument("--metrics-host", default=_env("KAITO_TUNING_METRICS_HOST") or "0.0.0.0", metavar="ADDR")
    p.add_argument("--metrics-file", default=_env("KAITO_TUNING_METRICS_FILE"), metavar="PATH",
                   help="also write the metrics to this Prometheus textfile at every step")
    p.add_argument("--gguf", action=argparse.BooleanOptionalAction, default=_env(GGUF_ENV) in ("1", "true"),
                   help="also convert the adapter to adapter.gguf with llama.cpp's converter")
    p.add_argument("--gguf-converter-dir", default=None, metavar="DIR",
                   help="folder with convert_lora_to_gguf.py [env KAITO_LLAMA_CPP_CONVERT_DIR]")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep checkpoint-N folders after success")
    p.add_argument("--check-only", action="store_true", help="check the config, preset and data, then exit (no model is loaded)")
    p.add_argument("--log-format", choices=["json", "text"], default=_env("KAITO_LOG_FORMAT") or "json")
    p.add_argument("--log-level", default=_env("KAITO_LOG_LEVEL") or "info")
    return p


def _default_targets(preset: Any) -> list[str]:
    if preset is not None and preset.tuning is not None and preset.tuning.default_target_modules:
        return list(preset.tuning.default_target_modules)
    env = os.environ.get("DEFAULT_TARGET_MODULES")
    return [m.strip() for m in env.split(",") if m.strip()] if env else []


def run(ns: argparse.Namespace) -> int:
    """Run the ``tune`` command; returns the exit code."""
    from kaito_core.errors import KaitoError

    from kaito_servers.logs import configure_logging

    configure_logging(ns.log_level, ns.log_format)
    from kaito_servers.tuning.container import adapt_to_container

    adapt_to_container()  # threads = the CPU limit, caches off a read-only HOME, SIGTERM exits
    try:
        return _run(ns)
    except KaitoError as exc:
        log.error("tuning refused: %s", exc)
        print(f"error: {exc}", file=sys.stderr)
        termination_log(str(exc))
        return 2


def _resolve(ns: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    from kaito_servers.tuning import config as cfg
    from kaito_servers.tuning.training import RunPaths

    if ns.config:
        path = Path(ns.config)
    elif Path(DEFAULT_CONFIG).is_file():
        path = Path(DEFAULT_CONFIG)
    else:
        path = cfg.default_config_path(ns.method or "lora")
        log.info("no training config mounted: using the shipped default", extra={"config": str(path)})
    config = cfg.load_training_config(path)
    method: cfg.TuningMethod = ns.method or ("qlora" if config.QuantizationConfig.quantized else "lora")
    preset = None
    if ns.preset:
        from kaito_core.plugins import Registry

        preset = Registry.from_entry_points().preset(ns.preset)
    cfg.check(config, method, preset=preset, source=str(path))
    paths = RunPaths(
        model_dir=Path(ns.model_dir or config.ModelConfig.pretrained_model_name_or_path or DEFAULT_MODEL_DIR),
        data_dir=Path(ns.data_dir),
        output_dir=Path(ns.output_dir or config.TrainingArguments.output_dir or DEFAULT_OUTPUT_DIR),
    )
    return config, method, preset, paths


def _check_data(config: Any, paths: Any) -> int:
    from kaito_servers.tuning import data

    file = data.find_dataset(paths.data_dir, config.DatasetConfig)
    columns, rows = data.read_rows(file, config.DatasetConfig)
    fmt = data.choose_format(columns, config.DatasetConfig, config.TrainingArguments, source=str(file))
    data.row_examples(rows, fmt, source=str(file))
    return len(rows)


def _run(ns: argparse.Namespace) -> int:
    config, method, preset, paths = _resolve(ns)
    if ns.data_url:
        from kaito_servers.tuning.fetch import allowed_hosts_from_env, fetch_url

        for url in ns.data_url:
            fetch_url(url, paths.data_dir, allow_hosts=allowed_hosts_from_env())
    if ns.data_image:
        from kaito_servers.tuning.oci import pull_data_image

        pull_data_image(ns.data_image, paths.data_dir, os.environ)
    if ns.check_only:
        from kaito_servers.tuning.oci import check_push_credentials

        ca = os.environ.get("KAITO_ADAPTER_CA_FILE")
        check_push_credentials(os.environ, ca_file=Path(ca) if ca else None)
        rows = _check_data(config, paths)
        log.info("config and data are valid", extra={"method": method, "rows": rows, "data_dir": str(paths.data_dir)})
        return 0
    from kaito_servers.tuning.export import GGUF_ADAPTER_NAME, ExportError, convert_lora_to_gguf, converter_dir
    from kaito_servers.tuning.metrics import TuningMetrics
    from kaito_servers.tuning.training import COMPLETION_MARKER, train

    converter = converter_dir(ns.gguf_converter_dir) if ns.gguf else None  # fail before hours of training
    _check_data(config, paths)
    metrics = TuningMetrics(method=method, textfile=Path(ns.metrics_file) if ns.metrics_file else None)
    if ns.metrics_port >= 0:
        port = metrics.serve(ns.metrics_port, ns.metrics_host)
        log.info("metrics on http://%s:%d/metrics", ns.metrics_host, port, extra={"metrics_port": port})
    try:
        result = train(config, method, paths, metrics, default_target_modules=_default_targets(preset),
                       default_chat_template=getattr(preset, "chat_template", None), keep_checkpoints=ns.keep_checkpoints)
        if converter is not None:
            convert_lora_to_gguf(paths.output_dir, paths.model_dir, paths.output_dir / GGUF_ADAPTER_NAME, converter=converter)
        (paths.output_dir / COMPLETION_MARKER).write_text(
            f"Fine-Tuning completed: method {method}, step {result.global_step}, loss {result.train_loss}\n", encoding="utf-8")
        metrics.set_phase("done")
        log.info("tuning done", extra={"method": method, "step": result.global_step, "resumed_from": result.resumed_from,
                                       "train_loss": result.train_loss, "seconds": round(result.train_seconds, 3),
                                       "input_tokens": result.input_tokens,
                                       "cpu_seconds": round(result.cpu_seconds, 3),
                                       "output_dir": str(paths.output_dir)})
        return 0
    except Exception as exc:
        from kaito_core.errors import KaitoError

        metrics.set_phase("failed")
        if isinstance(exc, KaitoError) and not isinstance(exc, ExportError):
            raise  # bad config or data found late: exit 2 like the early checks
        log.exception("tuning failed")
        termination_log(f"tuning failed: {type(exc).__name__}: {exc}")
        return 1
    finally:
        metrics.stop()
