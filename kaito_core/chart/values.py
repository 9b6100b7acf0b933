"""The Helm chart's values model: :class:`OperatorSettings` section by section, plus the chart's own.

``charts/kaito/values.yaml``, ``values.schema.json``, the operator's environment
(``templates/_settings.tpl``) and ``docs/values-reference.md`` are all generated from
:func:`values_model`, so a field added to ``OperatorSettings`` reaches every one of them when
``kaito chart --write`` runs again (and a test fails until it does).

Rules that tie the two together, each in one table here:

* every settings field becomes ``<sectionCamel>.<fieldCamel>`` with the same type, constraints,
  docstring and default (:data:`CHART_DEFAULTS` lists the few defaults the chart changes);
* :data:`CHART_MANAGED` fields are not values: the chart sets them from what it creates (the
  webhook Service name, the certificate mount);
* :data:`CHART_EXTRAS` adds chart-only fields to a settings section (they never reach the
  operator's environment);
* the chart-only sections (``global``, ``operator``, ``serviceAccount``...) are the models below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from kaito_core.operator.settings import OperatorSettings


class ChartSection(BaseModel):
    """Base of the chart-only sections: camelCase keys, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, alias_generator=to_camel, populate_by_name=True)


@dataclass(frozen=True)
class Managed:
    """A settings field the chart sets itself: a Go-template expression giving its env value."""

    template: str
    reason: str


#: Settings fields that are not values: (section, field) -> how the chart sets them.
CHART_MANAGED: dict[tuple[str, str], Managed] = {
    ("webhook", "host"): Managed(
        '{{ include "kaito.webhookHost" . | quote }}', "the webhook Service's DNS name, <service>.<namespace>.svc"
    ),
    ("webhook", "listen_addr"): Managed('"0.0.0.0"', "the pod listens on every address"),
    ("webhook", "cert_dir"): Managed('"/etc/kaito/webhook-certs"', "the mounted certificate Secret the chart creates"),
    ("webhook", "manage_configuration"): Managed(
        '"false"', "the chart creates the ValidatingWebhookConfiguration (with a Service reference) itself"
    ),
    ("metrics", "host"): Managed('"0.0.0.0"', "the pod listens on every address"),
    ("tuning", "default_config_namespace"): Managed(
        "{{ .Release.Namespace | quote }}", "the release namespace, where the chart creates the default training configurations"
    ),
}

#: Settings defaults that differ in the chart: (section, field) -> (default, why).
CHART_DEFAULTS: dict[tuple[str, str], tuple[object, str]] = {
    ("metrics", "port"): (8080, "the liveness probe and Prometheus scrape /metrics in the pod"),
}


class WebhookChartExtras(ChartSection):
    """Chart-only fields of the ``webhook`` section."""

    failure_policy: Literal["Fail", "Ignore"] = "Fail"
    """What the API server does when the webhook cannot be reached: Fail refuses the Workspace
    (safe default), Ignore admits it unchecked."""
    timeout_seconds: int = Field(10, ge=1, le=30)
    """How long the API server waits for an admission answer."""
    certificate_validity_days: int = Field(3650, ge=60)
    """Validity of the self-signed CA and serving certificate the chart creates. They are kept on
    helm upgrade and replaced by the first upgrade less than 60 days before they expire."""


class TuningChartExtras(ChartSection):
    """Chart-only fields of the ``tuning`` section."""

    default_config_maps: bool = True
    """Create the default training configurations lora-params-template and qlora-params-template
    (key training_config.yaml) in the release namespace."""


#: Chart-only fields added to a settings section: section -> model whose fields are appended.
CHART_EXTRAS: dict[str, type[ChartSection]] = {"webhook": WebhookChartExtras, "tuning": TuningChartExtras}


class GlobalValues(ChartSection):
    """Settings that apply to every image the project uses."""

    image_registry: str = ""
    """Registry host (and path) that replaces the registry of every image: operator, inference,
    tuning and adapter puller, for mirrored or air-gapped installs, e.g. registry.example.com/kaito.
    Empty: each image keeps its own registry."""
    image_pull_secrets: list[str] = Field(default_factory=list)
    """Names of docker-registry Secrets (in the release namespace) for pulling the operator image."""


class ImageValues(ChartSection):
    """A container image."""

    registry: str = "ghcr.io/kaito-py"
    """Registry of the image (global.imageRegistry replaces it)."""
    repository: str = "kaito-operator"
    """Image name under the registry."""
    tag: str = "0.1.0"
    """Image tag."""
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """Kubernetes imagePullPolicy."""


class ResourceList(ChartSection):
    """CPU and memory quantities."""

    cpu: str | int | float
    """CPU, e.g. 100m or 1."""
    memory: str
    """Memory, e.g. 256Mi."""


class Resources(ChartSection):
    """Requests and limits of the operator container."""

    requests: ResourceList = Field(default_factory=lambda: ResourceList(cpu="100m", memory="256Mi"))
    """What the scheduler reserves."""
    limits: ResourceList = Field(default_factory=lambda: ResourceList(cpu="1", memory="1Gi"))
    """The most the operator may use."""


class OperatorValues(ChartSection):
    """The operator Deployment."""

    image: ImageValues = Field(default_factory=ImageValues)
    """The operator image (kaito-core with the first-party presets and provisioners, no torch)."""
    replicas: int = Field(1, ge=1, le=1)
    """Operator pods. Exactly 1: the operator has no leader election yet, so a second replica
    would reconcile the same Workspaces twice."""
    resources: Resources = Field(default_factory=Resources)
    """Container resources."""
    log_format: Literal["json", "text"] = "json"
    """Log format: one JSON object per line, or text."""
    verbose: bool = False
    """Debug logging."""
    node_selector: dict[str, str] = Field(default_factory=lambda: {"kubernetes.io/os": "linux"})
    """Node labels the operator pod must match."""
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    """Tolerations of the operator pod."""
    affinity: dict[str, Any] = Field(default_factory=dict)
    """Affinity of the operator pod."""
    priority_class_name: str = ""
    """PriorityClass of the operator pod (empty: the cluster default)."""
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    """Extra annotations on the operator pod."""
    pod_labels: dict[str, str] = Field(default_factory=dict)
    """Extra labels on the operator pod."""


class ServiceAccountValues(ChartSection):
    """The operator's ServiceAccount (always created by the chart: its RBAC is bound to it)."""

    name: str = ""
    """Its name; empty: the release's full name."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Extra annotations (the workload-identity ones come from azure.workloadIdentity)."""


class WorkloadIdentityValues(ChartSection):
    """Azure Workload Identity of the operator (the azure-agentpool provisioner creates AKS agent pools)."""

    client_id: str = ""
    """Client ID of the managed identity federated with this ServiceAccount; required when
    nodeProvisioner.name is azure-agentpool. Sets azure.workload.identity/client-id."""
    tenant_id: str = ""
    """Tenant of that identity (empty: the cluster's)."""


class AzureValues(ChartSection):
    """Azure-only settings."""

    workload_identity: WorkloadIdentityValues = Field(default_factory=WorkloadIdentityValues)
    """Workload identity for the Azure SDK in the operator."""


class RbacValues(ChartSection):
    """Extra permissions, for a third-party node provisioner plugin the chart has no rules for."""

    extra_rules: list[dict[str, Any]] = Field(default_factory=list)
    """ClusterRole rules appended to the operator's (apiGroups, resources, verbs)."""


class PodDisruptionBudgetValues(ChartSection):
    """PodDisruptionBudget of the operator."""

    enabled: bool = True
    """Create it."""
    max_unavailable: int = Field(1, ge=1)
    """Operator pods a voluntary disruption (node drain) may take at once. With one replica a
    drain is never blocked; the admission webhook is briefly unavailable while the pod moves."""


#: The chart-only top-level sections, in values.yaml order before the settings sections.
CHART_SECTIONS_BEFORE: dict[str, tuple[type[ChartSection], str]] = {
    "global": (GlobalValues, "global"),
    "operator": (OperatorValues, "operator"),
    "service_account": (ServiceAccountValues, "serviceAccount"),
    "azure": (AzureValues, "azure"),
    "rbac": (RbacValues, "rbac"),
}
#: ... and after them.
CHART_SECTIONS_AFTER: dict[str, tuple[type[ChartSection], str]] = {
    "pod_disruption_budget": (PodDisruptionBudgetValues, "podDisruptionBudget"),
}


def settings_sections() -> dict[str, type[BaseModel]]:
    """The sections of :class:`OperatorSettings` in declaration order: field name -> model."""
    sections: dict[str, type[BaseModel]] = {}
    for name, info in OperatorSettings.model_fields.items():
        model = info.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"OperatorSettings.{name} is not a section model; the chart mirrors sections only")
        sections[name] = model
    return sections


def _mirrored_field(section: str, name: str, info: FieldInfo) -> tuple[Any, FieldInfo]:
    default, _ = CHART_DEFAULTS.get((section, name), (info.get_default(call_default_factory=True), ""))
    annotation: Any = info.annotation
    if info.metadata:
        annotation = Annotated[(annotation, *info.metadata)]
    return annotation, Field(default, alias=to_camel(name), description=info.description)


def section_values_model(section: str, model: type[BaseModel]) -> type[BaseModel]:
    """The values model of one settings section: its fields minus the chart-managed ones, plus the chart's extras."""
    fields: dict[str, Any] = {
        name: _mirrored_field(section, name, info)
        for name, info in model.model_fields.items()
        if (section, name) not in CHART_MANAGED
    }
    extras = CHART_EXTRAS.get(section)
    if extras is not None:
        for name, info in extras.model_fields.items():
            if name in fields:
                raise TypeError(f"chart extra {section}.{name} shadows an operator setting")
            fields[name] = (info.annotation, info)
    created: type[BaseModel] = create_model(
        f"{model.__name__}Values",
        __config__=ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel),
        __doc__=model.__doc__,
        **fields,
    )
    return created


def values_model() -> type[BaseModel]:
    """The whole values.yaml as one model (aliases are the values keys)."""
    fields: dict[str, Any] = {}
    for name, (own, alias) in CHART_SECTIONS_BEFORE.items():
        fields[name + "_" if name == "global" else name] = (own, Field(default_factory=own, alias=alias, description=own.__doc__))
    for name, section in settings_sections().items():
        mirrored = section_values_model(name, section)
        fields[name] = (mirrored, Field(default_factory=mirrored, alias=to_camel(name), description=section.__doc__))
    for name, (own, alias) in CHART_SECTIONS_AFTER.items():
        fields[name] = (own, Field(default_factory=own, alias=alias, description=own.__doc__))
    created: type[BaseModel] = create_model(
        "ChartValues",
        __config__=ConfigDict(extra="forbid", populate_by_name=True),
        __doc__="Values of the kaito Helm chart.",
        **fields,
    )
    return created


def default_values() -> dict[str, Any]:
    """The chart's default values, keyed as in values.yaml."""
    return values_model()().model_dump(mode="json", by_alias=True)
