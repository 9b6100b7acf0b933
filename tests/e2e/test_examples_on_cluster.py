"""The examples that the other e2e modules do not apply, on the local control plane: the two
fine-tuning Workspaces (with the training-config ConfigMap), and the out-of-tree example plugin
reaching the operator the way the chart's init container brings it (``kaito install-plugins``
from a find-links HTTP server into a prefix the operator reads): its Workspace is admitted by the
webhook and reconciled to WORKSPACEREADY with the gpu-provisioner stand-in. An expected plugin
that is not there keeps the operator not ready, naming the package."""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from harness import ROOT, Stack, free_port, load_manifest
from test_provisioner_modes import conditions, operator_with, swapped_operator
from test_workspace_lifecycle import wait_gone, wait_ready

from kaito_localcluster.kubeapi import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]
TUNING_EXAMPLES = sorted((ROOT / "examples" / "fine-tuning").glob("*.yaml"))
PLUGIN_EXAMPLE = ROOT / "examples" / "preset-plugin" / "kaito_workspace_smollm2.yaml"


@pytest.mark.parametrize("example", TUNING_EXAMPLES, ids=[p.stem for p in TUNING_EXAMPLES])
def test_tuning_examples_are_admitted_and_reconciled(stack: Stack, kube_namespace: str, example: Path) -> None:
    """As written, the examples name the placeholder push secret ACR_REGISTRY_SECRET_HERE, which is
    no valid Secret name: the operator says so on WorkspaceSucceeded and provisions nothing (the
    filled-in example runs to a Job in tests/e2e/test_tuning_lifecycle.py)."""
    ns = kube_namespace
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d]
    name = next(d for d in docs if d["kind"] == "Workspace")["metadata"]["name"]
    stack.kubectl("apply", "-n", ns, "-f", str(example))
    cond = wait_for(lambda: (c := conditions(stack, ns, name).get("WorkspaceSucceeded")) and c["reason"] == "TuningSecretInvalid" and c,
                    timeout=60, what="WorkspaceSucceeded naming the push secret", on_timeout=stack.diagnostics)
    assert cond["status"] == "False", cond
    assert "tuning.output.imagePushSecret" in cond["message"]
    stack.kubectl("delete", "-n", ns, "-f", str(example), "--timeout=90s")
    wait_gone(stack, ns, name)


@pytest.fixture(scope="module")
def plugin_prefix(example_plugin_wheels: Path, stack: Stack) -> Iterator[Path]:
    """The example plugin installed by ``kaito install-plugins`` from an HTTP find-links server."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(example_plugin_wheels))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    prefix = stack.workdir / "plugins"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KAITO_PLUGINS__PACKAGES": '["kaito-smollm2==0.1.0"]', "KAITO_PLUGINS__NO_INDEX": "true",
           "KAITO_PLUGINS__FIND_LINKS": json.dumps([f"http://127.0.0.1:{server.server_address[1]}/"]),
           "KAITO_PLUGINS__TRUSTED_HOSTS": '["127.0.0.1"]', "KAITO_PLUGINS__PREFIX": str(prefix)}
    try:
        result = subprocess.run([sys.executable, "-m", "kaito_core.cli", "install-plugins"], env=env, capture_output=True, text=True,
                                timeout=300, check=False)
        assert result.returncode == 0, result.stderr
        yield prefix
    finally:
        server.shutdown()
        server.server_close()


def test_the_example_plugin_reaches_the_operator_and_its_workspace_is_ready(stack: Stack, plugin_prefix: Path, kube_namespace: str) -> None:
    ns, ws = kube_namespace, load_manifest(PLUGIN_EXAMPLE)
    name = ws["metadata"]["name"]
    refused = stack.kubectl("apply", "-n", ns, "-f", str(PLUGIN_EXAMPLE), check=False)  # the session operator lacks the plugin
    assert refused.returncode != 0 and "Unsupported inference preset name smollm2-135m-instruct" in refused.stderr
    env = {"KAITO_PLUGINS__PREFIX": str(plugin_prefix), "KAITO_PLUGINS__PACKAGES": '["kaito-smollm2==0.1.0"]'}
    with swapped_operator(stack, "gpu-provisioner", extra_env=env) as op:
        stack.kubectl("apply", "-n", ns, "-f", str(PLUGIN_EXAMPLE))
        cols = wait_ready(stack, ns, name)
        assert cols["INSTANCE"] == ws["resource"]["instanceType"]
        pod = stack.get(f"/api/v1/namespaces/{ns}/pods?labelSelector=kaito.sh/workspace={name}")["items"][0]
        assert "HuggingFaceTB/SmolLM2-135M-Instruct" in json.dumps(pod["spec"]), op.tail(20)
        stack.kubectl("delete", "-n", ns, "-f", str(PLUGIN_EXAMPLE), "--timeout=90s")
        wait_gone(stack, ns, name)


def _readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def test_an_expected_plugin_that_is_missing_keeps_the_operator_not_ready(stack: Stack, tmp_path: Path) -> None:
    """Beside the session operator, on ports of its own: it must not reconcile or serve admission."""
    metrics_port, webhook_port = free_port(), free_port()
    lone = operator_with(stack, "gpu-provisioner", "operator-missing-plugin.log")
    lone.env = {**lone.env, "KAITO_METRICS__PORT": str(metrics_port), "KAITO_PLUGINS__PACKAGES": '["kaito-no-such-plugin==9.9"]',
                "KAITO_WEBHOOK__CONFIGURATION_NAME": "kaito-missing-plugin-test"}
    lone.argv = [a if a != str(stack.webhook_port) else str(webhook_port) for a in lone.argv]
    lone.start()
    try:
        status, body = wait_for(lambda: (lambda r: r if r[0] else None)(_readyz(metrics_port)), timeout=60, what="/readyz answers",
                                on_timeout=lambda: lone.tail(30))
        assert status == 503 and "plugin package kaito-no-such-plugin==9.9: not installed" in body
        assert lone.alive()
        assert "plugin package kaito-no-such-plugin==9.9: not installed" in lone.log.read_text()
        assert _readyz(metrics_port)[0] == 503  # and it stays so
    finally:
        lone.stop()
    assert not stack.cluster.api.exists("/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/kaito-missing-plugin-test")


def test_kaito_plugins_asks_the_cluster_whether_the_crds_are_there(stack: Stack) -> None:
    env = {**os.environ, "KUBECONFIG": str(stack.cluster.kubeconfig), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "kaito_core.cli", "plugins"], env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "  gpu-provisioner needs:\n    CRD nodeclaims.karpenter.sh: present\n" in result.stdout
