"""A provisioner plugin's own settings reach the chart: the shipped ``karpenter`` provisioner's
NodeClass is a values section (``karpenter.nodeClass``) with its schema and reference rows, set
in the operator's environment only when nodeProvisioner.name is karpenter, and read back by the
plugin from that environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings, SettingsConfigDict

import kaito_core.chart.values as chart_values
from chartkit import CASES, CHART, ROOT, documents, operator_env, template
from kaito_core.chart.environment import render_settings_template
from kaito_core.chart.schema import values_schema
from kaito_core.chart.values import provisioner_sections
from kaito_core.plugins import Registry, hookimpl
from kaito_core.provisioners import NodeClient, NodeProvisioner, NodeRequest, ProvisionResult
from kaito_provisioners.nodepool import KarpenterSettings, NodeClassRef


def test_the_karpenter_section_mirrors_the_plugin_settings_model() -> None:
    sections = provisioner_sections()
    assert sections["karpenter"].provisioner == "karpenter" and sections["karpenter"].model is KarpenterSettings
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["karpenter"] == {"nodeClass": NodeClassRef().model_dump()}
    schema = values_schema()
    section = schema["$defs"][schema["properties"]["karpenter"]["$ref"].split("/")[-1]]
    assert "only when nodeProvisioner.name is karpenter" in schema["properties"]["karpenter"]["description"]
    node_class = schema["$defs"][section["properties"]["nodeClass"]["$ref"].split("/")[-1]]
    assert node_class["additionalProperties"] is False and set(node_class["properties"]) == {"group", "kind", "name"}
    reference = (ROOT / "docs" / "values-reference.md").read_text()
    assert "| `karpenter.nodeClass.kind` | string | `\"AKSNodeClass\"` |" in reference
    assert "| `KAITO_KARPENTER__NODE_CLASS`, key `kind` |" in reference
    assert "only when nodeProvisioner.name is karpenter" in reference.split("## `karpenter`")[1].split("|")[0]


def test_the_environment_template_sets_the_section_only_for_its_provisioner() -> None:
    text = render_settings_template()
    block = '{{- if eq .Values.nodeProvisioner.name "karpenter" }}\n- name: KAITO_KARPENTER__NODE_CLASS\n'
    assert block + "  value: {{ .Values.karpenter.nodeClass | toJson | quote }}\n{{- end }}" in text


def _env(helm: Path, tmp: Path, values: dict[str, Any]) -> dict[str, str]:
    return operator_env(documents(template(helm, values, tmp)))


def test_the_rendered_environment_is_what_the_plugin_reads(helm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env(helm, tmp_path, CASES["karpenter-aws"])
    for name in [n for n in env if n.startswith("KAITO_")]:
        monkeypatch.setenv(name, env[name])
    assert KarpenterSettings().node_class == NodeClassRef(group="karpenter.k8s.aws", kind="EC2NodeClass", name="gpu")
    assert not any(n.startswith("KAITO_KARPENTER__") for n in _env(helm, tmp_path, CASES["byo"]))
    defaults = _env(helm, tmp_path, CASES["karpenter"])
    assert yaml.safe_load(defaults["KAITO_KARPENTER__NODE_CLASS"]) == NodeClassRef().model_dump()


def test_the_schema_refuses_a_misspelt_node_class_field(helm: Path, tmp_path: Path) -> None:
    from chartkit import HelmError

    with pytest.raises(HelmError) as err:
        template(helm, {"nodeProvisioner": {"name": "karpenter"}, "karpenter": {"nodeClass": {"knd": "EC2NodeClass"}}}, tmp_path)
    assert "additional properties 'knd' not allowed" in str(err.value)


# -- any shipped provisioner with settings ---------------------------------------------------------


class _FleetSettings(BaseSettings):
    """Settings of the fleet provisioner."""

    model_config = SettingsConfigDict(env_prefix="KAITO_FLEET__", env_nested_delimiter="__")

    pool_size: int = 3
    """Machines kept warm."""


class _BadPrefixSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEET_")


def _registry(settings_model: type[BaseSettings]) -> Registry:
    class Fleet(NodeProvisioner):
        name = "fleet"

        def ensure_nodes(self, nodes: NodeClient, request: NodeRequest) -> ProvisionResult:
            return ProvisionResult(ready=True)

        def delete_nodes(self, nodes: NodeClient, *, workspace: str, namespace: str) -> bool:
            return True

        def node_affinity_terms(self, request: NodeRequest) -> list[dict[str, Any]]:
            return []

    Fleet.settings_model = settings_model

    class Plugin:
        @hookimpl
        def register_provisioners(self, register: Any) -> None:
            register(Fleet())

    return Registry.from_plugins(Plugin())


def test_a_shipped_provisioner_with_settings_gets_a_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chart_values, "SHIPPED_PROVISIONER_PACKAGES", ("Plugin",))
    sections = provisioner_sections(_registry(_FleetSettings))
    assert list(sections) == ["fleet"] and sections["fleet"].provisioner == "fleet"


def test_a_settings_model_without_the_kaito_prefix_is_refused_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chart_values, "SHIPPED_PROVISIONER_PACKAGES", ("Plugin",))
    with pytest.raises(TypeError, match=r"provisioner fleet needs env_prefix='KAITO_<SECTION>__'"):
        provisioner_sections(_registry(_BadPrefixSettings))


def test_generating_without_the_shipped_provisioners_fails_naming_the_package() -> None:
    with pytest.raises(RuntimeError, match="needs kaito-provisioners installed"):
        provisioner_sections(_registry(_FleetSettings))
