"""Helpers of the golden-file tests: load an example as the API server returns it, compare YAML."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from kaito_core import serving
from kaito_core.operator import checks, plan
from kaito_core.operator.settings import OperatorSettings
from kaito_core.plugins import Registry
from kaito_core.provisioners import ProvisionResult

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).resolve().parents[2]
UID = "00000000-0000-0000-0000-000000000001"


def load_example(relpath: str, **meta: Any) -> dict[str, Any]:
    """An example Workspace as the API server would return it (namespace, uid, generation set)."""
    obj: dict[str, Any] = yaml.safe_load((ROOT / relpath).read_text())
    obj["apiVersion"] = "kaito.sh/v1beta1"
    obj["metadata"].update({"namespace": "default", "uid": UID, "generation": 1, **meta})
    return obj


def assert_golden(name: str, objects: Any, golden_dir: Path = GOLDEN) -> None:
    """Compare with <golden_dir>/<name>.yaml; KAITO_UPDATE_GOLDEN=1 (re)writes it."""
    path = golden_dir / f"{name}.yaml"
    text = yaml.safe_dump_all(objects if isinstance(objects, list) else [objects], sort_keys=False, width=120)
    if os.environ.get("KAITO_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} is missing; create it with KAITO_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path} differs; rerun with KAITO_UPDATE_GOLDEN=1 if the change is intended"


READY = ProvisionResult(ready=True, ready_nodes=("node-0",))


def plan_for(obj: dict[str, Any], registry: Registry, provisioner: str = "gpu-provisioner", **settings: Any) -> plan.Desired:
    """Exactly the reconciler's planning of ``obj`` (validation, backend choice, plan_inference)
    with the nodes reported ready, as :meth:`Reconciler._read_and_plan` does it."""
    config = OperatorSettings.load(node_provisioner={"name": provisioner}, **settings)
    ws = checks.check(obj, registry, cloud=config.cloud.provider, provisioner=provisioner)
    assert ws.inference and ws.inference.preset
    preset = registry.preset(ws.inference.preset.name)
    backend = registry.backend(serving.choose_backend(preset, ws.metadata.annotations))
    return plan.plan_inference(ws, preset, backend, registry.provisioner(provisioner), config, plan.Observed(provision=READY))
