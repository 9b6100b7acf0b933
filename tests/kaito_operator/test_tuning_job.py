"""The tuning planner: a tuning Workspace -> its node request, training ConfigMap copy and Job
(golden files), and what it does with an existing Job, a missing or contradictory training
config, and nodes that are not ready."""

from __future__ import annotations

import copy
from typing import Any

import kaito_gemma3
import kaito_phi3
import kaito_provisioners.plugin
import kaito_servers.plugin
import pytest
import yaml
from opgolden import ROOT, UID, assert_golden, load_example

from kaito_core.operator import checks, plan
from kaito_core.operator.settings import OperatorSettings
from kaito_core.operator.tuning import CONFIG_KEY, HASH_CHARS, job_action, training_config_problems
from kaito_core.plugins import Registry
from kaito_core.provisioners import ProvisionResult
from kaito_core.serving import TUNING_OUTPUT_DIR, TUNING_PUSH_AUTH_ENV, TUNING_STEPS, WEIGHTS_DIR

PHI3_EXAMPLE = "examples/fine-tuning/kaito_workspace_tuning_phi_3.yaml"
HASH = "0123456789abcdef" * 4
READY = ProvisionResult(ready=True, ready_nodes=("node-0",))
REGISTRY = Registry.from_plugins(kaito_phi3, kaito_gemma3, kaito_servers.plugin, kaito_provisioners.plugin)


def template(method: str, namespace: str = "kaito-system", text: str | None = None) -> dict[str, Any]:
    """The chart's default training ConfigMap of ``method`` as the API server returns it."""
    body = text if text is not None else (ROOT / f"charts/kaito/files/tuning/{method}.yaml").read_text()
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{method}-params-template", "namespace": namespace},
            "data": {CONFIG_KEY: body}}


def phi3_example() -> dict[str, Any]:
    """The user's example with its placeholders filled in, as a user applies it."""
    obj = load_example(PHI3_EXAMPLE)
    obj["tuning"]["output"] = {"image": "myregistry.azurecr.io/adapters/phi-3-dolly:0.0.1", "imagePushSecret": "acr-push"}
    return obj


def gemma_cpu_workspace(**tuning: Any) -> dict[str, Any]:
    """Gemma 3 270M tuned with LoRA on the local CPU node: image input, output volume, own config."""
    spec: dict[str, Any] = {
        "preset": {"name": "gemma-3-270m", "presetOptions": {"image": "127.0.0.1:5001/kaito/gemma-3-270m-hf:local",
                                                             "imagePullSecrets": ["kaito-local-registry"]}},
        "method": "lora",
        "config": "my-training-config",
        "input": {"image": "127.0.0.1:5001/kaito/dolly-data:1", "imagePullSecrets": ["kaito-local-registry", "data-reader"]},
        "output": {"volumeSource": {"persistentVolumeClaim": {"claimName": "adapters"}}},
        **tuning,
    }
    return {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
            "metadata": {"name": "tune-gemma", "namespace": "default", "uid": UID, "generation": 1},
            "resource": {"labelSelector": {"matchLabels": {"kaito.sh/machine-type": "cpu"}}}, "tuning": spec}


def plan_tuning_for(obj: dict[str, Any], *, provisioner: str = "gpu-provisioner", provision: ProvisionResult | None = READY,
                    config: dict[str, Any] | None = None, job: dict[str, Any] | None = None, pods: tuple[dict[str, Any], ...] = (),
                    spec_hash: str = HASH, **settings: Any) -> plan.Desired:
    """Exactly the reconciler's tuning planning of ``obj`` (validation, then plan_tuning)."""
    cfg = OperatorSettings.load(node_provisioner={"name": provisioner}, **settings)
    ws = checks.check(obj, REGISTRY, cloud=cfg.cloud.provider, provisioner=provisioner, allowed_data_hosts=cfg.tuning.allow_data_hosts)
    assert ws.tuning is not None
    observed = plan.Observed(provision=provision, job=job, pods=pods, spec_hash=spec_hash, training_config=config)
    return plan.plan_tuning(ws, REGISTRY.preset(ws.tuning.preset.name), REGISTRY.provisioner(provisioner), cfg, observed)


def containers(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    pod = job["spec"]["template"]["spec"]
    return {c["name"]: c for c in [*pod.get("initContainers", []), *pod["containers"]]}


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# -- golden Jobs ------------------------------------------------------------------------------------------


def test_phi3_example_golden_job_and_config_copy() -> None:
    """The user's example: URL input, image output with a push secret, qlora with the chart's default."""
    desired = plan_tuning_for(phi3_example(), config=template("qlora"))
    assert desired.job_action == "create" and desired.job is not None
    assert_golden("phi3-tuning-job", [*desired.objects, desired.job])
    assert desired.node_request is not None and desired.node_request.count == 1 and desired.node_request.gpu


def test_gemma_cpu_golden_job_with_image_input_volume_output_and_own_config() -> None:
    desired = plan_tuning_for(gemma_cpu_workspace(), provisioner="byo", config=template("lora", "default"))
    assert desired.objects == ()  # tuning.config names the user's ConfigMap: nothing is copied
    assert desired.job is not None
    assert_golden("gemma3-cpu-tuning-job", desired.job)


def test_the_steps_run_in_order_and_push_only_after_training() -> None:
    job = plan_tuning_for(phi3_example(), config=template("qlora")).job
    assert job is not None
    pod = job["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["data-fetch", "model-weights", "trainer"]
    assert [c["name"] for c in pod["containers"]] == ["push"]
    assert list(containers(job)) == list(TUNING_STEPS)
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 1
    assert job["spec"]["podFailurePolicy"]["rules"][0] == {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2]}}
    for c in containers(job).values():
        assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
        assert c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["runAsNonRoot"]
    assert pod["securityContext"]["runAsUser"] == 1000
    # The push secret is checked by the first step (a wrong one fails before training) and used by push.
    assert env(containers(job)["data-fetch"])[TUNING_PUSH_AUTH_ENV] == env(containers(job)["push"])[TUNING_PUSH_AUTH_ENV]
    assert containers(job)["trainer"]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert job["metadata"]["ownerReferences"][0]["uid"] == UID
    assert job["metadata"]["labels"]["workspace.kaito.io/hash"] == HASH[:HASH_CHARS]


def test_cpu_preset_gets_a_cpu_node_and_its_weights_from_the_preset_image() -> None:
    desired = plan_tuning_for(gemma_cpu_workspace(), provisioner="byo", config=template("lora", "default"))
    assert desired.node_request is not None and not desired.node_request.gpu
    job = desired.job
    assert job is not None
    steps = containers(job)
    assert list(steps) == ["data-fetch", "model-weights", "trainer"]  # output volume: the trainer is the main container
    assert steps["model-weights"]["image"] == "127.0.0.1:5001/kaito/gemma-3-270m-hf:local"
    assert steps["model-weights"]["command"][:2] == ["cp", "-R"]
    assert {"name": "model-weights", "mountPath": WEIGHTS_DIR, "readOnly": True} in steps["trainer"]["volumeMounts"]
    assert "nvidia.com/gpu" not in str(steps["trainer"]["resources"])
    assert env(steps["trainer"])["KAITO_TUNING_GGUF"] == "1"  # a GGUF preset is served by llama.cpp
    assert {"name": "results", "persistentVolumeClaim": {"claimName": "adapters"}} in job["spec"]["template"]["spec"]["volumes"]
    assert {"name": "results", "mountPath": TUNING_OUTPUT_DIR} in steps["trainer"]["volumeMounts"]
    pulls = {k: v for k, v in env(steps["data-fetch"]).items() if k.startswith("KAITO_TUNING_PULL_AUTH_")}
    assert [v["secretKeyRef"]["name"] for _, v in sorted(pulls.items())] == ["kaito-local-registry", "data-reader"]
    assert job["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "kaito-local-registry"}]


def test_weights_are_downloaded_when_no_preset_image_is_given() -> None:
    job = plan_tuning_for(phi3_example(), config=template("qlora")).job
    assert job is not None
    weights = containers(job)["model-weights"]
    assert weights["image"] == OperatorSettings().images.tuning_image
    assert env(weights)["KAITO_MODEL_REPO"] == "microsoft/Phi-3-mini-128k-instruct"


def test_the_tuning_image_follows_the_registry_setting() -> None:
    job = plan_tuning_for(phi3_example(), config=template("qlora"), images={"registry": "registry.example.com/kaito"}).job
    assert job is not None
    assert {c["image"] for c in containers(job).values()} == {"registry.example.com/kaito/kaito-tuning:0.1.0"}


def test_allowed_data_hosts_pass_admission_and_reach_the_download() -> None:
    obj = phi3_example()
    obj["tuning"]["input"]["urls"] = ["http://127.0.0.1:8999/train.parquet"]
    with pytest.raises(Exception, match="loopback"):
        plan_tuning_for(copy.deepcopy(obj), config=template("qlora"))
    job = plan_tuning_for(obj, config=template("qlora"), tuning={"allow_data_hosts": ["127.0.0.1"]}).job
    assert job is not None
    assert env(containers(job)["data-fetch"])["KAITO_TUNING_ALLOW_HOSTS"] == "127.0.0.1"


# -- before the Job ----------------------------------------------------------------------------------------


def test_the_examples_placeholder_secret_is_named_instead_of_a_job_the_api_refuses() -> None:
    desired = plan_tuning_for(load_example(PHI3_EXAMPLE), config=template("qlora"))
    tuning = desired.facts.tuning
    assert desired.job is None and tuning is not None and tuning.problem_reason == "TuningSecretInvalid"
    assert tuning.problem_message.startswith("tuning.output.imagePushSecret: 'ACR_REGISTRY_SECRET_HERE' is not a valid Secret name")


def test_no_job_before_the_nodes_are_ready() -> None:
    waiting = ProvisionResult(reason="NodeClaimNotReady", message="0/1 nodes ready")
    desired = plan_tuning_for(phi3_example(), provision=waiting)
    assert desired.job is None and desired.node_request is not None and desired.wait is not None
    assert desired.facts.tuning is not None and desired.facts.tuning.nodes_message == "0/1 nodes ready"


def test_a_missing_training_config_is_a_condition_naming_it() -> None:
    desired = plan_tuning_for(phi3_example(), config=None)
    tuning = desired.facts.tuning
    assert desired.job is None and tuning is not None and tuning.problem_reason == "TuningConfigNotFound"
    assert "kaito-system/qlora-params-template" in tuning.problem_message and "tuning.defaultConfigMaps" in tuning.problem_message


def test_qlora_with_a_config_without_quantization_is_refused_before_the_job() -> None:
    lora_text = (ROOT / "charts/kaito/files/tuning/lora.yaml").read_text()
    desired = plan_tuning_for(phi3_example(), config=template("qlora", text=lora_text))
    tuning = desired.facts.tuning
    assert desired.job is None and tuning is not None and tuning.problem_reason == "TuningConfigInvalid"
    assert tuning.problem_message.startswith("tuning.config: ConfigMap kaito-system/qlora-params-template: for method qlora")
    assert "Fix: restore the default ConfigMap qlora-params-template" in tuning.problem_message


@pytest.mark.parametrize(("text", "method", "expected"), [
    ("training_config:\n  QuantizationConfig: {load_in_4bit: true}\n", "qlora", []),
    ("training_config:\n  QuantizationConfig: {load_in_4bit: true}\n", "lora", ["for method lora"]),
    ("training_config:\n  QuantizationConfig: {load_in_4bit: true, load_in_8bit: true}\n", "qlora", ["both"]),
    ("training_config:\n  QuantizationConfig: {load_in_4bit: 'yes'}\n", "qlora", ["true or false", "must be true"]),
    ("training_config:\n  Trainer: {}\n  QuantizationConfig: {load_in_4bit: true}\n", "qlora", ["unrecognized section 'Trainer'"]),
    ("ModelConfig: {}\n", "lora", ["top-level key training_config"]),
    ("training_config: [\n", "lora", ["not valid YAML"]),
])
def test_training_config_rules(text: str, method: str, expected: list[str]) -> None:
    problems = training_config_problems(template(method, text=text), method)
    assert len(problems) == len(expected)
    for problem, part in zip(problems, expected):
        assert part in problem


def test_a_configmap_without_the_key_is_named() -> None:
    assert training_config_problems({"metadata": {"name": "x", "namespace": "ns"}, "data": {}}, "lora") == \
        ["ConfigMap ns/x has no key training_config.yaml"]


# -- with a Job -----------------------------------------------------------------------------------------------


def existing_job(hash_: str = HASH, **status: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "workspace-tuning-phi-3", "namespace": "default", "uid": "job-uid",
                         "labels": {"workspace.kaito.io/hash": hash_[:HASH_CHARS]}},
            "status": status}


def test_job_actions() -> None:
    assert job_action(None, HASH) == "create"
    assert job_action(existing_job(), HASH) == "keep"
    assert job_action(existing_job("f" * 64), HASH) == "replace"
    deleting = existing_job("f" * 64)
    deleting["metadata"]["deletionTimestamp"] = "2026-12-06T00:00:00Z"
    assert job_action(deleting, HASH) == "wait-deleted"


def test_a_job_of_an_older_spec_is_replaced_and_nothing_is_created_meanwhile() -> None:
    desired = plan_tuning_for(phi3_example(), job=existing_job("f" * 64, active=1))
    assert desired.job_action == "replace" and desired.job is None
    assert desired.facts.tuning is not None and desired.facts.tuning.replacing


def test_a_running_job_keeps_going_and_a_finished_one_stops_the_requeue() -> None:
    running = plan_tuning_for(phi3_example(), job=existing_job(active=1))
    assert running.job_action == "keep" and running.job is None and running.wait is not None
    done = plan_tuning_for(phi3_example(), job=existing_job(succeeded=1, conditions=[{"type": "Complete", "status": "True"}]))
    assert done.wait is None and done.facts.tuning is not None and done.facts.tuning.succeeded
    assert done.facts.tuning.output == "myregistry.azurecr.io/adapters/phi-3-dolly:0.0.1"


def test_registry_steps_trust_the_configured_ca_bundle() -> None:
    """With adapterPull.caConfigMap (a registry with its own CA, e.g. the local one signed by the
    cluster CA in kube-root-ca.crt), data-fetch (push login check, input image) and push mount it
    and name it in KAITO_ADAPTER_CA_FILE; the other steps do not need it. Without: nothing is added."""
    from kaito_core.serving import ADAPTER_CA_FILE, ADAPTER_CA_FILE_ENV

    job = plan_tuning_for(phi3_example(), config=template("qlora"),
                          adapter_pull={"ca_config_map": "kube-root-ca.crt", "ca_config_map_key": "ca.crt"}).job
    assert job is not None
    steps = containers(job)
    for name in ("data-fetch", "push"):
        assert env(steps[name])[ADAPTER_CA_FILE_ENV] == ADAPTER_CA_FILE
        assert {"name": "registry-ca", "mountPath": "/etc/kaito/adapter-ca", "readOnly": True} in steps[name]["volumeMounts"]
    for name in ("model-weights", "trainer"):
        assert ADAPTER_CA_FILE_ENV not in env(steps[name])
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["registry-ca"]["configMap"] == {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}

    plain = plan_tuning_for(phi3_example(), config=template("qlora")).job
    assert plain is not None and "registry-ca" not in {v["name"] for v in plain["spec"]["template"]["spec"]["volumes"]}
