"""The training configuration: upstream KAITO's ``training_config.yaml``, parsed and checked.

A tuning Workspace names a ConfigMap whose key ``training_config.yaml`` holds::

    training_config:
      ModelConfig:        {torch_dtype, local_files_only, device_map, chat_template, ...}
      QuantizationConfig: {load_in_4bit, bnb_4bit_quant_type, bnb_4bit_compute_dtype, ...}
      LoraConfig:         {r, lora_alpha, lora_dropout, target_modules, ...}
      TrainingArguments:  {output_dir, per_device_train_batch_size, max_steps, save_steps, ...}
      DatasetConfig:      {dataset_path, messages_column, context_column, response_column, ...}
      DataCollator:       {mlm, ...}

Every section is optional. The sections that mirror our own concepts (ModelConfig,
QuantizationConfig, DatasetConfig, DataCollator) are closed: an unknown key is an error with a
"did you mean". LoraConfig and TrainingArguments are open, because they mirror
``peft.LoraConfig`` and ``transformers.TrainingArguments``; the trainer checks their extra keys
against those classes when it builds them (:func:`library_field_problems`).

This module imports no ML library, so the operator's admission check can use it too.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from kaito_core.errors import FieldError
from kaito_core.errors import ValidationError as KaitoValidationError

TuningMethod = Literal["lora", "qlora"]
DTYPES = ("auto", "float32", "bfloat16", "float16")
"""torch dtypes accepted in ModelConfig.torch_dtype and QuantizationConfig.bnb_4bit_compute_dtype."""
CONFIG_KEY = "training_config.yaml"
"""The ConfigMap key holding the configuration (upstream's name)."""
DEFAULT_CONFIGS_DIR = Path(__file__).with_name("configs")
"""The shipped defaults: ``lora.yaml`` and ``qlora.yaml`` (upstream's lora-params / qlora-params)."""


class TrainingConfigError(KaitoValidationError):
    """The training configuration is invalid; every problem is listed with its field path and fix."""

    def __init__(self, errors: Sequence[FieldError], *, source: str = "") -> None:
        super().__init__(errors, kind="training config", name=source)


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    def extras(self) -> dict[str, Any]:
        """The keys not declared here, passed through to the library class."""
        return dict(self.model_extra or {})


def _dtype(value: str | None) -> str | None:
    if value is not None and value not in DTYPES:
        raise ValueError(f"unknown dtype {value!r}; use one of {', '.join(DTYPES)}")
    return value


class ModelSection(_Closed):
    """How the base model is loaded (``AutoModelForCausalLM.from_pretrained`` arguments)."""

    pretrained_model_name_or_path: str | None = None
    """The model folder; the runner's ``--model-dir`` wins when given."""
    torch_dtype: str | None = None
    """Weights dtype. On a machine without CUDA, bfloat16/float16 are trained as float32 (AVX2 has no bf16 math)."""
    local_files_only: StrictBool = True
    """Never reach the Hugging Face Hub (always true in a cluster: weights are pre-pulled)."""
    device_map: str | dict[str, Any] | None = "auto"
    """Device placement; ``auto`` puts the model on the GPU when there is one."""
    trust_remote_code: StrictBool = False
    """Run modelling code shipped with the weights."""
    revision: str = "main"
    """Kept for upstream compatibility; weights are local."""
    chat_template: str | None = None
    """A Jinja chat template, inline or a file path, for models whose tokenizer has none."""
    cache_dir: str | None = None
    """Kept for upstream compatibility."""
    force_download: StrictBool = False
    """Kept for upstream compatibility (nothing is downloaded)."""
    proxies: str | None = None
    """Kept for upstream compatibility (nothing is downloaded)."""
    output_loading_info: StrictBool = False
    """Kept for upstream compatibility."""
    state_dict: dict[str, Any] | None = None
    """Kept for upstream compatibility; must stay empty."""

    @field_validator("torch_dtype")
    @classmethod
    def _check_dtype(cls, value: str | None) -> str | None:
        return _dtype(value)


class QuantizationSection(_Closed):
    """bitsandbytes quantization of the base model: 4-bit (or 8-bit) weights make LoRA into QLoRA."""

    quant_method: Literal["bitsandbytes"] = "bitsandbytes"
    """Only bitsandbytes is supported."""
    load_in_4bit: StrictBool | None = False
    """Load the base weights in 4 bits (QLoRA)."""
    load_in_8bit: StrictBool | None = False
    """Load the base weights in 8 bits (LLM.int8)."""
    llm_int8_threshold: float = 6.0
    """LLM.int8 outlier threshold."""
    llm_int8_skip_modules: list[str] | None = None
    """Modules kept in full precision."""
    llm_int8_enable_fp32_cpu_offload: StrictBool = False
    """Offload some layers to the CPU in fp32."""
    llm_int8_has_fp16_weight: StrictBool = False
    """Keep fp16 main weights for LLM.int8."""
    bnb_4bit_compute_dtype: str = "float32"
    """dtype the 4-bit layers compute in."""
    bnb_4bit_quant_type: Literal["fp4", "nf4"] = "fp4"
    """4-bit data type (QLoRA uses nf4)."""
    bnb_4bit_use_double_quant: StrictBool = False
    """Quantize the quantization constants too."""
    bnb_4bit_quant_storage: str | None = None
    """Storage dtype of the packed 4-bit weights."""

    @field_validator("bnb_4bit_compute_dtype")
    @classmethod
    def _check_dtype(cls, value: str) -> str | None:
        return _dtype(value)

    @property
    def quantized(self) -> bool:
        """True when the base model is loaded in 4 or 8 bits."""
        return bool(self.load_in_4bit or self.load_in_8bit)


class LoraSection(_Open):
    """The adapter (``peft.LoraConfig``); other peft LoraConfig keys pass through."""

    r: int = Field(default=8, gt=0)
    """LoRA rank."""
    lora_alpha: int = Field(default=8, gt=0)
    """LoRA scaling numerator (scale = lora_alpha / r)."""
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout on the LoRA input."""
    target_modules: list[str] | str | None = None
    """Module names to adapt; default: the preset's, else ``DEFAULT_TARGET_MODULES``, else peft's for the architecture."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases are trained."""


class TrainingArgumentsSection(_Open):
    """``transformers.TrainingArguments`` (other keys pass through), plus TRL SFTConfig's length keys."""

    output_dir: str | None = None
    """Where checkpoints and the adapter go; the runner's ``--output-dir`` wins when given."""
    max_length: int | None = Field(default=None, gt=0)
    """Longest training sequence in tokens (TRL SFTConfig's name; default 1024)."""
    max_seq_length: int | None = Field(default=None, gt=0)
    """Older TRL name of max_length."""
    packing: StrictBool = False
    """TRL sequence packing; not supported by this runner."""
    dataset_text_field: str | None = None
    """TRL's text column; used as DatasetConfig.response_column when that is not set."""

    @property
    def sequence_length(self) -> int:
        """The truncation length for training examples."""
        return self.max_length or self.max_seq_length or 1024

    def trainer_arguments(self) -> dict[str, Any]:
        """The keys that go to ``transformers.TrainingArguments`` (not output_dir or the TRL keys)."""
        return self.extras()


class DatasetSection(_Closed):
    """Which file holds the data and which columns mean what."""

    dataset_path: str | None = None
    """The data file; relative paths are under the data directory. Default: the first data file found there."""
    dataset_extension: Literal["parquet", "jsonl", "json", "csv"] | None = None
    """File format when the name does not say it."""
    shuffle_dataset: StrictBool = True
    """Shuffle the rows before splitting."""
    shuffle_seed: int = 42
    """Seed of the shuffle."""
    messages_column: str | None = None
    """Column of OpenAI-style chats ``[{"role", "content"}, ...]``; default ``messages`` when present."""
    context_column: str | None = None
    """Prompt column of prompt/response data (a user turn); default ``prompt`` when present."""
    response_column: str = "text"
    """Response column of prompt/response data, or the plain-text column when there is no prompt column."""
    train_test_split: float = Field(default=0.8, gt=0.0, le=1.0)
    """Share of rows used for training (1 = all); the rest is the evaluation set."""


class DataCollatorSection(_Closed):
    """``DataCollatorForLanguageModeling`` settings; causal LMs always train with ``mlm: false``."""

    mlm: StrictBool = False
    """Masked-LM training; ignored (with a warning) because the models here are causal LMs."""
    mlm_probability: float = Field(default=0.15, gt=0.0, lt=1.0)
    """Kept for upstream compatibility."""
    pad_to_multiple_of: int | None = Field(default=None, gt=0)
    """Pad batches to a multiple of this many tokens."""


class TrainingConfig(_Closed):
    """The ``training_config`` mapping: one entry per section."""

    ModelConfig: ModelSection = Field(default_factory=ModelSection)
    """How the base model is loaded."""
    QuantizationConfig: QuantizationSection = Field(default_factory=QuantizationSection)
    """bitsandbytes quantization (QLoRA)."""
    LoraConfig: LoraSection = Field(default_factory=LoraSection)
    """The LoRA adapter."""
    TrainingArguments: TrainingArgumentsSection = Field(default_factory=TrainingArgumentsSection)
    """Trainer settings."""
    DatasetConfig: DatasetSection = Field(default_factory=DatasetSection)
    """The data file and its columns."""
    DataCollator: DataCollatorSection = Field(default_factory=DataCollatorSection)
    """Batch collation."""


# The sections under upstream's names (the YAML keys), for code that reads like the config.
ModelConfig = ModelSection
QuantizationConfig = QuantizationSection
LoraConfig = LoraSection
TrainingArguments = TrainingArgumentsSection
DatasetConfig = DatasetSection
DataCollator = DataCollatorSection


SECTIONS = tuple(TrainingConfig.model_fields)


def _close(name: str, known: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(known), n=1)
    return f"did you mean {match[0]}? " if match else ""


def _known_fields(loc: Sequence[int | str]) -> list[str]:
    model: Any = TrainingConfig
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return list(model.model_fields)


def _pydantic_problem(err: Any) -> FieldError:
    loc = tuple(err["loc"])
    path = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in loc).replace(".[", "[")
    if err["type"] == "extra_forbidden":
        known = _known_fields(loc)
        if len(loc) == 1:
            return FieldError(path, "unrecognized section",
                              f"{_close(str(loc[0]), SECTIONS)}sections are {', '.join(SECTIONS)}")
        return FieldError(path, "unknown key", f"{_close(str(loc[-1]), known)}keys of {loc[-2]} are: {', '.join(known)}")
    value = err.get("input")
    shown = f" (got {value!r})" if value is not None and not isinstance(value, dict | list) else ""
    message = str(err["msg"])
    if err["type"].startswith("bool"):
        fix = "write true or false (unquoted)"
    elif "dtype" in message:
        fix = message.split("; ", 1)[-1]
        message = message.split("; ", 1)[0].removeprefix("Value error, ")
    else:
        fix = "correct the value"
    return FieldError(path, f"{message}{shown}", fix)


def parse_training_config(data: Any, *, source: str = "") -> TrainingConfig:
    """Parse the loaded YAML document (the mapping with the ``training_config`` key).

    Raises:
        TrainingConfigError: the document is not a training config; lists every problem.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TrainingConfigError([FieldError("", f"expected a mapping with the key training_config, got {type(data).__name__}",
                                              "start the file with `training_config:`")], source=source)
    unknown_top = [k for k in data if k != "training_config"]
    if unknown_top:
        raise TrainingConfigError([FieldError(str(k), "unexpected top-level key",
                                              "put every section under `training_config:` (as in the lora-params ConfigMap)")
                                   for k in unknown_top], source=source)
    body = data.get("training_config") or {}
    if not isinstance(body, dict):
        raise TrainingConfigError([FieldError("training_config", "must be a mapping of sections",
                                              f"use the sections {', '.join(SECTIONS)}")], source=source)
    body = {k: ({} if v is None else v) for k, v in body.items()}
    try:
        return TrainingConfig.model_validate(body)
    except ValidationError as exc:
        raise TrainingConfigError([_pydantic_problem(e) for e in exc.errors()], source=source) from None


def load_training_config(path: Path) -> TrainingConfig:
    """Read and parse a ``training_config.yaml`` file (a mounted ConfigMap key).

    Raises:
        TrainingConfigError: missing file, bad YAML or invalid content.
    """
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TrainingConfigError([FieldError("", f"cannot read the file: {exc.strerror or exc}",
                                              f"mount the ConfigMap key {CONFIG_KEY} at this path or pass --config")],
                                  source=source) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise TrainingConfigError([FieldError("", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}",
                                              "fix the YAML syntax (indentation, colons, quotes)")], source=source) from None
    return parse_training_config(data, source=source)


def default_config_path(method: TuningMethod) -> Path:
    """The shipped default configuration for a method (upstream's ``<method>-params`` ConfigMap)."""
    return DEFAULT_CONFIGS_DIR / f"{method}.yaml"


def method_problems(config: TrainingConfig, method: TuningMethod) -> list[FieldError]:
    """Contradictions between the configuration and the tuning method (upstream's admission rules)."""
    q = config.QuantizationConfig
    problems: list[FieldError] = []
    if q.load_in_4bit and q.load_in_8bit:
        problems.append(FieldError("QuantizationConfig", "load_in_4bit and load_in_8bit are both true",
                                   "set only one of them (QLoRA normally uses load_in_4bit: true)"))
    elif method == "lora" and q.quantized:
        key = "load_in_4bit" if q.load_in_4bit else "load_in_8bit"
        problems.append(FieldError(f"QuantizationConfig.{key}", "method lora trains a full-precision base model, "
                                   f"but {key} is true", f"set {key}: false, or use method qlora"))
    elif method == "qlora" and not q.quantized:
        problems.append(FieldError("QuantizationConfig.load_in_4bit", "method qlora needs a quantized base model, but neither "
                                   "load_in_4bit nor load_in_8bit is true",
                                   "set QuantizationConfig.load_in_4bit: true (as the qlora-params default does), "
                                   "or use method lora"))
    if config.TrainingArguments.packing:
        problems.append(FieldError("TrainingArguments.packing", "sequence packing is not supported by this runner",
                                   "remove packing or set it to false"))
    if config.ModelConfig.state_dict:
        problems.append(FieldError("ModelConfig.state_dict", "weights cannot be given inline", "remove state_dict"))
    return problems


def preset_problems(preset: Any, method: TuningMethod) -> list[FieldError]:
    """Whether ``preset`` (a :class:`kaito_core.presets.Preset`) can be tuned with ``method``."""
    tuning = getattr(preset, "tuning", None)
    if tuning is None:
        return [FieldError("preset", f"preset {preset.name} does not support fine-tuning",
                           "choose a preset whose TUNING column in `kaito presets` lists lora or qlora")]
    if method not in tuning.methods:
        return [FieldError("method", f"preset {preset.name} supports {', '.join(tuning.methods)}, not {method}",
                           f"use method {tuning.methods[0]}")]
    return []


def check(config: TrainingConfig, method: TuningMethod, *, preset: Any = None, source: str = "") -> None:
    """Raise one :class:`TrainingConfigError` listing every method and preset problem."""
    problems = method_problems(config, method)
    if preset is not None:
        problems += preset_problems(preset, method)
    if problems:
        raise TrainingConfigError(problems, source=source)


def library_field_problems(section: str, given: Iterable[str], accepted: Iterable[str]) -> list[FieldError]:
    """Keys of an open section that the library class does not accept, with a "did you mean"."""
    known = sorted(set(accepted))
    return [FieldError(f"{section}.{key}", "unknown key", f"{_close(key, known)}see the {section} fields of "
                       f"{'peft' if section == 'LoraConfig' else 'transformers'}")
            for key in given if key not in known]
