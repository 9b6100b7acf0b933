"""The API models round-trip the user's three examples."""

from __future__ import annotations

from typing import Any

import pytest

from kaito_core.api.workspace import AdapterSpec, TuningMethod, Workspace
from kaito_core.validation import parse_workspace
from tests.conftest import EXAMPLES, load_example

EXAMPLE_NAMES = [p.name for p in EXAMPLES]


def test_the_examples_are_there() -> None:
    assert sorted(EXAMPLE_NAMES) == sorted(
        ["kaito_workspace_phi_3.yaml", "kaito_workspace_phi_3_with_adapters.yaml", "kaito_workspace_tuning_phi_3.yaml"]
    )


def _subset(small: Any, big: Any) -> bool:
    """Every key/value of ``small`` is in ``big`` (lists compared item by item)."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and _subset(v, big[k]) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(big, list) and len(small) == len(big) and all(_subset(a, b) for a, b in zip(small, big, strict=True))
    return bool(small == big)


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_examples_round_trip(name: str) -> None:
    data = load_example(name)
    ws = parse_workspace(data)
    wire = ws.to_wire()
    assert parse_workspace(wire) == ws
    # The wire form is the YAML plus defaults: everything the user wrote comes back unchanged ...
    assert _subset(data, wire)
    # ... and nothing but defaults is added.
    assert ws.model_dump(by_alias=True, exclude_defaults=True, mode="json") == {k: v for k, v in data.items() if k != "kind"}


def test_example_fields_land_where_expected() -> None:
    ws = parse_workspace(load_example("kaito_workspace_phi_3_with_adapters.yaml"))
    assert ws.api_version == "kaito.sh/v1alpha1"
    assert ws.resource.instance_type == "Standard_NC6s_v3"
    assert ws.resource.label_selector.match_labels == {"apps": "phi-3-adapter"}
    assert ws.inference is not None and ws.inference.preset is not None
    assert ws.inference.preset.name == "phi-3-mini-128k-instruct"
    assert ws.inference.adapters == [AdapterSpec.model_validate({"source": {"name": "phi-3-adapter", "image": "ACR_REPO_HERE.azurecr.io/ADAPTER_HERE:0.0.1"}, "strength": "1.0"})]
    assert ws.preset_name == "phi-3-mini-128k-instruct"

    tuning = parse_workspace(load_example("kaito_workspace_tuning_phi_3.yaml"))
    assert tuning.tuning is not None
    assert tuning.tuning.method is TuningMethod.QLORA
    assert tuning.tuning.output.image_push_secret == "ACR_REGISTRY_SECRET_HERE"
    assert tuning.tuning.input.urls[0].startswith("https://huggingface.co/datasets/philschmid/dolly-15k-oai-style/")


def test_snake_case_names_are_accepted_too() -> None:
    ws = Workspace.model_validate(
        {"metadata": {"name": "x"}, "resource": {"instance_type": "Standard_NC6s_v3", "label_selector": {"match_labels": {"a": "b"}}}}
    )
    assert ws.to_wire()["resource"]["instanceType"] == "Standard_NC6s_v3"
