"""The adapter out: the peft files an OCI artifact carries, plus a GGUF LoRA for llama.cpp.

``adapter_config.json`` + ``adapter_model.safetensors`` (written by peft) are what upstream's
push step puts at the artifact root and what the transformers backend loads. For the llamacpp
backend the same adapter is converted with llama.cpp's own ``convert_lora_to_gguf.py``: it is
not on PyPI, but the llama-cpp-python sdist (the one ``make`` builds the engine from) vendors
it with its ``conversion`` and ``gguf-py`` packages; ``make servers-lora-converter`` extracts
those once into ``~/.cache/kaito/llama.cpp-convert/<version>`` and the tuning image copies
them. The converter needs the base model's Hugging Face folder (config.json) as ``--base``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from kaito_core.errors import KaitoError

log = logging.getLogger(__name__)

CONVERTER_ENV = "KAITO_LLAMA_CPP_CONVERT_DIR"
"""Environment variable naming the folder that holds convert_lora_to_gguf.py."""
GGUF_ENV = "KAITO_TUNING_GGUF"
"""Environment variable that turns the GGUF export on (``1``/``true``): the tuning image sets it."""
CONVERTER_SCRIPT = "convert_lora_to_gguf.py"
GGUF_ADAPTER_NAME = "adapter.gguf"
"""File name of the GGUF LoRA beside the peft files."""


class ExportError(KaitoError):
    """The adapter could not be converted or written."""


def converter_dir(explicit: str | Path | None = None) -> Path:
    """The folder holding llama.cpp's converter: ``explicit``, else ``$KAITO_LLAMA_CPP_CONVERT_DIR``.

    Raises:
        ExportError: not configured or the script is missing.
    """
    value = explicit or os.environ.get(CONVERTER_ENV)
    if not value:
        raise ExportError(f"GGUF export needs llama.cpp's {CONVERTER_SCRIPT}. Fix: run `make servers-lora-converter` and "
                          f"set {CONVERTER_ENV} (or --gguf-converter-dir) to the folder it prints")
    folder = Path(value)
    if not (folder / CONVERTER_SCRIPT).is_file():
        raise ExportError(f"{folder} has no {CONVERTER_SCRIPT}. Fix: point {CONVERTER_ENV} at the llama.cpp folder "
                          "extracted by `make servers-lora-converter`")
    return folder


def convert_lora_to_gguf(adapter_dir: Path, base_model_dir: Path, out: Path, *, converter: Path,
                         outtype: str = "f32", timeout_s: float = 1800) -> Path:
    """Run llama.cpp's converter on a peft adapter folder; returns the GGUF file.

    Raises:
        ExportError: the converter failed (its last output lines are in the message).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    cmd = [sys.executable, str(converter / CONVERTER_SCRIPT), "--base", str(base_model_dir), "--outfile", str(tmp),
           "--outtype", outtype, str(adapter_dir)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log.info("converting the adapter to a GGUF LoRA", extra={"cmd": cmd})
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise ExportError(f"{CONVERTER_SCRIPT} failed (exit {proc.returncode}) for {adapter_dir} with base "
                          f"{base_model_dir}:\n{tail}")
    tmp.replace(out)
    log.info("GGUF LoRA written", extra={"file": str(out), "bytes": out.stat().st_size})
    return out
