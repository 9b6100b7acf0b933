"""The adapter puller (`python -m kaito_servers pull-adapter`, the oras SDK) against the local
cluster's registry: TLS from the cluster CA and htpasswd auth, so the pull secret and the CA bundle
are really used. An artifact pushed with oras (files at the root, titled layers) comes back as the
same files; without credentials the registry's refusal is the error.  Opt-in real node (module)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from realnode_flow import push_artifact

from kaito_localcluster import LocalCluster
from kaito_localcluster.registry import credentials, registry_address


def pull(ref: str, dest: Path, ca: Path, config: Path | None) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "kaito_servers", "pull-adapter", "--image", ref, "--dest", str(dest), "--ca-file", str(ca),
            "--docker-config", str(config or dest.parent / "no-such-config.json")]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def test_an_adapter_artifact_round_trips_through_the_authenticated_registry(real_node_cluster: LocalCluster, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    (src / "adapter.gguf").write_bytes(b"GGUF" + os.urandom(4096))
    ref = f"{registry_address()}/kaito/adapters/pull-test:1"
    push_artifact(real_node_cluster, ref, sorted(src.iterdir()))

    config = tmp_path / "dockerconfig.json"
    config.write_text(credentials().dockerconfigjson())
    got = pull(ref, tmp_path / "out" / "pull-test", real_node_cluster.ca_file, config)
    assert got.returncode == 0, got.stderr
    for name in ("adapter_config.json", "adapter.gguf"):
        assert (tmp_path / "out" / "pull-test" / name).read_bytes() == (src / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["pull-test"]  # no scratch left

    refused = pull(ref, tmp_path / "anon" / "pull-test", real_node_cluster.ca_file, None)
    assert refused.returncode == 1 and "requires a username and password" in refused.stderr, refused.stderr
    assert "imagePullSecrets" in refused.stderr


def test_an_artifact_without_adapter_files_is_refused_with_the_expected_layout(real_node_cluster: LocalCluster, tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("not an adapter")
    ref = f"{registry_address()}/kaito/adapters/not-an-adapter:1"
    push_artifact(real_node_cluster, ref, [tmp_path / "README.md"])
    config = tmp_path / "dockerconfig.json"
    config.write_text(credentials().dockerconfigjson())
    got = pull(ref, tmp_path / "out" / "x", real_node_cluster.ca_file, config)
    assert got.returncode == 1
    assert "holds no adapter: expected adapter_config.json" in got.stderr and "README.md" in got.stderr, got.stderr


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
