"""kaito-huggingface: presets for any Hugging Face model id (``inference.preset.name: org/model``).

Installed, this package registers the ``huggingface`` preset generator through its ``kaito``
entry point. The preset is computed from the model's ``config.json`` and safetensors index
with the same rules as the family presets (:mod:`kaito_huggingface.config`), reading the files
from a local copy, a hub cache or the hub (:mod:`kaito_huggingface.files`).
"""

from __future__ import annotations

from collections.abc import Callable

from kaito_core.plugins import hookimpl
from kaito_core.preset_sources import PresetGenerator
from kaito_huggingface.config import SUPPORTED_ARCHITECTURES, preset_from_files
from kaito_huggingface.generator import HuggingFaceGenerator

__all__ = ["SUPPORTED_ARCHITECTURES", "HuggingFaceGenerator", "preset_from_files", "register_preset_generators"]


@hookimpl
def register_preset_generators(register: Callable[[PresetGenerator], None]) -> None:
    """Register the Hugging Face preset generator."""
    register(HuggingFaceGenerator())
