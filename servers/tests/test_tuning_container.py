"""The runner's adaptation to a pod: threads from the cgroup CPU limit, caches off a read-only HOME,
SIGTERM ends the run at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kaito_servers.tuning.container import cache_env, cpu_limit, thread_count


def test_cpu_limit_reads_cgroup_v2_and_v1(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cpu_limit(v2) == 1.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cpu_limit(v2) is None
    v1 = tmp_path / "v1" / "cpu,cpuacct"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_limit(tmp_path / "v1") == 1.0
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_limit(tmp_path / "v1") is None
    assert cpu_limit(tmp_path / "nothing") is None


def test_threads_follow_the_limit_unless_told() -> None:
    assert thread_count({}, affinity=16, limit=2.0) == (2, "the container's CPU limit (2 CPUs)")
    assert thread_count({}, affinity=16, limit=0.5)[0] == 1
    assert thread_count({}, affinity=16, limit=2.7)[0] == 2  # a fraction of a CPU would be throttled
    assert thread_count({}, affinity=2, limit=None) == (2, "the CPUs this process may run on")
    assert thread_count({}, affinity=2, limit=8.0)[0] == 2
    assert thread_count({"OMP_NUM_THREADS": "3"}, affinity=16, limit=2.0) == (3, "OMP_NUM_THREADS")
    assert thread_count({"KAITO_TUNING_THREADS": "4", "OMP_NUM_THREADS": "3"}, 16, 2.0) == (4, "KAITO_TUNING_THREADS")
    assert thread_count({"OMP_NUM_THREADS": "zero"}, affinity=16, limit=2.0)[0] == 2


def test_caches_move_off_a_read_only_home() -> None:
    assert cache_env({}, home_writable=True, tmp="/tmp") == {}
    moved = cache_env({"HF_HOME": "/data/hf"}, home_writable=False, tmp="/scratch")
    assert "HF_HOME" not in moved  # an explicit setting stays
    assert moved["TRITON_CACHE_DIR"] == "/scratch/kaito-cache/triton"
    assert moved["XDG_CACHE_HOME"] == "/scratch/kaito-cache/xdg"


def test_sigterm_stops_the_runner_at_once(tmp_path: Path) -> None:
    """A runner waiting on its data URL (a server that accepts and never answers) exits 143 on SIGTERM."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    url = f"http://127.0.0.1:{server.getsockname()[1]}/data.parquet"
    env = {**os.environ, "KAITO_TUNING_ALLOW_HOSTS": "127.0.0.1", "HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "kaito_servers", "tune", "--method", "lora", "--data-url", url,
                             "--data-dir", str(tmp_path / "data"), "--check-only"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        conn, _ = server.accept()  # the runner is in its download now
        time.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        assert code == 143 and time.monotonic() - started < 10
        records = [json.loads(line) for line in (proc.stderr.read() if proc.stderr else "").splitlines() if line.startswith("{")]
        threads = [r for r in records if r["message"].startswith("using ")]
        assert threads and threads[0]["threads"] >= 1
        assert any("SIGTERM" in r["message"] for r in records)
        conn.close()
    finally:
        proc.kill()
        server.close()
