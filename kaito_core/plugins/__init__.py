"""The plugin system: hook specifications, the plugin-manager factory and the typed Registry."""

from kaito_core.plugins.hookspecs import ENTRY_POINT_GROUP, hookimpl, hookspec
from kaito_core.plugins.registry import Registry, make_plugin_manager

__all__ = ["ENTRY_POINT_GROUP", "Registry", "hookimpl", "hookspec", "make_plugin_manager"]
