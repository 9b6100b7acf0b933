"""kaito-qwen: KAITO presets for Alibaba's Qwen2.5-Coder instruct models.

Installed, this package is found through its ``kaito`` entry point; nothing else is needed for
``kaito presets``, ``kaito validate`` and the operator to know these models.
"""

from __future__ import annotations

from collections.abc import Callable

from kaito_core.plugins import hookimpl
from kaito_core.presets import Preset
from kaito_qwen.presets import PRESETS

__all__ = ["PRESETS", "register_presets"]


@hookimpl
def register_presets(register: Callable[[Preset], None]) -> None:
    """Register the Qwen presets."""
    for preset in PRESETS:
        register(preset)
