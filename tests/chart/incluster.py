"""The chart installed for real: the local cluster with its real node, the operator image built by
images/ and pushed to the node's registry, `helm install/upgrade/uninstall` of charts/kaito, and
the API server's audit log of everything the operator's ServiceAccount asked for.

:func:`start_in_cluster` makes one :class:`InCluster` (the ``in_cluster`` fixture of
tests/chart/conftest.py, module scope: a real-node cluster start is expensive and one per machine).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chartkit import CHART, run_helm
from kaito_images.cli import push_all
from kaito_images.specs import ImageName, build_all
from kaito_localcluster import LocalCluster
from kaito_localcluster.build import ensure_binaries
from kaito_localcluster.kubeapi import wait_for
from kaito_localcluster.nodebuild import ensure_node_tools
from kaito_localcluster.registry import PULL_SECRET_NAME, credentials, registry_address

NAMESPACE = "kaito-system"
RELEASE = "kaito"
#: The chart's full name for this release (the release name contains the chart name).
FULLNAME = "kaito"
SERVICE_ACCOUNT = FULLNAME
OPERATOR_USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
LEASE = f"{FULLNAME}-leader"
SELECTOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"

#: Audit every request of the release namespace's service accounts (the operator's), metadata only.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "userGroups": [f"system:serviceaccounts:{NAMESPACE}"]}, {"level": "None"}],
}


def base_values(operator_tag: str) -> dict[str, Any]:
    """Values of an install from the local registry: one registry value moves every image there."""
    return {
        "global": {"imageRegistry": registry_address(), "imagePullSecrets": [PULL_SECRET_NAME]},
        "operator": {"image": {"tag": operator_tag}, "logFormat": "text"},
    }


def merged(base: dict[str, Any], *changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in, recursively (maps), in order."""
    out = json.loads(json.dumps(base))
    for change in changes:
        for key, value in change.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = value
    return out


@dataclass
class InCluster:
    """A real-node cluster with the images pushed, ready for `helm install`."""

    cluster: LocalCluster
    helm: Path
    work: Path
    audit_log: Path
    operator_tag: str
    images: dict[str, str]
    values: dict[str, Any] = field(default_factory=dict)
    installed: bool = False

    @property
    def env(self) -> dict[str, str]:
        """Environment of helm (the cluster's admin kubeconfig)."""
        return {"KUBECONFIG": str(self.cluster.kubeconfig)}

    def push(self, *names: ImageName) -> dict[str, str]:
        """Build (cached) and push more of the project's images (``:local`` and content tags)."""
        assert self.cluster.registry is not None
        refs = push_all(self.cluster.registry, names)
        self.images.update(refs)
        return refs

    def helm_run(self, *args: str, values: dict[str, Any] | None = None, timeout: str = "300s") -> str:
        """``helm <args> --namespace kaito-system [--wait]`` with ``values``."""
        return run_helm(self.helm, *args, "--namespace", NAMESPACE, *(["--wait", "--timeout", timeout] if args[0] in ("install", "upgrade") else []),
                        values=values, tmp=self.work, env=self.env)

    def install(self, *changes: dict[str, Any]) -> None:
        """``helm install`` of the chart with the local-registry values and ``changes``; waits for the rollout."""
        self.values = merged(base_values(self.operator_tag), *changes)
        self.helm_run("install", RELEASE, str(CHART), values=self.values)
        self.installed = True
        self.wait_rollout()

    def upgrade(self, *changes: dict[str, Any]) -> None:
        """``helm upgrade`` with the current values and ``changes`` on top; waits for the rollout."""
        self.values = merged(self.values, *changes)
        self.helm_run("upgrade", RELEASE, str(CHART), values=self.values)
        self.wait_rollout()

    def uninstall(self) -> None:
        """``helm uninstall --wait``."""
        run_helm(self.helm, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", env=self.env)
        self.installed = False

    def wait_rollout(self, timeout: float = 240) -> None:
        """Until the operator Deployment's rollout is complete and no old pod is left."""
        self.cluster.kubectl("rollout", "status", f"deployment/{FULLNAME}", "-n", NAMESPACE, f"--timeout={int(timeout)}s",
                             timeout=timeout + 10)
        replicas = int(self.values.get("operator", {}).get("replicas", 1))
        wait_for(lambda: len(self.operator_pods()) == replicas, timeout=60, what=f"exactly {replicas} operator pod(s)",
                 on_timeout=self.diagnostics)

    def operator_pods(self) -> list[dict[str, Any]]:
        """The operator's pods that are not being deleted."""
        pods = self.cluster.api.get(f"/api/v1/namespaces/{NAMESPACE}/pods", labelSelector=SELECTOR)["items"]
        return [p for p in pods if not p["metadata"].get("deletionTimestamp")]

    def lease_holder(self) -> str | None:
        """The pod name in the Lease's holderIdentity (``<pod>_<random>``), or None when free."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{LEASE}"
        if not self.cluster.api.exists(path):
            return None
        holder = (self.cluster.api.get(path).get("spec") or {}).get("holderIdentity")
        return holder.rsplit("_", 1)[0] if holder else None

    def logs(self, pod: str, tail: int = 40) -> str:
        """The end of an operator pod's log."""
        return str(self.cluster.kubectl("logs", pod, "-n", NAMESPACE, f"--tail={tail}", check=False).stdout)

    def diagnostics(self) -> str:
        """Pods, events and operator logs, for a failure message."""
        out = self.cluster.kubectl("get", "pods,deploy,rs,lease", "-n", NAMESPACE, "-o", "wide", check=False).stdout
        out += self.cluster.kubectl("get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp", check=False).stdout[-3000:]
        for pod in self.operator_pods():
            out += f"\n--- {pod['metadata']['name']}:\n{self.logs(pod['metadata']['name'])}"
        return out

    def audit_events(self) -> list[dict[str, Any]]:
        """Every audited request of the operator's ServiceAccount so far."""
        events = []
        for line in self.audit_log.read_text().splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:  # the line the API server is writing right now
                continue
            if event.get("user", {}).get("username") == OPERATOR_USER:
                events.append(event)
        return events


def _write_audit_policy(work: Path) -> tuple[Path, Path]:
    policy = work / "audit-policy.yaml"
    policy.write_text(yaml.safe_dump(AUDIT_POLICY))
    return policy, work / "audit.log"


@contextmanager
def start_in_cluster(helm: Path, work: Path, say: Callable[[str], None]) -> Iterator[InCluster]:
    """The real-node cluster (API server auditing the operator), the operator image pushed (more
    with :meth:`InCluster.push`), the namespace with the registry pull secret; the release uninstalled and the cluster stopped after."""
    policy, audit_log = _write_audit_policy(work)
    binaries = ensure_binaries(progress=say)
    tools = ensure_node_tools(progress=say)
    operator_tag = build_all((ImageName.OPERATOR,), progress=say)[ImageName.OPERATOR].tag
    cluster = LocalCluster(
        binaries=binaries, node_tools=tools, real_node=True, start_timeout=240,
        real_node_wait=900.0,
        extra_args={"kube-apiserver": [f"--audit-policy-file={policy}", f"--audit-log-path={audit_log}",
                                       "--audit-log-format=json", "--audit-log-maxage=1"]},
    )
    started = time.monotonic()
    cluster.start()
    say(f"cluster with a real node ready in {cluster.start_seconds:.1f}s")
    try:
        assert cluster.registry is not None
        images = push_all(cluster.registry, (ImageName.OPERATOR,))
        say(f"operator image pushed, {time.monotonic() - started:.0f}s after the cluster start began: {images}")
        api = cluster.api
        api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        api.create(f"/api/v1/namespaces/{NAMESPACE}/secrets", credentials().pull_secret(NAMESPACE))
        state = InCluster(cluster, helm, work, audit_log, operator_tag, images)
        try:
            yield state
        finally:
            if state.installed:
                state.uninstall()
    finally:
        cluster.stop()
