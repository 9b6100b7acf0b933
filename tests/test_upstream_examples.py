"""Upstream KAITO's own example Workspaces for the model families (tests/fixtures/upstream_examples)
validate with the family plugins installed; placeholders are refused naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import kaito_deepseek
import kaito_falcon
import kaito_gemma3
import kaito_gptoss
import kaito_llama
import kaito_mistral
import kaito_phi3
import kaito_qwen
from kaito_core.errors import ValidationError
from kaito_core.plugins import Registry
from kaito_core.validation import ValidationContext, check_workspace
from tests.fakes import BackendsPlugin, FakeMultiNode, FakeTransformers

UPSTREAM = Path(__file__).resolve().parent / "fixtures" / "upstream_examples"
FILES = sorted(UPSTREAM.glob("*.yaml"))

PLACEHOLDER_SKU = {p.name for p in FILES if "arc-examples" in p.name}
"""Upstream's Arc examples say ``instanceType: <your-vm-sku>``."""
NOT_MODELLED = {"inference__kaito_workspace_accelerator.yaml": "resource.partition"}
"""v0.12's accelerator partitioning (feature gate, BYO only) is not part of our Workspace API yet."""
MULTI_NODE = {
    "inference__kaito_workspace_deepseek_r1.yaml": 5,
    "inference__kaito_workspace_deepseek_v3.yaml": 5,
    "inference__kaito_workspace_mistral_large_3_675b_instruct.yaml": 5,
    "inference__kaito_workspace_llama-3.3_70b_instruct.yaml": 2,
}
"""Examples whose model needs more GPUs than one node has -> nodes the estimator plans
(``resource.count`` is 6, 6, 6 and 2: max(count, needed) nodes are used)."""


class VLLMLike(FakeMultiNode):
    """Stands in for a backend that splits a model across nodes, as upstream's vLLM."""

    name = "vllm"
    supports_adapters = True


@pytest.fixture(scope="module")
def all_families() -> Registry:
    plugins = (kaito_phi3, kaito_llama, kaito_mistral, kaito_qwen, kaito_deepseek, kaito_gemma3, kaito_gptoss, kaito_falcon)
    return Registry.from_plugins(*plugins, BackendsPlugin(FakeTransformers(), VLLMLike()))


def _workspaces(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    return [d for d in docs if d.get("kind") == "Workspace"]


def test_the_upstream_examples_are_there() -> None:
    assert len(FILES) >= 25
    assert all(_workspaces(p) for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_upstream_example_validates_with_a_backend_that_splits(all_families: Registry, path: Path) -> None:
    ctx = ValidationContext(default_backend="vllm")
    for doc in _workspaces(path):
        if path.name in PLACEHOLDER_SKU:
            with pytest.raises(ValidationError) as info:
                check_workspace(doc, all_families, ctx=ctx)
            assert [(e.path, "placeholder" in e.message) for e in info.value.errors] == [("resource.instanceType", True)]
        elif path.name in NOT_MODELLED:
            with pytest.raises(ValidationError) as info:
                check_workspace(doc, all_families, ctx=ctx)
            assert [e.path for e in info.value.errors] == [NOT_MODELLED[path.name]]
        else:
            assert check_workspace(doc, all_families, ctx=ctx).name
            if path.name not in MULTI_NODE:  # and with the preset's own first backend (transformers mostly)
                assert check_workspace(doc, all_families, ctx=ValidationContext()).name


@pytest.mark.parametrize("name", sorted(MULTI_NODE))
def test_models_larger_than_a_node_are_refused_by_a_backend_that_cannot_split(all_families: Registry, name: str) -> None:
    (doc,) = _workspaces(UPSTREAM / name)
    with pytest.raises(ValidationError) as info:
        check_workspace(doc, all_families, ctx=ValidationContext(default_backend="transformers"))
    (error,) = info.value.errors
    assert error.path == "resource.instanceType"
    assert "backend transformers cannot split a model across nodes" in error.message
    assert "Standard_" in error.fix  # names an instance type on which one node holds it


@pytest.mark.parametrize(("name", "nodes"), sorted(MULTI_NODE.items()))
def test_multi_node_examples_plan_the_estimators_node_count(all_families: Registry, name: str, nodes: int) -> None:
    from kaito_core.fit import plan_nodes
    from kaito_core.sku import get_instance_type

    (doc,) = _workspaces(UPSTREAM / name)
    preset = all_families.preset(doc["inference"]["preset"]["name"])
    plan = plan_nodes(preset, get_instance_type(doc["resource"]["instanceType"]), backend=VLLMLike(), suggest=False)
    assert -(-plan.gpus_needed // plan.gpus_per_node) == nodes
    assert plan.nodes == max(nodes, 1)  # count is not passed here: the nodes needed
