"""`kaito validate` and the operator's admission agree on the rules that depend on what is
installed: the same validation context (provisioner capabilities), and where the user's machine
lacks the operator's backend, validate says so instead of calling the Workspace plainly valid."""

from __future__ import annotations

import pytest
from opgolden import load_example

import kaito_phi3
import kaito_provisioners.plugin
from kaito_core.errors import ValidationError
from kaito_core.operator import checks
from kaito_core.plugins import Registry
from kaito_core.validation import check_workspace, installed_context, operator_requirements


def test_without_the_backend_validate_names_what_the_operator_needs_and_admission_refuses() -> None:
    here = Registry.from_plugins(kaito_phi3, kaito_provisioners.plugin)  # kaito-core + kaito-phi3, no kaito-servers
    obj = load_example("examples/inference/kaito_workspace_phi_3.yaml")
    ws = check_workspace(obj, here, ctx=installed_context(here))  # valid as far as this machine can tell
    needs = operator_requirements(ws, here)
    assert len(needs) == 1 and "'transformers' must be installed where the operator runs (pip install kaito-servers)" in needs[0]
    with pytest.raises(ValidationError, match="pip install kaito-servers"):
        checks.check(obj, here)  # the webhook, running without kaito-servers, refuses it


def test_with_the_backend_installed_nothing_is_left_for_the_operator(registry: Registry) -> None:
    obj = load_example("examples/inference/kaito_workspace_phi_3.yaml")
    ws = check_workspace(obj, registry, ctx=installed_context(registry))
    assert operator_requirements(ws, registry) == []
    assert checks.check(obj, registry).name == ws.name


def test_the_provisioner_decides_byo_mode_by_capability_in_both_places(registry: Registry) -> None:
    obj = load_example("examples/inference/kaito_workspace_phi_3.yaml")
    del obj["resource"]["instanceType"]
    for ctx in (installed_context(registry, provisioner="byo"), checks.context(registry, provisioner="byo")):
        assert ctx.node_auto_provisioning is False
        check_workspace(obj, registry, ctx=ctx)
    with pytest.raises(ValidationError, match="instanceType"):
        checks.check(obj, registry, provisioner="gpu-provisioner")


def test_kaito_validate_prints_what_the_operator_needs_when_the_backend_is_not_installed() -> None:
    from tests.conftest import run_kaito

    example = "examples/inference/kaito_workspace_phi_3.yaml"
    result = run_kaito("validate", example, hide=["kaito-servers"])
    assert result.returncode == 0, result.stderr
    assert "Workspace 'workspace-phi-3-mini' is valid here" in result.stdout
    assert "note: the inference backend 'transformers' must be installed where the operator runs (pip install kaito-servers)" in result.stdout
    unknown = run_kaito("validate", "--provisioner", "no-such", example)
    assert unknown.returncode == 2 and "node provisioner 'no-such' is not installed" in unknown.stderr
