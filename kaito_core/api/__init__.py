"""The KAITO API: the Workspace resource, its labels and annotations, and the generated CRD."""

from kaito_core.api.workspace import (
    AdapterSpec,
    Condition,
    ConditionType,
    DataDestination,
    DataSource,
    InferenceSpec,
    LabelSelector,
    ObjectMeta,
    PresetSpec,
    ResourceSpec,
    TuningMethod,
    TuningSpec,
    Workspace,
    WorkspaceState,
    WorkspaceStatus,
)

__all__ = [
    "AdapterSpec",
    "Condition",
    "ConditionType",
    "DataDestination",
    "DataSource",
    "InferenceSpec",
    "LabelSelector",
    "ObjectMeta",
    "PresetSpec",
    "ResourceSpec",
    "TuningMethod",
    "TuningSpec",
    "Workspace",
    "WorkspaceState",
    "WorkspaceStatus",
]
