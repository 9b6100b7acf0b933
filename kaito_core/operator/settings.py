"""Operator settings: one pydantic-settings model whose sections mirror the Helm chart's values.yaml.

Every value can be set by environment variable with the prefix ``KAITO_`` and ``__`` between
section and field, e.g. ``KAITO_NODE_PROVISIONER__NAME=byo`` or
``KAITO_WEBHOOK__PORT=9443``; the ``kaito operator`` command also takes the most used ones as
flags. Nothing is read at import time: call :meth:`OperatorSettings.load`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kaito_core.provisioners import AzureSettings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class NodeProvisionerSettings(_Section):
    """values.yaml ``nodeProvisioner``: who turns a workspace's node request into nodes."""

    name: str = "gpu-provisioner"
    """Registered provisioner plugin: gpu-provisioner (Karpenter NodeClaims served by Azure's
    gpu-provisioner, the default), azure-agentpool (AKS agent pools created directly), byo
    (bring-your-own labelled nodes), or another plugin."""
    default_node_image_family: str = "ubuntu"
    """OS image family of provisioned nodes when the workspace has no kaito.sh/node-image-family annotation."""
    azure: AzureSettings = Field(default_factory=AzureSettings)
    """AKS cluster and identity of the azure-agentpool provisioner (KAITO_NODE_PROVISIONER__AZURE__SUBSCRIPTION_ID, ...)."""


class CloudSettings(_Section):
    """values.yaml ``cloudProviderName`` and friends."""

    provider: str = "azure"
    """azure, aws or arc: selects the SKU table and the NodeClaim nodeClassRef."""


class ScopeSettings(_Section):
    """Which namespaces the operator watches."""

    namespaces: list[str] = Field(default_factory=list)
    """Namespaces (glob patterns allowed, as kopf's --namespace) to watch; empty = cluster-wide."""


class WebhookSettings(_Section):
    """values.yaml ``webhook``: the validating admission webhook."""

    enabled: bool = True
    """Serve the validating admission webhook and manage its ValidatingWebhookConfiguration."""
    host: str = "127.0.0.1"
    """Host name or IP the API server uses to reach the webhook (also put in the certificate)."""
    listen_addr: str = "127.0.0.1"
    """Address the webhook server listens on (0.0.0.0 in a pod)."""
    port: int = 9443
    """HTTPS port of the webhook server."""
    cert_dir: Path = Path.home() / ".cache" / "kaito" / "webhook-certs"
    """Where the operator keeps its self-signed CA and serving certificate (created when absent)."""
    configuration_name: str = "validation.workspace.kaito.sh"
    """Name of the ValidatingWebhookConfiguration the operator manages."""
    manage_configuration: bool = True
    """Create that configuration and keep its URL and CA bundle current (local runs). The Helm
    chart sets false: it creates the configuration with a Service reference and the certificates."""


class MetricsSettings(_Section):
    """values.yaml ``metrics``."""

    port: int = 0
    """Port of the Prometheus metrics endpoint (/metrics over HTTP); 0 disables it."""
    host: str = "127.0.0.1"
    """Address the metrics endpoint listens on (0.0.0.0 in a pod)."""


class RequeueSettings(_Section):
    """How soon to look again; every wait also ends early on an event of an owned object."""

    nodes_s: float = 5.0
    """While NodeClaims/nodes are not ready."""
    workload_s: float = 10.0
    """While the inference pods are not ready."""
    invalid_s: float = 600.0
    """After a validation failure (a spec change wakes the workspace at once)."""
    resync_s: float = 600.0
    """Level-based re-check of a ready workspace (reads only; writes nothing when nothing changed)."""
    delete_s: float = 1.0
    """While the finalizer waits for the inference pods and NodeClaims to go."""
    provisioning_s: float = 30.0
    """After a provisioner error that may pass by itself (cloud throttling, a transient failure)."""
    conflict_s: float = 1.0
    """After a write conflict (HTTP 409: the object changed or appeared meanwhile)."""
    api_error_s: float = 5.0
    """After any other Kubernetes API error."""
    error_s: float = 10.0
    """After an unexpected error (a bug: logged with its traceback)."""


class ImageSettings(_Section):
    """values.yaml ``image`` / ``presetRegistryName``: images used in generated workloads."""

    registry: str = "ghcr.io/kaito-py"
    """Registry of the inference server image (kaito-servers). No image is published yet: build one
    from servers/ and point this (KAITO_IMAGES__REGISTRY) at your registry."""
    base: str = "kaito-servers:0.1.0"
    """Inference image (name:tag under registry) when the backend names none; it must contain
    kaito-servers with the backends and huggingface_hub (the weights downloader uses it)."""
    adapter_puller: str = ""
    """Image of the adapter init containers, which run ``python3 -m kaito_servers pull-adapter``
    to fetch each adapter artifact into /mnt/adapter/<name>. Empty: the workload's own inference
    image (it contains kaito-servers); set it only to pull with a separate image that has
    kaito-servers[serve]."""
    tuning: str = "kaito-tuning:0.1.0"
    """Tuning image (name:tag under registry) that every step of a tuning Job runs (data fetch,
    weights download, trainer, push): kaito-servers with torch, transformers, peft, bitsandbytes,
    oras and the first-party preset plugins."""

    @property
    def inference(self) -> str:
        """The full default inference image reference."""
        return f"{self.registry}/{self.base}"

    @property
    def tuning_image(self) -> str:
        """The full tuning image reference."""
        return f"{self.registry}/{self.tuning}"


class AdapterPullSettings(_Section):
    """How the adapter init containers reach the adapters' registries."""

    ca_config_map: str = ""
    """A ConfigMap, in each Workspace's namespace, holding a CA bundle the adapter puller trusts
    (a private registry with its own CA); mounted into the puller, whose KAITO_ADAPTER_CA_FILE
    names it, and into the tuning Job's data-fetch and push steps. Empty: the image's system CAs. On a cluster whose registry uses the cluster CA,
    kube-root-ca.crt (present in every namespace) serves."""
    ca_config_map_key: str = "ca.crt"
    """The key of the CA bundle in caConfigMap."""


class CpuInferenceSettings(_Section):
    """Inference pods of presets that run without a GPU (llama.cpp on CPU)."""

    cpus: int = Field(default=1, ge=1)
    """Whole CPUs each CPU inference pod gets, as requests = limits (Guaranteed QoS), and the
    server's thread count: llama.cpp's worker threads spin, so more threads than guaranteed CPUs
    collapse under contention (KAITO_CPU_INFERENCE__CPUS)."""


class TuningSettings(_Section):
    """Fine-tuning: how tuning Workspaces run as Jobs."""

    default_config_namespace: str = "kaito-system"
    """Namespace of the default training configurations lora-params-template and
    qlora-params-template, copied into a tuning Workspace's namespace when it sets no
    tuning.config (the chart sets its release namespace)."""
    backoff_limit: int = Field(default=1, ge=0, le=10)
    """Retries of a failed tuning pod (the Job's backoffLimit). A step that fails for a reason a
    retry cannot fix (bad data or configuration, a refused URL or secret: exit code 2) fails the
    Job at once."""
    allow_data_hosts: list[str] = Field(default_factory=list)
    """Host names or IPs a tuning.input URL may use although they are loopback, private or
    link-local (the SSRF guard refuses those in admission and in the download). For tests with a
    local data server only; empty in production."""


class ConcurrencySettings(_Section):
    """How much work runs at once."""

    workers: int = 5
    """Reconciles running at the same time (threads), like upstream's MaxConcurrentReconciles."""


class PresetSourceSettings(_Section):
    """values.yaml ``presets``: where presets named by a Hugging Face model id
    (``inference.preset.name: <org>/<model>``) read the model's config.json and weight sizes."""

    hub: bool = True
    """Reach the Hugging Face hub at reconcile time for the model's config.json and file list.
    false: only the cache below."""
    read_model_access_secrets: bool = False
    """Read the HF_TOKEN of a Workspace's modelAccessSecret to generate the preset of a gated model
    from the hub. This needs get on Secrets, which the chart grants only when this is true; off,
    gated model ids need an installed family preset or the model in hf_cache_dir (inference pods
    get the token through a secretKeyRef either way)."""
    hf_cache_dir: Path | None = None
    """A Hugging Face hub cache (HF_HUB_CACHE layout) read first, without network: models found
    there are never fetched (air-gapped clusters; the tests). The directory must be mounted into
    the operator's pod. None: no local cache."""
    hf_endpoint: str | None = None
    """Hugging Face endpoint URL (a mirror, e.g. https://hf-mirror.example.com); None: huggingface.co."""


class PluginSettings(_Section):
    """values.yaml ``plugins``: plugin packages (presets, backends, provisioners) installed into the
    operator's environment when its pod starts, so a ``pip install``-able plugin reaches the
    in-cluster operator without a custom image. ``kaito install-plugins`` (the chart's init
    container) installs them; the operator is Ready only when each one is installed and loads."""

    packages: list[str] = Field(default_factory=list)
    """Requirement strings as pip takes them, e.g. kaito-smollm2==0.1.0. The operator checks
    at start that each named distribution is installed, satisfies the version and that its kaito
    entry point loads; otherwise its /readyz names the package and it does not reconcile."""
    index_url: str = ""
    """Package index (pip --index-url), e.g. a mirror https://pypi.example.com/simple; empty: pip's default (PyPI)."""
    extra_index_urls: list[str] = Field(default_factory=list)
    """More package indexes (pip --extra-index-url)."""
    find_links: list[str] = Field(default_factory=list)
    """URLs or directories of wheels (pip --find-links), e.g. an HTTP directory listing."""
    no_index: bool = False
    """Use only find_links and the OCI artifacts, never an index (pip --no-index): air-gapped clusters."""
    trusted_hosts: list[str] = Field(default_factory=list)
    """Hosts pip may reach over plain HTTP (pip --trusted-host), e.g. an in-cluster wheel server."""
    ca_bundle: str = ""
    """PEM file pip and the OCI pull verify the index and registry with (pip --cert); empty: the system store."""
    oci_artifacts: list[str] = Field(default_factory=list)
    """OCI artifacts holding plugin wheels (oras push <ref> *.whl), e.g.
    registry.example.com/kaito/plugins:0.1.0; pulled before pip runs and used as find-links."""
    oci_auth_file: str = ""
    """Docker config JSON with credentials for the OCI artifacts' registry; empty: anonymous."""
    prefix: str = ""
    """Directory the packages are installed into (pip --prefix); the operator puts its
    site-packages on its path at start. Empty: nothing is added (packages installed normally)."""
class LeaderElectionSettings(_Section):
    """Only one operator replica reconciles: the holder of a Lease (coordination.k8s.io)."""

    enabled: bool = False
    """Reconcile only while holding the lease; the other replicas serve the admission webhook and
    wait. Needed for more than one replica (the Helm chart turns it on)."""
    lease_name: str = "kaito-operator"
    """Name of the Lease."""
    lease_namespace: str = ""
    """Namespace of the Lease; empty: the pod's own namespace (``default`` outside a pod)."""
    lease_duration_s: int = Field(15, ge=2)
    """How long followers wait after the leader's last renewal before taking over (a leader
    that stops cleanly gives the lease back at once)."""
    renew_deadline_s: int = Field(10, ge=2)
    """How long the leader keeps retrying a failed renewal before it stops reconciling and exits."""
    retry_period_s: int = Field(2, ge=1)
    """How often candidates try to acquire and the leader renews."""

    @model_validator(mode="after")
    def _timings(self) -> LeaderElectionSettings:
        if self.lease_duration_s <= self.renew_deadline_s:
            raise ValueError(
                f"leaseDurationS ({self.lease_duration_s}) must be greater than renewDeadlineS ({self.renew_deadline_s}): "
                "a leader that cannot renew must stop before a follower may take over"
            )
        if self.renew_deadline_s <= 1.2 * self.retry_period_s:
            raise ValueError(
                f"renewDeadlineS ({self.renew_deadline_s}) must be greater than 1.2 x retryPeriodS ({self.retry_period_s}): "
                "the leader needs more than one renewal attempt per deadline"
            )
        return self


class OperatorSettings(BaseSettings):
    """All operator settings."""

    model_config = SettingsConfigDict(env_prefix="KAITO_", env_nested_delimiter="__", extra="ignore")

    node_provisioner: NodeProvisionerSettings = Field(default_factory=NodeProvisionerSettings)
    cloud: CloudSettings = Field(default_factory=CloudSettings)
    scope: ScopeSettings = Field(default_factory=ScopeSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    requeue: RequeueSettings = Field(default_factory=RequeueSettings)
    images: ImageSettings = Field(default_factory=ImageSettings)
    adapter_pull: AdapterPullSettings = Field(default_factory=AdapterPullSettings)
    cpu_inference: CpuInferenceSettings = Field(default_factory=CpuInferenceSettings)
    tuning: TuningSettings = Field(default_factory=TuningSettings)
    concurrency: ConcurrencySettings = Field(default_factory=ConcurrencySettings)
    presets: PresetSourceSettings = Field(default_factory=PresetSourceSettings)
    plugins: PluginSettings = Field(default_factory=PluginSettings)
    leader_election: LeaderElectionSettings = Field(default_factory=LeaderElectionSettings)

    @classmethod
    def load(cls, **overrides: object) -> OperatorSettings:
        """Settings from the environment, then ``overrides`` (section -> dict of fields) on top."""
        base = cls()
        if not overrides:
            return base
        merged = base.model_dump()
        for section, values in overrides.items():
            if isinstance(values, dict):
                merged.setdefault(section, {}).update(values)
            else:
                merged[section] = values
        return cls.model_validate(merged)
