"""values.yaml, values.schema.json, the operator env template and docs/values-reference.md follow
the operator's settings model: committed copies are current, and a new settings field reaches
all four without touching the chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from typer.testing import CliRunner

import kaito_core.chart.values as chart_values
from chartkit import CHART, ROOT
from kaito_core.chart import generators, stale_files
from kaito_core.chart.environment import render_settings_template
from kaito_core.chart.schema import values_schema
from kaito_core.chart.values import CHART_DEFAULTS, CHART_MANAGED, settings_sections
from kaito_core.chart.valuesfile import render_values_yaml
from kaito_core.cli import app
from kaito_core.operator.runtime import configure_kopf
from kaito_core.operator.settings import OperatorSettings, RequeueSettings


def test_the_committed_generated_files_are_current() -> None:
    assert stale_files(ROOT) == [], "run `make chart` (kaito chart) and commit the result"


def test_values_yaml_mirrors_every_settings_field_with_its_default() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for section, model in settings_sections().items():
        assert to_camel(section) in values, f"values.yaml has no section {to_camel(section)} for OperatorSettings.{section}"
        mirrored = values[to_camel(section)]
        for field, info in model.model_fields.items():
            key = to_camel(field)
            if (section, field) in CHART_MANAGED:
                assert key not in mirrored, f"{section}.{field} is set by the chart, not a value"
                continue
            assert key in mirrored, f"values.yaml {to_camel(section)} lacks {key} (OperatorSettings.{section}.{field})"
            default = CHART_DEFAULTS.get((section, field), (info.get_default(call_default_factory=True), ""))[0]
            if isinstance(default, BaseModel):  # a nested settings model (e.g. nodeProvisioner.azure)
                default = default.model_dump(mode="json", by_alias=True)
            assert mirrored[key] == json.loads(json.dumps(default, default=str)), f"{to_camel(section)}.{key}"


def test_every_chart_managed_or_changed_field_exists_in_the_settings() -> None:
    sections = settings_sections()
    for section, field in [*CHART_MANAGED, *CHART_DEFAULTS]:
        assert field in sections[section].model_fields, f"{section}.{field} is no longer an operator setting"


def test_the_schema_refuses_unknown_keys_in_every_section() -> None:
    schema = values_schema()
    assert schema["additionalProperties"] is False
    for name, definition in schema["$defs"].items():
        if definition.get("type") == "object" and "properties" in definition:
            assert definition.get("additionalProperties") is False, name


class _RequeueWithNewField(RequeueSettings):
    adapter_s: float = Field(3.0, gt=0)
    """While adapter images are pulled."""


class _SettingsWithNewFields(OperatorSettings):
    requeue: _RequeueWithNewField = Field(default_factory=_RequeueWithNewField)  # type: ignore[assignment]


class _GatesSection(BaseModel):
    """Feature gates."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    fast_path: bool = False
    """Take the fast path."""


class _SettingsWithNewSection(OperatorSettings):
    gates: _GatesSection = Field(default_factory=_GatesSection)


@pytest.mark.parametrize(
    ("settings", "section", "field", "env", "expression"),
    [
        (_SettingsWithNewFields, "requeue", "adapterS", "KAITO_REQUEUE__ADAPTER_S", ".Values.requeue.adapterS | toString | quote"),
        (_SettingsWithNewSection, "gates", "fastPath", "KAITO_GATES__FAST_PATH", ".Values.gates.fastPath | toString | quote"),
    ],
    ids=["new-field", "new-section"],
)
def test_a_new_settings_field_reaches_every_generated_file(
    monkeypatch: pytest.MonkeyPatch, settings: type[OperatorSettings], section: str, field: str, env: str, expression: str
) -> None:
    monkeypatch.setattr(chart_values, "OperatorSettings", settings)
    values = yaml.safe_load(render_values_yaml())
    assert field in values[section]
    schema = values_schema()
    props: dict[str, Any] = schema["$defs"][schema["properties"][section]["$ref"].split("/")[-1]]["properties"]
    assert field in props and props[field]["description"]
    assert f"- name: {env}\n  value: {{{{ {expression} }}}}" in render_settings_template()
    assert env in generators()[ROOT.joinpath("docs/values-reference.md").relative_to(ROOT)]()
    if section == "requeue":
        assert props[field]["exclusiveMinimum"] == 0  # constraints travel too


@pytest.mark.parametrize(("manage", "expected"), [(True, "validation.workspace.kaito.sh"), (False, None)])
def test_the_chart_setting_stops_the_operator_managing_the_webhook_configuration(tmp_path: Path, manage: bool, expected: str | None) -> None:
    settings = OperatorSettings.load(webhook={"manage_configuration": manage, "cert_dir": tmp_path})
    kopf_settings = kopf.OperatorSettings()
    configure_kopf(settings, kopf_settings)
    assert kopf_settings.admission.managed == expected
    assert kopf_settings.admission.server is not None  # the webhook is still served


def test_kaito_chart_writes_the_files_and_check_lists_stale_ones(tmp_path: Path) -> None:
    runner = CliRunner()
    stale = runner.invoke(app, ["chart", "--root", str(tmp_path), "--check"])
    assert stale.exit_code == 1 and "stale: charts/kaito/values.schema.json" in stale.output
    written = runner.invoke(app, ["chart", "--root", str(tmp_path)])
    assert written.exit_code == 0 and "wrote docs/values-reference.md" in written.output
    assert runner.invoke(app, ["chart", "--root", str(tmp_path), "--check"]).exit_code == 0
    assert (tmp_path / "charts/kaito/values.yaml").read_text() == (CHART / "values.yaml").read_text()
