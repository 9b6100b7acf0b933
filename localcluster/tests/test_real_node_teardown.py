"""Stopping a cluster with a real node leaves the host exactly as it was: no mount, network
namespace, link, nftables/iptables rule, cgroup, fixed host path, conntrack entry or process, and
the sysctls the kubelet and the CNI bridge change are restored.  Its own module, because it starts
and stops its own real node (one per machine)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kaito_localcluster import LocalCluster
from kaito_localcluster.imagebuild import TOOLBOX_IMAGE, build_image
from kaito_localcluster.registry import credentials
from lc_support import processes_mentioning
from realnode_support import host_snapshot, web_pod
from test_real_node import wait_pod_ready

pytestmark = pytest.mark.real_node


def test_stop_leaves_the_host_as_it_was() -> None:
    before = host_snapshot()
    cluster = LocalCluster(real_node=True, start_timeout=240, real_node_wait=float(os.environ.get("KAITO_REAL_NODE_WAIT", "900")))
    cluster.start()
    try:
        ns = "default"
        secret = credentials().pull_secret(ns)
        cluster.api.create(f"/api/v1/namespaces/{ns}/secrets", secret)
        pod = web_pod("web", cluster.push_image(build_image(TOOLBOX_IMAGE)), "x")
        pod["spec"]["imagePullSecrets"] = [{"name": secret["metadata"]["name"]}]
        cluster.api.create(f"/api/v1/namespaces/{ns}/pods", pod)
        wait_pod_ready(cluster, ns, "web")
        during = host_snapshot()
        assert during["links"] != before["links"] and during["nft"] != before["nft"]  # the node really changed the host
        assert during["cgroups"], "the kubelet created its pod cgroups"
        cluster_dir = str(cluster.dir)
    finally:
        cluster.stop()
    after = host_snapshot()
    assert {k: v for k, v in after.items() if v != before[k]} == {}, {k: (before[k], after[k]) for k in after if after[k] != before[k]}
    assert processes_mentioning(cluster_dir) == []


def test_cli_down_cleans_up_after_a_killed_supervisor(tmp_path: Path) -> None:
    """`make cluster` / `make cluster-down` path: even after `kill -9` of the supervisor, `down` undoes the node."""
    before = host_snapshot()
    env = dict(os.environ, KAITO_CLUSTER_STATE_DIR=str(tmp_path / "state"))
    cli = [sys.executable, "-m", "kaito_localcluster"]
    up = subprocess.run([*cli, "up", "--real-node"], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert up.returncode == 0, up.stderr[-3000:]
    assert "kaito0" in host_snapshot()["links"]
    pid = int((tmp_path / "state" / "supervisor.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    down = subprocess.run([*cli, "down"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert down.returncode == 0 and "cleaned up the real node" in down.stderr, down.stderr
    after = host_snapshot()
    assert {k: (before[k], after[k]) for k in after if after[k] != before[k]} == {}
    assert processes_mentioning(str(tmp_path / "state")) == []
