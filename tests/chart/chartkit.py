"""Running the real helm CLI on charts/kaito: render, lint and the value combinations the golden
files cover."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kaito"
GOLDEN = Path(__file__).resolve().parent / "golden"
NAMESPACE = "kaito-system"
RELEASE = "kaito"
KUBE_VERSION = "v1.37.1"

#: The main value combinations, each rendered and compared with golden/<name>.yaml.
CASES: dict[str, dict[str, Any]] = {
    "gpu-provisioner": {},
    "karpenter": {"nodeProvisioner": {"name": "karpenter"}},
    "karpenter-aws": {
        "nodeProvisioner": {"name": "karpenter"},
        "cloud": {"provider": "aws"},
        "karpenter": {"nodeClass": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "gpu"}},
    },
    "byo": {"nodeProvisioner": {"name": "byo"}},
    "aks-workload-identity": {
        "nodeProvisioner": {"name": "azure-agentpool"},
        "azure": {"workloadIdentity": {"clientId": "11111111-2222-3333-4444-555555555555", "tenantId": "66666666-7777-8888-9999-000000000000"}},
    },
    "private-registry": {"global": {"imageRegistry": "registry.example.com/mirror", "imagePullSecrets": ["mirror-pull"]}},
    "offline-presets": {"presets": {"hub": False, "hfCacheDir": "/var/cache/huggingface/hub"}},
    "hub-tokens": {"presets": {"readModelAccessSecrets": True}},
    "plugins": {
        "plugins": {
            "packages": ["kaito-smollm2==0.1.0"], "indexUrl": "https://pypi.example.com/simple", "caConfigMap": "pypi-ca",
            "ociArtifacts": ["registry.example.com/kaito/plugins:0.1.0"], "ociPullSecret": "plugins-pull",
        },
    },
    "two-replicas": {"operator": {"replicas": 2}},
    "no-leader-election": {"leaderElection": {"enabled": False}},
}

# Lines whose values are generated afresh by every render (the webhook certificate).
_GENERATED = re.compile(r"^(\s*(?:caBundle|ca\.crt|tls\.crt|tls\.key|checksum/webhook-cert|kaito\.sh/certificate-not-after):).*$", re.M)


class HelmError(AssertionError):
    """helm exited non-zero; the message carries its stderr."""


def run_helm(helm: Path, *args: str, values: dict[str, Any] | None = None, tmp: Path | None = None, env: dict[str, str] | None = None) -> str:
    """``helm <args> [-f values]``; raises :class:`HelmError` with stderr on failure."""
    argv = [str(helm), *args]
    if values is not None:
        assert tmp is not None, "values need a tmp directory"
        path = tmp / f"values-{abs(hash(yaml.safe_dump(values)))}.yaml"
        path.write_text(yaml.safe_dump(values))
        argv += ["-f", str(path)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise HelmError(f"`helm {' '.join(args)}` failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def template(helm: Path, values: dict[str, Any], tmp: Path) -> str:
    """``helm template`` of the chart with these values (release kaito in kaito-system)."""
    return run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION, values=values, tmp=tmp)


def documents(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a render."""
    return [d for d in yaml.safe_load_all(text) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The one document of ``kind`` (and ``name``)."""
    hits = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


def masked(text: str) -> str:
    """A render with the generated certificate material replaced by ``<generated>``."""
    return _GENERATED.sub(r"\1 <generated>", text)


def operator_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The operator container's environment in a render."""
    container = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}
