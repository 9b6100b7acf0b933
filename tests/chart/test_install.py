"""`helm install` / `upgrade` / `uninstall` of the chart into the local control plane.

Without the real node (tests/chart/test_in_cluster.py runs the operator image in the cluster),
this checks what holds without the operator pod running: every object is created, the ServiceAccount can do exactly what the ClusterRole says
(asked of the API server's authorizer), the webhook configuration points at the Service with the
CA of the certificate Secret, an upgrade keeps that certificate, and an uninstall leaves no
cluster-scoped object behind but the CRDs. And the operator itself, run on this machine with a
token of the chart's ServiceAccount and the environment of the chart's Deployment, reconciles a
Workspace with no permission error: the chart grants enough."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from chartkit import CHART, ROOT, documents, run_helm
from kaito_localcluster.kubeapi import wait_for

pytestmark = pytest.mark.cluster

RELEASE = "charttest"
FULLNAME = "charttest-kaito"
# Its own webhook name (the e2e operator manages validation.workspace.kaito.sh in the same
# cluster) and Ignore: no operator pod answers here, other tests' Workspaces must still pass.
VALUES = {"webhook": {"configurationName": "charttest.validation.kaito.sh", "failurePolicy": "Ignore"}}


@pytest.fixture
def release(helm: Path, local_cluster: Any, kube_namespace: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The chart installed as release charttest in a fresh namespace; uninstalled afterwards."""
    env = {"KUBECONFIG": str(local_cluster.kubeconfig)}
    args = ["--namespace", kube_namespace]
    run_helm(helm, "install", RELEASE, str(CHART), *args, values=VALUES, tmp=tmp_path, env=env)
    rendered = documents(run_helm(helm, "get", "manifest", RELEASE, *args, env=env))
    state = {"namespace": kube_namespace, "env": env, "args": args, "docs": rendered, "installed": True}
    try:
        yield state
    finally:
        if state["installed"]:
            run_helm(helm, "uninstall", RELEASE, *args, "--wait", env=env)


def _path(kind: str, name: str, namespace: str) -> str:
    return {
        "ServiceAccount": f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}",
        "Service": f"/api/v1/namespaces/{namespace}/services/{name}",
        "Secret": f"/api/v1/namespaces/{namespace}/secrets/{name}",
        "ConfigMap": f"/api/v1/namespaces/{namespace}/configmaps/{name}",
        "Deployment": f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
        "PodDisruptionBudget": f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/{name}",
        "ClusterRole": f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}",
        "Role": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/{name}",
        "RoleBinding": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings/{name}",
        "ClusterRoleBinding": f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}",
        "ValidatingWebhookConfiguration": f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{name}",
    }[kind]


CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "ValidatingWebhookConfiguration"}


def _allowed(api: Any, user: str, verb: str, group: str, resource: str, namespace: str = "", name: str = "") -> bool:
    resource, _, sub = resource.partition("/")
    attrs = {"verb": verb, "group": group, "resource": resource, **({"subresource": sub} if sub else {}),
             **({"namespace": namespace} if namespace else {}), **({"name": name} if name else {})}
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {"user": user, "resourceAttributes": attrs}}
    return bool(api.create("/apis/authorization.k8s.io/v1/subjectaccessreviews", review)["status"].get("allowed"))


def test_install_creates_every_object_and_binds_exactly_the_rules(release: dict[str, Any], local_cluster: Any) -> None:
    api, ns, docs = local_cluster.api, release["namespace"], release["docs"]
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == sorted(["ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "PodDisruptionBudget", "Role", "RoleBinding",
                            "Secret", "Service", "ServiceAccount", "ValidatingWebhookConfiguration"])
    for doc in docs:
        assert api.exists(_path(doc["kind"], doc["metadata"]["name"], ns)), f"{doc['kind']} {doc['metadata']['name']} was not created"
    for crd in ("workspaces.kaito.sh", "nodeclaims.karpenter.sh"):
        assert api.exists(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}")

    user = f"system:serviceaccount:{ns}:{FULLNAME}"
    rules = api.get(_path("ClusterRole", FULLNAME, ns))["rules"]
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert _allowed(api, user, verb, group, resource), f"{user} cannot {verb} {group}/{resource}"
    # The leader-election Role: create Leases in the release namespace, read and renew only the release's.
    assert _allowed(api, user, "create", "coordination.k8s.io", "leases", ns)
    assert _allowed(api, user, "update", "coordination.k8s.io", "leases", ns, f"{FULLNAME}-leader")
    assert not _allowed(api, user, "update", "coordination.k8s.io", "leases", ns, "someone-elses")
    assert not _allowed(api, user, "create", "coordination.k8s.io", "leases", "kube-system")
    for verb, group, resource in [
        ("get", "", "secrets"), ("create", "karpenter.sh", "nodepools"), ("delete", "kaito.sh", "workspaces"),
        ("patch", "admissionregistration.k8s.io", "validatingwebhookconfigurations"), ("create", "", "pods"),
    ]:
        assert not _allowed(api, user, verb, group, resource), f"{user} may {verb} {group}/{resource}"


def test_the_webhook_configuration_points_at_the_operator_service(release: dict[str, Any], local_cluster: Any) -> None:
    api, ns = local_cluster.api, release["namespace"]
    hook = api.get(_path("ValidatingWebhookConfiguration", "charttest.validation.kaito.sh", ns))["webhooks"][0]
    service = api.get(_path("Service", f"{FULLNAME}-webhook", ns))
    deployment = api.get(_path("Deployment", FULLNAME, ns))
    secret = api.get(_path("Secret", f"{FULLNAME}-webhook-cert", ns))
    assert hook["clientConfig"]["service"]["name"] == service["metadata"]["name"]
    assert hook["clientConfig"]["service"]["namespace"] == ns
    assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    target = service["spec"]["ports"][0]["targetPort"]
    ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert target in ports
    assert base64.b64decode(secret["data"]["tls.crt"]).startswith(b"-----BEGIN CERTIFICATE-----")


def test_upgrade_keeps_the_certificate_and_rolls_the_new_setting(release: dict[str, Any], local_cluster: Any, helm: Path, tmp_path: Path) -> None:
    api, ns = local_cluster.api, release["namespace"]
    before = api.get(_path("Secret", f"{FULLNAME}-webhook-cert", ns))["data"]
    checksum = api.get(_path("Deployment", FULLNAME, ns))["spec"]["template"]["metadata"]["annotations"]["checksum/webhook-cert"]
    values = {**VALUES, "concurrency": {"workers": 7}}
    run_helm(helm, "upgrade", RELEASE, str(CHART), *release["args"], values=values, tmp=tmp_path, env=release["env"])
    assert api.get(_path("Secret", f"{FULLNAME}-webhook-cert", ns))["data"] == before
    hook = api.get(_path("ValidatingWebhookConfiguration", "charttest.validation.kaito.sh", ns))["webhooks"][0]
    assert hook["clientConfig"]["caBundle"] == before["ca.crt"]
    template = api.get(_path("Deployment", FULLNAME, ns))["spec"]["template"]
    assert template["metadata"]["annotations"]["checksum/webhook-cert"] == checksum
    env = {e["name"]: e.get("value", "") for e in template["spec"]["containers"][0]["env"]}
    assert env["KAITO_CONCURRENCY__WORKERS"] == "7"


def test_an_upgrade_near_expiry_renews_the_certificate_everywhere(release: dict[str, Any], local_cluster: Any, helm: Path, tmp_path: Path) -> None:
    api, ns = local_cluster.api, release["namespace"]
    secret_path = _path("Secret", f"{FULLNAME}-webhook-cert", ns)
    old = api.get(secret_path)
    checksum = api.get(_path("Deployment", FULLNAME, ns))["spec"]["template"]["metadata"]["annotations"]["checksum/webhook-cert"]
    soon = int(old["metadata"]["annotations"]["kaito.sh/certificate-not-after"]) - 3650 * 86400 + 86400
    # Jump the clock: the certificate now expires tomorrow. This write makes the test a second
    # manager of the annotation, so helm's server-side apply has to take it back (--force-conflicts).
    api.patch(secret_path, {"metadata": {"annotations": {"kaito.sh/certificate-not-after": str(soon)}}})
    run_helm(helm, "upgrade", RELEASE, str(CHART), *release["args"], "--force-conflicts", values=VALUES, tmp=tmp_path, env=release["env"])
    new = api.get(secret_path)
    assert new["data"]["ca.crt"] != old["data"]["ca.crt"] and new["data"]["tls.crt"] != old["data"]["tls.crt"]
    assert int(new["metadata"]["annotations"]["kaito.sh/certificate-not-after"]) > soon + 3000 * 86400
    hook = api.get(_path("ValidatingWebhookConfiguration", "charttest.validation.kaito.sh", ns))["webhooks"][0]
    assert hook["clientConfig"]["caBundle"] == new["data"]["ca.crt"]
    rolled = api.get(_path("Deployment", FULLNAME, ns))["spec"]["template"]["metadata"]["annotations"]["checksum/webhook-cert"]
    assert rolled != checksum  # the operator restarts with the new certificate


def test_uninstall_leaves_no_cluster_scoped_object_but_the_crds(release: dict[str, Any], local_cluster: Any, helm: Path) -> None:
    api, ns = local_cluster.api, release["namespace"]
    cluster_scoped = [(d["kind"], d["metadata"]["name"]) for d in release["docs"] if d["kind"] in CLUSTER_SCOPED]
    assert len(cluster_scoped) == 3  # ClusterRole, ClusterRoleBinding, ValidatingWebhookConfiguration
    run_helm(helm, "uninstall", RELEASE, *release["args"], "--wait", env=release["env"])
    release["installed"] = False
    for kind, name in cluster_scoped:
        assert not api.exists(_path(kind, name, ns)), f"{kind} {name} is left behind"
    labelled = api.get("/apis/rbac.authorization.k8s.io/v1/clusterroles", labelSelector=f"app.kubernetes.io/instance={RELEASE}")["items"]
    assert labelled == []
    for crd in ("workspaces.kaito.sh", "nodeclaims.karpenter.sh"):
        assert api.exists(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}"), f"helm removed CRD {crd}"


def _token_kubeconfig(cluster: Any, namespace: str, account: str, dest: Path) -> Path:
    token = cluster.api.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}},
    )["status"]["token"]
    ca = base64.b64encode(Path(cluster.ca_file).read_bytes()).decode()
    dest.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": cluster.server, "certificate-authority-data": ca}}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "local", "user": account}}],
        "current-context": account,
    }))
    dest.chmod(0o600)
    return dest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("provisioner", ["gpu-provisioner", "byo"])
def test_the_operator_reconciles_with_only_the_charts_permissions(
    helm: Path, local_cluster: Any, kube_namespace: str, tmp_path: Path, provisioner: str
) -> None:
    api, ns = local_cluster.api, kube_namespace
    env = {"KUBECONFIG": str(local_cluster.kubeconfig)}
    # Scoped to this namespace (other tests' Workspaces are not its business): the chart then also
    # grants the namespace list/watch kopf needs to follow the scope.
    values = {**VALUES, "nodeProvisioner": {"name": provisioner}, "scope": {"namespaces": [ns]}}
    run_helm(helm, "install", RELEASE, str(CHART), "--namespace", ns, values=values, tmp=tmp_path, env=env)
    operator = None
    log = tmp_path / "operator.log"
    try:
        container = api.get(_path("Deployment", FULLNAME, ns))["spec"]["template"]["spec"]["containers"][0]
        chart_env = {e["name"]: e.get("value", "") for e in container["env"]}
        # On this machine: the webhook and metrics on free loopback ports (the API server would
        # reach the webhook through the Service, i.e. a pod), the certificate files of the
        # chart's Secret (as the pod mounts them), and only this test's namespace.
        certs = tmp_path / "webhook-certs"
        certs.mkdir()
        for key, value in api.get(_path("Secret", f"{FULLNAME}-webhook-cert", ns))["data"].items():
            (certs / key).write_bytes(base64.b64decode(value))
        chart_env.update({
            "KAITO_WEBHOOK__LISTEN_ADDR": "127.0.0.1", "KAITO_WEBHOOK__PORT": str(_free_port()),
            "KAITO_WEBHOOK__CERT_DIR": str(certs), "KAITO_METRICS__HOST": "127.0.0.1",
            "KAITO_METRICS__PORT": str(_free_port()),
        })
        assert json.loads(chart_env["KAITO_SCOPE__NAMESPACES"]) == [ns]
        before = {p.name: p.read_bytes() for p in certs.iterdir()}
        kubeconfig = _token_kubeconfig(local_cluster, ns, FULLNAME, tmp_path / "operator.kubeconfig")
        proc_env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG" and not k.startswith("KAITO_")} | chart_env
        with open(log, "wb") as out:
            operator = subprocess.Popen(
                [sys.executable, "-m", "kaito_core.operator", "--kubeconfig", str(kubeconfig), "--log-format", "text"],
                env=proc_env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            )
        workspace = yaml.safe_load((ROOT / "examples/inference/kaito_workspace_phi_3.yaml").read_text())
        if provisioner == "byo":
            del workspace["resource"]["instanceType"]  # BYO: the existing nodes matching labelSelector
        local_cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(workspace))
        name = workspace["metadata"]["name"]
        ws_path = f"/apis/kaito.sh/v1beta1/namespaces/{ns}/workspaces/{name}"

        def settled() -> bool:
            if provisioner == "gpu-provisioner":
                claims = api.get("/apis/karpenter.sh/v1/nodeclaims", labelSelector=f"kaito.sh/workspace={name},kaito.sh/workspacenamespace={ns}")
                return bool(claims["items"])
            return bool((api.get(ws_path).get("status") or {}).get("conditions"))

        wait_for(settled, timeout=60, what=f"the operator ({provisioner}) acting on {name}", on_timeout=lambda: log.read_text()[-3000:])
        local_cluster.kubectl("delete", "-n", ns, "workspace", name, "--timeout=60s")
        assert not api.exists(ws_path)
        left = api.get("/apis/karpenter.sh/v1/nodeclaims", labelSelector=f"kaito.sh/workspace={name},kaito.sh/workspacenamespace={ns}")["items"]
        assert left == [], ([c["metadata"] for c in left], log.read_text()[-3000:])
        text = log.read_text()
        assert "Forbidden" not in text and " 403" not in text, text[-3000:]
        assert operator.poll() is None, text[-3000:]
        assert {p.name: p.read_bytes() for p in certs.iterdir()} == before  # served as the chart made them
    finally:
        if operator is not None:
            operator.terminate()
            try:
                operator.wait(15)
            except subprocess.TimeoutExpired:
                operator.kill()
                operator.wait()
        run_helm(helm, "uninstall", RELEASE, "--namespace", ns, "--wait", env=env)
