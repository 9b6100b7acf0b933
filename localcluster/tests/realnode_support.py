"""Helpers of the real-node tests: what the host looks like, and small workloads."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from kaito_localcluster.node import CGROUP_ROOT, KUBELET_CGROUPS, read_sysctl
from kaito_localcluster.nodeconfig import HOST_PATHS, NODE_POD_CIDR, SAVED_SYSCTLS


def _out(*args: str) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, check=False)
    return proc.stdout


def _rules(text: str) -> list[str]:
    # Comments carry timestamps; counters change with traffic.
    return [re.sub(r"\[\d+:\d+\]", "", line) for line in text.splitlines() if line and not line.startswith("#")]


def host_snapshot() -> dict[str, Any]:
    """Everything a real node may change on the host, in comparable form."""
    # Only mounts a node could make (other work on the shared machine mounts things too).
    mounts = sorted({
        point for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if any(k in (point := line.split()[4]) for k in ("kaito-cluster", "kubelet", "containerd", "netns", "cni"))
    })
    return {
        "mounts": mounts,
        "nft": _out("nft", "list", "ruleset"),
        "iptables": _rules(_out("iptables-save")),
        "ip6tables": _rules(_out("ip6tables-save")),
        "links": sorted(line.split(":")[1].strip().split("@")[0] for line in _out("ip", "-o", "link").splitlines()),
        "netns": _out("ip", "netns", "list"),
        "cgroups": sorted(str(p) for p in CGROUP_ROOT.glob("*/*") if p.name in KUBELET_CGROUPS)
        + sorted(str(p) for p in CGROUP_ROOT.glob("*") if p.name in KUBELET_CGROUPS),
        "sysctls": {name: read_sysctl(name) for name in SAVED_SYSCTLS},
        "paths": sorted(p for p in HOST_PATHS if Path(p).exists()),
        "conntrack": _out("conntrack", "-L", "-s", NODE_POD_CIDR).count("\n"),
    }


def web_pod(name: str, image: str, text: str) -> dict[str, Any]:
    """A non-root busybox httpd pod on :8080 that serves ``text`` (readiness on /)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000},
            "containers": [{
                "name": "web",
                "image": image,
                "command": ["sh", "-c", f"mkdir -p /tmp/www && echo {text} > /tmp/www/index.html "
                                        "&& echo serving && exec busybox httpd -f -v -p 8080 -h /tmp/www"],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }


def service(name: str, port: int = 80, target: int = 8080) -> dict[str, Any]:
    """A ClusterIP Service selecting ``app: name``."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": port, "targetPort": target}]},
    }


def kubectl_run(cluster: Any, namespace: str, name: str, image: str, *command: str, timeout: float = 180) -> str:
    """``kubectl run <name> --restart=Never --image=<image> -- <command>``, wait until it ends, return its
    log, delete it.  (``kubectl run -i --rm`` loses the output when the container ends before the
    attach; a person at a terminal uses ``-it --rm`` and sees it.)"""
    from kaito_localcluster.kubeapi import wait_for

    cluster.kubectl("run", name, "-n", namespace, f"--image={image}", "--restart=Never", "--", *command)
    try:
        def done() -> str | None:
            phase: str | None = cluster.api.get(f"/api/v1/namespaces/{namespace}/pods/{name}").get("status", {}).get("phase")
            return phase if phase in ("Succeeded", "Failed") else None

        phase = wait_for(done, timeout=timeout, interval=0.5, what=f"pod {namespace}/{name} to finish",
                         on_timeout=lambda: cluster.kubectl("describe", "pod", name, "-n", namespace, check=False).stdout[-3000:])
        logs: str = cluster.kubectl("logs", name, "-n", namespace).stdout
        if phase != "Succeeded":
            raise AssertionError(f"pod {name} {phase}: {logs[-2000:]}")
        return logs
    finally:
        cluster.kubectl("delete", "pod", name, "-n", namespace, "--wait=false", check=False)
