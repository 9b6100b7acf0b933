"""kaito-phi3: KAITO presets for Microsoft's Phi-3, Phi-3.5 and Phi-4 models.

Installed, this package is found through its ``kaito`` entry point; nothing else is needed for
``kaito presets`` and the operator to know the Phi models.
"""

from __future__ import annotations

from collections.abc import Callable

from kaito_core.plugins import hookimpl
from kaito_core.presets import Preset
from kaito_phi3.presets import PRESETS

__all__ = ["PRESETS", "register_presets"]


@hookimpl
def register_presets(register: Callable[[Preset], None]) -> None:
    """Register the Phi presets."""
    for preset in PRESETS:
        register(preset)
