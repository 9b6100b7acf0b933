"""The Workspace custom resource (group ``kaito.sh``, versions v1alpha1 and v1beta1).

These pydantic models are the single source of truth for the API: the CRD YAML is generated
from them (``kaito crd``), the operator reads and writes Workspaces through them, and the
validation library checks them. Field names are snake_case in Python and camelCase on the wire
(``instance_type`` <-> ``instanceType``); every field's docstring becomes its description in
the CRD, so ``kubectl explain workspace.resource.instanceType`` shows it.

As in upstream KAITO, the spec fields sit at the top level of the object (``resource``,
``inference``, ``tuning``), not under ``spec``. Both versions have the same shape; v1beta1 is
the storage version.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from kaito_core.api.cel import (
    DNS1123_LABEL_PATTERN,
    STRENGTH_PATTERN,
    rule,
    validations,
)

GROUP = "kaito.sh"
KIND = "Workspace"
PLURAL = "workspaces"
SINGULAR = "workspace"
SHORT_NAMES = ("wk", "wks")
VERSIONS = ("v1alpha1", "v1beta1")
STORAGE_VERSION = "v1beta1"


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, docstrings as descriptions."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="forbid",
        validate_assignment=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as the Kubernetes API expects it: camelCase keys, unset fields omitted."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


_SECRET_NAMES: dict[str, Any] = {"maxItems": 32, "items": {"type": "string", "maxLength": 253}}
"""Schema bounds of a list of Secret names (keeps CEL cost estimates of enclosing rules small)."""


class ObjectMeta(BaseModel):
    """The subset of Kubernetes ObjectMeta that KAITO reads; everything else is kept as is."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str = ""
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    finalizers: list[str] = Field(default_factory=list)


class LabelSelectorOperator(str, enum.Enum):
    """Operators of a label selector requirement."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(ApiModel):
    """One requirement of a label selector: a key, an operator and values."""

    key: str
    """The label key the requirement applies to."""
    operator: LabelSelectorOperator
    """How the key relates to the values: In, NotIn, Exists or DoesNotExist."""
    values: list[str] = Field(default_factory=list, json_schema_extra={"maxItems": 64, "items": {"type": "string", "maxLength": 63}})
    """Values for In and NotIn; must be empty for Exists and DoesNotExist."""


class LabelSelector(ApiModel):
    """Selects nodes by their labels (the same type as a Deployment's selector)."""

    match_labels: dict[str, str] = Field(
        default_factory=dict,
        json_schema_extra={"maxProperties": 64, "additionalProperties": {"type": "string", "maxLength": 63}},
    )
    """Labels the nodes must carry. Provisioned nodes are given these labels, and the workload
    is pinned to nodes that have them."""
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, json_schema_extra={"maxItems": 32})
    """Extra set-based requirements on node labels."""


class ResourceSpec(ApiModel):
    """The nodes (GPU or CPU) the workspace runs on."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule(
                "!has(oldSelf.instanceType) || !has(self.instanceType) || self.instanceType == oldSelf.instanceType",
                "instanceType cannot be changed once set",
            ),
        )
    )

    count: int = Field(default=1, ge=1, json_schema_extra=validations(rule("self == oldSelf", "field is immutable")))
    """How many nodes to run on. The operator may need more when one node cannot hold the model;
    the validation error then says how many. Tuning needs exactly one."""
    instance_type: str | None = None
    """The cloud instance type (VM size) to provision, e.g. Standard_NC6s_v3. Required when
    nodes are provisioned automatically; leave it empty for bring-your-own nodes."""
    label_selector: LabelSelector = Field(json_schema_extra=validations(rule("self == oldSelf", "field is immutable")))
    """Labels that identify the workspace's nodes. Must contain at least one label that is not
    reserved by KAITO (kaito.sh/...)."""
    preferred_nodes: list[str] = Field(default_factory=list)
    """Names of existing nodes to use first (bring-your-own); nodes are provisioned only for the
    remainder of count."""


class AccessMode(str, enum.Enum):
    """Whether the model image is public or needs credentials."""

    PUBLIC = "public"
    PRIVATE = "private"


class PresetOptions(ApiModel):
    """Options of a preset."""

    image: str | None = None
    """A private image holding the model weights (accessMode private)."""
    image_pull_secrets: list[str] = Field(default_factory=list, json_schema_extra=_SECRET_NAMES)
    """Names of Secrets (same namespace) used to pull the image."""
    model_access_secret: str | None = None
    """Name of a Secret with key HF_TOKEN, for models whose download needs authentication."""


class PresetSpec(ApiModel):
    """A named model preset, e.g. phi-3-mini-4k-instruct (see `kaito presets`)."""

    name: str = Field(min_length=1, json_schema_extra={"maxLength": 253})
    """The preset's name; `kaito presets` lists the installed ones."""
    access_mode: AccessMode = AccessMode.PUBLIC
    """public (default) or private (weights come from presetOptions.image)."""
    preset_options: PresetOptions | None = None
    """Options such as a private image or a model access secret."""


class DataSource(ApiModel):
    """Where data comes from: URLs, an OCI image or a volume (exactly one for tuning input)."""

    name: str | None = Field(default=None, json_schema_extra={"maxLength": 253})
    """A name for this source; required for adapters, where it names the adapter."""
    urls: list[str] = Field(
        default_factory=list,
        json_schema_extra={
            "maxItems": 100,  # the API server refuses a CEL cost above its budget at 1000
            "items": {
                "type": "string",
                "maxLength": 2048,
                **validations(rule("self.matches('^[hH][tT][tT][pP][sS]?://')", "data source URL must use HTTP or HTTPS")),
            },
        },
    )
    """http(s) URLs of data files (tuning input only). Loopback, private, link-local and
    cloud-metadata addresses are refused."""
    image: str | None = None
    """An OCI image reference whose content is the data (e.g. a LoRA adapter image)."""
    image_pull_secrets: list[str] = Field(default_factory=list, json_schema_extra=_SECRET_NAMES)
    """Names of Secrets (same namespace) used to pull the image."""
    volume_source: dict[str, Any] | None = None
    """A Kubernetes VolumeSource holding the data (e.g. persistentVolumeClaim)."""


class AdapterSpec(ApiModel):
    """A LoRA adapter applied on top of the preset model."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule("has(self.source.name) && size(self.source.name) > 0", "adapter source name is required"),
            rule(
                "has(self.source.image) || has(self.source.volumeSource)",
                "Either image or volumeSource must be specified for an adapter",
            ),
            rule("!has(self.source.urls) || size(self.source.urls) == 0", "URLs are not supported as adapter source"),
        )
    )

    source: DataSource
    """Where the adapter comes from: source.name names it, source.image or source.volumeSource
    holds its files (adapter_config.json and the weights)."""
    strength: str | None = Field(
        default=None,
        json_schema_extra={
            "maxLength": 32,
            **validations(
                rule(f"self.matches('{STRENGTH_PATTERN}')", "strength must be a decimal number written as a string, e.g. \"0.5\""),
                rule(
                    f"!self.matches('{STRENGTH_PATTERN}') || (double(self) >= 0.0 && double(self) <= 1.0)",
                    "strength must be between 0 and 1",
                ),
            ),
        },
    )
    """How strongly the adapter is applied, a number from 0 to 1 written as a string ("0.5");
    default "1.0". 0 gives the base model's output."""


class InferenceSpec(ApiModel):
    """Serve a model for inference."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule("has(self.preset) || has(self.template)", "Preset or Template must be specified"),
            rule("!(has(self.preset) && has(self.template))", "Preset and Template cannot be set at the same time"),
            rule("has(self.template) == has(oldSelf.template)", "field cannot be unset/set if it was set/unset"),
        )
    )

    preset: PresetSpec | None = Field(default=None, json_schema_extra=validations(rule("self == oldSelf", "field is immutable")))
    """The model preset to serve. Exactly one of preset or template."""
    template: dict[str, Any] | None = None
    """A full PodTemplateSpec for a custom inference workload. Exactly one of preset or template."""
    config: str | None = None
    """Name of a ConfigMap (same namespace) with key inference_config.yaml to tune the server."""
    adapters: list[AdapterSpec] = Field(
        default_factory=list,
        json_schema_extra={
            "maxItems": 10,
            **validations(
                rule(
                    "self.all(a, !has(a.source.name) || self.exists_one(b, has(b.source.name) && b.source.name == a.source.name))",
                    "Duplicate adapter source name found: adapter names must be unique",
                ),
            ),
        },
    )
    """LoRA adapters to apply, at most 10, with unique names."""


class TuningMethod(str, enum.Enum):
    """Parameter-efficient fine-tuning methods."""

    LORA = "lora"
    QLORA = "qlora"


class DataDestination(ApiModel):
    """Where the tuned adapter goes: an OCI image (with a push secret) or a volume."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            rule("has(self.image) != has(self.volumeSource)", "Exactly one of Volume or Image must be specified"),
            rule("!has(self.image) || has(self.imagePushSecret)", "Must specify imagePushSecret with destination image"),
        )
    )

    volume_source: dict[str, Any] | None = None
    """A Kubernetes VolumeSource to write the adapter to."""
    image: str | None = None
    """OCI image reference to push the adapter to, e.g. myacr.azurecr.io/adapter:0.0.1."""
    image_push_secret: str | None = None
    """Name of a docker-registry Secret (same namespace) allowed to push image. Required with image."""


class TuningSpec(ApiModel):
    """Fine-tune a model with LoRA or QLoRA and publish the adapter."""

    preset: PresetSpec = Field(json_schema_extra=validations(rule("self == oldSelf", "Preset cannot be changed")))
    """The base model preset to tune."""
    method: TuningMethod = Field(
        default=TuningMethod.LORA, json_schema_extra=validations(rule("self == oldSelf", "Method cannot be changed"))
    )
    """lora or qlora (4-bit quantized base)."""
    config: str | None = None
    """Name of a ConfigMap (same namespace) with key training_config.yaml; a default per method
    is used when empty."""
    input: DataSource = Field(
        json_schema_extra=validations(
            rule(
                "(has(self.urls) && size(self.urls) > 0 ? 1 : 0) + (has(self.image) ? 1 : 0) + (has(self.volumeSource) ? 1 : 0) == 1",
                "Exactly one of URLs, Volume, or Image must be specified",
            ),
            rule(
                "!has(oldSelf.name) || (has(self.name) && self.name == oldSelf.name)",
                "During tuning Name field cannot be changed once set",
            ),
        )
    )
    """The training data: exactly one of urls, image or volumeSource."""
    output: DataDestination
    """Where to put the adapter: exactly one of image (with imagePushSecret) or volumeSource."""


ConditionStatus = Literal["True", "False", "Unknown"]


class ConditionType(str, enum.Enum):
    """Condition types of a Workspace's status (upstream's names).

    ``kubectl get workspace`` shows ResourceReady, InferenceReady and, as WORKSPACEREADY,
    WorkspaceSucceeded (JobStarted with ``-o wide``). WorkspaceReady carries the same verdict as
    WorkspaceSucceeded under the column's name.
    """

    RESOURCE_READY = "ResourceReady"
    INFERENCE_READY = "InferenceReady"
    JOB_STARTED = "JobStarted"
    WORKSPACE_SUCCEEDED = "WorkspaceSucceeded"
    WORKSPACE_READY = "WorkspaceReady"
    NODE_CLAIM_READY = "NodeClaimReady"
    NODES_READY = "NodesReady"
    WORKSPACE_DELETING = "WorkspaceDeleting"


class Condition(ApiModel):
    """A status condition in the standard Kubernetes shape (metav1.Condition)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, use_attribute_docstrings=True, extra="ignore")

    type: ConditionType
    """The aspect this condition reports, e.g. ResourceReady."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str = ""
    """A CamelCase word for programs."""
    message: str = ""
    """What is going on, for people, including what to do when it is not True."""
    last_transition_time: str | None = None
    """When status last changed (RFC 3339)."""
    observed_generation: int | None = None
    """The metadata.generation this condition was computed from."""


class WorkspaceState(str, enum.Enum):
    """Coarse state of a workspace, shown in `kubectl get workspace`."""

    PENDING = "Pending"
    READY = "Ready"
    NOT_READY = "NotReady"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DELETING = "Deleting"


class WorkspaceStatus(ApiModel):
    """Observed state, written by the operator."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, use_attribute_docstrings=True, extra="ignore")

    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Conditions by type (see ConditionType): ResourceReady, InferenceReady, JobStarted,
    WorkspaceSucceeded (the WORKSPACEREADY column), WorkspaceReady, NodeClaimReady, NodesReady,
    WorkspaceDeleting."""
    worker_nodes: list[str] = Field(default_factory=list)
    """Names of the nodes the workload runs on, sorted."""
    state: WorkspaceState | None = None
    """Pending, Ready, NotReady (inference); Pending, Running, Succeeded, Failed (tuning)."""
    target_node_count: int | None = None
    """How many nodes the workspace needs (from resource.count and the model's GPU memory fit)."""
    observed_generation: int | None = None
    """The metadata.generation the status was computed from."""


class Workspace(ApiModel):
    """A Workspace: the nodes to use and the model to serve (inference) or tune (tuning)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="forbid",
        json_schema_extra=validations(
            rule(
                f"!has(self.metadata.name) || (size(self.metadata.name) <= 63 && self.metadata.name.matches('{DNS1123_LABEL_PATTERN}'))",
                "metadata.name must be a lowercase RFC 1123 label: at most 63 lower case alphanumeric characters or '-', "
                "starting and ending with an alphanumeric character",
            ),
            rule("has(self.inference) || has(self.tuning)", "Either Inference or Tuning must be specified, not neither"),
            rule("!(has(self.inference) && has(self.tuning))", "Either Inference or Tuning must be specified, but not both"),
            rule("has(oldSelf.inference) == has(self.inference)", "Inference field cannot be toggled once set"),
            rule("has(oldSelf.tuning) == has(self.tuning)", "Tuning field cannot be toggled once set"),
            rule(
                "!has(self.tuning) || !has(self.resource.count) || self.resource.count == 1",
                "Tuning does not currently support multinode configurations. Please set the node count to 1.",
            ),
        ),
    )

    api_version: str = f"{GROUP}/{STORAGE_VERSION}"
    """kaito.sh/v1alpha1 or kaito.sh/v1beta1."""
    kind: Literal["Workspace"] = "Workspace"
    """Always Workspace."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""
    resource: ResourceSpec
    """The nodes to run on."""
    inference: InferenceSpec | None = None
    """Serve a model. Exactly one of inference or tuning."""
    tuning: TuningSpec | None = None
    """Fine-tune a model. Exactly one of inference or tuning."""
    status: WorkspaceStatus | None = None
    """Observed state, written by the operator."""

    @property
    def name(self) -> str:
        """metadata.name."""
        return self.metadata.name

    @property
    def namespace(self) -> str:
        """metadata.namespace, or "default"."""
        return self.metadata.namespace or "default"

    @property
    def preset_name(self) -> str | None:
        """The preset named by inference or tuning, if any."""
        if self.inference is not None and self.inference.preset is not None:
            return self.inference.preset.name
        if self.tuning is not None:
            return self.tuning.preset.name
        return None
