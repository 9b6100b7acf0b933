"""Presets named by a Hugging Face model id in the operator: the reconciler and the admission
path resolve them through one :class:`PresetSource` (catalog, then the operator's HF cache, then
the hub with the Workspace's token), generated presets are kept in memory, and the inference pod
is told the model id."""

from __future__ import annotations

import base64
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import kaito_huggingface
import kaito_llama
import kaito_provisioners.plugin
import kaito_servers.plugin
from kaito_core.errors import NotReadyError, ValidationError
from kaito_core.operator import checks
from kaito_core.operator.kube import Kube
from kaito_core.operator.presets import PresetSource
from kaito_core.operator.reconciler import Reconciler
from kaito_core.operator.settings import OperatorSettings, PresetSourceSettings
from kaito_core.plugins import Registry, hookimpl
from kaito_core.preset_sources import ModelLocation, PresetGenerationError, PresetGenerator
from kaito_core.presets import Preset
from kaito_llama.presets import LLAMA_3_1_8B_INSTRUCT
from fakeapi import FakeApiServer
from tests.hfcache import GATED_ID, OPEN_ID, write_hf_cache

GPU_NODE = {
    "apiVersion": "v1", "kind": "Node",
    "metadata": {"name": "gpu-1", "labels": {"apps": "llama"}},
    "spec": {},
    "status": {"conditions": [{"type": "Ready", "status": "True"}], "capacity": {"nvidia.com/gpu": "1"}},
}


def workspace(model: str, secret: str | None = None) -> dict[str, Any]:
    preset: dict[str, Any] = {"name": model}
    if secret:
        preset["presetOptions"] = {"modelAccessSecret": secret}
    return {
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
        "metadata": {"name": "workspace-llama", "namespace": "default", "uid": "u-1", "generation": 1},
        "resource": {"labelSelector": {"matchLabels": {"apps": "llama"}}},
        "inference": {"preset": preset},
    }


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_plugins(kaito_huggingface, kaito_servers.plugin, kaito_provisioners.plugin)


def byo_reconciler(registry: Registry, cache: Path, api: FakeApiServer) -> Reconciler:
    settings = OperatorSettings.load(node_provisioner={"name": "byo"}, presets={"hub": False, "hf_cache_dir": str(cache)})
    return Reconciler(Kube(None, send=api), registry, settings)


def test_a_model_id_in_the_operator_cache_is_served_and_kept_in_memory(registry: Registry, tmp_path: Path) -> None:
    cache = write_hf_cache(tmp_path / "hub")
    api = FakeApiServer(GPU_NODE)
    reconciler = byo_reconciler(registry, cache, api)
    obj = workspace(OPEN_ID)
    with pytest.raises(NotReadyError):  # the workload was just created
        reconciler.reconcile(obj)
    (deployment,) = [o for o in api.created if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--preset") + 1] == OPEN_ID.lower()
    assert args[args.index("--dtype") + 1] == "bfloat16"  # the generated preset's backend params
    env = {e["name"]: e.get("value") for c in pod["initContainers"] for e in c.get("env", [])}
    assert env["KAITO_MODEL_REPO"] == OPEN_ID
    # A resync needs the model's files no more: the generated preset is kept in memory.
    shutil.rmtree(cache)
    assert reconciler.reconcile(obj).ready
    assert not any(path.endswith("/secrets/hf-token") for _, path in api.calls)  # no token was needed or read


def test_a_gated_model_without_a_secret_is_refused_saying_how_to_provide_one(registry: Registry, tmp_path: Path) -> None:
    obj = workspace(GATED_ID)
    api = RecordingApi(GPU_NODE)
    reconciler = byo_reconciler(registry, write_hf_cache(tmp_path / "hub"), api)
    with pytest.raises(ValidationError) as info:
        reconciler.reconcile(obj)
    assert info.value.errors[0].path == "inference.preset.presetOptions.modelAccessSecret"
    (status,) = [body for method, path, body in api.bodies if method == "PATCH" and path.endswith("/status")]
    conditions = status["status"]["conditions"]
    message = " ".join(c["message"] for c in conditions if c["status"] == "False")
    assert "modelAccessSecret" in message and "HF_TOKEN" in message
    assert api.created == []


def test_admission_uses_the_same_source(registry: Registry, tmp_path: Path) -> None:
    source = PresetSource(registry, PresetSourceSettings(hub=False, hf_cache_dir=write_hf_cache(tmp_path / "hub")))
    ws = workspace(OPEN_ID)
    assert checks.check(ws, registry, provisioner="byo", resolve_preset=source.resolver(ws)).name == "workspace-llama"
    gated = workspace(GATED_ID)
    with pytest.raises(ValidationError, match="modelAccessSecret"):
        checks.check(gated, registry, provisioner="byo", resolve_preset=source.resolver(gated))
    # Without the operator's source the model's files are not found (what kaito validate says offline).
    with pytest.raises(ValidationError, match="--model-dir"):
        checks.check(ws, registry, provisioner="byo")


class RecordingApi(FakeApiServer):
    """Also keeps the bodies of the requests (the status patches)."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        super().__init__(*objects)
        self.bodies: list[tuple[str, str, Any]] = []

    def __call__(self, api: Any, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        self.bodies.append((method, path, kwargs.get("body")))
        return super().__call__(api, method, path, **kwargs)


class RecordingGenerator(PresetGenerator):
    """Stands in for the hub: records where it was asked to read (the token included)."""

    name = "recording"

    def __init__(self) -> None:
        self.seen: list[ModelLocation] = []

    def handles(self, name: str) -> bool:
        return "/" in name

    def generate(self, name: str, where: ModelLocation) -> Preset:
        self.seen.append(where)
        return LLAMA_3_1_8B_INSTRUCT.model_copy(update={"name": name.lower(), "family": "huggingface", "source_repo": name})


class GeneratorPlugin:
    def __init__(self, generator: PresetGenerator) -> None:
        self.generator = generator

    @hookimpl
    def register_preset_generators(self, register: Callable[[PresetGenerator], None]) -> None:
        register(self.generator)


def secret(name: str, token: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "team"},
            "data": {"HF_TOKEN": base64.b64encode(token.encode()).decode()}}


def test_the_hub_gets_the_workspace_token_once_and_it_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    generator = RecordingGenerator()
    registry = Registry.from_plugins(GeneratorPlugin(generator))
    api = FakeApiServer(secret("hf-token", "hf_secret_value"))
    settings = PresetSourceSettings(hub=True, read_model_access_secrets=True, hf_endpoint="https://hf-mirror.example.com")
    source = PresetSource(registry, settings, Kube(None, send=api))
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            preset = source.resolve("gated-org/Model-X", "team", "hf-token")
    assert preset.name == "gated-org/model-x"
    (where,) = generator.seen  # generated once, then kept per (model id, revision)
    assert where.hub and where.token is not None and where.token.get_secret_value() == "hf_secret_value"
    assert where.endpoint == "https://hf-mirror.example.com" and where.cache_dir is None
    assert [path for _, path in api.calls] == ["/api/v1/namespaces/team/secrets/hf-token"]
    assert "hf_secret_value" not in caplog.text and "hf_secret_value" not in repr(where)
    # A missing secret is no token (the generator then says how to provide one), not a crash.
    source.resolve("gated-org/Model-Y", "team", "absent")
    assert generator.seen[-1].token is None


class GatedGenerator(RecordingGenerator):
    """The hub's answer for a gated model without a token."""

    def generate(self, name: str, where: ModelLocation) -> Preset:
        self.seen.append(where)
        raise PresetGenerationError(f"model {name} is gated on Hugging Face and no token was given", "create a Secret ...")


def test_by_default_no_secret_is_read_and_the_refusal_names_the_setting() -> None:
    generator = GatedGenerator()
    api = FakeApiServer(secret("hf-token", "hf_secret_value"))
    source = PresetSource(Registry.from_plugins(GeneratorPlugin(generator)), OperatorSettings().presets, Kube(None, send=api))
    with pytest.raises(PresetGenerationError, match="is gated") as info:
        source.resolve("gated-org/Model-X", "team", "hf-token")
    assert "presets.readModelAccessSecrets" in info.value.fix
    assert generator.seen[0].hub and generator.seen[0].token is None
    assert api.calls == []  # the Secret was not read
    with pytest.raises(PresetGenerationError) as no_secret:  # no secret named: the generator's own fix
        source.resolve("gated-org/Model-X", "team", None)
    assert no_secret.value.fix == "create a Secret ..."


def test_the_catalog_wins_over_the_hub_and_the_cache() -> None:
    generator = RecordingGenerator()
    registry = Registry.from_plugins(kaito_llama, GeneratorPlugin(generator))
    source = PresetSource(registry, PresetSourceSettings(hub=True))
    assert source.resolve(GATED_ID, "default", None) == LLAMA_3_1_8B_INSTRUCT
    assert source.resolve("llama-3.1-8b-instruct", "default", None) == LLAMA_3_1_8B_INSTRUCT
    assert generator.seen == []


def test_settings_default_to_the_hub_and_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert OperatorSettings().presets == PresetSourceSettings(hub=True, read_model_access_secrets=False, hf_cache_dir=None, hf_endpoint=None)
    monkeypatch.setenv("KAITO_PRESETS__HUB", "false")
    monkeypatch.setenv("KAITO_PRESETS__HF_CACHE_DIR", "/var/cache/hf")
    loaded = OperatorSettings.load().presets
    assert (loaded.hub, loaded.hf_cache_dir) == (False, Path("/var/cache/hf"))
