"""The plugin system: discovery through real entry points, duplicates, unknown names, misspelt hooks."""

from __future__ import annotations

import re

from pathlib import Path
from typing import Any

import pytest

import kaito_phi3
from kaito_core.errors import NotFoundError, PluginError
from kaito_core.plugins import Registry, hookimpl, make_plugin_manager
from kaito_phi3.presets import PHI_3_MINI_4K
from tests.conftest import run_kaito


def test_installed_phi3_is_discovered_through_its_entry_point() -> None:
    registry = Registry.from_entry_points()
    assert registry.source("preset", "phi-3-mini-4k-instruct").distribution == "kaito-phi3"


def test_test_plugin_is_discovered_through_real_entry_points(testplugin_dir: Path) -> None:
    assert (testplugin_dir / "kaito_testplugin-0.0.1.dist-info" / "entry_points.txt").is_file()
    result = run_kaito("plugins", pythonpath=[testplugin_dir])
    assert result.returncode == 0, result.stderr
    out = result.stdout
    presets, backends, provisioners = out.split("Inference backends:")[0], out.split("Inference backends:")[1].split("Node provisioners:")[0], out.split("Node provisioners:")[1]
    assert re.search(r"tiny-test-model\s+kaito-testplugin", presets)
    assert re.search(r"phi-3-mini-4k-instruct\s+kaito-phi3", presets)
    assert re.search(r"echo\s+kaito-testplugin", backends)  # column widths depend on what else is installed
    assert re.search(r"test-noop\s+kaito-testplugin", provisioners)


def test_without_the_test_plugin_its_items_are_absent() -> None:
    result = run_kaito("plugins")
    assert result.returncode == 0, result.stderr
    assert "tiny-test-model" not in result.stdout


def test_duplicate_names_are_rejected_naming_both_distributions(testplugin_dir: Path, testplugin_dup_dir: Path) -> None:
    result = run_kaito("plugins", pythonpath=[testplugin_dir, testplugin_dup_dir])
    assert result.returncode == 2
    assert "preset 'tiny-test-model' is registered twice" in result.stderr
    assert "kaito-testplugin " in result.stderr or "by kaito-testplugin" in result.stderr
    assert "kaito-testplugin-dup" in result.stderr


def test_duplicate_names_in_process() -> None:
    class Again:
        @hookimpl
        def register_presets(self, register: Any) -> None:
            register(PHI_3_MINI_4K)

    with pytest.raises(PluginError, match="preset 'phi-3-mini-4k-instruct' is registered twice"):
        Registry.from_plugins(kaito_phi3, Again())


def test_misspelt_hook_fails_loudly() -> None:
    class Misspelt:
        @hookimpl
        def register_preset(self, register: Any) -> None:  # missing "s"
            raise AssertionError("never called")

    with pytest.raises(PluginError, match="unknown hook.*register_preset"):
        make_plugin_manager(entry_points=False, plugins=[Misspelt()])


def test_unknown_preset_lists_installed_and_names_the_package() -> None:
    registry = Registry.from_plugins(kaito_phi3)
    with pytest.raises(NotFoundError) as info:
        registry.preset("phi-5-giant")
    message = str(info.value)
    assert "preset 'phi-5-giant' is not installed" in message
    assert "phi-3-mini-4k-instruct" in message and "phi-4-mini-instruct" in message
    assert "pip install kaito-phi3" in message
    with pytest.raises(NotFoundError, match="installed: none.*pip install kaito-servers"):
        registry.backend("transformers")


def test_a_broken_plugin_is_reported_as_the_plugins_fault() -> None:
    class Broken:
        @hookimpl
        def register_presets(self, register: Any) -> None:
            register("not a preset")

    with pytest.raises(PluginError, match="registered 'not a preset' as a preset"):
        Registry.from_plugins(Broken())


def test_nothing_is_loaded_at_import_time() -> None:
    import importlib

    import kaito_core.plugins.registry as registry_module

    importlib.reload(registry_module)
    assert not [name for name in vars(registry_module) if isinstance(getattr(registry_module, name), Registry)]


@pytest.mark.parametrize(
    ("update", "field"),
    [({"disk_gibb": 50}, "disk_gibb: not a field of Preset"), ({"disk_gib": -5}, "disk_gib: Input should be greater than 0")],
)
def test_a_preset_failing_its_own_validation_is_refused_naming_plugin_and_field(update: dict[str, Any], field: str) -> None:
    class Sloppy:
        @hookimpl
        def register_presets(self, register: Any) -> None:
            register(PHI_3_MINI_4K.model_copy(update={"name": "phi-3-sloppy", **update}))

    with pytest.raises(PluginError, match=rf"plugin Sloppy \(Sloppy\) registered preset 'phi-3-sloppy' that fails its own validation: {field}"):
        Registry.from_plugins(Sloppy())


def test_hooks_are_called_through_pluggy() -> None:
    calls: list[str] = []
    registry_pm = make_plugin_manager(entry_points=False, plugins=[kaito_phi3])
    registry_pm.add_hookcall_monitoring(lambda name, impls, kwargs: calls.append(name), lambda *a: None)
    Registry(registry_pm)
    assert calls == ["register_presets"]  # one traced call per plugin implementing it
