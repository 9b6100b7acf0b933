"""examples/preset-plugin, the template for new model families: pip-installed from its wheel into
a temporary directory, it appears in ``kaito presets`` and ``kaito plugins`` as supplied by
kaito-smollm2, and ``kaito validate`` accepts the Workspace naming its preset (and, without the
plugin, refuses it)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_PLUGIN, run_kaito

WORKSPACE = "examples/preset-plugin/kaito_workspace_smollm2.yaml"


@pytest.fixture(scope="module")
def installed(example_plugin_wheels: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin pip-installed (no index, its wheel only) into a site directory."""
    target = tmp_path_factory.mktemp("smollm2") / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--find-links", str(example_plugin_wheels),
         "--target", str(target), "kaito-smollm2"],
        check=True, capture_output=True, text=True, timeout=120,
    )
    return target


def test_the_template_has_one_entry_point_named_as_its_distribution() -> None:
    project = tomllib.loads((EXAMPLE_PLUGIN / "pyproject.toml").read_text())["project"]
    assert project["entry-points"] == {"kaito": {project["name"]: "kaito_smollm2"}}
    assert project["dependencies"] == ["kaito-core>=0.1.0"]


def test_installed_it_appears_in_kaito_presets_and_plugins(installed: Path) -> None:
    presets = run_kaito("presets", pythonpath=[installed])
    assert presets.returncode == 0, presets.stderr
    assert "smollm2 (kaito-smollm2):" in presets.stdout
    line = next(row for row in presets.stdout.splitlines() if "smollm2-135m-instruct" in row)
    assert "transformers" in line and "0.25" in line and "lora,qlora" in line
    plugins = run_kaito("plugins", pythonpath=[installed])
    assert plugins.returncode == 0, plugins.stderr
    assert any("smollm2-135m-instruct" in row and "kaito-smollm2" in row for row in plugins.stdout.splitlines())


def test_kaito_validate_accepts_its_workspace_only_with_the_plugin(installed: Path) -> None:
    valid = run_kaito("validate", WORKSPACE, pythonpath=[installed])
    assert valid.returncode == 0, valid.stderr
    assert "Workspace 'workspace-smollm2-135m' is valid" in valid.stdout
    without = run_kaito("validate", WORKSPACE)
    assert without.returncode == 1
    assert "Unsupported inference preset name smollm2-135m-instruct" in without.stderr
