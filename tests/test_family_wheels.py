"""Each model family is a real, independently installable package: its wheel is built, installed
on its own, and its presets appear; without it, its preset names are refused with the exact
``pip install`` line, and no change in kaito_core is involved either way.

The wheels are built once per session (one ``pip wheel`` call) and installed with
``pip install --target`` into a directory put on PYTHONPATH; the editable copies of the dev
environment are hidden from entry-point discovery, so only the wheel under test is seen.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kaito_core.preset_providers import KNOWN_PRESET_PACKAGES
from tests.conftest import ROOT

FAMILIES = {
    "kaito-phi3": "phi3",
    "kaito-llama": "llama",
    "kaito-mistral": "mistral",
    "kaito-qwen": "qwen",
    "kaito-deepseek": "deepseek",
    "kaito-gemma3": "gemma3",
    "kaito-gptoss": "gptoss",
    "kaito-falcon": "falcon",
    "kaito-huggingface": "huggingface",
}

PROBE = r"""
import json, os, sys, importlib.metadata as md
from pathlib import Path
site = Path(os.environ["KAITO_TEST_SITE"]).resolve()
real = md.distributions
def only(visible):
    def distributions(**kw):
        out = []
        for d in real(**kw):
            name = d.metadata["Name"]
            if name in FAMILIES:
                inside = Path(str(d.locate_file(""))).resolve() == site
                if not inside or name not in visible:
                    continue
            out.append(d)
        return out
    return distributions
from kaito_core.plugins import Registry
from kaito_core.validation import ValidationContext, check_workspace
from kaito_core.errors import ValidationError
results = {}
for family in FAMILIES:
    md.distributions = only({family})
    registry = Registry.from_entry_points()
    results[family] = {n: registry.source("preset", n).distribution for n in registry.presets()}
md.distributions = only(set())
registry = Registry.from_entry_points()
refusals = {}
for name in sys.argv[1:]:
    ws = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "w"},
          "resource": {"instanceType": "Standard_ND96isr_H200_v5", "labelSelector": {"matchLabels": {"apps": "w"}}},
          "inference": {"preset": {"name": name}}}
    try:
        check_workspace(ws, registry)
        refusals[name] = None
    except ValidationError as exc:
        refusals[name] = [str(e) for e in exc.errors]
print(json.dumps({"installed": results, "none": sorted(registry.presets()), "refusals": refusals}))
"""


@pytest.fixture(scope="session")
def family_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every first-party family wheel, built once and installed into one --target directory."""
    base = tmp_path_factory.mktemp("family-wheels")
    sources = []
    for directory in FAMILIES.values():
        copy = base / "src" / directory
        shutil.copytree(ROOT / "plugins" / directory, copy, ignore=shutil.ignore_patterns("*.egg-info", "build", "tests", "__pycache__"))
        sources.append(str(copy))
    wheels = base / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels), *sources], check=True, capture_output=True, timeout=300)
    built = sorted(wheels.glob("*.whl"))
    assert len(built) == len(FAMILIES), built
    site = base / "site"
    subprocess.run([*pip, "install", "--quiet", "--no-deps", "--no-index", "--target", str(site), *map(str, built)], check=True, capture_output=True, timeout=300)
    return site


def test_each_family_installs_alone_and_unknown_names_name_their_package(family_site: Path) -> None:
    names = ["llama-3.1-8b-instruct", "mistral-7b-instruct", "qwen2.5-coder-7b-instruct", "deepseek-r1-distill-llama-8b",
             "gemma-3-4b-instruct", "gpt-oss-20b", "falcon-7b", "phi-3-mini-4k-instruct", "meta-llama/Llama-3.1-8B-Instruct"]  # fmt: skip
    env = dict(os.environ, KAITO_TEST_SITE=str(family_site), PYTHONPATH=os.pathsep.join([str(family_site), str(ROOT)]))
    code = f"FAMILIES = {sorted(FAMILIES)!r}\n" + PROBE
    result = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for family, presets in report["installed"].items():
        expected = {n for n, dist in KNOWN_PRESET_PACKAGES.items() if dist == family}
        assert set(presets) == expected, family  # exactly its own presets, nothing from the others
        assert set(presets.values()) <= {family}
    assert report["none"] == []
    for name, errors in report["refusals"].items():
        assert errors is not None, name
        dist = "kaito-huggingface" if "/" in name else KNOWN_PRESET_PACKAGES[name]
        assert any(e.startswith("inference.preset.name: Unsupported inference preset name") and f"pip install {dist}" in e for e in errors), errors
