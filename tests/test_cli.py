"""The kaito CLI, run as a subprocess the way users run it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from kaito_core.api.crd import render_crd
from tests.conftest import ROOT, run_kaito


#: Examples written for bring-your-own nodes (the local cluster's real CPU node): no instanceType.
BYO_EXAMPLES = ("examples/inference/kaito_workspace_gemma_3_270m_cpu.yaml",)


def test_validate_accepts_every_example_in_the_mode_it_is_written_for() -> None:
    result = run_kaito("validate", "examples/**/*.yaml")
    assert result.stdout.count("is valid") == 3, result.stderr
    # Node auto-provisioning (the default) needs an instanceType; the CPU example is for your own node.
    assert result.returncode == 1 and "1 invalid of 4 Workspace document(s)" in result.stderr
    assert f"{BYO_EXAMPLES[0]}: Workspace 'workspace-gemma-3-270m-cpu' is invalid" in result.stderr
    assert "use bring-your-own nodes (kaito validate --byo)" in result.stderr
    byo = run_kaito("validate", "--byo", *BYO_EXAMPLES)
    assert byo.returncode == 0, byo.stderr
    assert byo.stdout.count("is valid") == len(BYO_EXAMPLES)


def test_validate_a_directory_and_the_console_script() -> None:
    import subprocess
    import sys

    kaito = str(Path(sys.executable).parent / "kaito")  # the console script installed with this venv
    result = subprocess.run([kaito, "validate", "examples/fine-tuning"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "workspace-tuning-phi-3" in result.stdout


def test_validate_without_kaito_phi3_names_the_package() -> None:
    result = run_kaito("validate", "examples", hide=["kaito-phi3"])
    assert result.returncode == 1
    assert "4 invalid of 4 Workspace document(s)" in result.stderr  # the CPU Gemma example is for --byo
    assert "inference.preset.name: Unsupported inference preset name phi-3-mini-4k-instruct" in result.stderr
    assert "tuning.preset.name: Unsupported tuning preset name phi-3-mini-128k-instruct" in result.stderr
    assert "pip install kaito-phi3" in result.stderr


def test_validate_reports_every_problem_of_every_document(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata: {name: Bad_Name}
resource:
  instanceType: Standard_NC6s_v3
  labelSelector: {matchLabels: {apps: x}}
inference:
  preset: {name: phi-3-medium-4k-instruct}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: other}
---
apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata: {name: ok}
resource:
  labelSelector: {matchLabels: {apps: x}}
tuning:
  preset: {name: phi-3-mini-4k-instruct}
  method: qlora
  input: {urls: ["http://10.0.0.5/data.parquet"]}
  output: {image: "myacr.azurecr.io/out:1"}
"""
    )
    result = run_kaito("validate", str(bad))
    assert result.returncode == 1
    err = result.stderr
    assert "(document 1): Workspace 'Bad_Name' is invalid (2 problems)" in err
    assert "metadata.name:" in err and "resource.instanceType: Insufficient GPU memory" in err
    assert "(document 3): Workspace 'ok' is invalid (3 problems)" in err
    assert "resource.instanceType: missing field(s): instanceType is required" in err
    assert "tuning.input.urls[0]: data source URL must not target a loopback, private, or link-local address" in err
    assert "tuning.output.imagePushSecret" in err
    assert "skipped ConfigMap" in result.stdout
    assert "2 invalid of 2 Workspace document(s)" in err


def test_validate_byo_mode(tmp_path: Path) -> None:
    result = run_kaito("validate", "--byo", "examples/inference/kaito_workspace_phi_3.yaml")
    assert result.returncode == 1
    assert "instanceType must be empty when node auto-provisioning is disabled (BYO scenario)" in result.stderr


def test_validate_missing_file() -> None:
    result = run_kaito("validate", "no/such/file.yaml")
    assert result.returncode == 2
    assert "no such file or directory: no/such/file.yaml" in result.stderr


def test_crd_prints_and_writes(tmp_path: Path) -> None:
    printed = run_kaito("crd")
    assert printed.returncode == 0
    assert printed.stdout == render_crd()
    target = tmp_path / "crds" / "workspaces.yaml"
    written = run_kaito("crd", "--output", str(target))
    assert written.returncode == 0
    assert target.read_text() == render_crd()


def test_presets_table_and_json() -> None:
    table = run_kaito("presets")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "phi3 (kaito-phi3):" in lines  # grouped by family, naming the distribution
    assert lines[lines.index("phi3 (kaito-phi3):") + 1].split() == ["NAME", "BACKENDS", "WEIGHTS", "GiB", "CONTEXT", "MIN", "GPU", "GiB", "TUNING", "GATED"]
    assert "phi-3-mini-4k-instruct" in table.stdout
    records = json.loads(run_kaito("presets", "--output", "json").stdout)
    mini = next(r for r in records if r["name"] == "phi-3-mini-4k-instruct")
    assert mini == {
        "name": "phi-3-mini-4k-instruct",
        "family": "phi3",
        "gated": False,
        "backends": ["transformers"],
        "weightsGiB": 7.12,
        "context": 4096,
        "minGpuGiB": 12.28,
        "requiresGpu": True,
        "tuning": ["lora", "qlora"],
        "distribution": "kaito-phi3",
        "deprecated": False,
    }


def test_presets_on_an_instance_type_show_nodes_and_gpus() -> None:
    table = run_kaito("presets", "--instance-type", "Standard_NC24ads_A100_v4")
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("On Standard_NC24ads_A100_v4 (1× NVIDIA A100 80 GiB):")
    assert re.search(r"phi-3-mini-4k-instruct\s+transformers\s+7\.12\s+4096\s+1\s+1 \(1/node\)\s+fits", table.stdout)
    records = {r["name"]: r for r in json.loads(run_kaito("presets", "-i", "standard_nc24ads_a100_v4", "-o", "json").stdout)}
    assert records["phi-3-medium-4k-instruct"]["fit"] == {
        "instanceType": "Standard_NC24ads_A100_v4", "nodes": 1, "gpus": 1, "gpusPerNode": 1, "verdict": "fits", "note": "",
    }  # fmt: skip
    bad = run_kaito("presets", "--instance-type", "Standard_Nope")
    assert bad.returncode == 2 and "--instance-type: unsupported instance type 'Standard_Nope'" in bad.stderr


def test_help_texts() -> None:
    result = run_kaito("--help")
    assert result.returncode == 0
    for command in ("plugins", "presets", "validate", "crd"):
        assert command in result.stdout
    validate_help = run_kaito("validate", "--help").stdout
    assert "--byo" in validate_help and "--cloud" in validate_help
