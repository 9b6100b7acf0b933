"""Every file under examples/ is a test: each Workspace example is validated with the exact
``kaito validate`` line its comment header documents (the provisioner it is written for), the
example plugin's Workspace with that plugin installed, and the tuning ConfigMap's
training_config.yaml with the tuning runner's own parser. The user's three examples stay exactly
as the cookbook wrote them (no header)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, USER_EXAMPLES, run_kaito

ALL = sorted(p for p in (ROOT / "examples").rglob("*.yaml"))
OWN = [p for p in ALL if p not in USER_EXAMPLES]
PLUGIN_DIR = ROOT / "examples" / "preset-plugin"


def header(path: Path) -> list[str]:
    """The leading comment lines, without '# '."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return lines


def validate_line(path: Path) -> list[str]:
    """The arguments of the header's ``kaito validate ...`` line (the file itself by default)."""
    lines = [line for line in header(path) if line.startswith("kaito validate ")]
    return shlex.split(lines[0])[1:] if lines else ["validate", str(path.relative_to(ROOT))]


def test_the_users_examples_are_there_unchanged_and_the_others_have_headers() -> None:
    assert [p.relative_to(ROOT).as_posix() for p in USER_EXAMPLES] == [
        "examples/fine-tuning/kaito_workspace_tuning_phi_3.yaml",
        "examples/inference/kaito_workspace_phi_3.yaml",
        "examples/inference/kaito_workspace_phi_3_with_adapters.yaml",
    ]
    for path in USER_EXAMPLES:
        assert path.read_text().startswith("apiVersion: kaito.sh/v1alpha1\nkind: Workspace\n"), path
    for path in OWN:
        assert len(header(path)) >= 2, f"{path}: start with a short comment saying what it shows and how to use it"


@pytest.mark.parametrize("path", [p for p in OWN if PLUGIN_DIR not in p.parents], ids=lambda p: p.name)
def test_each_example_passes_its_documented_validate_line(path: Path) -> None:
    args = validate_line(path)
    assert str(path.relative_to(ROOT)) in args, f"{path}: the header's validate line names another file"
    result = run_kaito(*args)
    assert result.returncode == 0, f"{path}: kaito {' '.join(args)}\n{result.stderr}"
    assert "is valid" in result.stdout


def test_the_plugin_example_passes_its_validate_line_with_the_plugin(example_plugin_wheels: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--find-links",
                    str(example_plugin_wheels), "--target", str(site), "kaito-smollm2"], check=True, capture_output=True, timeout=120)
    for path in PLUGIN_DIR.glob("*.yaml"):
        assert "pip install ./examples/preset-plugin" in header(path)
        result = run_kaito(*validate_line(path), pythonpath=[site])
        assert result.returncode == 0, result.stderr


def test_byo_example_is_refused_where_nodes_are_created() -> None:
    """The header's --provisioner matters: the BYO Workspace has no instance type."""
    result = run_kaito("validate", "examples/byo/kaito_workspace_phi_3_byo.yaml")
    assert result.returncode == 1
    assert "resource.instanceType" in result.stderr


def test_the_tuning_configmap_is_upstreams_format_and_the_runner_accepts_it() -> None:
    pytest.importorskip("kaito_servers")
    from kaito_core.api.workspace import TuningMethod
    from kaito_servers.tuning.config import check, parse_training_config

    path = ROOT / "examples" / "fine-tuning" / "kaito_workspace_tuning_phi_3_custom_config.yaml"
    docs = list(yaml.safe_load_all(path.read_text()))
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    workspace = next(d for d in docs if d["kind"] == "Workspace")
    assert workspace["tuning"]["config"] == configmap["metadata"]["name"]
    config = parse_training_config(yaml.safe_load(configmap["data"]["training_config.yaml"]), source=str(path))
    check(config, TuningMethod(workspace["tuning"]["method"]), source=str(path))
