"""Invalid Workspaces are refused at `kubectl apply` time, through the real API server: by the
CRD schema and CEL rules where they can say it, by the operator's validating webhook (the same
validation library, old object on UPDATE) for the rest. Each refusal names the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from harness import Stack, dump

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

BASE: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "metadata": {"name": "x"},
    "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {"apps": "bad"}}},
    "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
}
TUNING = {
    "preset": {"name": "phi-3-mini-4k-instruct"},
    "method": "qlora",
    "input": {"urls": ["https://huggingface.co/datasets/x/resolve/main/train.parquet"]},
    "output": {"image": "myacr.azurecr.io/adapter:0.0.1", "imagePushSecret": "push"},
}


def variant(name: str, *, drop: tuple[str, ...] = (), **set_: Any) -> dict[str, Any]:
    """BASE renamed, with dotted-path fields set (value None deletes) and top-level keys dropped."""
    obj = copy.deepcopy(BASE)
    obj["metadata"]["name"] = name
    for key in drop:
        obj.pop(key, None)
    for path, value in set_.items():
        *parents, leaf = path.split("__")
        node = obj
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return obj


# (name, object, who refuses it, expected text)
CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("neither", variant("neither", drop=("inference",)), "crd", "Either Inference or Tuning must be specified, not neither"),
    ("both", variant("both", tuning=TUNING), "crd", "Either Inference or Tuning must be specified, but not both"),
    ("unknown-preset", variant("unknown-preset", inference__preset__name="phi-9-giant"), "webhook",
     "inference.preset.name: Unsupported inference preset name phi-9-giant"),
    ("no-instance-type", variant("no-instance-type", resource__instanceType=None), "webhook",
     "resource.instanceType: missing field(s): instanceType is required when node auto-provisioning is enabled"),
    ("unknown-sku", variant("unknown-sku", resource__instanceType="Standard_Q7_weird"), "webhook",
     "resource.instanceType: Unsupported instance type Standard_Q7_weird"),
    ("too-small-gpu", variant("too-small-gpu", inference__preset__name="phi-3-medium-4k-instruct"), "webhook",
     "resource.instanceType: Insufficient GPU memory: preset phi-3-medium-4k-instruct"),
    ("reserved-labels", variant("reserved-labels", resource__labelSelector={"matchLabels": {"kaito.sh/workspace": "x"}}), "webhook",
     "resource.labelSelector.matchLabels: matchLabels must contain at least one non-reserved label"),
    ("bad-runtime", variant("bad-runtime", metadata__annotations={"kaito.sh/runtime": "vllm"}), "webhook",
     "metadata.annotations['kaito.sh/runtime']: Runtime validation: model phi-3-mini-4k-instruct does not support inference with the vllm runtime"),
    ("strength", variant("strength", inference__adapters=[{"source": {"name": "a1", "image": "r.io/a:1"}, "strength": "1.5"}]), "crd",
     "inference.adapters[0].strength: Invalid value: \"1.5\": strength must be between 0 and 1"),
    ("dup-adapters", variant("dup-adapters", inference__adapters=[{"source": {"name": "a1", "image": "r.io/a:1"}},
                                                                  {"source": {"name": "a1", "image": "r.io/a:2"}}]), "crd",
     "Duplicate adapter source name found"),
    ("adapter-no-source", variant("adapter-no-source", inference__adapters=[{"source": {"name": "a1"}}]), "crd",
     "inference.adapters[0]: Invalid value: Either image or volumeSource must be specified for an adapter"),
    ("too-many-adapters", variant("too-many-adapters", inference__adapters=[{"source": {"name": f"a{i}", "image": "r.io/a:1"}} for i in range(11)]),
     "crd", "inference.adapters: Too many: 11: must have at most 10 items"),
    ("preset-and-template", variant("preset-and-template", inference__template={"spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
     "crd", "Preset and Template cannot be set at the same time"),
    ("access-mode", variant("access-mode", inference__preset__accessMode="secret"), "crd",
     "inference.preset.accessMode: Unsupported value: \"secret\""),
    ("tuning-multinode", variant("tuning-multinode", drop=("inference",), tuning=TUNING, resource__count=2), "crd",
     "Tuning does not currently support multinode configurations"),
    ("metadata-url", variant("metadata-url", drop=("inference",), tuning={**TUNING, "input": {"urls": ["http://169.254.169.254/latest"]}}), "webhook",
     "tuning.input.urls[0]: data source URL must not target a loopback, private, or link-local address"),
    ("no-push-secret", variant("no-push-secret", drop=("inference",), tuning={**TUNING, "output": {"image": "r.io/a:1"}}), "crd",
     "tuning.output: Invalid value: Must specify imagePushSecret with destination image"),
]


@pytest.mark.parametrize(("name", "obj", "who", "expected"), CASES, ids=[c[0] for c in CASES])
def test_invalid_workspace_is_refused(stack: Stack, kube_namespace: str, name: str, obj: dict[str, Any], who: str, expected: str) -> None:
    result = stack.kubectl("apply", "-n", kube_namespace, "-f", "-", input=dump(obj), check=False)
    assert result.returncode != 0, f"{name} was accepted:\n{result.stdout}"
    assert expected in result.stderr, result.stderr
    if who == "webhook":
        assert 'admission webhook "validate-workspace.validation.workspace.kaito.sh" denied the request' in result.stderr
    assert stack.kubectl("get", "workspace", name, "-n", kube_namespace, check=False).returncode != 0


def test_immutable_fields_are_refused_on_update(stack: Stack, kube_namespace: str) -> None:
    ns = kube_namespace
    ws = variant("immutable")
    stack.kubectl("apply", "-n", ns, "-f", "-", input=dump(ws))
    changes = {
        "resource__instanceType": ("Standard_NC24ads_A100_v4", "instanceType cannot be changed once set"),
        "inference__preset__name": ("phi-3-mini-128k-instruct", "field is immutable"),
        "resource__labelSelector": ({"matchLabels": {"apps": "other"}}, "field is immutable"),
        "resource__count": (2, "field is immutable"),
    }
    for path, (value, expected) in changes.items():
        changed = variant("immutable", **{path: value})
        result = stack.kubectl("apply", "-n", ns, "-f", "-", input=dump(changed), check=False)
        assert result.returncode != 0 and expected in result.stderr, (path, result.stderr)
    # Adapters may change; metadata-only updates always pass (finalizers, annotations).
    ok = variant("immutable", inference__adapters=[{"source": {"name": "a1", "image": "r.io/a:1"}, "strength": "0.3"}])
    stack.kubectl("apply", "-n", ns, "-f", "-", input=dump(ok))
    stack.kubectl("annotate", "workspace", "immutable", "-n", ns, "team=ml")
    stack.kubectl("delete", "workspace", "immutable", "-n", ns, "--timeout=90s")
