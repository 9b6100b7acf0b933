"""Model presets: the facts about a model that KAITO needs to deploy it without tuning by hand.

A preset is data: a frozen pydantic model. A model family's plugin defines one base preset
and derives its variants with ``base.model_copy(update={...})`` (see plugins/phi3). Everything
the operator computes (GPU memory fit, node count, disk size, probes) and everything a backend
needs to start a server (repository, revision, dtype, chat template) comes from here.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

GiB = 1024**3

WeightFormat = Literal["safetensors", "gguf"]
TuningMethodName = Literal["lora", "qlora"]


class FrozenModel(BaseModel):
    """Base of preset data: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class ModelArchitecture(FrozenModel):
    """The attention shape of a decoder-only transformer, enough to size its KV cache."""

    architecture: str
    """The transformers architecture class, e.g. Phi3ForCausalLM."""
    num_hidden_layers: int = Field(gt=0)
    """Number of transformer blocks."""
    num_attention_heads: int = Field(gt=0)
    """Number of query heads."""
    num_key_value_heads: int = Field(gt=0)
    """Number of key/value heads (equal to num_attention_heads for MHA, fewer for GQA/MQA)."""
    head_dim: int = Field(gt=0)
    """Dimension of one attention head."""
    hidden_size: int = Field(gt=0)
    """Model (embedding) dimension."""
    context_length: int = Field(gt=0)
    """Maximum number of tokens (prompt + completion) the model supports (max_position_embeddings)."""
    kv_lora_rank: int | None = Field(default=None, gt=0)
    """Multi-head latent attention (DeepSeek V3/R1, Mistral Large 3): rank of the compressed KV
    projection, which is what the KV cache stores instead of per-head keys and values."""
    qk_rope_head_dim: int = Field(default=0, ge=0)
    """MLA only: the rotary part of each key, cached alongside the compressed KV."""

    @property
    def attention_type(self) -> str:
        """MHA, GQA, MQA or MLA."""
        if self.kv_lora_rank is not None:
            return "MLA"
        if self.num_key_value_heads == self.num_attention_heads:
            return "MHA"
        return "MQA" if self.num_key_value_heads == 1 else "GQA"

    def kv_bytes_per_token(self, bytes_per_value: int = 2) -> int:
        """Bytes of KV cache one token occupies (upstream's generator formula).

        Standard attention: 2 (K and V) x kv heads x head dim x layers x bytes. MLA caches one
        compressed vector per layer: (kv_lora_rank + qk_rope_head_dim) x layers x bytes.
        """
        if self.kv_lora_rank is not None:
            return (self.kv_lora_rank + self.qk_rope_head_dim) * self.num_hidden_layers * bytes_per_value
        return 2 * self.num_key_value_heads * self.head_dim * self.num_hidden_layers * bytes_per_value


class BackendParams(FrozenModel):
    """How one inference backend runs this preset."""

    model_file: str | None = None
    """For single-file formats (GGUF): the file name inside the repository."""
    dtype: str = "auto"
    """torch dtype for transformers (auto, bfloat16, float16, float32)."""
    trust_remote_code: bool = False
    """Whether the model needs trust_remote_code (custom modelling code in the repository)."""
    extra_args: tuple[tuple[str, str], ...] = ()
    """Further server arguments as (name, value) pairs, passed as --name=value."""


class TuningSupport(FrozenModel):
    """Whether and how the preset can be fine-tuned."""

    methods: tuple[TuningMethodName, ...] = ("lora", "qlora")
    """Supported methods."""
    default_target_modules: tuple[str, ...] = ()
    """Module names LoRA attaches to when the training config names none."""
    disk_gib: int = 100
    """Disk needed by a tuning job (weights, dataset, checkpoints)."""


class Preset(FrozenModel):
    """One deployable model."""

    name: str = Field(pattern=r"^([a-z0-9][a-z0-9._\-]*/)?[a-z0-9]([a-z0-9._\-]*[a-z0-9])?$")
    """The name users put in inference.preset.name, e.g. phi-3-mini-4k-instruct; generated
    presets are named by their lower-cased model id, e.g. meta-llama/llama-3.1-8b-instruct."""
    family: str
    """The model family (phi3, gemma3, ...), usually the plugin that supplies it."""
    description: str = ""
    """One line for `kaito presets`."""
    source_repo: str
    """Where the weights come from, e.g. the Hugging Face repository microsoft/Phi-3-mini-4k-instruct."""
    revision: str = "main"
    """The pinned commit of source_repo."""
    license: str = ""
    """The model's licence name."""
    weight_format: WeightFormat = "safetensors"
    """safetensors (transformers) or gguf (llama.cpp)."""
    weights_gib: float = Field(gt=0)
    """Total size of the weight files in GiB: the GPU (or RAM) memory the weights need."""
    dtype_bytes: int = 2
    """Bytes per KV-cache value at serving time (2 for fp16/bf16)."""
    arch: ModelArchitecture
    """The attention shape, for KV-cache sizing."""
    disk_gib: int = Field(gt=0)
    """Disk the inference pod needs for weights and system files."""
    readiness_timeout_s: int = Field(default=1800, gt=0)
    """How long the server may take to become ready (download + load) before the pod is failed."""
    backends: dict[str, BackendParams]
    """The inference backends that can serve this preset, in order of preference."""
    requires_gpu: bool = True
    """False when the model can be served on CPU nodes (small GGUF models)."""
    tuning: TuningSupport | None = None
    """Fine-tuning support; None when the preset cannot be tuned."""
    chat_template: str | None = None
    """A Jinja chat template for models whose tokenizer has none (base models, some GGUFs)."""
    download_auth_required: bool = False
    """True when downloading needs a token (inference.preset.presetOptions.modelAccessSecret)."""
    download_at_runtime: bool = False
    """True when the server downloads the weights from the hub when it starts (upstream's
    ``downloadAtRuntime``); such presets accept an optional modelAccessSecret."""
    quantization: str | None = None
    """The checkpoint's quantization method (config.json quantization_config.quant_method, e.g.
    fp8, mxfp4), None for plain 16-bit weights. weights_gib is the quantized size."""
    tool_call_parser: str | None = None
    """vLLM's tool-call parser for this model (--tool-call-parser), as upstream's generator sets it."""
    reasoning_parser: str | None = None
    """vLLM's reasoning parser (--reasoning-parser) for models that emit reasoning, else None."""
    deprecated: bool = False
    """Deprecated presets are refused with a message."""

    @property
    def default_backend(self) -> str:
        """The first listed backend."""
        return next(iter(self.backends))

    @property
    def context_length(self) -> int:
        """Maximum tokens the model supports."""
        return self.arch.context_length

    def kv_cache_gib(self, tokens: int) -> float:
        """GiB of KV cache for ``tokens`` tokens in flight."""
        return tokens * self.arch.kv_bytes_per_token(self.dtype_bytes) / GiB


def sized(weights_gib: float) -> dict[str, float | int]:
    """The preset fields that follow from the weight size by upstream's generator rules
    (``weights_gib``, ``disk_gib``, ``readiness_timeout_s``), for ``Preset(**sized(x))`` or
    ``base.model_copy(update={**sized(x)})``."""
    return {
        "weights_gib": weights_gib,
        "disk_gib": disk_gib_for(weights_gib),
        "readiness_timeout_s": readiness_timeout_for(weights_gib),
    }


def readiness_timeout_for(weights_gib: float) -> int:
    """Upstream's rule: 15 min + 18 s per GiB of weights, clamped to [30 min, 180 min]; in seconds."""
    seconds = 15 * 60 + 18 * weights_gib
    return int(min(max(seconds, 30 * 60), 180 * 60))


def disk_gib_for(weights_gib: float) -> int:
    """Upstream's rule: weights plus 80 GiB of system files, rounded down to whole GiB."""
    return int(math.floor(weights_gib + 80))


UPSTREAM_CHAT_TEMPLATE_DIR = "/workspace/chat_templates"
"""Where upstream KAITO's base image keeps vLLM's tool-calling chat templates."""


def vllm_params(
    *,
    quantized: bool = False,
    mistral_format: bool = False,
    tokenizer_mode: str | None = None,
    chat_template_file: str | None = None,
    trust_remote_code: bool = False,
) -> BackendParams:
    """How vLLM runs a model, by upstream's generator rules (kaito.md §2.2).

    dtype is ``auto`` for quantized checkpoints, else ``bfloat16``; Mistral-format checkpoints
    (``consolidated*.safetensors``) load with ``load_format``/``config_format``/``tokenizer_mode``
    ``mistral``; ``chat_template_file`` names one of the templates in upstream's base image.
    """
    fmt = "mistral" if mistral_format else "auto"
    args: list[tuple[str, str]] = [
        ("load_format", fmt),
        ("config_format", fmt),
        ("tokenizer_mode", tokenizer_mode or fmt),
    ]
    if chat_template_file:
        args.append(("chat-template", f"{UPSTREAM_CHAT_TEMPLATE_DIR}/{chat_template_file}"))
    return BackendParams(dtype="auto" if quantized else "bfloat16", trust_remote_code=trust_remote_code, extra_args=tuple(args))
