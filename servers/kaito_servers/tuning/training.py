"""Training: the base model (+ bitsandbytes 4/8-bit for QLoRA), a peft LoRA, transformers' Trainer.

Why transformers' ``Trainer`` and not TRL's ``SFTTrainer`` (which upstream uses): the runner does
its own data preparation (:mod:`.data`, so every bad row is reported by file, column and row),
which leaves SFTTrainer nothing to add but its defaults, and those (``bf16``,
``gradient_checkpointing``) make CPU training ~16x slower here (shared/reference/ml-stack.md
6b). Trainer is also exactly what the "plain transformers + peft" baseline of bench/tuning runs,
so the benchmark compares like with like. Checkpoints, resume, optimizer and LR schedule are
Trainer's.

Heavy imports (torch, transformers, peft) happen inside the functions.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaito_core.errors import FieldError

from kaito_servers.tuning import data as data_mod
from kaito_servers.tuning.config import (
    TrainingConfig,
    TrainingConfigError,
    TuningMethod,
    library_field_problems,
)
from kaito_servers.tuning.metrics import Progress, TuningMetrics

log = logging.getLogger(__name__)

COMPLETION_MARKER = "fine_tuning_completed.txt"
"""Written last into the output directory (upstream's name; its push sidecar waits for it)."""
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
"""The adapter files an artifact carries (at its root, as upstream's)."""


@dataclass(frozen=True)
class RunPaths:
    """Where the runner reads and writes (see servers/README.md, "Tuning runner contract")."""

    model_dir: Path
    data_dir: Path
    output_dir: Path


@dataclass(frozen=True)
class TrainingResult:
    """What a finished run produced."""

    adapter_dir: Path
    global_step: int
    resumed_from: int
    train_loss: float | None
    examples: int
    train_seconds: float
    input_tokens: int
    """Input tokens trained on by this process (padding excluded)."""
    cpu_seconds: float
    """CPU time of all threads of this process inside ``trainer.train()``."""


def torch_dtype(name: str | None, *, cuda: bool) -> Any:
    """The torch dtype for a config value; half precision becomes float32 without CUDA.

    AVX2 CPUs have no bf16/fp16 math: bf16 training measured ~16x slower here than float32.
    """
    import torch

    if name in (None, "auto"):
        return "auto" if cuda else torch.float32
    if not cuda and name in ("bfloat16", "float16"):
        log.warning("no CUDA device: training %s weights as float32 (this CPU has no fast half-precision math)", name)
        return torch.float32
    return getattr(torch, name)


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` that was saved completely (a pod killed mid-save leaves a partial one)."""
    found = []
    for path in output_dir.glob("checkpoint-*"):
        suffix = path.name.removeprefix("checkpoint-")
        if suffix.isdigit() and _checkpoint_complete(path, int(suffix)):
            found.append((int(suffix), path))
        elif suffix.isdigit():
            log.warning("ignoring incomplete checkpoint %s", path.name, extra={"checkpoint": str(path)})
    return max(found)[1] if found else None


def _checkpoint_tokens(path: Path) -> int:
    import json

    return int(json.loads((path / "trainer_state.json").read_text(encoding="utf-8")).get("num_input_tokens_seen") or 0)


def _checkpoint_complete(path: Path, step: int) -> bool:
    """Trainer writes trainer_state.json last; it must parse and name the same step."""
    import json

    if not all((path / name).is_file() for name in ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt")):
        return False
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("global_step") == step


def _field_names(cls: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def build_lora_config(config: TrainingConfig, default_target_modules: Sequence[str]) -> Any:
    """``peft.LoraConfig`` from the LoraConfig section (extra keys checked against peft's fields)."""
    from peft import LoraConfig

    section = config.LoraConfig
    extras = section.extras()
    problems = library_field_problems("LoraConfig", extras, _field_names(LoraConfig))
    if problems:
        raise TrainingConfigError(problems)
    targets = section.target_modules or (list(default_target_modules) or None)
    extras.setdefault("task_type", "CAUSAL_LM")
    return LoraConfig(r=section.r, lora_alpha=section.lora_alpha, lora_dropout=section.lora_dropout,
                      target_modules=targets, bias=section.bias, **extras)


def build_training_arguments(config: TrainingConfig, output_dir: Path, *, cuda: bool) -> Any:
    """``transformers.TrainingArguments`` from the TrainingArguments section, with the runner's defaults."""
    from transformers import TrainingArguments

    given = config.TrainingArguments.trainer_arguments()
    problems = library_field_problems("TrainingArguments", given, _field_names(TrainingArguments))
    if problems:
        raise TrainingConfigError(problems)
    args: dict[str, Any] = {"logging_steps": 1, "report_to": "none", "disable_tqdm": True,
                            "include_num_input_tokens_seen": "non_padding", "remove_unused_columns": False}
    args.update(given)
    if not cuda:
        args["use_cpu"] = True
        for half in ("bf16", "fp16"):
            if args.get(half):
                log.warning("no CUDA device: TrainingArguments.%s ignored (no fast half-precision math on this CPU)", half)
                args[half] = False
    return TrainingArguments(output_dir=str(output_dir), **args)


def load_model_and_tokenizer(config: TrainingConfig, model_dir: Path, method: TuningMethod, *, cuda: bool) -> tuple[Any, Any]:
    """The tokenizer and the base model, quantized with bitsandbytes for QLoRA."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    mc = config.ModelConfig
    common = {"local_files_only": mc.local_files_only, "trust_remote_code": mc.trust_remote_code}
    if not (model_dir / "config.json").is_file():
        raise TrainingConfigError([FieldError("ModelConfig.pretrained_model_name_or_path",
                                              f"{model_dir} is not a transformers model folder (no config.json)",
                                              "mount the preset's weights there or pass --model-dir")])
    tokenizer = AutoTokenizer.from_pretrained(model_dir, **common)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs: dict[str, Any] = {"dtype": torch_dtype(mc.torch_dtype, cuda=cuda)}
    kwargs["device_map"] = mc.device_map if cuda else "cpu"
    q = config.QuantizationConfig
    if q.quantized:
        from transformers import BitsAndBytesConfig

        fields = q.model_dump(exclude={"quant_method"}, exclude_none=True)
        compute = torch_dtype(q.bnb_4bit_compute_dtype, cuda=cuda)
        fields["bnb_4bit_compute_dtype"] = compute if compute != "auto" else None
        kwargs["quantization_config"] = BitsAndBytesConfig(**fields)  # type: ignore[no-untyped-call]
    model = AutoModelForCausalLM.from_pretrained(model_dir, **common, **kwargs)
    model.config.use_cache = False
    if q.quantized:
        from peft import prepare_model_for_kbit_training

        gc = bool(config.TrainingArguments.extras().get("gradient_checkpointing", False))
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gc)  # type: ignore[no-untyped-call]
    four_bit = sum(1 for m in model.modules() if type(m).__name__ in ("Linear4bit", "Linear8bitLt"))
    log.info("base model loaded", extra={"model": str(model_dir), "method": method, "dtype": str(model.dtype),
                                         "quantized_layers": four_bit})
    return model, tokenizer


def prepare_examples(config: TrainingConfig, data_dir: Path, tokenizer: Any, *, default_chat_template: str | None = None
                     ) -> tuple[list[dict[str, list[int]]], list[dict[str, list[int]]]]:
    """Read, check, render and tokenize the data; returns (train, eval) features.

    The chat template is ModelConfig.chat_template, else the tokenizer's, else
    ``default_chat_template`` (the preset's, for base models whose tokenizer has none).
    """
    ds = config.DatasetConfig
    path = data_mod.find_dataset(data_dir, ds)
    columns, rows = data_mod.read_rows(path, ds)
    fmt = data_mod.choose_format(columns, ds, config.TrainingArguments, source=str(path))
    examples = data_mod.row_examples(rows, fmt, source=str(path))
    train, evaluation = data_mod.split(examples, ds)
    template = None if getattr(tokenizer, "chat_template", None) else default_chat_template
    if config.ModelConfig.chat_template:
        from kaito_servers.chat_template import load_template_text

        template = load_template_text(config.ModelConfig.chat_template)
    chat = fmt.kind != "text"
    length = config.TrainingArguments.sequence_length
    features = [data_mod.tokenize(data_mod.render(part, tokenizer, template), tokenizer, length, chat=chat)
                for part in (train, evaluation)]
    log.info("dataset ready", extra={"file": str(path), "format": fmt.kind, "columns": list(fmt.columns),
                                     "rows": len(rows), "train": len(train), "eval": len(evaluation)})
    return features[0], features[1]


def _default_targets(lora: Any, model: Any) -> bool:
    """Without target modules from the config, the preset or the environment, use peft's for the
    architecture, else every linear layer but the output head (peft's ``all-linear``; returns True then)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as KNOWN

    if lora.target_modules is None and model.config.model_type not in KNOWN:
        log.info("no LoRA target modules known for %s: adapting all linear layers", model.config.model_type)
        lora.target_modules = "all-linear"
        return True
    return False


def _progress_callback(metrics: TuningMetrics) -> Any:
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        """Logs and publishes step, loss, tokens/s and ETA."""

        def __init__(self) -> None:
            self.progress: Progress | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.progress = Progress(max_steps=int(state.max_steps))
            self.progress.started_at(int(state.global_step), int(state.num_input_tokens_seen or 0))
            metrics.max_steps.set(state.max_steps)
            metrics.set_phase("training")

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
            if self.progress is None or not logs or "loss" not in logs:
                return
            snap = self.progress.update(int(state.global_step), int(state.num_input_tokens_seen or 0), float(logs["loss"]))
            metrics.record(snap)
            log.info(snap.line(), extra={"step": snap.step, "max_steps": snap.max_steps, "loss": snap.loss,
                                         "tokens_per_s": round(snap.tokens_per_s, 1), "eta_s": snap.eta_s})

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            metrics.checkpoints.inc()
            log.info("checkpoint saved", extra={"step": int(state.global_step)})

    return ProgressCallback()


def train(config: TrainingConfig, method: TuningMethod, paths: RunPaths, metrics: TuningMetrics, *,
          default_target_modules: Sequence[str] = (), default_chat_template: str | None = None,
          keep_checkpoints: bool = False) -> TrainingResult:
    """Train a LoRA adapter and save its files in ``paths.output_dir`` (the caller writes the completion marker).

    A ``checkpoint-N`` left in the output directory by an earlier, interrupted run is resumed
    (model, optimizer, scheduler, RNG and data position). After success the checkpoints are
    removed unless ``keep_checkpoints``.
    """
    import time

    import torch
    from peft import get_peft_model
    from transformers import DataCollatorForLanguageModeling, PrinterCallback, Trainer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # tqdm bars ("Loading weights") would break the one-JSON-object-per-line log
    cuda = torch.cuda.is_available()
    metrics.set_phase("loading")
    if config.DataCollator.mlm:
        log.warning("DataCollator.mlm ignored: causal language models train with mlm=false")
    lora = build_lora_config(config, default_target_modules)
    args = build_training_arguments(config, paths.output_dir, cuda=cuda)
    model, tokenizer = load_model_and_tokenizer(config, paths.model_dir, method, cuda=cuda)
    train_set, eval_set = prepare_examples(config, paths.data_dir, tokenizer, default_chat_template=default_chat_template)
    source = ("LoraConfig.target_modules" if config.LoraConfig.target_modules
              else "preset / DEFAULT_TARGET_MODULES" if default_target_modules
              else "all linear layers" if _default_targets(lora, model) else "peft's default for the architecture")
    model = get_peft_model(model, lora)
    trainable, total = model.get_nb_trainable_parameters()
    log.info("LoRA attached", extra={"trainable_params": trainable, "all_params": total, "targets_from": source,
                                     "target_modules": sorted(model.peft_config["default"].target_modules or [])})
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False, pad_to_multiple_of=config.DataCollator.pad_to_multiple_of)
    trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set or None,
                      data_collator=collator, callbacks=[_progress_callback(metrics)])
    trainer.remove_callback(PrinterCallback)  # the progress callback logs instead (structured)
    paths.output_dir.mkdir(parents=True, exist_ok=True)
    (paths.output_dir / COMPLETION_MARKER).unlink(missing_ok=True)
    checkpoint = last_complete_checkpoint(paths.output_dir)
    resumed_from = int(checkpoint.name.removeprefix("checkpoint-")) if checkpoint else 0
    if checkpoint is not None:
        log.info("resuming from %s (step %d)", checkpoint.name, resumed_from, extra={"checkpoint": str(checkpoint)})
    metrics.resumed_from.set(resumed_from)
    tokens_before = _checkpoint_tokens(checkpoint) if checkpoint else 0
    started, cpu_started = time.monotonic(), time.process_time()
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds, cpu_seconds = time.monotonic() - started, time.process_time() - cpu_started
    metrics.set_phase("saving")
    model.save_pretrained(str(paths.output_dir), safe_serialization=True)
    if not keep_checkpoints:
        for old in paths.output_dir.glob("checkpoint-*"):
            shutil.rmtree(old, ignore_errors=True)
    log.info("adapter saved", extra={"dir": str(paths.output_dir), "files": list(ADAPTER_FILES),
                                     "step": trainer.state.global_step})
    return TrainingResult(paths.output_dir, int(trainer.state.global_step), resumed_from,
                          float(output.training_loss) if output.training_loss is not None else None,
                          len(train_set), seconds, int(trainer.state.num_input_tokens_seen or 0) - tokens_before,
                          cpu_seconds)
