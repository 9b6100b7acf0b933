"""The tuning controller's pure parts: a tuning Workspace -> its Job, and the Job -> what happened.

A tuning Workspace runs as one batch/v1 Job named after it. Its pod runs the steps in order, each
a container of the tuning image (``python -m kaito_servers ...``), so a step starts only when the
one before it succeeded and a failure names its step (:data:`kaito_core.serving.TUNING_STEPS`):

* ``data-fetch`` (init): downloads ``tuning.input.urls`` (SSRF-guarded) or pulls
  ``tuning.input.image`` into the data volume (a ``volumeSource`` is mounted instead), then checks
  the training config, the preset and the data without loading the model (``tune --check-only``),
  so bad data fails in seconds, before any weights move;
* ``model-weights`` (init): copies the weights out of ``presetOptions.image`` (upstream's preset
  images carry them in /workspace/weights), else downloads the preset's pinned revision;
* ``trainer``: ``tune`` writes the adapter (and checkpoints) to the results volume; an init
  container when the adapter is pushed, the main container when it goes to an output volume;
* ``push`` (main, with ``tuning.output.image``): pushes the finished adapter with oras. It runs
  only after the trainer exited 0, and oras writes the manifest after every blob, so a failed
  run never leaves a tag behind.

Registry credentials reach the containers as ``secretKeyRef`` environment variables rather than
volumes: a missing Secret or key then stops the container at once with a message naming it
(``CreateContainerConfigError``), which the status copies, instead of a pod stuck mounting. The
push secret is also given to ``data-fetch``, which checks it has credentials for the output
registry, so a wrong secret fails before training, not after.

Exit code 2 of any step means "a retry cannot help" (bad data, config, URL or credentials): the
Job's podFailurePolicy fails the Job at once; other failures are retried ``backoffLimit`` times.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from kaito_core.api.labels import ANNOTATION_HASH, ANNOTATION_REVISION, LABEL_WORKSPACE
from kaito_core.api.workspace import Workspace
from kaito_core.errors import FieldError
from kaito_core.operator.manifests import (
    DOWNLOAD_SCRIPT,
    TERMINATION_MESSAGE_POLICY,
    owner_reference,
    pod_placement_and_security,
    stamp,
)
from kaito_core.operator.status import TuningFacts, classify_pod
from kaito_core.presets import Preset
from kaito_core.serving import (
    ADAPTER_CA_FILE,
    ADAPTER_CA_FILE_ENV,
    CONFIG_DIR,
    DOCKER_CONFIG_KEY,
    GPU_RESOURCE,
    HF_TOKEN_KEY,
    TUNING_ALLOW_HOSTS_ENV,
    TUNING_DATA_DIR,
    TUNING_DATA_IMAGE_ENV,
    TUNING_DATA_URLS_ENV,
    TUNING_OUTPUT_DIR,
    TUNING_PULL_AUTH_ENV_PREFIX,
    TUNING_PUSH_AUTH_ENV,
    TUNING_PUSH_IMAGE_ENV,
    TUNING_STEPS,
    TUNING_WEIGHTS_STAGING_DIR,
    WEIGHTS_DIR,
)

CONFIG_KEY = "training_config.yaml"
"""The ConfigMap key holding the training configuration (upstream's name)."""
CONFIG_SECTIONS = ("ModelConfig", "QuantizationConfig", "LoraConfig", "TrainingArguments", "DatasetConfig", "DataCollator")
"""The sections upstream's validation accepts under ``training_config``."""
LABEL_HASH = ANNOTATION_HASH
"""On the Job: the first :data:`HASH_CHARS` characters of the Workspace's spec hash; a Job whose
label differs belongs to an older spec and is replaced."""
HASH_CHARS = 16
METRICS_PORT = 5000
"""The trainer's Prometheus metrics port (upstream's metrics server port)."""
JOB_FAILED_EXIT = 2
"""The runner's exit code for failures a retry cannot fix (podFailurePolicy: FailJob)."""
JobAction = Literal["create", "keep", "replace", "wait-deleted"]
_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def default_config_name(method: str) -> str:
    """The chart's default ConfigMap of a method (upstream's names)."""
    return f"{method}-params-template"


def copied_config_name(ws: Workspace) -> str:
    """The workspace's own copy of the default training configuration."""
    return f"{ws.name}-training-config"


@dataclass(frozen=True)
class TuningInputs:
    """Everything :func:`build_tuning_job` needs, gathered by the planner."""

    workspace: Workspace
    preset: Preset
    image: str
    """The tuning image (every step runs it, except a copy from presetOptions.image)."""
    config_map: str
    """Name of the ConfigMap (workspace namespace) with training_config.yaml."""
    revision: str
    spec_hash: str
    affinity_terms: list[dict[str, Any]]
    gpus: int
    """GPUs the trainer gets (0: a CPU node)."""
    backoff_limit: int = 1
    allow_hosts: tuple[str, ...] = ()
    gguf: bool = False
    """Also write a GGUF LoRA (the preset is served by llama.cpp)."""
    registry_ca: tuple[str, str] | None = None
    """(ConfigMap, key) of a CA bundle the registry steps trust (the operator's
    adapterPull.caConfigMap, as for adapter pullers): mounted at ADAPTER_CA_FILE in data-fetch
    (input image pull, push login check) and push, whose KAITO_ADAPTER_CA_FILE names it."""

    @property
    def method(self) -> str:
        """lora or qlora."""
        assert self.workspace.tuning is not None
        return self.workspace.tuning.method.value


# -- the Job -----------------------------------------------------------------------------------------


def _env(pairs: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in pairs.items()]


def _secret_env(name: str, secret: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": DOCKER_CONFIG_KEY}}}


def _security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True, "readOnlyRootFilesystem": True}


def _container(name: str, image: str, command: list[str], env: list[dict[str, Any]], mounts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "command": command,
        "env": env,
        "volumeMounts": [*mounts, {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": _security(),
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
    }


def _trust_registry_ca(container: dict[str, Any], inputs: TuningInputs) -> dict[str, Any]:
    """``container`` with the registry CA bundle mounted and named by KAITO_ADAPTER_CA_FILE (if configured)."""
    if inputs.registry_ca is not None:
        container["env"] = [*container["env"], {"name": ADAPTER_CA_FILE_ENV, "value": ADAPTER_CA_FILE}]
        container["volumeMounts"] = [*container["volumeMounts"],
                                     {"name": "registry-ca", "mountPath": posixpath.dirname(ADAPTER_CA_FILE), "readOnly": True}]
    return container


def _runner_env(inputs: TuningInputs) -> dict[str, str]:
    """What every runner step shares: method, preset, the paths of the serving contract."""
    preset = inputs.preset
    env = {
        "KAITO_TUNING_METHOD": inputs.method,
        "KAITO_TUNING_PRESET": preset.name,
        "KAITO_TUNING_CONFIG": f"{CONFIG_DIR}/{CONFIG_KEY}",
        "KAITO_TUNING_DATA_DIR": TUNING_DATA_DIR,
        "KAITO_TUNING_OUTPUT_DIR": TUNING_OUTPUT_DIR,
        "KAITO_TUNING_MODEL_DIR": WEIGHTS_DIR,
        "HOME": "/tmp",
        "HF_HOME": "/tmp/hf",
    }
    if preset.tuning is not None and preset.tuning.default_target_modules:
        env["DEFAULT_TARGET_MODULES"] = ",".join(preset.tuning.default_target_modules)
    return env


def _data_fetch(inputs: TuningInputs) -> dict[str, Any]:
    tuning = inputs.workspace.tuning
    assert tuning is not None
    src, out = tuning.input, tuning.output
    pairs = _runner_env(inputs)
    if src.urls:
        pairs[TUNING_DATA_URLS_ENV] = " ".join(src.urls)
        if inputs.allow_hosts:
            pairs[TUNING_ALLOW_HOSTS_ENV] = ",".join(inputs.allow_hosts)
    if src.image:
        pairs[TUNING_DATA_IMAGE_ENV] = src.image
    if out.image:
        pairs[TUNING_PUSH_IMAGE_ENV] = out.image
    env = _env(pairs)
    env += [_secret_env(f"{TUNING_PULL_AUTH_ENV_PREFIX}{i}", s) for i, s in enumerate(src.image_pull_secrets if src.image else [])]
    if out.image and out.image_push_secret:
        env.append(_secret_env(TUNING_PUSH_AUTH_ENV, out.image_push_secret))
    data: dict[str, Any] = {"name": "data", "mountPath": TUNING_DATA_DIR}
    if src.volume_source is not None:
        data["readOnly"] = True  # a volume input is only checked; fetched data is written here
    mounts = [data, {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}]
    return _trust_registry_ca(
        _container("data-fetch", inputs.image, ["python", "-m", "kaito_servers", "tune", "--check-only"], env, mounts), inputs)


def _model_weights(inputs: TuningInputs) -> dict[str, Any]:
    """Copy the weights out of presetOptions.image, else download the preset's pinned revision."""
    tuning = inputs.workspace.tuning
    assert tuning is not None
    options = tuning.preset.preset_options
    mounts = [{"name": "model-weights", "mountPath": TUNING_WEIGHTS_STAGING_DIR}]
    if options is not None and options.image:
        return _container("model-weights", options.image, ["cp", "-R", f"{WEIGHTS_DIR}/.", f"{TUNING_WEIGHTS_STAGING_DIR}/"], [], mounts)
    preset = inputs.preset
    env = _env({
        "KAITO_MODEL_REPO": preset.source_repo,
        "KAITO_MODEL_REVISION": preset.revision,
        "KAITO_WEIGHTS_DIR": TUNING_WEIGHTS_STAGING_DIR,
        "KAITO_WEIGHT_FILES": "",
        "HOME": "/tmp",
        "HF_HOME": "/tmp/hf",
    })
    if options is not None and options.model_access_secret:
        env.append({"name": HF_TOKEN_KEY, "valueFrom": {"secretKeyRef": {"name": options.model_access_secret, "key": HF_TOKEN_KEY}}})
    return _container("model-weights", inputs.image, ["python", "-c", DOWNLOAD_SCRIPT], env, mounts)


def trainer_memory_gib(preset: Preset) -> int:
    """Memory a CPU trainer requests: float32 weights (the GGUF size understates them ~4x for Q4)
    plus optimizer state and activations, at least 2 GiB."""
    return max(2, math.ceil(preset.weights_gib * 8))


def _trainer(inputs: TuningInputs) -> dict[str, Any]:
    pairs = _runner_env(inputs)
    pairs["KAITO_TUNING_METRICS_PORT"] = str(METRICS_PORT)
    if inputs.gguf:
        pairs["KAITO_TUNING_GGUF"] = "1"
    mounts: list[dict[str, Any]] = [
        {"name": "data", "mountPath": TUNING_DATA_DIR, "readOnly": True},
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "model-weights", "mountPath": WEIGHTS_DIR, "readOnly": True},
        {"name": "results", "mountPath": TUNING_OUTPUT_DIR},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    container = _container("trainer", inputs.image, ["python", "-m", "kaito_servers", "tune"], _env(pairs), mounts)
    container["ports"] = [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}]
    if inputs.gpus > 0:
        gpus = str(inputs.gpus)
        container["resources"] = {"requests": {GPU_RESOURCE: gpus}, "limits": {GPU_RESOURCE: gpus}}
    else:
        container["resources"] = {"requests": {"cpu": "1", "memory": f"{trainer_memory_gib(inputs.preset)}Gi"}}
    return container


def _push(inputs: TuningInputs) -> dict[str, Any]:
    tuning = inputs.workspace.tuning
    assert tuning is not None and tuning.output.image and tuning.output.image_push_secret
    env = _env({TUNING_PUSH_IMAGE_ENV: tuning.output.image, "KAITO_TUNING_OUTPUT_DIR": TUNING_OUTPUT_DIR,
                "KAITO_TUNING_PRESET": inputs.preset.name, "HOME": "/tmp"})
    env.append(_secret_env(TUNING_PUSH_AUTH_ENV, tuning.output.image_push_secret))
    mounts = [{"name": "results", "mountPath": TUNING_OUTPUT_DIR, "readOnly": True}]
    return _trust_registry_ca(_container("push", inputs.image, ["python", "-m", "kaito_servers", "push-adapter"], env, mounts), inputs)


def _volumes(inputs: TuningInputs) -> list[dict[str, Any]]:
    tuning = inputs.workspace.tuning
    assert tuning is not None
    data = {"name": "data", **tuning.input.volume_source} if tuning.input.volume_source else {"name": "data", "emptyDir": {}}
    results = {"name": "results", **tuning.output.volume_source} if tuning.output.volume_source else {"name": "results", "emptyDir": {}}
    volumes = [
        data,
        results,
        {"name": "config", "configMap": {"name": inputs.config_map}},
        {"name": "model-weights", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
    ]
    if inputs.registry_ca is not None:
        config_map, key = inputs.registry_ca
        volumes.append({"name": "registry-ca", "configMap": {
            "name": config_map, "items": [{"key": key, "path": posixpath.basename(ADAPTER_CA_FILE)}]}})
    return volumes


def build_tuning_job(inputs: TuningInputs) -> dict[str, Any]:
    """The batch/v1 Job of a tuning workspace (applied-hash stamped)."""
    ws = inputs.workspace
    tuning = ws.tuning
    assert tuning is not None
    inits = [_data_fetch(inputs), _model_weights(inputs)]
    if tuning.output.image:
        inits.append(_trainer(inputs))
        containers = [_push(inputs)]
    else:
        containers = [_trainer(inputs)]
    labels = {LABEL_WORKSPACE: ws.name, LABEL_HASH: inputs.spec_hash[:HASH_CHARS]}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        **pod_placement_and_security(inputs.affinity_terms),
                "initContainers": inits,
        "containers": containers,
        "volumes": _volumes(inputs),
    }
    options = tuning.preset.preset_options
    pull_secrets = sorted(set(options.image_pull_secrets)) if options else []
    if pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in pull_secrets]
    return stamp(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": ws.name,
                "namespace": ws.namespace,
                "labels": dict(labels),
                "annotations": {ANNOTATION_REVISION: inputs.revision, ANNOTATION_HASH: inputs.spec_hash},
                "ownerReferences": [owner_reference(ws)],
            },
            "spec": {
                "backoffLimit": inputs.backoff_limit,
                "podFailurePolicy": {
                    "rules": [
                        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [JOB_FAILED_EXIT]}},
                        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                    ]
                },
                "template": {
                    "metadata": {"labels": dict(labels), "annotations": {ANNOTATION_REVISION: inputs.revision}},
                    "spec": pod_spec,
                },
            },
        }
    )


def build_config_copy(ws: Workspace, template: Mapping[str, Any]) -> dict[str, Any]:
    """The workspace's own copy of a default training ConfigMap (a Job mounts ConfigMaps of its own
    namespace only; the copy is owned by the workspace and goes with it)."""
    return stamp(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": copied_config_name(ws),
                "namespace": ws.namespace,
                "labels": {LABEL_WORKSPACE: ws.name},
                "annotations": {"kaito.sh/copied-from": f"{(template.get('metadata') or {}).get('namespace', '')}/"
                                                       f"{(template.get('metadata') or {}).get('name', '')}"},
                "ownerReferences": [owner_reference(ws)],
            },
            "data": {CONFIG_KEY: str((template.get("data") or {}).get(CONFIG_KEY, ""))},
        }
    )


# -- the training configuration ------------------------------------------------------------------------


def training_config_problems(config_map: Mapping[str, Any], method: str) -> list[str]:
    """What is wrong with a training ConfigMap for ``method`` (upstream's admission rules:
    the key, the YAML, the sections, and quantization against the method); [] when usable."""
    meta = config_map.get("metadata") or {}
    where = f"ConfigMap {meta.get('namespace', '')}/{meta.get('name', '')}"
    text = (config_map.get("data") or {}).get(CONFIG_KEY)
    if not isinstance(text, str):
        return [f"{where} has no key {CONFIG_KEY}"]
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [f"{where}: {CONFIG_KEY} is not valid YAML: {exc}"]
    body = doc.get("training_config") if isinstance(doc, dict) else None
    if not isinstance(body, dict):
        return [f"{where}: {CONFIG_KEY} must hold a mapping under the top-level key training_config"]
    problems = [f"{where}: unrecognized section {name!r} (use {', '.join(CONFIG_SECTIONS)})" for name in body if name not in CONFIG_SECTIONS]
    quant = body.get("QuantizationConfig") or {}
    if not isinstance(quant, dict):
        return [*problems, f"{where}: QuantizationConfig must be a mapping"]
    flags = {}
    for key in ("load_in_4bit", "load_in_8bit"):
        value = quant.get(key)
        if value is not None and not isinstance(value, bool):
            problems.append(f"{where}: QuantizationConfig.{key} must be true or false, not {value!r}")
        flags[key] = value is True
    if flags["load_in_4bit"] and flags["load_in_8bit"]:
        problems.append(f"{where}: cannot set both load_in_4bit and load_in_8bit to true")
    elif method == "lora" and any(flags.values()):
        problems.append(f"{where}: for method lora, load_in_4bit and load_in_8bit must not be true (that is qlora)")
    elif method == "qlora" and not any(flags.values()):
        problems.append(f"{where}: for method qlora, QuantizationConfig.load_in_4bit (or load_in_8bit) must be true")
    return problems


def config_field_errors(problems: Sequence[str], *, user_config: str | None, method: str, namespace: str) -> list[FieldError]:
    """The problems of the training ConfigMap as field errors on ``tuning.config``, with the fix."""
    if user_config:
        fix = f"fix ConfigMap {user_config} (key {CONFIG_KEY}, as the chart's {default_config_name(method)}), or unset tuning.config"
    else:
        fix = (f"restore the default ConfigMap {default_config_name(method)} in namespace {namespace} "
               "(helm upgrade recreates it), or name a ConfigMap of your own in tuning.config")
    return [FieldError("tuning.config", p, fix) for p in problems]


def secret_name_problems(ws: Workspace) -> list[FieldError]:
    """Secret names the API server would refuse in the Job (the example's placeholders, e.g.
    ACR_REGISTRY_SECRET_HERE): a Secret name is a lowercase RFC 1123 subdomain."""
    tuning = ws.tuning
    assert tuning is not None
    secret = tuning.output.image_push_secret
    if secret and not _SECRET_NAME.fullmatch(secret):
        return [FieldError("tuning.output.imagePushSecret", f"{secret!r} is not a valid Secret name (lowercase letters, digits, '-' and '.')",
                           "create a docker-registry Secret allowed to push to tuning.output.image "
                           "(kubectl create secret docker-registry NAME ...) and put its name here")]
    return []


# -- the Job observed ----------------------------------------------------------------------------------


def job_action(job: Mapping[str, Any] | None, spec_hash: str) -> JobAction:
    """What to do with the existing Job: create one, keep it, replace one of an older spec (delete
    it first), or wait while it is deleted."""
    if not job:
        return "create"
    meta = job.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return "wait-deleted"
    if (meta.get("labels") or {}).get(LABEL_HASH) == spec_hash[:HASH_CHARS]:
        return "keep"
    return "replace"


def _job_condition(job: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return dict(cond)
    return None


def job_succeeded(job: Mapping[str, Any]) -> bool:
    """Whether the Job completed (its pods need not be read any more)."""
    return _job_condition(job, "Complete") is not None


def job_pods(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The pods of ``job`` (by owner uid), oldest first."""
    uid = (job.get("metadata") or {}).get("uid")
    mine = [p for p in pods if any(o.get("uid") == uid for o in (p.get("metadata") or {}).get("ownerReferences") or [])]
    return sorted(mine, key=lambda p: ((p.get("metadata") or {}).get("creationTimestamp") or "", (p.get("metadata") or {}).get("name", "")))


def _container_statuses(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Init then main container statuses, in the order the steps run."""
    status = pod.get("status") or {}
    order = {name: i for i, name in enumerate(TUNING_STEPS)}
    found = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    return sorted(found, key=lambda cs: order.get(cs.get("name", ""), len(order)))


def failed_step(pod: Mapping[str, Any]) -> tuple[str, int, str, str] | None:
    """(step, exit code, kubelet reason, termination message) of the step that failed in ``pod``."""
    for cs in _container_statuses(pod):
        for term in ((cs.get("state") or {}).get("terminated") or {}, (cs.get("lastState") or {}).get("terminated") or {}):
            if term and int(term.get("exitCode") or 0) != 0:
                return cs.get("name", "?"), int(term["exitCode"]), str(term.get("reason") or ""), str(term.get("message") or "")
    return None


def current_step(pod: Mapping[str, Any]) -> str:
    """The step ``pod`` is at: the first that has not finished successfully ("" when unknown)."""
    for cs in _container_statuses(pod):
        term = (cs.get("state") or {}).get("terminated") or {}
        if not term or int(term.get("exitCode") or 0) != 0:
            return str(cs.get("name", ""))
    return ""


def observe_job(job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> TuningFacts:
    """What the Job and its pods say: started, running which step, succeeded, or failed where and why."""
    if not job:
        return TuningFacts()
    status = job.get("status") or {}
    mine = job_pods(job, pods)
    done = _job_condition(job, "Complete")
    failed = _job_condition(job, "Failed")
    started = bool(done or failed or int(status.get("active") or 0) or int(status.get("succeeded") or 0) or int(status.get("failed") or 0))
    if done:
        return TuningFacts(job_exists=True, started=True, succeeded=True)
    if failed:
        for pod in reversed(mine):
            found = failed_step(pod)
            if found:
                step, code, reason, message = found
                return TuningFacts(job_exists=True, started=True, failed=True, step=step, exit_code=code,
                                   failure_reason=reason, failure_message=message)
        return TuningFacts(job_exists=True, started=True, failed=True,
                           failure_reason=str(failed.get("reason") or ""), failure_message=str(failed.get("message") or ""))
    active = [p for p in mine if (p.get("status") or {}).get("phase") in (None, "Pending", "Running")]
    pod = active[-1] if active else None
    problem = classify_pod(pod) if pod is not None else None
    return TuningFacts(
        job_exists=True,
        started=started,
        active=int(status.get("active") or 0),
        step=current_step(pod) if pod is not None else "",
        problem_reason=problem[0] if problem else "",
        problem_message=problem[1] if problem else "",
    )
