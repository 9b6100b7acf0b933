"""Pure builders: (Workspace, Preset, ServerSpec, node plan) -> the Kubernetes objects to create.

No I/O happens here; the golden-file tests pin the output. One node gets a Deployment, several
nodes a StatefulSet with a headless Service for torch.distributed rendezvous (port 29500); both
get a Service named after the workspace with ports 80 -> server port and 29500.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from kaito_core.api.labels import ANNOTATION_ENABLE_LB, ANNOTATION_REVISION, LABEL_WORKSPACE
from kaito_core.api.workspace import Workspace
from kaito_core.backends import ServerSpec
from kaito_core.presets import Preset
from kaito_core.serving import (
    ADAPTER_CA_FILE,
    ADAPTER_CA_FILE_ENV,
    ADAPTER_DIR_ENV,
    ADAPTER_IMAGE_ENV,
    ADAPTER_PULL_COMMAND,
    ADAPTER_PULL_SECRET_FILE,
    ADAPTERS_DIR,
    CONFIG_DIR,
    DISTRIBUTED_PORT,
    GPU_RESOURCE,
    SERVICE_HTTP_PORT,
    THREADS_ENV,
    WEIGHTS_DIR,
)

ANNOTATION_APPLIED_HASH = "kaito.sh/applied-hash"
"""On every child: sha256 of the object as the operator built it; a mismatch means "update it"."""
NON_ROOT_UID = 1000
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
TOLERATIONS: tuple[dict[str, str], ...] = (
    {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
    {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
)


def pod_placement_and_security(affinity_terms: list[dict[str, Any]]) -> dict[str, Any]:
    """The pod-spec fields every workload pod shares (inference and tuning): required node
    affinity to the workspace's nodes, the GPU/kaito tolerations, and a non-root pod security context."""
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": affinity_terms}]}
            }
        },
        "tolerations": [dict(t) for t in TOLERATIONS],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": NON_ROOT_UID,
            "runAsGroup": NON_ROOT_UID,
            "fsGroup": NON_ROOT_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


@dataclass(frozen=True)
class WorkloadInputs:
    """Everything the builders need, gathered by the reconciler."""

    workspace: Workspace
    preset: Preset
    server: ServerSpec
    nodes: int
    gpus_per_node: int
    affinity_terms: list[dict[str, Any]]
    revision: str
    image: str
    """Inference image when the backend names none."""
    backend_name: str
    adapter_puller_image: str
    """Image of the adapter init containers; empty: the workload's inference image."""
    distributed: bool = False
    """True when the backend splits one model across the nodes (torch.distributed); False when
    several nodes run independent replicas."""
    extra_labels: dict[str, str] = field(default_factory=dict)
    cpus: int = 0
    """Whole CPUs of a CPU inference pod (requests = limits = server threads); 0 on GPU pods."""
    adapter_ca: tuple[str, str] | None = None
    """(ConfigMap, key) of a CA bundle the adapter puller trusts; None: the image's system CAs."""


# -- helpers ------------------------------------------------------------------------------------


def spec_hash(ws_wire: dict[str, Any]) -> str:
    """Upstream's workspace hash: sha256 over the JSON of resource, inference and tuning."""
    parts = [json.dumps(ws_wire.get(k), sort_keys=True, separators=(",", ":")) for k in ("resource", "inference", "tuning")]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def object_hash(obj: dict[str, Any]) -> str:
    """sha256 of an object as built (before the applied-hash annotation is added)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def stamp(obj: dict[str, Any]) -> dict[str, Any]:
    """Add the applied-hash annotation to a built object and return it."""
    digest = object_hash(obj)
    obj["metadata"].setdefault("annotations", {})[ANNOTATION_APPLIED_HASH] = digest
    return obj


def owner_reference(ws: Workspace) -> dict[str, Any]:
    """The controller owner reference every child carries (garbage collection on delete)."""
    return {
        "apiVersion": ws.api_version,
        "kind": "Workspace",
        "name": ws.name,
        "uid": ws.metadata.uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(ws: Workspace, name: str, extra_labels: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": ws.namespace,
        "labels": {LABEL_WORKSPACE: ws.name, **extra_labels},
        "ownerReferences": [owner_reference(ws)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def _dns_label(text: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-")[:50] or "adapter"


def headless_name(ws: Workspace) -> str:
    """Name of the headless Service of a multi-node workspace."""
    return f"{ws.name}-headless"


def leader_address(ws: Workspace) -> str:
    """DNS name of pod 0 (torch.distributed rendezvous) of a multi-node workspace."""
    return f"{ws.name}-0.{headless_name(ws)}.{ws.namespace}.svc.cluster.local"


# -- adapters -------------------------------------------------------------------------------------

ADAPTER_PULLER_MEMORY = "512Mi"
"""Memory of an adapter init container on a CPU pod (Python, the oras SDK and one streamed file);
its CPUs are the pod's, so the pod stays Guaranteed (every container has requests = limits)."""


def _adapter_puller(inputs: WorkloadInputs, image: str, name: str, source_image: str, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """The init container that fetches one adapter artifact with ``python3 -m kaito_servers pull-adapter``
    (env names and paths: :mod:`kaito_core.serving`)."""
    env: list[dict[str, Any]] = [
        {"name": ADAPTER_IMAGE_ENV, "value": source_image},
        {"name": ADAPTER_DIR_ENV, "value": f"{ADAPTERS_DIR}/{name}"},
    ]
    if inputs.adapter_ca is not None:
        env.append({"name": ADAPTER_CA_FILE_ENV, "value": ADAPTER_CA_FILE})
        mounts = [*mounts, {"name": "adapter-ca", "mountPath": posixpath.dirname(ADAPTER_CA_FILE), "readOnly": True}]
    container: dict[str, Any] = {
        "name": f"puller-{_dns_label(name)}",
        "image": inputs.adapter_puller_image or image,
        "command": list(ADAPTER_PULL_COMMAND),
        "env": env,
        "volumeMounts": mounts,
        "securityContext": {**_container_security(), "readOnlyRootFilesystem": True},
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
    }
    if inputs.cpus > 0:
        amount = {"cpu": str(inputs.cpus), "memory": ADAPTER_PULLER_MEMORY}
        container["resources"] = {"requests": dict(amount), "limits": dict(amount)}
    return container


def _adapter_parts(inputs: WorkloadInputs, image: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(initContainers, volumes, main-container volumeMounts) for the workspace's adapters.

    An image adapter gets a puller init container (``image``, the workload's inference image,
    unless ``images.adapterPuller`` names another) with the adapter's first imagePullSecret and the
    configured CA bundle mounted. Strengths reach the server through the backend's ServerSpec.env
    (the variable :data:`~kaito_core.serving.ADAPTER_STRENGTHS_ENV`), not through per-adapter variables."""
    inference = inputs.workspace.inference
    adapters = inference.adapters if inference else []
    inits: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    image_adapters = [a for a in adapters if a.source.image]
    if image_adapters:
        volumes.append({"name": "adapter-volume", "emptyDir": {}})
        mounts.append({"name": "adapter-volume", "mountPath": ADAPTERS_DIR})
        if inputs.adapter_ca is not None:
            config_map, key = inputs.adapter_ca
            volumes.append({"name": "adapter-ca", "configMap": {
                "name": config_map, "items": [{"key": key, "path": posixpath.basename(ADAPTER_CA_FILE)}]}})
    for adapter in adapters:
        name = adapter.source.name or ""
        if adapter.source.image:
            init_mounts: list[dict[str, Any]] = [{"name": "adapter-volume", "mountPath": ADAPTERS_DIR}]
            secrets = adapter.source.image_pull_secrets
            if secrets:
                vol = f"pull-secret-{_dns_label(name)}"
                volumes.append({"name": vol, "secret": {"secretName": secrets[0], "optional": False}})
                init_mounts.append({"name": vol, "mountPath": posixpath.dirname(ADAPTER_PULL_SECRET_FILE), "readOnly": True})
            inits.append(_adapter_puller(inputs, image, name, adapter.source.image, init_mounts))
        elif adapter.source.volume_source:
            vol = f"adapter-{_dns_label(name)}"
            volumes.append({"name": vol, **adapter.source.volume_source})
            mounts.append({"name": vol, "mountPath": f"{ADAPTERS_DIR}/{name}", "readOnly": True})
    return inits, volumes, mounts


# -- model weights --------------------------------------------------------------------------------

DOWNLOAD_SCRIPT = """import os
from huggingface_hub import snapshot_download
patterns = [p for p in os.environ.get("KAITO_WEIGHT_FILES", "").split(",") if p] or None
snapshot_download(repo_id=os.environ["KAITO_MODEL_REPO"], revision=os.environ["KAITO_MODEL_REVISION"],
                  local_dir=os.environ["KAITO_WEIGHTS_DIR"], allow_patterns=patterns)
"""


def _weights_downloader(inputs: WorkloadInputs, image: str, server_env: list[dict[str, Any]]) -> dict[str, Any]:
    """Init container that downloads the preset's pinned weights into the weights volume."""
    preset = inputs.preset
    params = preset.backends.get(inputs.backend_name)
    files = [params.model_file] if params is not None and params.model_file else []
    if files:
        files += ["*.json", "tokenizer*"]
    env: list[dict[str, Any]] = [
        {"name": "KAITO_MODEL_REPO", "value": preset.source_repo},
        {"name": "KAITO_MODEL_REVISION", "value": preset.revision},
        {"name": "KAITO_WEIGHTS_DIR", "value": WEIGHTS_DIR},
        {"name": "KAITO_WEIGHT_FILES", "value": ",".join(files)},
        {"name": "HF_HOME", "value": f"{WEIGHTS_DIR}/.hf"},
    ]
    env += [e for e in server_env if e["name"] == "HF_TOKEN"]
    return {
        "name": "model-weights-downloader",
        "image": image,
        "command": ["python3", "-c", DOWNLOAD_SCRIPT],
        "env": env,
        "volumeMounts": [{"name": "model-weights", "mountPath": WEIGHTS_DIR}],
        "securityContext": _container_security(),
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
    }


# -- pod ------------------------------------------------------------------------------------------


TERMINATION_MESSAGE_POLICY = "FallbackToLogsOnError"
"""On every container the operator writes: when a container fails, the kubelet puts the tail of
its log into ``lastState.terminated.message``, which the status classification copies into the
Workspace's condition (no log reads by the operator)."""


def _container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}


def _probes(inputs: WorkloadInputs) -> dict[str, Any]:
    http = {"path": inputs.server.health_path, "port": "http"}
    return {
        "startupProbe": {
            "httpGet": dict(http),
            "periodSeconds": 10,
            "failureThreshold": max(1, math.ceil(inputs.preset.readiness_timeout_s / 10)),
        },
        "readinessProbe": {"httpGet": dict(http), "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {"httpGet": dict(http), "periodSeconds": 10, "failureThreshold": 3},
    }


def cpu_memory_mib(preset: Preset) -> int:
    """Memory of a CPU inference pod: the weights (mmapped) 1.5 times over, plus 768 MiB for the
    server, the KV cache of a few sequences and Python."""
    return math.ceil((preset.weights_gib * 1.5 + 0.75) * 1024)


def _cpu_container(container: dict[str, Any], inputs: WorkloadInputs, volumes: list[dict[str, Any]]) -> None:
    """Whole guaranteed CPUs (requests = limits) and exactly that many server threads; a read-only
    root filesystem with a writable /tmp (llama.cpp writes nothing else)."""
    amount = {"cpu": str(inputs.cpus), "memory": f"{cpu_memory_mib(inputs.preset)}Mi"}
    container["resources"] = {"requests": dict(amount), "limits": dict(amount)}
    container["env"] = [*container["env"], {"name": THREADS_ENV, "value": str(inputs.cpus)}]
    container["securityContext"] = {**container["securityContext"], "readOnlyRootFilesystem": True}
    container["volumeMounts"] = [*container["volumeMounts"], {"name": "tmp", "mountPath": "/tmp"}]
    volumes.append({"name": "tmp", "emptyDir": {}})


def build_pod_template(inputs: WorkloadInputs) -> dict[str, Any]:
    """The inference pod template (labels, affinity, tolerations, container, volumes, probes)."""
    ws, server = inputs.workspace, inputs.server
    inference = ws.inference

    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(server.env.items())]
    options = inference.preset.preset_options if inference and inference.preset else None
    if options and options.model_access_secret:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": options.model_access_secret, "key": "HF_TOKEN"}}})
    ports: list[dict[str, Any]] = [{"name": "http", "containerPort": server.port, "protocol": "TCP"}]
    if inputs.nodes > 1 and inputs.distributed:
        env += [
            {"name": "POD_INDEX", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{POD_INDEX_LABEL}']"}}},
            {"name": "NODE_COUNT", "value": str(inputs.nodes)},
            {"name": "MASTER_ADDR", "value": leader_address(ws)},
            {"name": "MASTER_PORT", "value": str(DISTRIBUTED_PORT)},
        ]
        ports.append({"name": "torch-dist", "containerPort": DISTRIBUTED_PORT, "protocol": "TCP"})

    shm: dict[str, Any] = {"medium": "Memory"}
    if server.shm_gib:
        shm["sizeLimit"] = f"{int(server.shm_gib * 1024)}Mi"
    image = server.image or (options.image if options and options.image else inputs.image)
    adapter_inits, adapter_volumes, adapter_mounts = _adapter_parts(inputs, image)
    volumes: list[dict[str, Any]] = [{"name": "dshm", "emptyDir": shm}]
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    inits = list(adapter_inits)
    # A preset image of the workspace's own (presetOptions.image, as upstream's private presets)
    # carries the weights in WEIGHTS_DIR: nothing to download, and no volume may hide them.
    if not (options and options.image):
        volumes.append({"name": "model-weights", "emptyDir": {"sizeLimit": f"{inputs.preset.disk_gib}Gi"}})
        mounts.append({"name": "model-weights", "mountPath": WEIGHTS_DIR})
        inits.insert(0, _weights_downloader(inputs, image, env))
    volumes += adapter_volumes
    mounts += adapter_mounts
    if inference and inference.config:
        volumes.append({"name": "config-volume", "configMap": {"name": inference.config}})
        mounts.append({"name": "config-volume", "mountPath": CONFIG_DIR, "readOnly": True})

    container: dict[str, Any] = {
        "name": ws.name,
        "image": image,
        "command": list(server.command),
        "args": list(server.args),
        "env": env,
        "ports": ports,
        **_probes(inputs),
        "volumeMounts": mounts,
        "securityContext": _container_security(),
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
    }
    if inputs.gpus_per_node > 0:
        gpus = str(inputs.gpus_per_node)
        container["resources"] = {"requests": {GPU_RESOURCE: gpus}, "limits": {GPU_RESOURCE: gpus}}
    elif inputs.cpus > 0:
        _cpu_container(container, inputs, volumes)
    spec: dict[str, Any] = {
        **pod_placement_and_security(inputs.affinity_terms),
                "containers": [container],
        "volumes": volumes,
    }
    if inits:
        spec["initContainers"] = inits
    pull_secrets = sorted(set(options.image_pull_secrets if options else []))
    if pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in pull_secrets]
    return {
        "metadata": {
            "labels": {LABEL_WORKSPACE: ws.name, **inputs.extra_labels},
            "annotations": {ANNOTATION_REVISION: inputs.revision},
        },
        "spec": spec,
    }


# -- workloads and services -----------------------------------------------------------------------


def build_workload(inputs: WorkloadInputs) -> dict[str, Any]:
    """A Deployment (one node) or a StatefulSet (several nodes) named after the workspace."""
    ws = inputs.workspace
    meta = _meta(ws, ws.name, inputs.extra_labels, {ANNOTATION_REVISION: inputs.revision})
    selector = {"matchLabels": {LABEL_WORKSPACE: ws.name}}
    template = build_pod_template(inputs)
    if inputs.nodes == 1:
        obj = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "selector": selector,
                # The pod holds every GPU of its node: a surge pod could never schedule.
                "strategy": {"type": "Recreate"},
                "template": template,
            },
        }
    else:
        obj = {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": meta,
            "spec": {
                "replicas": inputs.nodes,
                "selector": selector,
                "serviceName": headless_name(ws),
                "podManagementPolicy": "Parallel",
                "template": template,
            },
        }
    return stamp(obj)


def build_service(inputs: WorkloadInputs) -> dict[str, Any]:
    """Service ``<workspace>``: 80 -> server port and 29500; LoadBalancer with kaito.sh/enablelb."""
    ws = inputs.workspace
    lb = ws.metadata.annotations.get(ANNOTATION_ENABLE_LB, "").lower() == "true"
    selector = {LABEL_WORKSPACE: ws.name}
    if inputs.nodes > 1 and inputs.distributed:  # the leader serves; replicas would all serve
        selector["statefulset.kubernetes.io/pod-name"] = f"{ws.name}-0"
    return stamp(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(ws, ws.name, inputs.extra_labels),
            "spec": {
                "type": "LoadBalancer" if lb else "ClusterIP",
                "selector": selector,
                "ports": [
                    {"name": "http", "protocol": "TCP", "port": SERVICE_HTTP_PORT, "targetPort": inputs.server.port},
                    {"name": "torch-dist", "protocol": "TCP", "port": DISTRIBUTED_PORT, "targetPort": DISTRIBUTED_PORT},
                ],
            },
        }
    )


def build_headless_service(inputs: WorkloadInputs) -> dict[str, Any]:
    """Service ``<workspace>-headless`` (clusterIP None) giving each StatefulSet pod a DNS name."""
    ws = inputs.workspace
    return stamp(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(ws, headless_name(ws), inputs.extra_labels),
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": True,
                "selector": {LABEL_WORKSPACE: ws.name},
                "ports": [{"name": "torch-dist", "protocol": "TCP", "port": DISTRIBUTED_PORT, "targetPort": DISTRIBUTED_PORT}],
            },
        }
    )


def build_inference_objects(inputs: WorkloadInputs) -> list[dict[str, Any]]:
    """Every object of an inference workspace, in creation order."""
    objects = []
    if inputs.nodes > 1:
        objects.append(build_headless_service(inputs))
    objects.append(build_workload(inputs))
    objects.append(build_service(inputs))
    return objects
