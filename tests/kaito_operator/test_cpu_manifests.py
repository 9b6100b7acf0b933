"""The CPU path: Gemma 3 270M on llama.cpp with a preset image that carries its weights (the local
real node's example) -> a Guaranteed pod with whole CPUs = server threads, no weights download."""

from __future__ import annotations

import posixpath
from typing import Any

import kaito_gemma3
import kaito_provisioners.plugin
import kaito_servers.plugin
from opgolden import assert_golden, load_example, plan_for

from kaito_core.operator.manifests import cpu_memory_mib
from kaito_core.plugins import Registry
from kaito_core.serving import (
    ADAPTER_CA_FILE,
    ADAPTER_CA_FILE_ENV,
    ADAPTER_DIR_ENV,
    ADAPTER_IMAGE_ENV,
    ADAPTER_PULL_COMMAND,
    ADAPTER_PULL_SECRET_FILE,
    ADAPTERS_DIR,
    THREADS_ENV,
    WEIGHTS_DIR,
)

EXAMPLE = "examples/inference/kaito_workspace_gemma_3_270m_cpu.yaml"


def cpu_objects(cpus: int = 2, workspace: dict[str, Any] | None = None, **settings: Any) -> list[dict[str, Any]]:
    """What the reconciler applies for the CPU example with bring-your-own nodes (the planner it calls)."""
    registry = Registry.from_plugins(kaito_gemma3, kaito_servers.plugin, kaito_provisioners.plugin)
    obj = workspace or load_example(EXAMPLE)
    return list(plan_for(obj, registry, provisioner="byo", cpu_inference={"cpus": cpus}, **settings).objects)


def test_cpu_pod_gets_guaranteed_whole_cpus_and_the_weights_from_its_image() -> None:
    objects = cpu_objects(cpus=2)
    pod = objects[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "10.88.0.1:5001/kaito/gemma-3-270m:local"
    limits = container["resources"]["limits"]
    assert container["resources"]["requests"] == limits and limits["cpu"] == "2"
    assert {"name": THREADS_ENV, "value": "2"} in container["env"]
    # The weights are in the image: no downloader, and no volume over WEIGHTS_DIR.
    assert "initContainers" not in pod
    assert all(m["mountPath"] != WEIGHTS_DIR for m in container["volumeMounts"])
    assert "--model" in container["args"] and WEIGHTS_DIR in container["args"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert pod["imagePullSecrets"] == [{"name": "kaito-local-registry"}]
    assert pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": "kaito.sh/machine-type", "operator": "In", "values": ["cpu"]}]}
    ]
    assert_golden("gemma3-cpu-deployment", objects)


def test_cpu_memory_covers_the_weights() -> None:
    from kaito_gemma3.presets import GEMMA_3_270M

    assert cpu_memory_mib(GEMMA_3_270M) > GEMMA_3_270M.weights_gib * 1024 * 1.5


ADAPTER = "10.88.0.1:5001/kaito/adapters/gemma-lora:1"


def with_gguf_adapter(strength: str = "1") -> dict[str, Any]:
    ws = load_example(EXAMPLE)
    ws["inference"]["adapters"] = [{"source": {"name": "lora", "image": ADAPTER, "imagePullSecrets": ["adapter-pull"]}, "strength": strength}]
    return ws


def test_a_cpu_adapter_is_pulled_by_kaito_servers_in_the_preset_image_and_keeps_the_pod_guaranteed() -> None:
    objects = cpu_objects(cpus=2, workspace=with_gguf_adapter(), adapter_pull={"ca_config_map": "kube-root-ca.crt"})
    pod = objects[0]["spec"]["template"]["spec"]
    main = pod["containers"][0]
    (puller,) = pod["initContainers"]
    # No separate puller image by default: the workload's own image (kaito-servers is in it).
    assert puller["image"] == main["image"] == "10.88.0.1:5001/kaito/gemma-3-270m:local"
    assert tuple(puller["command"]) == ADAPTER_PULL_COMMAND
    env = {e["name"]: e["value"] for e in puller["env"]}
    assert env == {ADAPTER_IMAGE_ENV: ADAPTER, ADAPTER_DIR_ENV: f"{ADAPTERS_DIR}/lora", ADAPTER_CA_FILE_ENV: ADAPTER_CA_FILE}
    mounts = {m["mountPath"]: m["name"] for m in puller["volumeMounts"]}
    assert mounts[posixpath.dirname(ADAPTER_PULL_SECRET_FILE)] == "pull-secret-lora"
    assert mounts[posixpath.dirname(ADAPTER_CA_FILE)] == "adapter-ca"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["pull-secret-lora"]["secret"]["secretName"] == "adapter-pull"
    assert volumes["adapter-ca"]["configMap"] == {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    # Guaranteed QoS needs requests = limits on every container, init containers included.
    assert puller["resources"]["requests"] == puller["resources"]["limits"] == {"cpu": "2", "memory": "512Mi"}
    assert puller["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "KAITO_ADAPTER_STRENGTHS", "value": '{"lora": 1.0}'} in main["env"]
    assert_golden("gemma3-cpu-adapter-deployment", objects)


def test_the_puller_image_and_the_ca_are_settings() -> None:
    pod = cpu_objects(workspace=with_gguf_adapter(), images={"adapter_puller": "registry.example.com/kaito-servers:1"})[0]["spec"]["template"]["spec"]
    (puller,) = pod["initContainers"]
    assert puller["image"] == "registry.example.com/kaito-servers:1"
    # No CA configured: the image's system CAs, nothing mounted.
    assert ADAPTER_CA_FILE_ENV not in {e["name"] for e in puller["env"]}
    assert "adapter-ca" not in {v["name"] for v in pod["volumes"]}
