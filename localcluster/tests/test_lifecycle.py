"""Start/stop behaviour: no stray processes, failure reporting, CLI up/status/down.

These tests start their own clusters (besides the session one), a few seconds each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lc_support import NODECLAIM_CRD, processes_mentioning
from kaito_localcluster import LocalCluster, StartError
from kaito_localcluster.build import BinarySet, ensure_binaries
from kaito_localcluster.kubeapi import wait_for


@pytest.fixture(scope="module")
def binaries() -> BinarySet:
    return ensure_binaries()


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_stop_leaves_no_processes_and_removes_temp_dir(binaries: BinarySet) -> None:
    with LocalCluster(binaries=binaries) as cluster:
        directory = cluster.dir
        assert directory is not None and directory.exists()
        pids = [p.pid for p in cluster.processes]
        assert len(pids) == 5
        assert len(processes_mentioning(str(directory))) >= 5
        assert cluster.start_seconds is not None and cluster.start_seconds < 60
    assert not directory.exists()
    assert processes_mentioning(str(directory)) == []
    assert not any(_pid_alive(pid) for pid in pids)


def test_start_failure_raises_with_log_tail_and_cleans_up(binaries: BinarySet, tmp_path: Path) -> None:
    workdir = tmp_path / "broken"
    cluster = LocalCluster(binaries=binaries, workdir=workdir, extra_args={"kube-apiserver": ["--no-such-flag=1"]})
    with pytest.raises(StartError) as err:
        cluster.start()
    assert err.value.component == "kube-apiserver"
    assert "unknown flag: --no-such-flag" in str(err.value)
    assert str(workdir / "logs" / "kube-apiserver.log") in str(err.value)
    assert processes_mentioning(str(workdir)) == []
    assert not cluster.processes


_CHILD = """
import sys, time
from kaito_localcluster import LocalCluster
c = LocalCluster(workdir=sys.argv[1])
c.start()
print("READY", flush=True)
time.sleep(600)
"""


def test_sigkilled_owner_takes_its_children_down(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: even `kill -9` of the owning Python process leaves no orphans."""
    workdir = tmp_path / "orphan-check"
    owner = subprocess.Popen([sys.executable, "-c", _CHILD, str(workdir)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "READY"
        assert len(processes_mentioning(str(workdir))) >= 5
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        wait_for(lambda: processes_mentioning(str(workdir)) == [], timeout=15, what="children to die with their owner")
    finally:
        if owner.poll() is None:
            owner.kill()


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kaito_localcluster", *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_cli_up_status_down_with_crd_and_with_command(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    marker = tmp_path / "with-env.txt"
    with_cmd = f'echo "$KUBECONFIG" > {marker}; exec sleep 600'
    up = _cli("up", "--state-dir", str(state_dir), "--crd", str(NODECLAIM_CRD), "--with", with_cmd)
    try:
        assert up.returncode == 0, up.stderr
        kubeconfig = state_dir / "cluster" / "kubeconfig"
        assert up.stdout.strip() == f"export KUBECONFIG={kubeconfig}"
        assert "CRDs established: nodeclaims.karpenter.sh" in up.stderr

        status = _cli("status", "--state-dir", str(state_dir), "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        info = json.loads(status.stdout)
        assert info["healthy"] and info["readyz"] == "ok"
        names = {p["name"] for p in info["processes"]}
        assert names == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "with-1"}

        wait_for(lambda: marker.exists() and marker.read_text().strip() == str(kubeconfig), timeout=10,
                 what="--with command to see KUBECONFIG")
        env = dict(os.environ, KUBECONFIG=str(kubeconfig))
        from kaito_localcluster.cluster import find_kubectl

        got = subprocess.run([find_kubectl(), "get", "nodeclaims", "-o", "name"], env=env, capture_output=True, text=True, check=False)
        assert got.returncode == 0, got.stderr

        again = _cli("up", "--state-dir", str(state_dir))
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        down = _cli("down", "--state-dir", str(state_dir))
    assert down.returncode == 0, down.stderr
    assert processes_mentioning(str(state_dir)) == []
    assert not (state_dir / "cluster").exists()
    after = _cli("status", "--state-dir", str(state_dir))
    assert after.returncode == 3
    assert "no local cluster running" in after.stderr


def test_cli_down_after_supervisor_was_killed(tmp_path: Path) -> None:
    """`down` still cleans up when the supervisor died hard (children die with it; state is used as a fallback)."""
    state_dir = tmp_path / "state"
    up = _cli("up", "--state-dir", str(state_dir), "--no-kwok", "--no-scheduler")
    assert up.returncode == 0, up.stderr
    pid = int((state_dir / "supervisor.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    down = _cli("down", "--state-dir", str(state_dir))
    assert down.returncode == 0, down.stderr
    wait_for(lambda: processes_mentioning(str(state_dir)) == [], timeout=15, what="no processes left")
    time.sleep(0.1)


_CHILD_THREAD = """
import sys, threading, time
from kaito_localcluster import LocalCluster
c = LocalCluster(workdir=sys.argv[1])
t = threading.Thread(target=c.start)   # e.g. an asyncio executor thread
t.start(); t.join()
print("READY", flush=True)
time.sleep(600)
"""


def test_owner_killed_by_sigterm_after_start_from_worker_thread(tmp_path: Path) -> None:
    """Children are armed from a long-lived spawner thread, so a finished worker thread does not
    kill them, and an unhandled SIGTERM of the owner (no atexit) still leaves no orphans."""
    workdir = tmp_path / "thread-owner"
    owner = subprocess.Popen([sys.executable, "-c", _CHILD_THREAD, str(workdir)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "READY"
        time.sleep(1)  # the worker thread has exited; the cluster must still be alive
        assert len(processes_mentioning(str(workdir))) >= 5
        owner.send_signal(signal.SIGTERM)
        owner.wait(timeout=10)
        wait_for(lambda: processes_mentioning(str(workdir)) == [], timeout=15, what="children to die with their owner")
    finally:
        if owner.poll() is None:
            owner.kill()


def test_keep_cluster_env_leaves_it_running_until_down_dir(tmp_path: Path) -> None:
    """KAITO_TEST_KEEP_CLUSTER=1 keeps the session cluster; `down --dir` stops it."""
    test_file = tmp_path / "test_keep.py"
    test_file.write_text(
        "def test_uses_cluster(local_cluster, kube_namespace):\n"
        "    assert local_cluster.api.exists(f'/api/v1/namespaces/{kube_namespace}')\n"
    )
    env = dict(os.environ, KAITO_TEST_KEEP_CLUSTER="1")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(test_file), "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=180, check=False, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    marker = "python -m kaito_localcluster down --dir "
    line = next(line for line in run.stdout.splitlines() if marker in line)
    cluster_dir = line.split(marker, 1)[1].strip()
    try:
        assert len(processes_mentioning(cluster_dir)) == 5  # survived the pytest process
        state = json.loads((Path(cluster_dir) / "cluster.json").read_text())
        assert state["persist"] is True
    finally:
        down = _cli("down", "--dir", cluster_dir)
    assert down.returncode == 0, down.stderr
    assert processes_mentioning(cluster_dir) == []
    assert not Path(cluster_dir).exists()
