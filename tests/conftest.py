"""Shared fixtures: registries built from exactly the plugins a test needs, the user's examples,
and the tiny real plugin packages installed into temporary directories."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

import kaito_phi3
from kaito_core.plugins import Registry
from tests.fakes import BackendsPlugin

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").rglob("*.yaml"))
#: The examples for node auto-provisioning with kaito-phi3's presets (the :func:`registry` below);
#: the CPU Gemma example is for bring-your-own nodes with kaito-gemma3 (tests/test_validation.py).
PHI3_EXAMPLES = [p for p in EXAMPLES if "_phi_3" in p.name]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def load_example(name: str) -> dict[str, Any]:
    """An example Workspace by file name (e.g. kaito_workspace_phi_3.yaml) as a dict."""
    path = next(p for p in EXAMPLES if p.name == name)
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="session")
def registry() -> Registry:
    """kaito-phi3's presets plus a transformers-like backend, nothing else."""
    return Registry.from_plugins(kaito_phi3, BackendsPlugin())


@pytest.fixture(scope="session")
def registry_no_backends() -> Registry:
    """kaito-phi3's presets only (as on a machine without the servers package)."""
    return Registry.from_plugins(kaito_phi3)


@pytest.fixture
def example() -> Callable[[str], dict[str, Any]]:
    """A fresh deep copy of an example, to mutate."""
    return lambda name: copy.deepcopy(load_example(name))


def _install(package: str, target: Path) -> Path:
    """pip-install a fixture package (copied first, so the source tree stays clean) into ``target``."""
    source = target.parent / f"src-{package}"
    shutil.copytree(FIXTURES / package, source)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), str(source)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return target


@pytest.fixture(scope="session")
def testplugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the installed distribution kaito-testplugin (put it on PYTHONPATH)."""
    return _install("plugin_pkg", tmp_path_factory.mktemp("testplugin") / "site")


@pytest.fixture(scope="session")
def testplugin_dup_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding kaito-testplugin-dup, which re-registers tiny-test-model."""
    return _install("plugin_dup_pkg", tmp_path_factory.mktemp("testplugin-dup") / "site")


def run_kaito(*args: str, pythonpath: Sequence[Path] = (), hide: Sequence[str] = (), cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run the ``kaito`` CLI in a subprocess, optionally with extra site directories on
    PYTHONPATH and with installed distributions hidden from entry-point discovery."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(p) for p in pythonpath] + [str(ROOT)])
    env["KAITO_TEST_HIDE_DISTRIBUTIONS"] = ",".join(hide)
    code = (
        "import os, sys, importlib.metadata as md\n"
        "hidden = {n for n in os.environ.get('KAITO_TEST_HIDE_DISTRIBUTIONS', '').split(',') if n}\n"
        "if hidden:\n"
        "    real = md.distributions\n"
        "    md.distributions = lambda **kw: [d for d in real(**kw) if d.metadata['Name'] not in hidden]\n"
        "from kaito_core.cli import app\n"
        "sys.exit(app(args=sys.argv[1:], prog_name='kaito'))\n"
    )
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)

