"""Hook specifications of the ``kaito`` plugin system.

Plugins are found through the entry-point group ``kaito``; the entry point's name should be
the distribution's name (pluggy skips a second entry point with the same name). Each hook takes
a ``register`` callback and calls it once per item::

    from kaito_core.plugins import hookimpl

    @hookimpl
    def register_presets(register):
        register(PHI_3_MINI_4K)

Hooks are called with keyword arguments only; new arguments may be added later, existing ones
are never renamed, so an implementation that takes only ``register`` keeps working.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from kaito_core.backends import InferenceBackend
    from kaito_core.preset_sources import PresetGenerator
    from kaito_core.presets import Preset
    from kaito_core.provisioners import NodeProvisioner

PROJECT = "kaito"
ENTRY_POINT_GROUP = "kaito"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class KaitoHookSpecs:
    """The hooks a kaito plugin may implement."""

    @hookspec
    def register_presets(self, register: Callable[[Preset], None]) -> None:
        """Register model presets by calling ``register(preset)`` for each."""

    @hookspec
    def register_backends(self, register: Callable[[InferenceBackend], None]) -> None:
        """Register inference backends by calling ``register(backend)`` for each."""

    @hookspec
    def register_provisioners(self, register: Callable[[NodeProvisioner], None]) -> None:
        """Register node provisioners by calling ``register(provisioner)`` for each."""

    @hookspec
    def register_preset_generators(self, register: Callable[[PresetGenerator], None]) -> None:
        """Register generators of presets for model ids (``<org>/<model>``) by calling
        ``register(generator)`` for each."""
