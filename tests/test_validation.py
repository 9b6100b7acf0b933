"""validate_workspace / parse_workspace: every rule, each with its field path and message."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from kaito_core.errors import FieldError, ValidationError
from kaito_core.plugins import Registry
from kaito_core.sku import NodeGPUFacts
from kaito_core.validation import ValidationContext, check_workspace, loc_to_path, parse_workspace, validate_workspace
from tests.conftest import PHI3_EXAMPLES, load_example
from tests.fakes import BackendsPlugin, FakeMultiNode

INFER = "kaito_workspace_phi_3.yaml"
ADAPT = "kaito_workspace_phi_3_with_adapters.yaml"
TUNE = "kaito_workspace_tuning_phi_3.yaml"

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    """A mutation setting a dotted path (list indexes as numbers) to value; None deletes."""

    def apply(obj: dict[str, Any]) -> None:
        parts = path.split(".")
        node: Any = obj
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        last = parts[-1]
        if value is None:
            del node[int(last) if last.isdigit() else last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return apply


def _all(*mutations: Mutation) -> Mutation:
    def apply(obj: dict[str, Any]) -> None:
        for m in mutations:
            m(obj)

    return apply


def _adapter(name: str, **source: Any) -> dict[str, Any]:
    return {"source": {"name": name, "image": f"myacr.azurecr.io/{name}:1", **source}}


def _problems(obj: dict[str, Any], registry: Registry, ctx: ValidationContext = ValidationContext()) -> list[FieldError]:
    try:
        ws = parse_workspace(obj)
    except ValidationError as exc:
        return list(exc.errors)
    return validate_workspace(ws, registry, ctx=ctx)


# (id, example, mutation, context, expected path, expected message fragment)
CASES: list[tuple[str, str, Mutation, ValidationContext, str, str]] = [
    ("name-not-dns-label", INFER, _set("metadata.name", "Workspace_Phi3"), ValidationContext(), "metadata.name", "lowercase RFC 1123 label"),
    ("name-too-long", INFER, _set("metadata.name", "w" * 64), ValidationContext(), "metadata.name", "at most 63 characters"),
    ("neither-inference-nor-tuning", INFER, _set("inference", None), ValidationContext(), "inference, tuning", "Either Inference or Tuning must be specified, not neither"),
    ("both-inference-and-tuning", TUNE, _set("inference", {"preset": {"name": "phi-3-mini-4k-instruct"}}), ValidationContext(), "inference, tuning", "but not both"),
    ("instance-type-missing-with-nap", INFER, _set("resource.instanceType", None), ValidationContext(), "resource.instanceType", "instanceType is required when node auto-provisioning is enabled"),
    ("instance-type-set-in-byo", INFER, lambda o: None, ValidationContext(node_auto_provisioning=False), "resource.instanceType", "instanceType must be empty when node auto-provisioning is disabled"),
    ("unknown-instance-type", INFER, _set("resource.instanceType", "Standard_X9000"), ValidationContext(), "resource.instanceType", "Unsupported instance type Standard_X9000. Supported SKUs:"),
    ("unknown-aws-instance-type", INFER, _set("resource.instanceType", "p9.huge"), ValidationContext(cloud="aws"), "resource.instanceType", "Unsupported instance type p9.huge"),
    ("only-reserved-labels", INFER, _set("resource.labelSelector.matchLabels", {"kaito.sh/workspace": "x"}), ValidationContext(), "resource.labelSelector.matchLabels", "matchLabels must contain at least one non-reserved label"),
    ("no-labels", INFER, _set("resource.labelSelector", {}), ValidationContext(), "resource.labelSelector.matchLabels", "at least one non-reserved label"),
    ("bad-label-value", INFER, _set("resource.labelSelector.matchLabels.apps", "no spaces allowed"), ValidationContext(), "resource.labelSelector.matchLabels['apps']", "invalid label value"),
    ("unknown-preset", INFER, _set("inference.preset.name", "llama-9-ultra"), ValidationContext(), "inference.preset.name", "Unsupported inference preset name llama-9-ultra"),
    ("neither-preset-nor-template", INFER, _set("inference.preset", None), ValidationContext(), "inference.preset", "Preset or Template must be specified"),
    ("preset-and-template", INFER, _set("inference.template", {"spec": {"containers": [{"name": "c", "image": "x"}]}}), ValidationContext(), "inference.template", "Preset and Template cannot be set at the same time"),
    ("template-without-containers", INFER, _all(_set("inference.preset", None), _set("inference.template", {"spec": {}})), ValidationContext(), "inference.template.spec.containers", "at least one container"),
    ("runtime-not-offered", INFER, _set("metadata.annotations", {"kaito.sh/runtime": "llamacpp"}), ValidationContext(), "metadata.annotations['kaito.sh/runtime']", "does not support inference with the llamacpp runtime"),
    ("gpu-memory-does-not-fit", INFER, _set("inference.preset.name", "phi-3-medium-4k-instruct"), ValidationContext(), "resource.instanceType", "needs ≥ 29.21 GiB of GPU memory on one node (26.00 GiB weights ×1.02 + 2.3 GiB runtime + 0.39 GiB KV cache for 2048 tokens), but Standard_NC6s_v3 has 16 GiB (1× NVIDIA V100 16 GiB)"),
    ("phi-4-on-v100", INFER, _set("inference.preset.name", "phi-4"), ValidationContext(), "resource.instanceType", "Insufficient GPU memory"),
    ("cpu-node-for-gpu-preset", INFER, _set("resource.instanceType", "Standard_D8s_v5"), ValidationContext(), "resource.instanceType", "needs a GPU, but Standard_D8s_v5 has none"),
    ("too-many-adapters", ADAPT, _set("inference.adapters", [_adapter(f"a{i}") for i in range(11)]), ValidationContext(), "inference.adapters", "Number of Adapters exceeds the maximum limit, maximum of 10 allowed"),
    ("duplicate-adapter", ADAPT, _set("inference.adapters", [_adapter("same"), _adapter("same")]), ValidationContext(), "inference.adapters[1].source.name", "Duplicate adapter source name found: same"),
    ("adapter-name-not-subdomain", ADAPT, _set("inference.adapters.0.source.name", "Phi_Adapter"), ValidationContext(), "inference.adapters[0].source.name", "RFC 1123 subdomain"),
    ("adapter-name-missing", ADAPT, _set("inference.adapters.0.source.name", None), ValidationContext(), "inference.adapters[0].source.name", "adapter source name is required"),
    ("adapter-without-image-or-volume", ADAPT, _set("inference.adapters.0.source.image", None), ValidationContext(), "inference.adapters[0].source", "either image or volumeSource must be specified"),
    ("adapter-from-urls", ADAPT, _set("inference.adapters.0.source.urls", ["https://example.com/a.safetensors"]), ValidationContext(), "inference.adapters[0].source.urls", "URLs are not supported as adapter source"),
    ("strength-not-a-number", ADAPT, _set("inference.adapters.0.strength", "strong"), ValidationContext(), "inference.adapters[0].strength", "Invalid strength value for Adapter 'phi-3-adapter'"),
    ("strength-out-of-range", ADAPT, _set("inference.adapters.0.strength", "1.5"), ValidationContext(), "inference.adapters[0].strength", "Strength value for Adapter 'phi-3-adapter' must be between 0 and 1"),
    ("strength-negative", ADAPT, _set("inference.adapters.0.strength", "-0.1"), ValidationContext(), "inference.adapters[0].strength", "must be between 0 and 1"),
    ("strength-unquoted-number", ADAPT, _set("inference.adapters.0.strength", 0.5), ValidationContext(), "inference.adapters[0].strength", "a string is expected"),
    ("adapter-image-unparseable", ADAPT, _set("inference.adapters.0.source.image", "https://myacr.azurecr.io/x:1"), ValidationContext(), "inference.adapters[0].source.image", "Unable to parse adapter image reference"),
    ("tuning-method-unknown", TUNE, _set("tuning.method", "full"), ValidationContext(), "tuning.method", "'full' is not allowed"),
    ("tuning-count-not-1", TUNE, _set("resource.count", 2), ValidationContext(), "resource.count", "Tuning does not currently support multinode configurations. Please set the node count to 1."),
    ("tuning-input-none", TUNE, _set("tuning.input", {}), ValidationContext(), "tuning.input", "Exactly one of URLs, Volume, or Image must be specified"),
    ("tuning-input-two-kinds", TUNE, _set("tuning.input.image", "myacr.azurecr.io/data:1"), ValidationContext(), "tuning.input", "Exactly one of URLs, Volume, or Image must be specified (got urls, image)"),
    ("tuning-input-image-unparseable", TUNE, _all(_set("tuning.input.urls", None), _set("tuning.input.image", "not an image")), ValidationContext(), "tuning.input.image", "Unable to parse input image reference"),
    ("tuning-output-none", TUNE, _set("tuning.output", {}), ValidationContext(), "tuning.output", "Exactly one of Volume or Image must be specified"),
    ("tuning-output-both", TUNE, _set("tuning.output.volumeSource", {"emptyDir": {}}), ValidationContext(), "tuning.output", "Exactly one of Volume or Image must be specified"),
    ("tuning-output-image-needs-secret", TUNE, _set("tuning.output.imagePushSecret", None), ValidationContext(), "tuning.output.imagePushSecret", "Must specify imagePushSecret with destination image"),
    ("dataset-url-ftp", TUNE, _set("tuning.input.urls", ["ftp://example.com/data.parquet"]), ValidationContext(), "tuning.input.urls[0]", "data source URL must use HTTP or HTTPS"),
    ("dataset-url-loopback-decimal", TUNE, _set("tuning.input.urls", ["http://2130706433/data.parquet"]), ValidationContext(), "tuning.input.urls[0]", "must not target a loopback, private, or link-local address: 127.0.0.1 is loopback"),
    ("dataset-url-metadata-ip", TUNE, _set("tuning.input.urls", ["http://169.254.169.254/latest/meta-data/"]), ValidationContext(), "tuning.input.urls[0]", "169.254.169.254 is link-local"),
    ("dataset-url-private-ipv6-mapped", TUNE, _set("tuning.input.urls", ["http://[::ffff:10.0.0.1]/x"]), ValidationContext(), "tuning.input.urls[0]", "10.0.0.1 is private"),
    ("dataset-url-metadata-host", TUNE, _set("tuning.input.urls", ["http://metadata.google.internal/computeMetadata/v1/"]), ValidationContext(), "tuning.input.urls[0]", "must not target a local or metadata endpoint"),
    ("dataset-url-localhost", TUNE, _set("tuning.input.urls", ["https://api.localhost:8443/x"]), ValidationContext(), "tuning.input.urls[0]", "must not target a local or metadata endpoint"),
    ("tuning-preset-unknown", TUNE, _set("tuning.preset.name", "mistral-7b"), ValidationContext(), "tuning.preset.name", "Unsupported tuning preset name mistral-7b"),
    ("tuning-lora-medium-on-v100", TUNE, _all(_set("tuning.preset.name", "phi-3-medium-4k-instruct"), _set("tuning.method", "lora")), ValidationContext(), "resource.instanceType", "lora tuning of phi-3-medium-4k-instruct needs ≥ 32.72 GiB"),
    ("node-image-family", INFER, _set("metadata.annotations", {"kaito.sh/node-image-family": "windows"}), ValidationContext(), "metadata.annotations['kaito.sh/node-image-family']", "unsupported node image family 'windows', supported values are azurelinux, ubuntu"),
    ("api-version", INFER, _set("apiVersion", "kaito.sh/v2"), ValidationContext(), "apiVersion", "unsupported apiVersion 'kaito.sh/v2'"),
    ("unknown-field-typo", INFER, _all(_set("resource.instanceTyp", "Standard_NC6s_v3")), ValidationContext(), "resource.instanceTyp", "unknown field 'instanceTyp'"),
    ("count-zero", INFER, _set("resource.count", 0), ValidationContext(), "resource.count", "out of range"),
    ("access-mode-private-needs-image", INFER, _set("inference.preset.accessMode", "private"), ValidationContext(), "inference.preset.presetOptions.image", "When AccessMode is private, an image must be provided in PresetOptions"),
    ("model-access-secret-not-needed", INFER, _set("inference.preset.presetOptions", {"modelAccessSecret": "hf"}), ValidationContext(), "inference.preset.presetOptions.modelAccessSecret", "This preset does not require a modelAccessSecret"),
    ("byo-no-nodes", INFER, _set("resource.instanceType", None), ValidationContext(node_auto_provisioning=False, byo_nodes=()), "resource.labelSelector", "No nodes found matching the specified label selector"),
    ("byo-nodes-without-gpu-labels", INFER, _set("resource.instanceType", None), ValidationContext(node_auto_provisioning=False, byo_nodes=(NodeGPUFacts(name="n1"),)), "resource.labelSelector", "Failed to get GPU config from nvidia labels on node n1"),
]


@pytest.mark.parametrize(("example", "mutate", "ctx", "path", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_case(registry: Registry, example: str, mutate: Mutation, ctx: ValidationContext, path: str, fragment: str) -> None:
    obj = copy.deepcopy(load_example(example))
    mutate(obj)
    problems = _problems(obj, registry, ctx)
    assert problems, "expected a problem"
    matching = [p for p in problems if p.path == path and fragment in p.message]
    assert matching, f"no problem at {path!r} containing {fragment!r}; got:\n" + "\n".join(map(str, problems))
    assert all(p.fix for p in matching), "every problem says how to fix it"


def test_there_are_at_least_25_distinct_cases() -> None:
    assert len({c[0] for c in CASES}) >= 25


@pytest.mark.parametrize("path", PHI3_EXAMPLES, ids=[p.name for p in PHI3_EXAMPLES])
def test_examples_are_valid(registry: Registry, path: Any) -> None:
    import yaml

    obj = yaml.safe_load(path.read_text())
    assert validate_workspace(parse_workspace(obj), registry) == []


def test_the_cpu_example_is_valid_on_bring_your_own_nodes_only() -> None:
    import kaito_gemma3

    registry = Registry.from_plugins(kaito_gemma3, BackendsPlugin())
    ws = parse_workspace(load_example("kaito_workspace_gemma_3_270m_cpu.yaml"))
    assert validate_workspace(ws, registry, ctx=ValidationContext(node_auto_provisioning=False)) == []
    assert [e.path for e in validate_workspace(ws, registry)] == ["resource.instanceType"]


def test_examples_are_valid_without_any_backend_installed(registry_no_backends: Registry) -> None:
    for path in PHI3_EXAMPLES:
        import yaml

        check_workspace(yaml.safe_load(path.read_text()), registry_no_backends)


def test_example_1_also_works_with_the_128k_preset(registry: Registry) -> None:
    obj = load_example(INFER)
    obj["inference"]["preset"]["name"] = "phi-3-mini-128k-instruct"
    check_workspace(obj, registry)


def test_all_problems_are_reported_together(registry: Registry) -> None:
    obj = load_example(TUNE)
    obj["metadata"]["name"] = "Bad_Name"
    obj["resource"]["count"] = 3
    obj["tuning"]["input"]["urls"] = ["http://127.0.0.1/x", "file:///etc/passwd"]
    del obj["tuning"]["output"]["imagePushSecret"]
    with pytest.raises(ValidationError) as info:
        check_workspace(obj, registry)
    paths = info.value.paths
    assert {"metadata.name", "resource.count", "tuning.input.urls[0]", "tuning.input.urls[1]", "tuning.output.imagePushSecret"} <= set(paths)
    text = str(info.value)
    assert text.startswith("Workspace 'Bad_Name' is invalid (5 problems):")
    assert "Fix:" in text


def test_schema_problems_are_reported_together_with_camel_case_paths() -> None:
    obj = load_example(ADAPT)
    obj["resource"]["labelSelector"] = {"match_labelz": {}}
    obj["inference"]["adapters"][0]["source"]["imagePullSecret"] = "x"
    obj["inference"]["adapters"][0]["strength"] = 1
    with pytest.raises(ValidationError) as info:
        parse_workspace(obj)
    assert info.value.paths == [
        "resource.labelSelector.match_labelz",
        "inference.adapters[0].source.imagePullSecret",
        "inference.adapters[0].strength",
    ]
    assert "did you mean imagePullSecrets?" in info.value.errors[1].fix


def test_loc_to_path() -> None:
    assert loc_to_path(("inference", "adapters", 0, "strength")) == "inference.adapters[0].strength"
    assert loc_to_path(("resource", "instance_type")) == "resource.instanceType"
    assert loc_to_path(("resource", "labelSelector", "matchLabels", "kaito.sh/x")) == "resource.labelSelector.matchLabels['kaito.sh/x']"


def test_unknown_preset_names_the_package_to_install() -> None:
    empty = Registry.from_plugins()
    problems = validate_workspace(parse_workspace(load_example(INFER)), empty)
    (problem,) = [p for p in problems if p.path == "inference.preset.name"]
    assert "preset 'phi-3-mini-4k-instruct' is not installed (installed: none)" in problem.message
    assert "pip install kaito-phi3" not in problem.message  # the hint is given once, in the fix
    assert "pip install kaito-phi3" in problem.fix


def test_deprecated_preset(registry: Registry) -> None:
    import kaito_phi3
    from kaito_core.plugins import hookimpl
    from kaito_phi3.presets import PHI_3_MINI_4K

    class Deprecated:
        @hookimpl
        def register_presets(self, register: Any) -> None:
            register(PHI_3_MINI_4K.model_copy(update={"name": "phi-2", "deprecated": True}))

    reg = Registry.from_plugins(kaito_phi3, Deprecated())
    obj = load_example(INFER)
    obj["inference"]["preset"]["name"] = "phi-2"
    problems = validate_workspace(parse_workspace(obj), reg)
    assert [p.message for p in problems] == ["Model phi-2 is deprecated and no longer supported"]


def test_tuning_unsupported_by_preset() -> None:
    import kaito_phi3
    from kaito_core.plugins import hookimpl
    from kaito_phi3.presets import PHI_3_MINI_4K

    class Untunable:
        @hookimpl
        def register_presets(self, register: Any) -> None:
            register(PHI_3_MINI_4K.model_copy(update={"name": "phi-untunable", "tuning": None}))

    reg = Registry.from_plugins(kaito_phi3, Untunable())
    obj = load_example(TUNE)
    obj["tuning"]["preset"]["name"] = "phi-untunable"
    problems = validate_workspace(parse_workspace(obj), reg)
    assert [(p.path, p.message) for p in problems] == [("tuning.preset.name", "preset phi-untunable does not support tuning")]
    assert "phi-3-mini-4k-instruct" in problems[0].fix


def test_bypass_annotation_turns_off_the_fit_check(registry: Registry) -> None:
    obj = load_example(INFER)
    obj["inference"]["preset"]["name"] = "phi-3-medium-4k-instruct"
    obj["metadata"]["annotations"] = {"kaito.sh/bypass-resource-checks": ""}
    check_workspace(obj, registry)


def test_fit_error_suggests_instance_types_that_fit(registry: Registry) -> None:
    obj = load_example(INFER)
    obj["inference"]["preset"]["name"] = "phi-3-medium-4k-instruct"
    (problem,) = validate_workspace(parse_workspace(obj), registry)
    assert "Standard_NC24ads_A100_v4 (1× NVIDIA A100 80 GiB)" in problem.fix
    assert "kaito.sh/bypass-resource-checks" in problem.fix


def test_runtime_annotation_must_name_a_backend_the_preset_offers() -> None:
    import kaito_phi3

    multi = Registry.from_plugins(kaito_phi3, BackendsPlugin(FakeMultiNode()))
    obj = load_example(INFER)
    obj["inference"]["preset"]["name"] = "phi-3-medium-4k-instruct"
    obj["metadata"]["annotations"] = {"kaito.sh/runtime": "multinode"}
    # multinode is not offered by the preset: reported, not silently used
    problems = validate_workspace(parse_workspace(obj), multi)
    assert any("does not support inference with the multinode runtime" in p.message for p in problems)


def test_backend_unsupported_reasons_are_reported() -> None:
    import kaito_phi3

    backend = FakeMultiNode()
    backend.name = "transformers"  # offered by the presets, but without adapter support
    reg = Registry.from_plugins(kaito_phi3, BackendsPlugin(backend))
    problems = validate_workspace(parse_workspace(load_example(ADAPT)), reg)
    assert [(p.path, p.message) for p in problems] == [
        ("inference.preset.name", "Runtime validation: backend transformers does not support LoRA adapters")
    ]


def test_missing_backend_is_an_error_only_where_required(registry_no_backends: Registry) -> None:
    ws = parse_workspace(load_example(INFER))
    assert validate_workspace(ws, registry_no_backends) == []
    problems = validate_workspace(ws, registry_no_backends, ctx=ValidationContext(require_backend=True))
    assert len(problems) == 1 and "inference backend 'transformers' is not installed" in problems[0].message
    assert "kaito-servers" in problems[0].fix


def test_byo_nodes_that_fit(registry: Registry) -> None:
    obj = load_example(INFER)
    del obj["resource"]["instanceType"]
    labels = {"nvidia.com/gpu.product": "Tesla-V100-PCIE-16GB", "nvidia.com/gpu.count": "1", "nvidia.com/gpu.memory": "16384"}
    ctx = ValidationContext(node_auto_provisioning=False, byo_nodes=(NodeGPUFacts.from_labels("n1", labels),))
    check_workspace(obj, registry, ctx=ctx)
    obj["inference"]["preset"]["name"] = "phi-4"
    problems = validate_workspace(parse_workspace(obj), registry, ctx=ctx)
    assert [p.path for p in problems] == ["resource.labelSelector"]
    assert "use nodes with more GPU memory" in problems[0].fix


def test_byo_nodes_must_be_uniform(registry: Registry) -> None:
    obj = load_example(INFER)
    del obj["resource"]["instanceType"]
    a = NodeGPUFacts(name="a", gpu_product="A100", gpu_count=1, gpu_memory_mib=81920)
    b = NodeGPUFacts(name="b", gpu_product="V100", gpu_count=1, gpu_memory_mib=16384)
    problems = validate_workspace(parse_workspace(obj), registry, ctx=ValidationContext(node_auto_provisioning=False, byo_nodes=(a, b)))
    assert [p.message for p in problems] == ["Non-uniform GPU product: A100, V100", "Non-uniform GPU memory: 16384, 81920"]


def test_azure_leniency_for_unknown_n_and_d_sizes(registry: Registry) -> None:
    obj = load_example(INFER)
    obj["resource"]["instanceType"] = "Standard_NC999ads_Z100_v9"
    check_workspace(obj, registry)


def test_instance_type_lookup_is_case_insensitive(registry: Registry) -> None:
    obj = load_example(INFER)
    obj["resource"]["instanceType"] = "standard_nc6s_v3"
    check_workspace(obj, registry)


# -- updates ------------------------------------------------------------------------------------

UPDATES: list[tuple[str, str, Mutation, ValidationContext, str, str]] = [
    ("toggle-inference-to-tuning", INFER, lambda o: o.update(inference=None) or o.update(tuning=load_example(TUNE)["tuning"]), ValidationContext(), "inference", "Inference field cannot be toggled once set"),
    ("change-count", INFER, _set("resource.count", 2), ValidationContext(), "resource.count", "field is immutable"),
    ("change-label-selector", INFER, _set("resource.labelSelector.matchLabels.apps", "other"), ValidationContext(), "resource.labelSelector", "field is immutable"),
    ("change-instance-type-nap", INFER, _set("resource.instanceType", "Standard_NC24ads_A100_v4"), ValidationContext(), "resource.instanceType", "instanceType cannot be changed once set when node auto-provisioning is enabled"),
    ("change-inference-preset", INFER, _set("inference.preset.name", "phi-3-mini-128k-instruct"), ValidationContext(), "inference.preset", "field is immutable"),
    ("change-tuning-preset", TUNE, _set("tuning.preset.name", "phi-3-mini-4k-instruct"), ValidationContext(), "tuning.preset", "Preset cannot be changed"),
    ("change-tuning-method", TUNE, _set("tuning.method", "lora"), ValidationContext(), "tuning.method", "Method cannot be changed"),
]


@pytest.mark.parametrize(("example", "mutate", "ctx", "path", "fragment"), [c[1:] for c in UPDATES], ids=[c[0] for c in UPDATES])
def test_invalid_update(registry: Registry, example: str, mutate: Mutation, ctx: ValidationContext, path: str, fragment: str) -> None:
    old = load_example(example)
    new = copy.deepcopy(old)
    mutate(new)
    new = {k: v for k, v in new.items() if v is not None}
    with pytest.raises(ValidationError) as info:
        check_workspace(new, registry, old=old, ctx=ctx)
    assert any(p.path == path and fragment in p.message for p in info.value.errors), str(info.value)


def test_allowed_updates(registry: Registry) -> None:
    old = load_example(ADAPT)
    new = copy.deepcopy(old)
    new["inference"]["adapters"][0]["strength"] = "0.5"
    new["inference"]["adapters"].append(_adapter("another"))
    check_workspace(new, registry, old=old)
    byo_old = load_example(INFER)
    byo_old["resource"]["instanceType"] = "Standard_NC6s_v3"
    byo_new = copy.deepcopy(byo_old)
    del byo_new["resource"]["instanceType"]
    ctx = ValidationContext(node_auto_provisioning=False)
    check_workspace(byo_new, registry, old=byo_old, ctx=ctx)
