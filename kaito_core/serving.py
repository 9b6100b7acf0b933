"""The serving contract: what the operator and the inference servers agree on, defined once.

The operator builds inference pods (:mod:`kaito_core.operator.manifests`) and kaito-servers runs
inside them (``servers/kaito_servers``); both import these names from here, so a directory, a
port or an environment variable cannot drift between the two sides. It imports nothing heavy
(no ML library, no Kubernetes client).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from kaito_core.api.labels import ANNOTATION_RUNTIME

if TYPE_CHECKING:
    from kaito_core.presets import Preset

WEIGHTS_DIR = "/workspace/weights"
"""Where the inference pod keeps the model weights (upstream KAITO's model-weights volume); the
weights downloader writes there and the server loads ``--model`` from there."""
CONFIG_DIR = "/mnt/config"
"""Where a pod mounts its Workspace's ConfigMap (the inference config, or a tuning pod's
training_config.yaml)."""
TUNING_DATA_DIR = "/mnt/data"
"""Where a tuning pod finds its dataset (fetched or mounted)."""
TUNING_OUTPUT_DIR = "/mnt/results"
"""Where a tuning pod writes the adapter and its checkpoints (upstream's output_dir)."""
TUNING_WEIGHTS_STAGING_DIR = "/mnt/model-weights"
"""Where a tuning pod's weights init container writes the base model (the trainer mounts the same
volume read-only at :data:`WEIGHTS_DIR`, where a preset image's own weights would otherwise hide it)."""
TUNING_DATA_IMAGE_ENV = "KAITO_TUNING_DATA_IMAGE"
"""The tuning input's OCI image (``tuning.input.image``), pulled into :data:`TUNING_DATA_DIR`."""
TUNING_DATA_URLS_ENV = "KAITO_TUNING_DATA_URLS"
"""The tuning input's URLs (``tuning.input.urls``), space-separated, downloaded into :data:`TUNING_DATA_DIR`."""
TUNING_ALLOW_HOSTS_ENV = "KAITO_TUNING_ALLOW_HOSTS"
"""Hosts exempt from the data-URL address rules (comma-separated; the operator's tuning.allowDataHosts)."""
TUNING_PULL_AUTH_ENV_PREFIX = "KAITO_TUNING_PULL_AUTH_"
"""``<prefix>0``, ``<prefix>1``...: the .dockerconfigjson of each ``tuning.input.imagePullSecrets``
Secret (secretKeyRef: a missing Secret or key stops the container with a message naming it)."""
TUNING_PUSH_AUTH_ENV = "KAITO_TUNING_PUSH_AUTH"
"""The .dockerconfigjson of ``tuning.output.imagePushSecret`` (secretKeyRef, as the pull ones)."""
TUNING_PUSH_IMAGE_ENV = "KAITO_TUNING_PUSH_IMAGE"
"""Where the push step pushes the adapter (``tuning.output.image``)."""
DOCKER_CONFIG_KEY = ".dockerconfigjson"
"""The key of a kubernetes.io/dockerconfigjson Secret."""
TUNING_STEPS = {
    "data-fetch": "fetching and checking the training data and configuration",
    "model-weights": "getting the base model's weights",
    "trainer": "training the adapter",
    "push": "pushing the adapter image",
}
"""The tuning Job's containers, in the order they run, and what each does (the failure condition
names the step that failed)."""
ADAPTERS_DIR = "/mnt/adapter"
"""Where LoRA adapters are mounted in inference pods: one directory per adapter name."""
ADAPTER_PULL_COMMAND = ("python3", "-m", "kaito_servers", "pull-adapter")
"""The adapter puller (kaito-servers' ``pull-adapter``, on the oras SDK): the operator's adapter
init containers run it, in the workload's inference image unless a separate puller image is set."""
ADAPTER_IMAGE_ENV = "ADAPTER_IMAGE"
"""The puller's input: the adapter artifact reference (``<registry>/<repo>:<tag>``)."""
ADAPTER_DIR_ENV = "ADAPTER_DIR"
"""The puller's output: the adapter's directory, ``<ADAPTERS_DIR>/<adapter name>``."""
ADAPTER_PULL_SECRET_FILE = "/etc/kaito/pull-secret/.dockerconfigjson"
"""Where the puller finds the adapter's first imagePullSecret (a ``kubernetes.io/dockerconfigjson``
Secret, mounted with its one key) when the adapter names one."""
ADAPTER_CA_FILE_ENV = "KAITO_ADAPTER_CA_FILE"
"""A CA bundle the puller trusts for the adapter's registry (a private registry's own CA); unset:
the image's system CAs."""
ADAPTER_CA_FILE = "/etc/kaito/adapter-ca/ca.crt"
"""Where the operator mounts the configured CA bundle ConfigMap key (the value of
:data:`ADAPTER_CA_FILE_ENV` in its pods)."""
ADAPTER_STRENGTHS_ENV = "KAITO_ADAPTER_STRENGTHS"
"""Environment variable carrying the adapters' strengths: a JSON object ``{name: strength}``."""
HF_TOKEN_KEY = "HF_TOKEN"
"""The key of the Hugging Face token in a Workspace's modelAccessSecret (and the pod's env name)."""
SERVER_PORT = 5000
"""The port every inference server listens on inside the pod (the Service maps port 80 to it)."""
SERVICE_HTTP_PORT = 80
"""The workspace Service's HTTP port."""
DISTRIBUTED_PORT = 29500
"""torch.distributed rendezvous port (container and Service) for multi-node inference."""
HEALTH_PATH = "/health"
"""HTTP path that answers 200 once the model is loaded (startup, readiness and liveness probes)."""
GPU_RESOURCE = "nvidia.com/gpu"
"""The extended resource name of a GPU (node capacity, pod requests and limits, the GPU taint key)."""
THREADS_ENV = "KAITO_THREADS"
"""The inference server's CPU thread count (kaito-servers' ``threads`` setting); a CPU pod sets it
to its whole guaranteed CPUs, since llama.cpp's spinning threads collapse under contention."""


def choose_backend(preset: Preset, annotations: Mapping[str, str], default: str | None = None) -> str:
    """The name of the backend that serves ``preset``: the kaito.sh/runtime annotation when set,
    else ``default`` when the preset offers it, else the preset's first backend.

    The one rule for validation, admission and the reconciler (it does not check that the
    backend is installed or offered; validation reports that)."""
    chosen = annotations.get(ANNOTATION_RUNTIME)
    if chosen:
        return chosen
    if default and default in preset.backends:
        return default
    return preset.default_backend
