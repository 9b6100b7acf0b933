"""Workspace validation beyond the schema: one library used by the CLI, admission and the reconciler.

* :func:`parse_workspace` turns a dict (YAML/JSON, camelCase) into a :class:`Workspace`, or
  raises :class:`~kaito_core.errors.ValidationError` whose problems carry camelCase field paths
  (``inference.adapters[0].strength``) and a fix.
* :func:`validate_workspace` checks a parsed Workspace against the installed plugins and the
  cluster facts in :class:`ValidationContext` and returns **every** problem found (empty when
  valid): the rules of upstream KAITO's admission webhook (kaito.md §1.6), with upstream's
  wording where users rely on it, plus the GPU-memory fit of :mod:`kaito_core.fit`.
* :func:`check_workspace` does both and raises.

Rules the API server can enforce itself are also in the CRD (CEL, see :mod:`kaito_core.api.crd`);
they are repeated here so ``kaito validate`` finds them without a cluster.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from urllib.parse import urlsplit

import pydantic
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from kaito_core.api import labels as L
from kaito_core.api.cel import DNS1123_LABEL_PATTERN, STRENGTH_PATTERN
from kaito_core.api.workspace import GROUP, VERSIONS, InferenceSpec, LabelSelector, TuningSpec, Workspace
from kaito_core.backends import InferenceBackend
from kaito_core.errors import FieldError, NotFoundError, ValidationError
from kaito_core.fit import NodePlan, plan_nodes
from kaito_core.netcheck import MSG_SCHEME, data_url_problem
from kaito_core.plugins.registry import BACKEND_PROVIDER_HINTS, Registry
from kaito_core.preset_providers import install_line
from kaito_core.preset_sources import ModelLocation, PresetGenerationError
from kaito_core.presets import Preset
from kaito_core.serving import choose_backend
from kaito_core.sku import Cloud, InstanceType, NodeGPUFacts, is_azure_lenient, lookup, supported_gpu_skus, uniform_node_type

MAX_ADAPTERS = 10
"""At most this many adapters per workspace (upstream's MaxAdaptersNumber)."""
DNS1123_LABEL = re.compile(DNS1123_LABEL_PATTERN)
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_STRENGTH = re.compile(STRENGTH_PATTERN)
_IMAGE_REF = re.compile(
    r"^(?:(?P<domain>[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?(?::[0-9]+)?)/)?"
    r"(?P<path>[A-Za-z0-9_]+(?:[._-]+[A-Za-z0-9_]+)*(?:/[A-Za-z0-9_]+(?:[._-]+[A-Za-z0-9_]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}))?$"
)
API_VERSIONS = tuple(f"{GROUP}/{v}" for v in VERSIONS)
NAME_REGEX_TEXT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
PLACEHOLDER = re.compile(r"^\s*<[^<>]*>\s*$")
"""A value left as in a template, e.g. ``<your-vm-sku>``."""


class ValidationContext(BaseModel):
    """Facts about where the workspace will run, which the spec alone does not tell."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    node_auto_provisioning: bool = True
    """True: nodes are provisioned from resource.instanceType (NAP). False: bring-your-own nodes."""
    cloud: Cloud = "azure"
    """The cloud whose instance-type catalogue applies (azure, aws, arc)."""
    byo_nodes: tuple[NodeGPUFacts, ...] | None = None
    """BYO only: the nodes matching the label selector (None: unknown, skip node checks)."""
    default_backend: str | None = None
    """The operator's default inference backend, used when the preset offers it and the workspace
    has no kaito.sh/runtime annotation; else the preset's first backend."""
    require_backend: bool = False
    """True where the workload is built (operator, admission): the chosen backend must be
    installed. False (CLI): backend-specific checks are skipped when it is not installed here."""
    check_fit: bool = True
    """Whether to check that the model fits the nodes' GPU memory."""
    max_model_len: int | None = None
    """Context length to size the KV cache for (from the inference config), default 2048."""
    model_location: ModelLocation | None = None
    """Where presets named by a model id (``org/model``) read the model's files: a local copy
    or cache (``kaito validate --model-dir``/``--hf-cache``), or the hub (operator)."""
    allowed_data_hosts: frozenset[str] = frozenset()
    """Hosts a tuning.input URL may use although they are loopback, private or link-local (the
    operator setting tuning.allowDataHosts, for tests with a local data server only)."""
    resolve_preset: Callable[[str], Preset] | None = None
    """The caller's own preset resolution (the operator's: catalog, cache, hub with the
    Workspace's token, generated presets kept in memory, see :mod:`kaito_core.operator.presets`);
    None: ``registry.resolve_preset(name, model_location)``."""


# -- parsing ------------------------------------------------------------------------------------


def parse_workspace(obj: Any) -> Workspace:
    """Parse a Workspace from its wire form (a dict with camelCase keys).

    Raises:
        ValidationError: the object does not match the schema; every problem is listed with its
            camelCase field path and a fix.
    """
    name = _name_of(obj)
    if not isinstance(obj, Mapping):
        raise ValidationError(
            [FieldError("", f"a Workspace must be a mapping, got {type(obj).__name__}", "write the Workspace as a YAML mapping")],
            name=name,
        )
    try:
        return Workspace.model_validate(dict(obj))
    except pydantic.ValidationError as exc:
        raise ValidationError([_field_error(err) for err in exc.errors(include_url=False)], name=name) from None


def _name_of(obj: Any) -> str:
    if isinstance(obj, Mapping):
        meta = obj.get("metadata")
        if isinstance(meta, Mapping) and isinstance(meta.get("name"), str):
            return str(meta["name"])
    return ""


_MAP_FIELDS = {"matchLabels", "labels", "annotations", "volumeSource", "template"}


def loc_to_path(loc: Sequence[int | str]) -> str:
    """Render a pydantic error location as a camelCase field path: ``inference.adapters[0].strength``."""
    out = ""
    in_map = False
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            in_map = False
            continue
        text = str(part)
        if in_map:
            out += f".{text}" if re.fullmatch(r"[A-Za-z0-9_]+", text) else f"[{text!r}]"
            in_map = False
            continue
        if "_" in text and re.fullmatch(r"[a-z][a-z0-9_]*", text):
            text = to_camel(text)
        out += f".{text}" if out else text
        in_map = text in _MAP_FIELDS
    return out


def _fields_at(loc: Sequence[int | str]) -> list[str]:
    """The camelCase field names of the model at ``loc`` (for "did you mean")."""
    current: Any = Workspace
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = next((f for n, f in current.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return []
            current = field.annotation
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip Optional[...] and list[...] from a field annotation."""
    while True:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0] if len(args) == 1 else annotation
            if len(args) != 1:
                return annotation
        elif origin in (list, tuple):
            annotation = typing.get_args(annotation)[0]
        else:
            return annotation


def _field_error(err: Any) -> FieldError:
    loc: tuple[int | str, ...] = tuple(err.get("loc", ()))
    path = loc_to_path(loc)
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "missing":
        return FieldError(path, "required field is missing", f"add {path}")
    if kind == "extra_forbidden":
        parent = loc_to_path(loc[:-1])
        path = f"{parent}.{loc[-1]}" if parent else str(loc[-1])
        known = _fields_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        where = f" under {parent}" if parent else ""
        return FieldError(
            path,
            f"unknown field {loc[-1]!r}{where}",
            f"{hint}remove it or use one of: {', '.join(known)} (field names are camelCase)",
        )
    if kind in ("enum", "literal_error"):
        expected = ctx.get("expected", "")
        return FieldError(path, f"{value!r} is not allowed", f"use one of {expected}")
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return FieldError(path, f"{value!r} is out of range: {err.get('msg', '')}", "change the value")
    if kind == "string_type" and isinstance(value, (int, float, bool)):
        return FieldError(path, f"wrong type: a string is expected, got the {type(value).__name__} {value!r}", f'quote the value: {loc[-1]}: "{value}"')
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return FieldError(path, f"wrong type: {err.get('msg', '')} (got {value!r})", f"write {path} as the type the schema expects")
    return FieldError(path, str(err.get("msg", "invalid value")), f"fix {path}")


# -- validation ---------------------------------------------------------------------------------


class _Checker:
    """Collects the problems of one workspace."""

    def __init__(self, ws: Workspace, registry: Registry, old: Workspace | None, ctx: ValidationContext) -> None:
        self.ws = ws
        self.registry = registry
        self.old = old
        self.ctx = ctx
        self.errors: list[FieldError] = []
        self.annotations = ws.metadata.annotations

    def add(self, path: str, message: str, fix: str = "") -> None:
        self.errors.append(FieldError(path, message, fix))

    # -- whole object ---------------------------------------------------------------------------

    def run(self) -> list[FieldError]:
        ws = self.ws
        if ws.api_version not in API_VERSIONS:
            self.add("apiVersion", f"unsupported apiVersion {ws.api_version!r}", f"use one of {', '.join(API_VERSIONS)}")
        self.check_name()
        self.check_annotations()
        if ws.inference is None and ws.tuning is None:
            self.add(
                "inference, tuning",
                "Either Inference or Tuning must be specified, not neither",
                "add an inference section (to serve a model) or a tuning section (to fine-tune one)",
            )
        elif ws.inference is not None and ws.tuning is not None:
            self.add(
                "inference, tuning",
                "Either Inference or Tuning must be specified, but not both",
                "keep one of them; use two workspaces to tune a model and serve the result",
            )
        self.check_resource()
        if ws.inference is not None:
            self.check_inference(ws.inference)
        if ws.tuning is not None:
            self.check_tuning(ws.tuning)
        if self.old is not None:
            self.check_update(self.old)
        return self.errors

    def check_name(self) -> None:
        meta = self.ws.metadata
        name = meta.name
        if not name:
            if not getattr(meta, "generate_name", None) and not (meta.model_extra or {}).get("generateName"):
                self.add("metadata.name", "required field is missing", "set metadata.name, e.g. workspace-phi-3-mini")
            return
        if len(name) > 63 or not DNS1123_LABEL.match(name):
            self.add(
                "metadata.name",
                f"invalid value {name!r}: a lowercase RFC 1123 label must consist of lower case alphanumeric "
                f"characters or '-', start and end with an alphanumeric character and be at most 63 characters "
                f"(regex '{NAME_REGEX_TEXT}')",
                f"rename the workspace, e.g. {_suggest_label(name)!r}",
            )

    def check_annotations(self) -> None:
        family = self.annotations.get(L.ANNOTATION_NODE_IMAGE_FAMILY)
        if family is not None and family not in L.NODE_IMAGE_FAMILIES:
            self.add(
                f"metadata.annotations[{L.ANNOTATION_NODE_IMAGE_FAMILY!r}]",
                f"unsupported node image family {family!r}, supported values are azurelinux, ubuntu",
                "set it to ubuntu or azurelinux, or remove the annotation (default ubuntu)",
            )

    # -- resource -------------------------------------------------------------------------------

    def check_resource(self) -> None:
        res = self.ws.resource
        if self.ctx.node_auto_provisioning:
            if not res.instance_type:
                self.add(
                    "resource.instanceType",
                    "missing field(s): instanceType is required when node auto-provisioning is enabled",
                    "set resource.instanceType to a GPU size such as Standard_NC6s_v3 (`kaito presets` shows what "
                    "each preset needs), or use bring-your-own nodes (kaito validate --byo)",
                )
            else:
                self.instance_known(res.instance_type)
        elif res.instance_type:
            self.add(
                "resource.instanceType",
                "instanceType must be empty when node auto-provisioning is disabled (BYO scenario)",
                "remove resource.instanceType: the workspace runs on the existing nodes that match resource.labelSelector",
            )
        self.check_selector(res.label_selector)

    def instance_known(self, sku: str) -> InstanceType | None:
        if PLACEHOLDER.match(sku):
            self.add(
                "resource.instanceType",
                f"{sku} is a placeholder, not an instance type",
                f"replace it with an instance type of the {self.ctx.cloud} catalogue, e.g. Standard_NC24ads_A100_v4 "
                "(`kaito presets --instance-type SKU` shows what fits)",
            )
            return None
        found = lookup(sku, self.ctx.cloud)
        if found is None and not (self.ctx.cloud == "azure" and is_azure_lenient(sku)):
            self.add(
                "resource.instanceType",
                f"Unsupported instance type {sku}. Supported SKUs: {supported_gpu_skus(self.ctx.cloud)}",
                f"choose one of the {self.ctx.cloud} sizes listed (names are case-insensitive)",
            )
        return found

    def check_selector(self, selector: LabelSelector) -> None:
        path = "resource.labelSelector.matchLabels"
        for key, value in selector.match_labels.items():
            problem = _label_key_problem(key)
            if problem:
                self.add(f"{path}[{key!r}]", f"invalid label key {key!r}: {problem}", "use a valid Kubernetes label key such as apps")
            if len(value) > 63 or not LABEL_VALUE.match(value):
                self.add(
                    f"{path}[{key!r}]",
                    f"invalid label value {value!r}: at most 63 characters, alphanumerics, '-', '_' or '.', "
                    "starting and ending with an alphanumeric",
                    "use a valid Kubernetes label value such as phi-3",
                )
        if not any(k not in L.RESERVED_SELECTOR_KEYS for k in selector.match_labels):
            self.add(
                path,
                "matchLabels must contain at least one non-reserved label",
                f"add a label of your own, e.g. apps: {_suggest_label(self.ws.name)}; the keys "
                f"{', '.join(sorted(L.RESERVED_SELECTOR_KEYS))} are set by KAITO and ignored here",
            )
        for i, req in enumerate(selector.match_expressions):
            where = f"resource.labelSelector.matchExpressions[{i}].values"
            if req.operator.value in ("In", "NotIn") and not req.values:
                self.add(where, f"operator {req.operator.value} needs at least one value", "list the values, or use Exists")
            if req.operator.value in ("Exists", "DoesNotExist") and req.values:
                self.add(where, f"operator {req.operator.value} takes no values", "remove the values")

    # -- presets and backends -------------------------------------------------------------------

    def preset(self, name: str, path: str, mode: str) -> Preset | None:
        try:
            if self.ctx.resolve_preset is not None:
                preset = self.ctx.resolve_preset(name)
            else:
                preset = self.registry.resolve_preset(name, self.ctx.model_location)
        except NotFoundError:
            line = install_line(name)
            fix = (
                f"install the plugin package that provides it ({line}) where kaito runs, or choose an installed preset"
                if line
                else "choose an installed preset (`kaito presets` lists them) or install the plugin package that provides it"
            )
            installed = ", ".join(self.registry.presets()) or "none"
            # The package hint goes in the fix only (the registry's own message carries it too).
            self.add(path, f"Unsupported {mode} preset name {name}: preset {name!r} is not installed (installed: {installed})", fix)
            return None
        except PresetGenerationError as exc:
            self.add(path, f"Unsupported {mode} preset name {name}: {exc.message}", exc.fix)
            return None
        if preset.deprecated:
            self.add(path, f"Model {name} is deprecated and no longer supported", "choose a current preset (`kaito presets`)")
            return None
        return preset

    def backend_name(self, preset: Preset) -> str:
        return choose_backend(preset, self.annotations, self.ctx.default_backend)

    def backend(self, preset: Preset) -> tuple[str, InferenceBackend | None, bool]:
        """(name, installed backend or None, usable) for the preset."""
        name = self.backend_name(preset)
        path = f"metadata.annotations[{L.ANNOTATION_RUNTIME!r}]"
        if name not in preset.backends:
            self.add(
                path,
                f"Runtime validation: model {preset.name} does not support inference with the {name} runtime "
                f"(it offers: {', '.join(preset.backends)})",
                f"set the annotation to one of {', '.join(preset.backends)}, or remove it",
            )
            return name, None, False
        try:
            return name, self.registry.backend(name), True
        except NotFoundError as exc:
            if self.ctx.require_backend:
                hint = BACKEND_PROVIDER_HINTS.get(name)
                self.add(
                    path if L.ANNOTATION_RUNTIME in self.annotations else "inference.preset.name",
                    f"Runtime validation: {exc}",
                    f"install {hint} where the operator runs" if hint else "install the plugin that provides the backend",
                )
                return name, None, False
            return name, None, True

    # -- inference ------------------------------------------------------------------------------

    def check_inference(self, inf: InferenceSpec) -> None:
        if inf.preset is None and inf.template is None:
            self.add(
                "inference.preset",
                "missing field(s): Preset or Template must be specified",
                "add inference.preset.name (e.g. phi-3-mini-4k-instruct) or a full inference.template",
            )
        if inf.preset is not None and inf.template is not None:
            self.add(
                "inference.template",
                "Preset and Template cannot be set at the same time",
                "remove inference.template to serve the preset, or remove inference.preset to run your own pod template",
            )
        if inf.template is not None:
            self.check_template(inf.template)
        if inf.config is not None and not _is_subdomain(inf.config):
            self.add("inference.config", f"invalid ConfigMap name {inf.config!r}", "use the name of a ConfigMap in the workspace's namespace")
        self.check_adapters(inf)
        if inf.preset is None:
            return
        preset = self.preset(inf.preset.name, "inference.preset.name", "inference")
        if preset is None:
            return
        options = inf.preset.preset_options
        if inf.preset.access_mode.value == "private" and not (options and options.image):
            self.add(
                "inference.preset.presetOptions.image",
                "When AccessMode is private, an image must be provided in PresetOptions",
                "set inference.preset.presetOptions.image to the private model image, or use accessMode: public",
            )
        secret = options.model_access_secret if options else None
        if preset.download_auth_required and not secret:
            self.add(
                "inference.preset.presetOptions.modelAccessSecret",
                "This preset requires authentication and needs a modelAccessSecret with HF_TOKEN key under presetOptions "
                "to download the model",
                "create a Secret with key HF_TOKEN and name it in inference.preset.presetOptions.modelAccessSecret",
            )
        elif secret and not preset.download_auth_required and not preset.download_at_runtime:
            self.add(
                "inference.preset.presetOptions.modelAccessSecret",
                "This preset does not require a modelAccessSecret with HF_TOKEN key under presetOptions",
                "remove inference.preset.presetOptions.modelAccessSecret",
            )
        name, backend, usable = self.backend(preset)
        plan = self.check_fit(preset, backend, tuning_method=None) if usable else None
        if backend is not None:
            instance = self.instance_for_fit()
            split_nodes = 1
            if plan is not None and plan.fits and plan.gpus_per_node:
                split_nodes = -(-plan.gpus_needed // plan.gpus_per_node)
            gpu = instance.has_gpu if instance is not None else True
            for reason in backend.unsupported_reasons(preset, adapters=len(inf.adapters), nodes=split_nodes, gpu=gpu):
                path = f"metadata.annotations[{L.ANNOTATION_RUNTIME!r}]" if L.ANNOTATION_RUNTIME in self.annotations else "inference.preset.name"
                others = [b for b in preset.backends if b != name]
                fix = f"choose another runtime with annotation {L.ANNOTATION_RUNTIME}: {', '.join(others)}" if others else "change the workspace so the backend can serve it"
                self.add(path, f"Runtime validation: {reason}", fix)

    def check_template(self, template: Mapping[str, Any]) -> None:
        spec = template.get("spec")
        containers = spec.get("containers") if isinstance(spec, Mapping) else None
        if not isinstance(containers, list) or not containers:
            self.add(
                "inference.template.spec.containers",
                "a pod template needs at least one container",
                "give inference.template a spec.containers list, as in a Deployment's pod template",
            )

    def check_adapters(self, inf: InferenceSpec) -> None:
        if len(inf.adapters) > MAX_ADAPTERS:
            self.add(
                "inference.adapters",
                f"Number of Adapters exceeds the maximum limit, maximum of {MAX_ADAPTERS} allowed (got {len(inf.adapters)})",
                f"remove adapters until at most {MAX_ADAPTERS} remain",
            )
        seen: set[str] = set()
        for i, adapter in enumerate(inf.adapters):
            base = f"inference.adapters[{i}]"
            src = adapter.source
            label = src.name or f"#{i}"
            if not src.name:
                self.add(f"{base}.source.name", "adapter source name is required", "name the adapter, e.g. phi-3-adapter")
            else:
                if len(src.name) > 253 or not DNS1123_SUBDOMAIN.match(src.name):
                    self.add(
                        f"{base}.source.name",
                        f"invalid adapter name {src.name!r}: must be a lowercase RFC 1123 subdomain (lower case "
                        "alphanumerics, '-' and '.', starting and ending with an alphanumeric)",
                        f"rename it, e.g. {_suggest_label(src.name)!r}",
                    )
                if src.name in seen:
                    self.add(f"{base}.source.name", f"Duplicate adapter source name found: {src.name}", "give every adapter a unique name")
                seen.add(src.name)
            if src.urls:
                self.add(f"{base}.source.urls", "URLs are not supported as adapter source", "package the adapter as an image or put it on a volume")
            if not src.image and src.volume_source is None:
                self.add(
                    f"{base}.source",
                    f"adapter {label}: either image or volumeSource must be specified",
                    "set source.image to the adapter image, or source.volumeSource to a volume holding it",
                )
            if src.image and src.volume_source is not None:
                self.add(f"{base}.source", f"adapter {label}: image and volumeSource cannot both be set", "keep one of them")
            if src.image:
                self.check_image(f"{base}.source.image", src.image, "adapter")
            if adapter.strength is not None:
                self.check_strength(f"{base}.strength", label, adapter.strength)

    def check_strength(self, path: str, adapter: str, strength: str) -> None:
        fix = 'write a number from 0 to 1 in quotes, e.g. strength: "0.5"'
        text = strength.strip()
        try:
            value = float(text)
        except ValueError:
            self.add(path, f"Invalid strength value for Adapter '{adapter}': {strength!r} is not a number", fix)
            return
        if not _STRENGTH.match(text):
            self.add(path, f"Invalid strength value for Adapter '{adapter}': {strength!r} is not a plain decimal number", fix)
        elif not 0.0 <= value <= 1.0:
            self.add(path, f"Strength value for Adapter '{adapter}' must be between 0 and 1 (got {strength})", fix)

    def check_image(self, path: str, image: str, what: str) -> None:
        if not _IMAGE_REF.match(image.strip()) or image != image.strip():
            self.add(
                path,
                f"Unable to parse {what} image reference: {image!r}",
                "write an OCI image reference such as myregistry.azurecr.io/adapter:0.0.1 (no scheme, no spaces)",
            )

    # -- tuning ---------------------------------------------------------------------------------

    def check_tuning(self, tun: TuningSpec) -> None:
        if self.ws.resource.count > 1:
            self.add(
                "resource.count",
                "Tuning does not currently support multinode configurations. Please set the node count to 1. "
                "Future support with DeepSpeed will allow this.",
                "set resource.count to 1",
            )
        if tun.config is not None and not _is_subdomain(tun.config):
            self.add("tuning.config", f"invalid ConfigMap name {tun.config!r}", "use the name of a ConfigMap in the workspace's namespace")
        self.check_tuning_input(tun)
        self.check_tuning_output(tun)
        preset = self.preset(tun.preset.name, "tuning.preset.name", "tuning")
        if preset is None:
            return
        if preset.tuning is None:
            tunable = [p.name for p in self.registry.presets().values() if p.tuning is not None]
            self.add(
                "tuning.preset.name",
                f"preset {preset.name} does not support tuning",
                f"choose a preset that can be tuned: {', '.join(tunable) or 'none installed'}",
            )
            return
        method = tun.method.value
        if method not in preset.tuning.methods:
            self.add(
                "tuning.method",
                f"preset {preset.name} does not support tuning method {method}",
                f"use one of {', '.join(preset.tuning.methods)}",
            )
            return
        self.check_fit(preset, None, tuning_method=method)

    def check_tuning_input(self, tun: TuningSpec) -> None:
        src = tun.input
        kinds = [k for k, present in (("urls", bool(src.urls)), ("image", bool(src.image)), ("volumeSource", src.volume_source is not None)) if present]
        if len(kinds) != 1:
            got = f" (got {', '.join(kinds)})" if kinds else " (got none)"
            self.add(
                "tuning.input",
                f"Exactly one of URLs, Volume, or Image must be specified{got}",
                "give the training data as tuning.input.urls, tuning.input.image or tuning.input.volumeSource, only one",
            )
        if src.image:
            self.check_image("tuning.input.image", src.image, "input")
        for i, url in enumerate(src.urls):
            problem = data_url_problem(url)
            host = (urlsplit(url.strip()).hostname or "").rstrip(".").lower() if problem else ""
            if problem and host in self.ctx.allowed_data_hosts and problem[0] != MSG_SCHEME:
                continue
            if problem:
                message, detail = problem
                self.add(
                    f"tuning.input.urls[{i}]",
                    f"{message}: {detail}",
                    "use a public http(s) URL of the dataset (e.g. on huggingface.co), or put the data in an image or a volume",
                )

    def check_tuning_output(self, tun: TuningSpec) -> None:
        out = tun.output
        has_image, has_volume = bool(out.image), out.volume_source is not None
        if has_image == has_volume:
            self.add(
                "tuning.output",
                "missing field(s): Exactly one of Volume or Image must be specified",
                "set tuning.output.image (with imagePushSecret) to push the adapter, or tuning.output.volumeSource to write it to a volume",
            )
        if out.image:
            self.check_image("tuning.output.image", out.image, "output")
            if not out.image_push_secret:
                self.add(
                    "tuning.output.imagePushSecret",
                    "missing field(s): Must specify imagePushSecret with destination image",
                    "create a docker-registry Secret allowed to push to the image's registry and name it in tuning.output.imagePushSecret",
                )

    # -- fit ------------------------------------------------------------------------------------

    def instance_for_fit(self) -> InstanceType | None:
        """The node type the workload will run on, when known."""
        if self.ctx.node_auto_provisioning:
            sku = self.ws.resource.instance_type
            return lookup(sku, self.ctx.cloud) if sku else None
        if not self.ctx.byo_nodes:
            return None
        node_type, _ = uniform_node_type(self.ctx.byo_nodes, self.ctx.cloud)
        return node_type

    def check_fit(self, preset: Preset, backend: InferenceBackend | None, *, tuning_method: str | None) -> NodePlan | None:
        if not self.ctx.check_fit:
            return None
        path = "resource.instanceType"
        count = self.ws.resource.count
        if not self.ctx.node_auto_provisioning:
            path = "resource.labelSelector"
            nodes = self.ctx.byo_nodes
            if nodes is None:
                return None
            if not nodes:
                self.add(
                    path,
                    "No nodes found matching the specified label selector",
                    "label the nodes to use (kubectl label node NODE KEY=VALUE) or change resource.labelSelector",
                )
                return None
            _, problems = uniform_node_type(nodes, self.ctx.cloud)
            for problem in problems:
                self.add(path, problem, "use nodes with the same GPUs, labelled by GPU Feature Discovery")
            if problems:
                return None
            count = len(nodes)
        instance = self.instance_for_fit()
        if instance is None:
            return None
        plan = plan_nodes(preset, instance, count=count, backend=backend, max_model_len=self.ctx.max_model_len, tuning_method=tuning_method)
        if not plan.fits and L.ANNOTATION_BYPASS_RESOURCE_CHECKS not in self.annotations:
            where = "choose an instance type with more GPU memory" if plan.memory == "gpu" else "choose an instance type with more memory"
            if not self.ctx.node_auto_provisioning:
                where = "use nodes with more GPU memory"
            fix = f"{where}, e.g. {plan.describe_suggestions()}" if plan.suggestions else where
            if tuning_method == "lora":
                fix += "; or use method qlora (4-bit base weights)"
            fix += f"; or add the annotation {L.ANNOTATION_BYPASS_RESOURCE_CHECKS} to deploy anyway"
            self.add(path, f"Insufficient GPU memory: {plan.explanation}" if plan.memory == "gpu" else f"Insufficient memory: {plan.explanation}", fix)
        return plan

    # -- updates --------------------------------------------------------------------------------

    def check_update(self, old: Workspace) -> None:
        new = self.ws
        if (old.inference is None) != (new.inference is None):
            self.add("inference", "Inference field cannot be toggled once set", "create a new workspace instead")
        if (old.tuning is None) != (new.tuning is None):
            self.add("tuning", "Tuning field cannot be toggled once set", "create a new workspace instead")
        o, n = old.resource, new.resource
        if o.count != n.count:
            self.add("resource.count", f"field is immutable (was {o.count}, now {n.count})", "keep the old value, or create a new workspace")
        if o.label_selector.to_wire() != n.label_selector.to_wire():
            self.add("resource.labelSelector", "field is immutable", "keep the old selector, or create a new workspace")
        if o.instance_type and o.instance_type != n.instance_type:
            if self.ctx.node_auto_provisioning:
                self.add(
                    "resource.instanceType",
                    "instanceType cannot be changed once set when node auto-provisioning is enabled",
                    f"keep {o.instance_type}, or create a new workspace with the new instance type",
                )
            elif n.instance_type:
                self.add("resource.instanceType", "instanceType cannot be changed once set", "keep the old value or clear it")
        if old.inference is not None and new.inference is not None:
            oi, ni = old.inference, new.inference
            if oi.preset is not None and (ni.preset is None or oi.preset.to_wire() != ni.preset.to_wire()):
                self.add("inference.preset", "field is immutable", "create a new workspace to serve another preset")
            if (oi.template is None) != (ni.template is None):
                self.add("inference.template", "field cannot be unset/set if it was set/unset", "create a new workspace instead")
        if old.tuning is not None and new.tuning is not None:
            ot, nt = old.tuning, new.tuning
            if ot.preset.to_wire() != nt.preset.to_wire():
                self.add("tuning.preset", "Preset cannot be changed", "create a new workspace to tune another preset")
            if ot.method != nt.method:
                self.add("tuning.method", "Method cannot be changed", f"keep {ot.method.value}, or create a new workspace")
            if ot.input.name and ot.input.name != nt.input.name:
                self.add("tuning.input.name", "During tuning Name field cannot be changed once set", f"keep {ot.input.name}")


def _is_subdomain(name: str) -> bool:
    return len(name) <= 253 and bool(DNS1123_SUBDOMAIN.match(name))


def _label_key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        return "the prefix must be a DNS subdomain"
    if not name or len(name) > 63 or not LABEL_NAME.match(name):
        return "the name must be at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
    return None


def _suggest_label(name: str) -> str:
    text = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].strip("-")
    return text or "workspace"


def validate_workspace(
    ws: Workspace,
    registry: Registry,
    *,
    old: Workspace | None = None,
    ctx: ValidationContext = ValidationContext(),
) -> list[FieldError]:
    """Every problem of ``ws`` (empty when valid).

    Args:
        ws: the workspace as parsed by :func:`parse_workspace`.
        registry: the installed presets and backends.
        old: the stored workspace, for an update (immutability rules).
        ctx: where it runs (node auto-provisioning or BYO nodes, cloud, ...).
    """
    return _Checker(ws, registry, old, ctx).run()


def check_workspace(
    obj: Mapping[str, Any] | Workspace,
    registry: Registry,
    old: Mapping[str, Any] | Workspace | None = None,
    ctx: ValidationContext = ValidationContext(),
) -> Workspace:
    """Parse and validate; return the Workspace or raise ValidationError listing every problem."""
    ws = obj if isinstance(obj, Workspace) else parse_workspace(obj)
    previous = old if isinstance(old, Workspace) or old is None else parse_workspace(old)
    errors = validate_workspace(ws, registry, old=previous, ctx=ctx)
    ValidationError.collect(errors, name=ws.name)
    return ws


# -- what depends on the installation ---------------------------------------------------------------


def installed_context(
    registry: Registry, *, cloud: str = "azure", provisioner: str | None = None, require_backend: bool = False
) -> ValidationContext:
    """The validation context for an installation: bring-your-own mode when ``provisioner`` (a
    registered name) creates no nodes. The operator and its webhook call this with their
    configured provisioner and ``require_backend=True``; ``kaito validate`` with its options.

    Raises:
        NotFoundError: ``provisioner`` is not installed.
    """
    creates_nodes = registry.provisioner(provisioner).capabilities.creates_nodes if provisioner else True
    return ValidationContext(cloud=typing.cast(Cloud, cloud), node_auto_provisioning=creates_nodes, require_backend=require_backend)


def operator_requirements(ws: Workspace, registry: Registry, ctx: ValidationContext = ValidationContext()) -> list[str]:
    """What the operator needs installed for ``ws`` that is not installed here, so checks that
    depend on it were skipped here and will run at admission (empty when nothing was skipped)."""
    needs: list[str] = []
    specs = [s for s in (ws.inference.preset if ws.inference else None, ws.tuning.preset if ws.tuning else None) if s is not None]
    for spec in specs:
        try:
            preset = registry.preset(spec.name)
        except NotFoundError:
            continue
        name = choose_backend(preset, ws.metadata.annotations, ctx.default_backend)
        if name in preset.backends and name not in registry.backends():
            hint = BACKEND_PROVIDER_HINTS.get(name)
            package = f" (pip install {hint})" if hint else ""
            needs.append(
                f"the inference backend {name!r} must be installed where the operator runs{package}; it is not installed here, "
                "so the admission webhook will also check what it can serve (weight format, adapters, nodes, CPU or GPU)"
            )
    return needs
