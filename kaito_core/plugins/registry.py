"""The typed Registry: the only code that calls plugin hooks.

Everything else asks the registry: ``registry.preset("phi-3-mini-4k-instruct")``,
``registry.backend("llamacpp")``, ``registry.provisioner("gpu-provisioner")``. Unknown names
raise :class:`~kaito_core.errors.NotFoundError` listing what is installed and which package
would provide the missing item. Two plugins registering the same name raise
:class:`~kaito_core.errors.PluginError` naming both distributions.

No plugin manager exists at import time: :func:`make_plugin_manager` builds one, and tests
build their own with only the plugins they need (``Registry.from_plugins(module, ...)``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Generic, TypeVar

import pluggy
import pydantic
from pydantic import BaseModel

from kaito_core.backends import InferenceBackend
from kaito_core.errors import NotFoundError, PluginError
from kaito_core.plugins import hookspecs
from kaito_core.preset_providers import package_for_preset
from kaito_core.preset_sources import ModelLocation, PresetGenerator, resolve_preset
from kaito_core.presets import Preset
from kaito_core.provisioners import NodeProvisioner

T = TypeVar("T")

# Which distribution to install for names that are not installed. Only a hint for error
# messages: the registry never imports or trusts these. Presets: kaito_core.preset_providers.
BACKEND_PROVIDER_HINTS: dict[str, str] = {"transformers": "kaito-servers", "llamacpp": "kaito-servers"}
PROVISIONER_PROVIDER_HINTS: dict[str, str] = {
    "gpu-provisioner": "kaito-provisioners",
    "karpenter": "kaito-provisioners",
    "azure-agentpool": "kaito-provisioners",
    "byo": "kaito-provisioners",
}


def make_plugin_manager(*, entry_points: bool = True, plugins: Iterable[object] = ()) -> pluggy.PluginManager:
    """Build a plugin manager with the kaito hook specs.

    Args:
        entry_points: load every plugin installed under the ``kaito`` entry-point group.
        plugins: extra plugin objects (modules or instances) to register, e.g. in tests.

    Raises:
        PluginError: a plugin implements a hook that does not exist (a misspelling).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs.KaitoHookSpecs)
    for plugin in plugins:
        pm.register(plugin, name=getattr(plugin, "__name__", None) or type(plugin).__name__)
    if entry_points:
        pm.load_setuptools_entrypoints(hookspecs.ENTRY_POINT_GROUP)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"a kaito plugin implements an unknown hook: {exc}") from exc
    return pm


@dataclass(frozen=True)
class Registered(Generic[T]):
    """An item registered by a plugin, with where it came from."""

    item: T
    plugin: str
    """The plugin's name in the plugin manager (entry-point name or module name)."""
    distribution: str
    """The installed distribution that supplied it, e.g. kaito-phi3 (the plugin name when not installed)."""


class _Table(Generic[T]):
    """Items of one kind by name, rejecting duplicates."""

    def __init__(self, kind: str, type_: type[Any], name_of: Callable[[T], str]) -> None:
        self.kind = kind
        self.type_ = type_
        self.name_of = name_of
        self.items: dict[str, Registered[T]] = {}

    def add(self, item: object, plugin: str, distribution: str) -> None:
        if not isinstance(item, self.type_):
            raise PluginError(
                f"plugin {plugin} ({distribution}) registered {item!r} as a {self.kind}, "
                f"but it is a {type(item).__name__}, not a {self.type_.__name__}"
            )
        if isinstance(item, BaseModel):
            problems = model_problems(item)
            if problems:
                raise PluginError(
                    f"plugin {plugin} ({distribution}) registered {self.kind} {getattr(item, 'name', '?')!r} that fails its own "
                    f"validation: {'; '.join(problems)}; fix the {self.kind} in {distribution}"
                )
        name = self.name_of(item)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin} ({distribution}) registered a {self.kind} without a name")
        prior = self.items.get(name)
        if prior is not None:
            raise PluginError(
                f"{self.kind} {name!r} is registered twice: by {prior.distribution} (plugin {prior.plugin}) "
                f"and by {distribution} (plugin {plugin}); uninstall one of them"
            )
        self.items[name] = Registered(item, plugin, distribution)


def _unknown_keys(model: BaseModel, path: str) -> list[str]:
    """Attributes a model carries that are not its fields (a misspelt ``model_copy(update=...)`` key)."""
    known = type(model).model_fields
    found = [f"{path}{key}: not a field of {type(model).__name__}" for key in model.__dict__ if key not in known]
    for key in known:
        value = getattr(model, key, None)
        values = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
        for sub in values:
            if isinstance(sub, BaseModel):
                found += _unknown_keys(sub, f"{path}{key}.")
    return found


def model_problems(model: BaseModel) -> list[str]:
    """Why a registered pydantic item would fail its own model validation, as ``field: problem``.

    ``model_copy(update=...)`` skips validation, so a copy can carry a misspelt key or an
    out-of-range value; re-validating its data (and looking for unknown attributes) finds both."""
    problems = _unknown_keys(model, "")
    try:
        type(model).model_validate(model.model_dump(warnings=False))
    except pydantic.ValidationError as exc:
        problems += [f"{'.'.join(str(p) for p in err['loc']) or '(model)'}: {err['msg']}" for err in exc.errors(include_url=False)]
    return problems


class Registry:
    """Presets, inference backends and node provisioners supplied by the installed plugins."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._pm = pm
        self._distributions = self._distribution_names(pm)
        self._presets: _Table[Preset] = _Table("preset", Preset, lambda p: p.name)
        self._backends: _Table[InferenceBackend] = _Table("backend", InferenceBackend, lambda b: b.name)
        self._provisioners: _Table[NodeProvisioner] = _Table("provisioner", NodeProvisioner, lambda p: p.name)
        self._collect("register_presets", self._presets)
        self._collect("register_backends", self._backends)
        self._collect("register_provisioners", self._provisioners)
        self._generators: _Table[PresetGenerator] = _Table("preset generator", PresetGenerator, lambda g: g.name)
        self._collect("register_preset_generators", self._generators)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_entry_points(cls) -> Registry:
        """A registry of every installed plugin (the normal case)."""
        return cls(make_plugin_manager(entry_points=True))

    @classmethod
    def from_plugins(cls, *plugins: object | ModuleType) -> Registry:
        """A registry of exactly these plugins, nothing installed (for tests)."""
        return cls(make_plugin_manager(entry_points=False, plugins=plugins))

    @staticmethod
    def _distribution_names(pm: pluggy.PluginManager) -> dict[int, str]:
        names: dict[int, str] = {}
        for plugin, dist in pm.list_plugin_distinfo():
            project = getattr(dist, "project_name", None) or dist.metadata["Name"]
            names[id(plugin)] = str(project)
        return names

    def _collect(self, hook_name: str, table: _Table[Any]) -> None:
        """Call the hook once per plugin, through pluggy (``pm.subset_hook_caller`` keeps its
        tracing and wrappers), so each item is recorded with the plugin that registered it."""
        caller: pluggy.HookCaller = getattr(self._pm.hook, hook_name)
        plugins = [impl.plugin for impl in caller.get_hookimpls()]
        for plugin in plugins:
            plugin_name = self._pm.get_name(plugin) or repr(plugin)
            distribution = self._distributions.get(id(plugin), plugin_name)
            register = functools.partial(table.add, plugin=plugin_name, distribution=distribution)
            only_this = self._pm.subset_hook_caller(hook_name, remove_plugins=[p for p in plugins if p is not plugin])
            try:
                only_this(register=register)
            except PluginError:
                raise
            except Exception as exc:  # a broken plugin must not look like a kaito bug
                raise PluginError(f"plugin {plugin_name} ({distribution}) failed in {hook_name}: {exc}") from exc

    # -- presets -------------------------------------------------------------------------------

    def presets(self) -> dict[str, Preset]:
        """Every installed preset by name, sorted."""
        return {n: r.item for n, r in sorted(self._presets.items.items())}

    def preset(self, name: str) -> Preset:
        """The preset called ``name``.

        Raises:
            NotFoundError: not installed; the message lists the installed presets and names the
                package to install when it knows one.
        """
        found = self._presets.items.get(name)
        if found is not None:
            return found.item
        raise NotFoundError(self._unknown("preset", name, self._presets, package_for_preset(name)))

    def preset_generators(self) -> dict[str, PresetGenerator]:
        """Every installed preset generator (for ``org/model`` ids) by name, sorted."""
        return {n: r.item for n, r in sorted(self._generators.items.items())}

    def resolve_preset(self, name: str, where: ModelLocation | None = None) -> Preset:
        """The preset a Workspace's preset name means: a registered name, or a model id
        (``org/model``) generated from the model's files at ``where`` (see
        :func:`kaito_core.preset_sources.resolve_preset`).

        Raises:
            NotFoundError: neither registered nor handled by a generator (names the package).
            PresetGenerationError: a generator cannot make a preset for the id (says why).
        """
        try:
            return self.preset(name)
        except NotFoundError as exc:
            return resolve_preset(name, self.presets(), list(self.preset_generators().values()), where, exc)

    # -- backends ------------------------------------------------------------------------------

    def backends(self) -> dict[str, InferenceBackend]:
        """Every installed inference backend by name, sorted."""
        return {n: r.item for n, r in sorted(self._backends.items.items())}

    def backend(self, name: str) -> InferenceBackend:
        """The inference backend called ``name`` (raises NotFoundError, listing the installed ones)."""
        found = self._backends.items.get(name)
        if found is not None:
            return found.item
        raise NotFoundError(self._unknown("inference backend", name, self._backends, BACKEND_PROVIDER_HINTS.get(name)))

    # -- provisioners --------------------------------------------------------------------------

    def provisioners(self) -> dict[str, NodeProvisioner]:
        """Every installed node provisioner by name, sorted."""
        return {n: r.item for n, r in sorted(self._provisioners.items.items())}

    def provisioner(self, name: str) -> NodeProvisioner:
        """The node provisioner called ``name`` (raises NotFoundError, listing the installed ones)."""
        found = self._provisioners.items.get(name)
        if found is not None:
            return found.item
        hint = PROVISIONER_PROVIDER_HINTS.get(name)
        raise NotFoundError(self._unknown("node provisioner", name, self._provisioners, hint))

    # -- provenance ----------------------------------------------------------------------------

    def source(self, kind: str, name: str) -> Registered[Any]:
        """Where a registered item came from; ``kind`` is preset, backend, provisioner or generator."""
        tables: dict[str, _Table[Any]] = {
            "preset": self._presets,
            "backend": self._backends,
            "provisioner": self._provisioners,
            "generator": self._generators,
        }
        if kind not in tables:
            raise ValueError(f"kind must be one of {', '.join(tables)}, not {kind!r}")
        table = tables[kind]
        try:
            return table.items[name]
        except KeyError:
            raise NotFoundError(f"no {kind} named {name!r} is installed") from None

    @staticmethod
    def _unknown(kind: str, name: str, table: _Table[Any], hint: str | None) -> str:
        installed = ", ".join(sorted(table.items)) or "none"
        message = f"{kind} {name!r} is not installed (installed: {installed})"
        if hint:
            message += f"; it is provided by the package {hint}: pip install {hint}"
        return message
