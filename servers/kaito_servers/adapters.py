"""Finding the LoRA adapters under the adapters directory and their strengths.

The operator mounts each adapter at ``<adapters_dir>/<name>`` and passes strengths in
``KAITO_ADAPTER_STRENGTHS`` (JSON ``{"name": strength}``) or ``--adapter-strength NAME=S``.
For compatibility with upstream KAITO images, an environment variable named exactly like the
adapter directory (``<name>=0.5``) is honoured when neither of those names the adapter.
Missing strengths default to 1.0.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from kaito_servers.engine.base import AdapterInfo
from kaito_servers.errors import ConfigurationError

log = logging.getLogger(__name__)


def _strength(name: str, strengths: Mapping[str, float], environ: Mapping[str, str]) -> float:
    if name in strengths:
        value = float(strengths[name])
    elif name in environ:
        try:
            value = float(environ[name])
        except ValueError:
            raise ConfigurationError(f"adapter {name}: environment variable {name}={environ[name]!r} is not a number") from None
    else:
        value = 1.0
    if not 0.0 <= value <= 1.0:
        raise ConfigurationError(f"adapter {name}: strength {value} is outside [0, 1]")
    return value


def discover_adapters(
    adapters_dir: Path,
    strengths: Mapping[str, float],
    *,
    weight_format: str,
    environ: Mapping[str, str] | None = None,
) -> list[AdapterInfo]:
    """Every adapter under ``adapters_dir``, sorted by name, with its strength and file.

    Args:
        adapters_dir: one subdirectory per adapter; a missing directory means no adapters.
        strengths: strengths by adapter name (from the operator).
        weight_format: ``peft`` (a directory with adapter_config.json, for transformers) or
            ``gguf`` (a directory holding one GGUF LoRA file, for llama.cpp).
        environ: the environment for upstream-style per-adapter variables (default os.environ).

    Raises:
        ConfigurationError: an adapter directory is not in the format the backend needs.
    """
    env = os.environ if environ is None else environ
    if not adapters_dir.is_dir():
        if strengths:
            log.warning("adapter strengths given but %s does not exist", adapters_dir, extra={"strengths": dict(strengths)})
        return []
    found: list[AdapterInfo] = []
    for sub in sorted(p for p in adapters_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        name = sub.name
        strength = _strength(name, strengths, env)
        if weight_format == "gguf":
            ggufs = sorted(sub.glob("*.gguf"))
            if len(ggufs) == 1:
                found.append(AdapterInfo(name, str(ggufs[0]), strength))
                continue
            if not ggufs and (sub / "adapter_config.json").is_file():
                raise ConfigurationError(
                    f"adapter {name}: {sub} is a peft (safetensors) adapter, but the llamacpp backend loads GGUF LoRA "
                    "files. Convert it with llama.cpp's convert_lora_to_gguf.py (--base <the HF base model>) and mount "
                    "the .gguf, or serve this preset with the transformers backend (annotation kaito.sh/runtime)."
                )
            raise ConfigurationError(f"adapter {name}: expected exactly one .gguf LoRA file in {sub}, found {len(ggufs)}")
        if not (sub / "adapter_config.json").is_file():
            raise ConfigurationError(
                f"adapter {name}: {sub} has no adapter_config.json; the transformers backend loads peft adapters "
                "(adapter_config.json + adapter_model.safetensors)"
            )
        found.append(AdapterInfo(name, str(sub), strength))
    unknown = sorted(set(strengths) - {a.name for a in found})
    if unknown:
        log.warning("adapter strengths name adapters that are not mounted", extra={"adapters": unknown, "dir": str(adapters_dir)})
    return found
