"""Generate the Workspace CustomResourceDefinition from the pydantic API models.

The CRD is never edited by hand: ``kaito crd --output charts/kaito/crds/kaito.sh_workspaces.yaml``
(``make crd``) writes it, and a test fails when the committed file differs from what the models
generate.

The pydantic JSON schema is turned into a Kubernetes *structural* schema:

* ``$ref`` and ``anyOf: [X, null]`` (optional fields) are inlined, so every node has a type;
* free-form objects (``template``, ``volumeSource``) become
  ``x-kubernetes-preserve-unknown-fields: true``;
* field docstrings become ``description`` (shown by ``kubectl explain``);
* ``title``, ``additionalProperties: false`` and null/empty defaults are dropped; scalar
  defaults (``count: 1``, ``accessMode: public``, ``method: lora``) are kept, the API server
  applies them;
* the CEL rules attached with :mod:`kaito_core.api.cel` become ``x-kubernetes-validations``.

Both served versions (v1alpha1, as the user's examples use, and v1beta1, the storage version)
have the same schema, so no conversion webhook is needed.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from kaito_core.api.cel import KEY as VALIDATIONS_KEY
from kaito_core.api.workspace import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, STORAGE_VERSION, VERSIONS, ConditionType, Workspace

CRD_NAME = f"{PLURAL}.{GROUP}"
CATEGORIES = ("workspace",)
CRD_PATH = "charts/kaito/crds/kaito.sh_workspaces.yaml"
"""Where the generated CRD is committed, relative to the repository root."""
HEADER = (
    "# The Workspace CRD, generated from kaito_core/api/workspace.py by `kaito crd` (make crd).\n"
    "# Do not edit: change the models and regenerate; a test fails when this file is stale.\n"
)

_DROP_KEYS = {"title", "$defs"}


def _condition_column(name: str, condition: ConditionType, *, priority: int = 0) -> dict[str, Any]:
    column: dict[str, Any] = {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition.value}")].status',
        "description": f"Status of the {condition.value} condition",
    }
    if priority:
        column["priority"] = priority
    return column


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Instance", "type": "string", "jsonPath": ".resource.instanceType", "description": "The instance type (VM size) of the nodes"},
    _condition_column("ResourceReady", ConditionType.RESOURCE_READY),
    _condition_column("InferenceReady", ConditionType.INFERENCE_READY),
    _condition_column("JobStarted", ConditionType.JOB_STARTED, priority=1),
    _condition_column("WorkspaceReady", ConditionType.WORKSPACE_SUCCEEDED),
    {"name": "State", "type": "string", "jsonPath": ".status.state", "priority": 1, "description": "Coarse state of the workspace"},
    {
        "name": "TargetNodeCount",
        "type": "integer",
        "jsonPath": ".status.targetNodeCount",
        "priority": 1,
        "description": "How many nodes the workspace needs",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
"""``kubectl get workspace`` shows NAME INSTANCE RESOURCEREADY INFERENCEREADY WORKSPACEREADY AGE
(as in the Phi-3 cookbook); ``-o wide`` adds JOBSTARTED, STATE and TARGETNODECOUNT."""


class SchemaError(ValueError):
    """The models produced a schema that cannot be made structural (a bug in the models)."""


def _description(text: str) -> str:
    """Docstrings wrap lines; descriptions read better as paragraphs."""
    paragraphs = [" ".join(line.strip() for line in block.splitlines()) for block in text.strip().split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Field-level keys over the referenced model's keys; validation rules from both."""
    merged = {**base, **{k: v for k, v in extra.items() if k != VALIDATIONS_KEY}}
    rules = list(base.get(VALIDATIONS_KEY, [])) + list(extra.get(VALIDATIONS_KEY, []))
    if rules:
        merged[VALIDATIONS_KEY] = rules
    return merged


_KEY_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "maxProperties",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    VALIDATIONS_KEY,
)


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    """Keys in a fixed, readable order (description first, rules last)."""
    rank = {k: i for i, k in enumerate(_KEY_ORDER)}
    return dict(sorted(node.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def _structural(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    node = dict(node)
    if "$ref" in node:
        target = node.pop("$ref").rsplit("/", 1)[-1]
        node = _merge(_structural(defs[target], defs, path), node)
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o != {"type": "null"}]
        if len(options) != 1:
            raise SchemaError(f"{path}: a union of several types cannot be expressed in a structural schema")
        node = _merge(_structural(options[0], defs, path), node)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "default" and (value is None or value == [] or value == {} or value == ""):
            continue
        if key == "description":
            out[key] = _description(value)
        elif key == "properties":
            out[key] = {name: _structural(sub, defs, f"{path}.{name}") for name, sub in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out[key] = _structural(value, defs, f"{path}{{}}")
        elif key == VALIDATIONS_KEY:
            out[key] = [{"rule": r["rule"], "message": r["message"]} for r in value]
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = copy.deepcopy(value)
    if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        raise SchemaError(f"{path}: schema node has no type: {node}")
    return _ordered(out)


def openapi_schema() -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a Workspace (``openAPIV3Schema`` of each version)."""
    raw = Workspace.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema = _structural(raw, defs, "")
    props = schema["properties"]
    # The API server owns metadata (only name/generateName may be constrained, by rules at the root).
    props["metadata"] = {"type": "object"}
    for key in ("apiVersion", "kind"):
        props[key] = {
            "description": {
                "apiVersion": "APIVersion defines the versioned schema of this representation of an object: kaito.sh/v1alpha1 or kaito.sh/v1beta1.",
                "kind": "Kind is the REST resource this object represents: Workspace.",
            }[key],
            "type": "string",
        }
    return schema


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition object."""
    schema = openapi_schema()
    versions = [
        {
            "name": version,
            "served": True,
            "storage": version == STORAGE_VERSION,
            "schema": {"openAPIV3Schema": copy.deepcopy(schema)},
            "subresources": {"status": {}},
            "additionalPrinterColumns": copy.deepcopy(PRINTER_COLUMNS),
        }
        for version in VERSIONS
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": versions,
        },
    }


class _Dumper(yaml.SafeDumper):
    """Block style, multi-line strings as literal blocks, no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_representer)


def render_crd() -> str:
    """The CRD as YAML text, exactly as committed."""
    body = yaml.dump(crd(), Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True, default_flow_style=False)
    return HEADER + body
