"""The chart through the real helm CLI: lint, golden renders of the main value combinations,
refusal of bad values, and what the rendered objects promise (least privilege, non-root pod,
one registry value for every image, certificates the operator accepts as they are).

KAITO_UPDATE_GOLDEN=1 rewrites the golden files."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from chartkit import CASES, CHART, GOLDEN, NAMESPACE, ROOT, HelmError, documents, find, masked, operator_env, run_helm, template
from kaito_core.operator.certs import ensure_certificates
from kaito_core.operator.settings import OperatorSettings


@pytest.fixture(scope="module")
def renders(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("renders")
    return {name: template(helm, values, tmp) for name, values in CASES.items()}


def test_helm_lint_strict_passes_for_every_case(helm: Path, tmp_path: Path) -> None:
    for name, values in CASES.items():
        out = run_helm(helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, values=values, tmp=tmp_path)
        assert "1 chart(s) linted, 0 chart(s) failed" in out, f"{name}: {out}"


@pytest.mark.parametrize("name", list(CASES))
def test_render_matches_the_golden_file(renders: dict[str, str], name: str) -> None:
    text = masked(renders[name])
    path = GOLDEN / f"{name}.yaml"
    if os.environ.get("KAITO_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing; create it with KAITO_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path} differs; rerun with KAITO_UPDATE_GOLDEN=1 if the change is intended"


BAD_VALUES = [
    ("unknown-key", {"nodeProvisioner": {"nmae": "byo"}}, "additional properties 'nmae' not allowed"),
    ("unknown-section", {"webhooks": {"port": 1}}, "additional properties 'webhooks' not allowed"),
    ("wrong-type", {"webhook": {"port": "https"}}, "/webhook/port"),
    ("two-replicas", {"operator": {"replicas": 2}}, "/operator/replicas"),
    ("bad-pull-policy", {"operator": {"image": {"pullPolicy": "Sometimes"}}}, "/operator/image/pullPolicy"),
    ("timeout-over-30", {"webhook": {"timeoutSeconds": 60}}, "/webhook/timeoutSeconds"),
    ("aks-without-identity", {"nodeProvisioner": {"name": "azure-agentpool"}}, "set azure.workloadIdentity.clientId"),
    ("metrics-off", {"metrics": {"port": 0}}, "metrics.port=0 disables /metrics"),
    # The operator cannot run without its webhook yet (kopf refuses admission handlers without a
    # server); when it can, drop this check in _helpers.tpl: the templates already handle it.
    ("webhook-off", {"webhook": {"enabled": False}}, "webhook.enabled=false is not supported yet"),
]


@pytest.mark.parametrize(("values", "message"), [c[1:] for c in BAD_VALUES], ids=[c[0] for c in BAD_VALUES])
def test_bad_values_fail_the_render_naming_the_value(helm: Path, tmp_path: Path, values: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError) as err:
        template(helm, values, tmp_path)
    assert message in str(err.value)


def _rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = find(docs, "ClusterRole")["rules"]
    return rules


def _grants(docs: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    return {v for r in _rules(docs) if group in r["apiGroups"] and resource in r["resources"] for v in r["verbs"]}


def test_rbac_follows_the_node_provisioner(renders: dict[str, str]) -> None:
    gpu, karpenter = documents(renders["gpu-provisioner"]), documents(renders["karpenter"])
    assert _grants(gpu, "karpenter.sh", "nodeclaims") == {"list", "watch", "create", "delete"}
    assert _grants(gpu, "karpenter.sh", "nodepools") == set()
    assert _grants(karpenter, "karpenter.sh", "nodepools") == {"list", "create", "patch", "delete"}
    assert _grants(karpenter, "karpenter.sh", "nodeclaims") == {"list", "watch"}
    for name in ("byo", "aks-workload-identity"):
        # No NodeClaim rule at all: the operator watches NodeClaims only for a provisioner whose
        # capabilities say so (ProvisionerCapabilities.watches_nodeclaims).
        karpenter_rules = [r for r in _rules(documents(renders[name])) if "karpenter.sh" in r["apiGroups"]]
        assert karpenter_rules == [], name


def test_rbac_matches_the_set_the_e2e_suite_proves(renders: dict[str, str]) -> None:
    """config/rbac/operator.yaml is what the e2e suite runs the operator with; the chart grants the
    same, less the webhook-configuration rules (the chart, not the operator, owns that object)."""
    e2e = next(d for d in yaml.safe_load_all((ROOT / "config/rbac/operator.yaml").read_text()) if d["kind"] == "ClusterRole")
    # The e2e role also carries the karpenter mode's NodePool rule (the suite runs every mode).
    expected = [r for r in e2e["rules"] if "admissionregistration.k8s.io" not in r["apiGroups"] and r["resources"] != ["nodepools"]]
    key = lambda r: (tuple(r["apiGroups"]), tuple(r["resources"]))  # noqa: E731
    assert sorted(_rules(documents(renders["gpu-provisioner"])), key=key) == sorted(expected, key=key)
    for rule in _rules(documents(renders["gpu-provisioner"])):
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        assert not {"secrets", "validatingwebhookconfigurations"} & set(rule["resources"]), rule


def test_secrets_are_read_only_when_opted_in(renders: dict[str, str]) -> None:
    """presets.readModelAccessSecrets (off by default) adds exactly get on Secrets: the operator
    reads a Workspace's modelAccessSecret by name to generate a gated model's preset from the hub."""
    secret_rules = [r for r in _rules(documents(renders["hub-tokens"])) if "secrets" in r["resources"]]
    assert secret_rules == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    for name in ("gpu-provisioner", "offline-presets"):
        assert not any("secrets" in r["resources"] for r in _rules(documents(renders[name]))), name


def test_the_operator_pod_is_locked_down_and_probed(renders: dict[str, str]) -> None:
    deployment = find(documents(renders["gpu-provisioner"]), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert set(container["resources"]) == {"requests", "limits"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"} and ports["metrics"] == 8080
    assert container["readinessProbe"]["tcpSocket"] == {"port": "webhook"} and ports["webhook"] == 9443
    assert pod["serviceAccountName"] == find(documents(renders["gpu-provisioner"]), "ServiceAccount")["metadata"]["name"]


def test_the_operator_environment_loads_as_the_values_say(renders: dict[str, str], helm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "nodeProvisioner": {"name": "byo"},
        "scope": {"namespaces": ["team-a", "team-*"]},
        "requeue": {"nodesS": 2.5, "resyncS": 1200},
        "webhook": {"port": 10443},
        "concurrency": {"workers": 9},
    }
    env = operator_env(documents(template(helm, values, tmp_path)))
    for name in [n for n in os.environ if n.startswith("KAITO_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = OperatorSettings()
    assert settings.node_provisioner.name == "byo"
    assert settings.scope.namespaces == ["team-a", "team-*"]
    assert (settings.requeue.nodes_s, settings.requeue.resync_s) == (2.5, 1200.0)
    assert (settings.webhook.port, settings.webhook.listen_addr, settings.webhook.manage_configuration) == (10443, "0.0.0.0", False)
    assert settings.webhook.host == f"kaito-webhook.{NAMESPACE}.svc"
    assert settings.concurrency.workers == 9 and (settings.metrics.host, settings.metrics.port) == ("0.0.0.0", 8080)


def test_one_value_moves_every_image_to_the_private_registry(renders: dict[str, str]) -> None:
    docs = documents(renders["private-registry"])
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example.com/mirror/kaito-operator:0.1.0"
    assert pod["imagePullSecrets"] == [{"name": "mirror-pull"}]
    env = operator_env(docs)
    assert env["KAITO_IMAGES__REGISTRY"] == "registry.example.com/mirror"  # inference (and tuning) images
    assert env["KAITO_IMAGES__BASE"] == "kaito-servers:0.1.0"  # relative to that registry
    # The adapter puller runs in the inference image by default (empty value), which moved with the registry.
    assert env["KAITO_IMAGES__ADAPTER_PULLER"] == ""
    default = operator_env(documents(renders["gpu-provisioner"]))
    assert default["KAITO_IMAGES__ADAPTER_PULLER"] == ""
    assert (default["KAITO_ADAPTER_PULL__CA_CONFIG_MAP"], default["KAITO_ADAPTER_PULL__CA_CONFIG_MAP_KEY"]) == ("", "ca.crt")


def test_workload_identity_annotates_the_service_account_and_labels_the_pod(renders: dict[str, str]) -> None:
    docs = documents(renders["aks-workload-identity"])
    annotations = find(docs, "ServiceAccount")["metadata"]["annotations"]
    assert annotations["azure.workload.identity/client-id"] == CASES["aks-workload-identity"]["azure"]["workloadIdentity"]["clientId"]
    assert annotations["azure.workload.identity/tenant-id"] == CASES["aks-workload-identity"]["azure"]["workloadIdentity"]["tenantId"]
    assert find(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert "annotations" not in find(documents(renders["gpu-provisioner"]), "ServiceAccount")["metadata"]


def test_the_webhook_points_at_the_service_with_the_ca_of_the_certificate_secret(renders: dict[str, str], tmp_path: Path) -> None:
    docs = documents(renders["gpu-provisioner"])
    secret = find(docs, "Secret")
    hook = find(docs, "ValidatingWebhookConfiguration", "validation.workspace.kaito.sh")["webhooks"][0]
    service = find(docs, "Service")
    assert hook["clientConfig"]["service"] == {"name": service["metadata"]["name"], "namespace": NAMESPACE, "port": 443, "path": "/validate-workspace"}
    assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    assert hook["failurePolicy"] == "Fail" and hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    # The operator accepts the chart's certificate as it is (the mount is read-only): same hosts
    # as the chart tells it (webhook.host, localhost, 127.0.0.1), nothing rewritten.
    for key in ("ca.crt", "tls.crt", "tls.key"):
        (tmp_path / key).write_bytes(base64.b64decode(secret["data"][key]))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    ensure_certificates(tmp_path, [f"{service['metadata']['name']}.{NAMESPACE}.svc", "localhost", "127.0.0.1"])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    checksum = find(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/webhook-cert"]
    assert len(checksum) == 64


def test_the_chart_ships_the_tuning_runners_own_default_configs() -> None:
    """One home: the runner's defaults (servers/kaito_servers/tuning/configs) are the source; the
    chart carries byte-identical copies (Helm cannot read outside the chart; `make chart` copies)."""
    repo = CHART.parents[1]
    for method in ("lora", "qlora"):
        source = repo / "servers" / "kaito_servers" / "tuning" / "configs" / f"{method}.yaml"
        assert (CHART / "files" / "tuning" / f"{method}.yaml").read_bytes() == source.read_bytes(), f"run `make chart` ({method}.yaml is stale)"


def test_the_default_tuning_configmaps_carry_upstreams_training_configs(renders: dict[str, str]) -> None:
    docs = documents(renders["gpu-provisioner"])
    lora = yaml.safe_load(find(docs, "ConfigMap", "lora-params-template")["data"]["training_config.yaml"])["training_config"]
    qlora = yaml.safe_load(find(docs, "ConfigMap", "qlora-params-template")["data"]["training_config.yaml"])["training_config"]
    assert list(lora) == ["ModelConfig", "QuantizationConfig", "LoraConfig", "TrainingArguments", "DataCollator", "DatasetConfig"]
    assert lora["ModelConfig"] == {"torch_dtype": "bfloat16", "local_files_only": True, "device_map": "auto"}
    assert lora["QuantizationConfig"] == {"load_in_4bit": False}
    assert qlora["QuantizationConfig"] == {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_use_double_quant": True}
    assert lora["LoraConfig"] == {"r": 8, "lora_alpha": 8, "lora_dropout": 0.0}
    # Upstream's settings, except checkpoints every 50 steps so a restarted tuning pod resumes.
    assert lora["TrainingArguments"] == {
        "output_dir": "/mnt/results",
        "ddp_find_unused_parameters": False,
        "save_strategy": "steps",
        "save_steps": 50,
        "save_total_limit": 2,
        "per_device_train_batch_size": 1,
    }
    assert lora["DataCollator"] == {"mlm": False}
    assert lora["DatasetConfig"] == {"shuffle_dataset": True, "train_test_split": 1}
    assert {k: v for k, v in qlora.items() if k != "QuantizationConfig"} == {k: v for k, v in lora.items() if k != "QuantizationConfig"}


def test_notes_tell_the_next_step(helm: Path, tmp_path: Path) -> None:
    out = run_helm(helm, "install", "kaito", str(CHART), "--namespace", NAMESPACE, "--dry-run=client")
    assert "rollout status deployment/kaito" in out and "kubectl apply -f examples/inference/" in out


@pytest.mark.parametrize(
    ("reference", "moved"),
    [
        ("ghcr.io/kaito-py/kaito-servers:0.1.0", "mirror.example.com/kaito/kaito-py/kaito-servers:0.1.0"),
        ("localhost:5000/tools/kaito-servers:1", "mirror.example.com/kaito/tools/kaito-servers:1"),
        ("quay.io/kaito/servers@sha256:" + "a" * 64, "mirror.example.com/kaito/kaito/servers@sha256:" + "a" * 64),
        ("curlimages/curl:8.10.1", "mirror.example.com/kaito/curlimages/curl:8.10.1"),
        ("kaito-servers:0.1.0", "kaito-servers:0.1.0"),  # relative to images.registry, which the value replaces
        ("", ""),  # the default: the inference image, moved through images.registry
    ],
)
def test_the_registry_value_replaces_only_the_registry_part(helm: Path, tmp_path: Path, reference: str, moved: str) -> None:
    values = {"global": {"imageRegistry": "mirror.example.com/kaito/"}, "images": {"adapterPuller": reference}}
    env = operator_env(documents(template(helm, values, tmp_path)))
    assert env["KAITO_IMAGES__ADAPTER_PULLER"] == moved
    assert env["KAITO_IMAGES__REGISTRY"] == "mirror.example.com/kaito"  # no double slash before the name
