"""Air-gapped plugins: the example plugin's wheel pushed as an OCI artifact to the local cluster's
registry (TLS from the cluster CA, htpasswd auth), then ``kaito install-plugins`` with
plugins.ociArtifacts, the CA bundle and a Docker config pulls it with oras and pip-installs it
with no index at all, as the chart's init container does. Without credentials the message says
which Secret to name. Opt-in real node (module)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_adapter_registry_round_trip import push_artifact

from kaito_core.operator import plugin_packages
from kaito_localcluster import LocalCluster
from kaito_localcluster.registry import credentials, registry_address

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def install(prefix: Path, ref: str, ca: Path, auth: Path | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAITO_")}
    env.update({
        "PYTHONPATH": str(ROOT), "KAITO_PLUGINS__PACKAGES": '["kaito-smollm2==0.1.0"]', "KAITO_PLUGINS__NO_INDEX": "true",
        "KAITO_PLUGINS__OCI_ARTIFACTS": json.dumps([ref]), "KAITO_PLUGINS__CA_BUNDLE": str(ca),
        "KAITO_PLUGINS__OCI_AUTH_FILE": str(auth or ""), "KAITO_PLUGINS__PREFIX": str(prefix),
    })
    return subprocess.run([sys.executable, "-m", "kaito_core.cli", "install-plugins"], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_plugin_wheels_from_an_oci_artifact_install_with_no_index(real_node_cluster: LocalCluster, example_plugin_wheels: Path,
                                                                 tmp_path: Path) -> None:
    ref = f"{registry_address()}/kaito/plugins/smollm2:0.1.0"
    push_artifact(real_node_cluster, ref, sorted(example_plugin_wheels.glob("*.whl")))
    auth = tmp_path / "config.json"
    auth.write_text(credentials().dockerconfigjson())
    prefix = tmp_path / "plugins"
    got = install(prefix, ref, real_node_cluster.ca_file, auth)
    assert got.returncode == 0, got.stderr
    assert sorted(p.name for d in plugin_packages.site_dirs(prefix) for p in d.glob("*.dist-info")) == ["kaito_smollm2-0.1.0.dist-info"]

    refused = install(tmp_path / "anon", ref, real_node_cluster.ca_file, None)
    assert refused.returncode == 1
    assert f"registry {registry_address()} asks for a username and password" in refused.stderr
    assert "plugins.ociPullSecret" in refused.stderr
