"""Processes and credentials of the end-to-end suite and the benchmark: the operator (as the
least-privilege ServiceAccount of config/rbac) and the gpu-provisioner test stand-in, both as
real subprocesses against the local control plane."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
RBAC = ROOT / "config" / "rbac" / "operator.yaml"
CRDS = [
    ROOT / "charts/kaito/crds/kaito.sh_workspaces.yaml",
    ROOT / "charts/kaito/crds/karpenter.sh_nodeclaims.yaml",
    ROOT / "charts/kaito/crds/karpenter.sh_nodepools.yaml",
]
"""Installed once at the start of the session: a CRD installed later makes the garbage collector
re-discover resources, which holds up owner-reference deletion for up to half a minute."""
WEBHOOK_NAME = "validation.workspace.kaito.sh"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def operator_kubeconfig(cluster: Any, dest: Path) -> Path:
    """Apply config/rbac and write a kubeconfig with a token of the kaito-operator ServiceAccount."""
    cluster.kubectl("apply", "-f", str(RBAC))
    token = cluster.api.create(
        "/api/v1/namespaces/kaito-system/serviceaccounts/kaito-operator/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 86400}},
    )["status"]["token"]
    ca = base64.b64encode(Path(cluster.ca_file).read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": cluster.server, "certificate-authority-data": ca}}],
        "users": [{"name": "kaito-operator", "user": {"token": token}}],
        "contexts": [{"name": "kaito-operator", "context": {"cluster": "local", "user": "kaito-operator"}}],
        "current-context": "kaito-operator",
    }
    dest.write_text(yaml.safe_dump(config))
    dest.chmod(0o600)
    return dest


class Process:
    """A supervised subprocess with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it (appending to the log)."""
        with open(self.log, "ab") as out:
            out.write(f"==> {time.strftime('%H:%M:%S')} starting {' '.join(self.argv)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)

    def alive(self) -> bool:
        """Whether it is running."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup at all (a crash)."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 60) -> str:
        """The end of the log."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def fake_gpu_provisioner(kubeconfig: Path, log: Path, *, fail_skus: dict[str, str] | None = None, step_delay: float = 0.3) -> Process:
    """The test stand-in for Azure's gpu-provisioner (admin credentials, like the real controller's own)."""
    argv = [sys.executable, str(ROOT / "tests/e2e/fake_gpu_provisioner.py"), "--kubeconfig", str(kubeconfig), "--step-delay", str(step_delay)]
    for sku, message in (fail_skus or {}).items():
        argv += ["--fail-sku", f"{sku}={message}"]
    return Process("fake-gpu-provisioner", argv, dict(os.environ, PYTHONPATH=str(ROOT)), log)


def operator(kubeconfig: Path, log: Path, cert_dir: Path, *, webhook_port: int, extra_env: dict[str, str] | None = None) -> Process:
    """``python -m kaito_core.operator`` (== ``kaito operator``) with the given credentials."""
    argv = [
        sys.executable, "-m", "kaito_core.operator", "--kubeconfig", str(kubeconfig),
        "--webhook-port", str(webhook_port), "--webhook-cert-dir", str(cert_dir),
    ]
    env = dict(os.environ, **(extra_env or {}))
    env.pop("KUBECONFIG", None)
    return Process("operator", argv, env, log)


def wait_webhook_ready(cluster: Any, port: int, timeout: float = 60.0) -> None:
    """Until the webhook configuration points at the operator's port and the port answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            cfg = cluster.api.get(f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{WEBHOOK_NAME}")
            urls = [w.get("clientConfig", {}).get("url", "") for w in cfg.get("webhooks") or []]
            if any(f":{port}/" in u for u in urls):
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
        except Exception:  # noqa: BLE001 - not there yet
            pass
        time.sleep(0.3)
    raise TimeoutError(f"the operator's admission webhook on port {port} did not come up in {timeout:.0f}s")


FAILING_SKU = "Standard_NC24ads_A100_v4"
FAILING_MESSAGE = "OperationNotAllowed: Insufficient regional vcpu quota left for family NCADSA100v4; requested 24, available 0"


@dataclass
class Stack:
    """What the tests drive and inspect."""

    cluster: Any
    operator: Process
    fake: Process
    webhook_port: int
    workdir: Path
    metrics_port: int = 0

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The operator's /metrics as {(sample name, sorted labels): value}."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
        }

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """kubectl as the cluster admin (a person)."""
        result: subprocess.CompletedProcess[str] = self.cluster.kubectl(*args, check=check, input=input, timeout=90)
        return result

    def get(self, path: str) -> Any:
        """GET an API path as admin."""
        return self.cluster.api.get(path)

    def restart_operator(self, *, crash: bool) -> None:
        """Kill (SIGKILL, ``crash``) or stop the operator, then start it again."""
        if crash:
            self.operator.kill()
        else:
            self.operator.stop()
        self.operator.start()
        wait_webhook_ready(self.cluster, self.webhook_port)

    def diagnostics(self) -> str:
        """Logs for a failure message."""
        return f"--- operator log:\n{self.operator.tail(80)}\n--- fake gpu-provisioner log:\n{self.fake.tail(30)}"


def load_manifest(path: Path | str, **changes: Any) -> dict[str, Any]:
    """A YAML manifest as a dict, with top-level ``changes`` merged in."""
    obj: dict[str, Any] = yaml.safe_load(Path(path).read_text())
    obj.update(changes)
    return obj


def dump(obj: dict[str, Any]) -> str:
    """JSON text for ``kubectl apply -f -``."""
    return json.dumps(obj)
