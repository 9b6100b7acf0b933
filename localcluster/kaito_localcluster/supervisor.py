"""The detached supervisor behind ``python -m kaito_localcluster up``.

``up`` builds/resolves the binaries in the foreground, then starts this module's
:func:`supervise` as a new session (``python -m kaito_localcluster _supervise``).
The supervisor owns a :class:`~kaito_localcluster.cluster.LocalCluster` plus the
``--with`` commands, publishes ``state.json`` in the state directory and stops
everything on SIGTERM/SIGINT/SIGHUP (what ``down`` sends).  Its children carry a
parent-death signal, so even a SIGKILLed supervisor leaves no orphans.

State directory layout (default ``~/.cache/kaito/cluster/<checkout>-<hash>``, see
:func:`default_state_dir`)::

    supervisor.pid   pid of the supervisor
    supervisor.log   its log
    state.json       status (starting|ready|failed|stopping|stopped), server, kubeconfig, processes
    cluster/         the cluster directory (PKI, kubeconfig, etcd data, logs/)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from .build import cache_root
from .cluster import LocalCluster, ManagedProcess, spawn, stop_processes

log = logging.getLogger(__name__)

STATE = "state.json"
PIDFILE = "supervisor.pid"
LOGFILE = "supervisor.log"
CLUSTER_SUBDIR = "cluster"


def _checkout_root(start: Path) -> Path | None:
    for directory in (start, *start.parents):
        if (directory / ".git").exists():
            return directory
    return None


def default_state_dir(cwd: Path | None = None) -> Path:
    """Where ``up``/``down``/``status`` keep their state by default.

    ``$KAITO_CLUSTER_STATE_DIR`` if set; otherwise one directory per git checkout
    (worktree) containing ``cwd``: ``<cache root>/cluster/<checkout name>-<hash>``,
    or ``<cache root>/cluster/default`` outside a checkout.  Per-checkout state keeps
    engineers who share a machine account (and thus ``~/.cache``) from stopping each
    other's clusters with ``down``.
    """
    env = os.environ.get("KAITO_CLUSTER_STATE_DIR")
    if env:
        return Path(env).expanduser()
    root = _checkout_root((cwd or Path.cwd()).resolve())
    if root is None:
        return cache_root() / "cluster" / "default"
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:8]
    return cache_root() / "cluster" / f"{root.name}-{digest}"


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """The supervisor state, or ``None`` if there is none."""
    try:
        data: dict[str, Any] = json.loads((state_dir / STATE).read_text(encoding="utf-8"))
        return data
    except (OSError, json.JSONDecodeError):
        return None


def write_state(state_dir: Path, state: dict[str, Any]) -> None:
    """Atomically write ``state.json``."""
    tmp = state_dir / f".{STATE}.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, state_dir / STATE)


def process_matches(pid: int, needle: str) -> bool:
    """Whether ``pid`` is alive and its command line contains ``needle`` (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":  # zombie: exited, not yet reaped
            return False
    except (OSError, IndexError):
        pass
    return needle in cmdline


def _proc_entry(proc: ManagedProcess, kind: str) -> dict[str, Any]:
    return {
        "name": proc.name,
        "kind": kind,
        "pid": proc.pid,
        "pgid": proc.pid,
        "argv0": proc.args[0],
        "command": " ".join(proc.args),
        "log": str(proc.log_path),
        "alive": proc.alive(),
        "returncode": proc.popen.returncode,
    }


def supervise(
    state_dir: Path,
    *,
    crds: Sequence[str] = (),
    with_commands: Sequence[str] = (),
    controller_manager: bool = True,
    scheduler: bool = True,
    kwok: bool = True,
    start_timeout: float = 120.0,
    real_node: bool = False,
) -> int:
    """Run the cluster until a stop signal; return the process exit code."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / PIDFILE).write_text(f"{os.getpid()}\n", encoding="utf-8")
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received signal %s; stopping", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    state: dict[str, Any] = {
        "status": "starting",
        "supervisor_pid": os.getpid(),
        "state_dir": str(state_dir),
        "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "crds": list(crds),
        "with": list(with_commands),
    }
    write_state(state_dir, state)
    cluster_dir = state_dir / CLUSTER_SUBDIR
    cluster = LocalCluster(
        workdir=cluster_dir,
        keep_files=True,
        controller_manager=controller_manager,
        scheduler=scheduler,
        kwok=kwok,
        start_timeout=start_timeout,
        real_node=real_node,
    )
    extras: list[ManagedProcess] = []
    try:
        try:
            cluster.start()
            if crds:
                names = cluster.install_crds(crds)
                log.info("installed CRDs: %s", ", ".join(names))
                state["crd_names"] = names
            env = cluster.env()
            env["KAITO_CLUSTER_DIR"] = str(cluster_dir)
            for i, cmd in enumerate(with_commands, start=1):
                proc = spawn(
                    f"with-{i}", ["/bin/sh", "-c", cmd], cluster_dir / "logs" / f"with-{i}.log",
                    env=env, cwd=Path.cwd(),
                )
                log.info("started --with command %d (pid %s): %s", i, proc.pid, cmd)
                extras.append(proc)
        except Exception as exc:  # noqa: BLE001 - reported through state.json
            log.exception("start failed")
            state.update(status="failed", error=str(exc))
            write_state(state_dir, state)
            return 1

        def publish(status: str) -> None:
            state.update(
                status=status,
                server=cluster.server,
                kubeconfig=str(cluster.kubeconfig),
                cluster_dir=str(cluster_dir),
                start_seconds=cluster.start_seconds,
                processes=[_proc_entry(p, "core") for p in cluster.processes] + [_proc_entry(p, "with") for p in extras],
            )
            write_state(state_dir, state)

        publish("ready")
        log.info("cluster ready: %s (kubeconfig %s)", cluster.server, cluster.kubeconfig)
        reported: set[str] = set()
        while not stop.wait(1.0):
            changed = False
            for proc in [*cluster.processes, *extras]:
                if not proc.alive() and proc.name not in reported:
                    reported.add(proc.name)
                    changed = True
                    log.error("%s", proc.describe_exit())
            if changed:
                core_dead = any(not p.alive() for p in cluster.processes)
                publish("degraded" if core_dead else "ready")
        state["status"] = "stopping"
        write_state(state_dir, state)
        return 0
    finally:
        stop_processes(extras)
        cluster.stop()
        state.update(status="stopped", stopped_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        for entry in state.get("processes", []):
            entry["alive"] = False
        with contextlib.suppress(OSError):
            write_state(state_dir, state)
        with contextlib.suppress(OSError):
            (state_dir / PIDFILE).unlink()
        log.info("supervisor exiting")


def kill_recorded(processes: Sequence[dict[str, Any]], grace: float = 10.0) -> list[str]:
    """SIGTERM/SIGKILL process groups recorded in a state file (pid-reuse safe)."""
    killed: list[str] = []
    live = [p for p in processes if process_matches(int(p["pid"]), str(p.get("argv0", "")))]
    for entry in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(entry["pgid"]), signal.SIGTERM)
    deadline = time.monotonic() + grace
    for entry in live:
        while time.monotonic() < deadline and process_matches(int(entry["pid"]), str(entry.get("argv0", ""))):
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(entry["pgid"]), signal.SIGKILL)
        killed.append(f"{entry['name']} (pid {entry['pid']})")
    return killed
