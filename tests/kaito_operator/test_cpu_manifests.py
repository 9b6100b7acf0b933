"""The CPU path: Gemma 3 270M on llama.cpp with a preset image that carries its weights (the local
real node's example) -> a Guaranteed pod with whole CPUs = server threads, no weights download."""

from __future__ import annotations

from typing import Any

import kaito_gemma3
import kaito_provisioners.plugin
import kaito_servers.plugin
from opgolden import assert_golden, load_example, plan_for

from kaito_core.operator.manifests import cpu_memory_mib
from kaito_core.plugins import Registry
from kaito_core.serving import THREADS_ENV, WEIGHTS_DIR

EXAMPLE = "examples/inference/kaito_workspace_gemma_3_270m_cpu.yaml"


def cpu_objects(cpus: int = 2) -> list[dict[str, Any]]:
    """What the reconciler applies for the CPU example with bring-your-own nodes (the planner it calls)."""
    registry = Registry.from_plugins(kaito_gemma3, kaito_servers.plugin, kaito_provisioners.plugin)
    return list(plan_for(load_example(EXAMPLE), registry, provisioner="byo", cpu_inference={"cpus": cpus}).objects)


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
