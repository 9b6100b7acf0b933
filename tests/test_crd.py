"""The generated CRD: committed copy up to date, structural, CEL rules right (evaluated offline)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from kaito_core.api.crd import CRD_PATH, crd, render_crd
from tests import celcheck
from tests.conftest import EXAMPLES, ROOT, load_example

INFER = "kaito_workspace_phi_3.yaml"
ADAPT = "kaito_workspace_phi_3_with_adapters.yaml"
TUNE = "kaito_workspace_tuning_phi_3.yaml"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    versions = crd()["spec"]["versions"]
    storage = next(v for v in versions if v["storage"])
    result: dict[str, Any] = storage["schema"]["openAPIV3Schema"]
    return result


def test_committed_crd_is_up_to_date() -> None:
    committed = (ROOT / CRD_PATH).read_text(encoding="utf-8")
    assert committed == render_crd(), "the committed CRD is stale: run `make crd` and commit the result"


def test_identity_and_versions() -> None:
    doc = yaml.safe_load(render_crd())
    spec = doc["spec"]
    assert doc["metadata"]["name"] == "workspaces.kaito.sh"
    assert spec["group"] == "kaito.sh" and spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == ["wk", "wks"]
    assert spec["names"]["categories"] == ["workspace"]
    assert [(v["name"], v["served"], v["storage"]) for v in spec["versions"]] == [("v1alpha1", True, False), ("v1beta1", True, True)]
    first, second = spec["versions"]
    assert first["schema"] == second["schema"], "both versions have the same shape (no conversion needed)"
    assert all(v["subresources"] == {"status": {}} for v in spec["versions"])


def test_printer_columns_match_the_cookbook_output() -> None:
    columns = crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    default = ["NAME"] + [c["name"].upper() for c in columns if c.get("priority", 0) == 0]
    assert default == ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE"]
    wide = {c["name"] for c in columns if c.get("priority") == 1}
    assert wide == {"JobStarted", "State", "TargetNodeCount"}
    by_name = {c["name"]: c for c in columns}
    assert by_name["Instance"]["jsonPath"] == ".resource.instanceType"
    assert by_name["WorkspaceReady"]["jsonPath"] == '.status.conditions[?(@.type=="WorkspaceSucceeded")].status'


def _nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural(schema: dict[str, Any]) -> None:
    for path, node in _nodes(schema):
        assert "type" in node, f"{path or '<root>'} has no type"
        for forbidden in ("$ref", "anyOf", "allOf", "oneOf", "title", "$defs", "const"):
            assert forbidden not in node, f"{path}: {forbidden} is not allowed in a structural schema"
        assert not ("properties" in node and "additionalProperties" in node), path
        if "default" in node:
            assert node["default"] not in (None, [], {}), path
        if path and path != ".metadata" and not path.endswith(("[]", "}")):
            assert node.get("description"), f"{path} has no description (add a docstring to the field)"
    props = schema["properties"]
    assert props["metadata"] == {"type": "object"}
    assert props["inference"]["properties"]["template"]["x-kubernetes-preserve-unknown-fields"] is True
    assert props["tuning"]["properties"]["input"]["properties"]["volumeSource"]["x-kubernetes-preserve-unknown-fields"] is True
    assert props["tuning"]["properties"]["method"]["enum"] == ["lora", "qlora"]
    assert props["resource"]["properties"]["count"] == {**props["resource"]["properties"]["count"], "minimum": 1, "default": 1}
    assert props["resource"]["required"] == ["labelSelector"]
    assert props["inference"]["properties"]["adapters"]["maxItems"] == 10
    assert props["status"]["properties"]["conditions"]["x-kubernetes-list-type"] == "map"


def test_every_rule_compiles_and_iterated_values_are_bounded(schema: dict[str, Any]) -> None:
    count = 0
    for path, node in _nodes(schema):
        for rule in node.get("x-kubernetes-validations", []):
            celcheck.compile_rule(rule["rule"])
            assert rule["message"]
            count += 1
            if any(f in rule["rule"] for f in (".all(", ".exists", ".filter(", ".map(")):
                assert "maxItems" in node, f"{path}: a rule iterates an unbounded list"
            if ".matches(" in rule["rule"] and node.get("type") == "string":
                assert "maxLength" in node, f"{path}: a regex rule on an unbounded string"
    assert count >= 20


@pytest.mark.parametrize("name", [p.name for p in EXAMPLES])
def test_examples_pass_every_rule(schema: dict[str, Any], name: str) -> None:
    assert celcheck.violations(schema, load_example(name)) == []


def _mutated(name: str, change: Any) -> dict[str, Any]:
    obj = copy.deepcopy(load_example(name))
    change(obj)
    return obj


CREATE_CASES = [
    ("name", INFER, lambda o: o["metadata"].update(name="Bad_Name"), "metadata.name must be a lowercase RFC 1123 label"),
    ("neither", INFER, lambda o: o.pop("inference"), "Either Inference or Tuning must be specified, not neither"),
    ("both", TUNE, lambda o: o.update(inference={"preset": {"name": "phi-3-mini-4k-instruct"}}), "but not both"),
    ("no-preset-no-template", INFER, lambda o: o["inference"].pop("preset"), "Preset or Template must be specified"),
    ("preset-and-template", INFER, lambda o: o["inference"].update(template={"spec": {}}), "Preset and Template cannot be set at the same time"),
    ("strength-range", ADAPT, lambda o: o["inference"]["adapters"][0].update(strength="1.5"), "strength must be between 0 and 1"),
    ("strength-format", ADAPT, lambda o: o["inference"]["adapters"][0].update(strength="strong"), "strength must be a decimal number"),
    ("adapter-dup", ADAPT, lambda o: o["inference"]["adapters"].append(copy.deepcopy(o["inference"]["adapters"][0])), "Duplicate adapter source name found"),
    ("adapter-no-source", ADAPT, lambda o: o["inference"]["adapters"][0]["source"].pop("image"), "Either image or volumeSource must be specified for an adapter"),
    ("adapter-url", ADAPT, lambda o: o["inference"]["adapters"][0]["source"].update(urls=["https://x/y"]), "URLs are not supported as adapter source"),
    ("adapter-no-name", ADAPT, lambda o: o["inference"]["adapters"][0]["source"].pop("name"), "adapter source name is required"),
    ("tuning-count", TUNE, lambda o: o["resource"].update(count=2), "Tuning does not currently support multinode configurations"),
    ("input-none", TUNE, lambda o: o["tuning"].update(input={}), "Exactly one of URLs, Volume, or Image must be specified"),
    ("input-two", TUNE, lambda o: o["tuning"]["input"].update(image="x/y:1"), "Exactly one of URLs, Volume, or Image must be specified"),
    ("url-scheme", TUNE, lambda o: o["tuning"]["input"].update(urls=["s3://bucket/x"]), "data source URL must use HTTP or HTTPS"),
    ("output-none", TUNE, lambda o: o["tuning"].update(output={}), "Exactly one of Volume or Image must be specified"),
    ("output-both", TUNE, lambda o: o["tuning"]["output"].update(volumeSource={"emptyDir": {}}), "Exactly one of Volume or Image must be specified"),
    ("output-secret", TUNE, lambda o: o["tuning"]["output"].pop("imagePushSecret"), "Must specify imagePushSecret with destination image"),
]


@pytest.mark.parametrize(("name", "change", "message"), [c[1:] for c in CREATE_CASES], ids=[c[0] for c in CREATE_CASES])
def test_rules_reject_invalid_objects(schema: dict[str, Any], name: str, change: Any, message: str) -> None:
    found = celcheck.violations(schema, _mutated(name, change))
    assert any(message in m for m in found), found


UPDATE_CASES = [
    ("count", INFER, lambda o: o["resource"].update(count=2), "field is immutable"),
    ("selector", INFER, lambda o: o["resource"]["labelSelector"]["matchLabels"].update(apps="x"), "field is immutable"),
    ("instance-type", INFER, lambda o: o["resource"].update(instanceType="Standard_NC24ads_A100_v4"), "instanceType cannot be changed once set"),
    ("inference-preset", INFER, lambda o: o["inference"]["preset"].update(name="phi-3-mini-128k-instruct"), "field is immutable"),
    ("toggle", INFER, lambda o: (o.pop("inference"), o.update(tuning=load_example(TUNE)["tuning"])), "Inference field cannot be toggled once set"),
    ("template-set", INFER, lambda o: (o["inference"].pop("preset"), o["inference"].update(template={"spec": {}})), "field cannot be unset/set"),
    ("tuning-preset", TUNE, lambda o: o["tuning"]["preset"].update(name="phi-3-mini-4k-instruct"), "Preset cannot be changed"),
    ("tuning-method", TUNE, lambda o: o["tuning"].update(method="lora"), "Method cannot be changed"),
    ("tuning-input-name", TUNE, lambda o: (o["tuning"]["input"].update(name="b")), "During tuning Name field cannot be changed once set"),
]


@pytest.mark.parametrize(("name", "change", "message"), [c[1:] for c in UPDATE_CASES], ids=[c[0] for c in UPDATE_CASES])
def test_transition_rules_reject_invalid_updates(schema: dict[str, Any], name: str, change: Any, message: str) -> None:
    old = load_example(name)
    if name == TUNE:
        old["tuning"]["input"]["name"] = "a"
    new = copy.deepcopy(old)
    change(new)
    assert celcheck.violations(schema, old) == []
    found = celcheck.violations(schema, new, old)
    assert any(message in m for m in found), found


def test_allowed_updates_pass(schema: dict[str, Any]) -> None:
    old = load_example(ADAPT)
    new = copy.deepcopy(old)
    new["inference"]["adapters"][0]["strength"] = "0.25"
    new["inference"]["adapters"].append({"source": {"name": "second", "image": "x/y:1"}})
    assert celcheck.violations(schema, new, old) == []
    cleared = copy.deepcopy(old)
    del cleared["resource"]["instanceType"]  # BYO may clear it; admission decides by mode
    assert celcheck.violations(schema, cleared, old) == []
