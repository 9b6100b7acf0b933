"""Command line: ``python -m kaito_localcluster {build,up,down,status}``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .build import BuildError, Versions, bin_dir, cache_root, ensure_binaries
from .cluster import STATE_FILE
from .kubeapi import KubeApi
from .node import HOST_RECORD, cleanup_node
from .nodebuild import ensure_node_tools
from .supervisor import (
    CLUSTER_SUBDIR,
    LOGFILE,
    PIDFILE,
    default_state_dir,
    kill_recorded,
    process_matches,
    read_state,
    supervise,
)

log = logging.getLogger("kaito_localcluster")

EXIT_NOT_RUNNING = 3

_EPILOG = """\
examples:
  python -m kaito_localcluster build                 # build/cache binaries (10-25 min cold on 2 cores)
  eval "$(python -m kaito_localcluster up --crd charts/kaito/crds/karpenter.sh_nodeclaims.yaml)"
  kubectl get nodes                                  # uses the exported KUBECONFIG
  python -m kaito_localcluster status
  python -m kaito_localcluster down

environment:
  KAITO_CACHE_DIR          cache root (default ~/.cache/kaito)
  KAITO_CLUSTER_STATE_DIR  state dir of `up`/`down`/`status` (default: one per git checkout,
                           <cache root>/cluster/<checkout>-<hash>)
  KUBEBUILDER_ASSETS       dir with prebuilt kube-apiserver and etcd to use instead of building
"""


def _supervisor_alive(state_dir: Path) -> int | None:
    try:
        pid = int((state_dir / PIDFILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if process_matches(pid, "kaito_localcluster") else None


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_build(args: argparse.Namespace) -> int:
    """Build (or verify the cache of) all binaries."""
    started = time.monotonic()
    try:
        binaries = ensure_binaries(force=args.force, nice=args.nice, heartbeat=args.heartbeat, progress=_stderr)
        tools = ensure_node_tools(nice=args.nice, heartbeat=args.heartbeat, progress=_stderr) if args.node else None
    except BuildError as exc:
        _stderr(f"error: {exc}")
        return 1
    if args.json:
        print(json.dumps(binaries.as_dict(), indent=2))
    else:
        _stderr(f"binaries ready in {time.monotonic() - started:.1f}s (source: {binaries.source}):")
        for name, line in binaries.versions.items():
            print(f"  {name:<24} {binaries.get(name)}  [{line}]")
        if tools is not None:
            for field in dataclasses.fields(tools):
                print(f"  {field.name:<24} {getattr(tools, field.name)}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Start a detached cluster under a supervisor."""
    state_dir: Path = args.state_dir
    pid = _supervisor_alive(state_dir)
    if pid:
        state = read_state(state_dir) or {}
        _stderr(
            f"error: a local cluster is already running (supervisor pid {pid}, {state.get('server', '?')}); "
            f"run `python -m kaito_localcluster down --state-dir {state_dir}` first"
        )
        return 1
    for crd in args.crd:
        if not Path(crd).is_file():
            _stderr(f"error: --crd {crd}: no such file")
            return 2
    try:
        ensure_binaries(nice=args.nice, progress=_stderr)
    except BuildError as exc:
        _stderr(f"error: {exc}")
        return 1
    state_dir.mkdir(parents=True, exist_ok=True)
    for stale in (state_dir / "state.json", state_dir / PIDFILE):
        stale.unlink(missing_ok=True)
    shutil.rmtree(state_dir / CLUSTER_SUBDIR, ignore_errors=True)
    cmd = [
        sys.executable, "-m", "kaito_localcluster", "_supervise",
        "--state-dir", str(state_dir), "--timeout", str(args.timeout),
    ]
    for crd in args.crd:
        cmd += ["--crd", str(Path(crd).resolve())]
    for with_cmd in args.with_commands:
        cmd += ["--with", with_cmd]
    for flag in ("no_controller_manager", "no_scheduler", "no_kwok"):
        if getattr(args, flag):
            cmd.append("--" + flag.replace("_", "-"))
    if args.real_node:
        cmd.append("--real-node")
        try:
            ensure_node_tools(nice=args.nice, progress=_stderr)
        except BuildError as exc:
            _stderr(f"error: {exc}")
            return 1
    logpath = state_dir / LOGFILE
    started = time.monotonic()
    with open(logpath, "ab") as logfh:
        sup = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logfh, stderr=subprocess.STDOUT, start_new_session=True)
    _stderr(f"starting local cluster (supervisor pid {sup.pid}, log {logpath}) ...")
    deadline = started + args.timeout + 30
    while True:
        state = read_state(state_dir) or {}
        status = state.get("status")
        if status == "ready":
            break
        rc = sup.poll()
        if status == "failed" or rc is not None or time.monotonic() > deadline:
            why = state.get("error") or (f"supervisor exited with code {rc}" if rc is not None else "timed out")
            if rc is None:
                sup.send_signal(signal.SIGTERM)
                try:
                    sup.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    sup.kill()
            _stderr(f"error: local cluster failed to start: {why}")
            _stderr(f"--- last lines of {logpath}:\n" + "\n".join(logpath.read_text(errors="replace").splitlines()[-30:]))
            return 1
        time.sleep(0.2)
    kubeconfig = state["kubeconfig"]
    _stderr(f"local cluster is up at {state['server']} (cluster start {state.get('start_seconds', 0):.1f}s, total {time.monotonic() - started:.1f}s)")
    _stderr(f"kubeconfig: {kubeconfig}")
    if state.get("crd_names"):
        _stderr(f"CRDs established: {', '.join(state['crd_names'])}")
    for proc in state.get("processes", []):
        if proc["kind"] == "with":
            _stderr(f"supervising {proc['name']} (pid {proc['pid']}, log {proc['log']}): {proc['command']}")
    _stderr(f"stop it with: python -m kaito_localcluster down --state-dir {state_dir}")
    print(f"export KUBECONFIG={kubeconfig}")
    return 0


def cmd_supervise(args: argparse.Namespace) -> int:
    """Internal: run the supervisor in the foreground."""
    return supervise(
        args.state_dir,
        crds=args.crd,
        with_commands=args.with_commands,
        controller_manager=not args.no_controller_manager,
        scheduler=not args.no_scheduler,
        kwok=not args.no_kwok,
        start_timeout=args.timeout,
        real_node=args.real_node,
    )


def _down_cluster_dir(directory: Path, keep_files: bool) -> int:
    """Stop a cluster kept by LocalCluster(persist=True) from its cluster.json."""
    try:
        state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        _stderr(f"error: {directory / STATE_FILE}: {exc}")
        return 1
    killed = kill_recorded(state.get("processes", []))
    _stderr(f"stopped: {', '.join(killed) if killed else 'nothing was running'}")
    if (directory / "node" / HOST_RECORD).exists():
        undone = cleanup_node(directory / "node")
        _stderr(f"cleaned up the real node: {', '.join(undone) or 'nothing left'}")
    if not keep_files:
        shutil.rmtree(directory, ignore_errors=True)
        _stderr(f"removed {directory}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the detached cluster (or a kept test cluster via --dir)."""
    if args.dir:
        return _down_cluster_dir(Path(args.dir), args.keep_files)
    state_dir: Path = args.state_dir
    state = read_state(state_dir)
    pid = _supervisor_alive(state_dir)
    if pid is None and state is None:
        _stderr(f"no local cluster state in {state_dir}; nothing to stop")
        return 0
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and process_matches(pid, "kaito_localcluster"):
            time.sleep(0.2)
        if process_matches(pid, "kaito_localcluster"):
            _stderr(f"supervisor {pid} did not exit within {args.timeout:.0f}s; killing it")
            os.killpg(pid, signal.SIGKILL)
    # Whatever the supervisor did not stop (crashed supervisor, SIGKILL): stop from the record.
    state = read_state(state_dir) or {}
    leftovers = kill_recorded(state.get("processes", []))
    if leftovers:
        _stderr(f"killed leftover processes: {', '.join(leftovers)}")
    node_dir = state_dir / CLUSTER_SUBDIR / "node"
    if (node_dir / HOST_RECORD).exists():
        # The supervisor died before undoing the real node's host changes.
        undone = cleanup_node(node_dir)
        _stderr(f"cleaned up the real node: {', '.join(undone) or 'nothing left'}")
    if not args.keep_files:
        shutil.rmtree(state_dir / CLUSTER_SUBDIR, ignore_errors=True)
    for name in ("state.json", PIDFILE):
        (state_dir / name).unlink(missing_ok=True)
    _stderr(f"local cluster stopped{' (supervisor pid %d)' % pid if pid else ''}")
    return 0


def _probe(state: dict[str, Any]) -> str:
    cluster_dir = Path(state["cluster_dir"])
    pki = cluster_dir / "pki"
    host, port_text = state["server"].removeprefix("https://").rsplit(":", 1)
    port = int(port_text)
    try:
        api = KubeApi(host, port, pki / "ca.crt", pki / "admin.crt", pki / "admin.key", timeout=5)
        return str(api.request("GET", "/readyz"))
    except Exception as exc:  # noqa: BLE001 - report any failure
        return f"unreachable ({exc})"


def cmd_status(args: argparse.Namespace) -> int:
    """Report the detached cluster."""
    state_dir: Path = args.state_dir
    pid = _supervisor_alive(state_dir)
    state = read_state(state_dir)
    if pid is None or state is None:
        if args.json:
            print(json.dumps({"running": False, "state_dir": str(state_dir), "last_state": state}, indent=2))
        else:
            _stderr(f"no local cluster running (state dir {state_dir})")
            if state:
                _stderr(f"last recorded status: {state.get('status')} {state.get('error', '')}".rstrip())
        return EXIT_NOT_RUNNING
    for proc in state.get("processes", []):
        proc["alive"] = process_matches(int(proc["pid"]), str(proc.get("argv0", "")))
    readyz = _probe(state) if state.get("server") else "not started"
    healthy = state.get("status") == "ready" and readyz == "ok" and all(
        p["alive"] for p in state.get("processes", []) if p["kind"] == "core"
    )
    if args.json:
        print(json.dumps({"running": True, "healthy": healthy, "readyz": readyz, **state}, indent=2))
        return 0 if healthy else 1
    print(f"status:      {state.get('status')} ({'healthy' if healthy else 'UNHEALTHY'})")
    print(f"supervisor:  pid {pid}, log {state_dir / LOGFILE}")
    print(f"server:      {state.get('server')}  /readyz: {readyz}")
    print(f"kubeconfig:  {state.get('kubeconfig')}")
    print(f"started:     {state.get('started_at')} (start took {state.get('start_seconds') or 0:.1f}s)")
    for proc in state.get("processes", []):
        mark = "running" if proc["alive"] else "EXITED"
        print(f"  {proc['name']:<26} pid {proc['pid']:<8} {mark:<8} log {proc['log']}")
    print(f"export KUBECONFIG={state.get('kubeconfig')}")
    return 0 if healthy else 1


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the CLI."""
    parser = argparse.ArgumentParser(
        prog="python -m kaito_localcluster",
        description=(
            "Local Kubernetes control plane for KAITO tests: etcd + kube-apiserver + kube-controller-manager + "
            f"kube-scheduler + kwok, all on 127.0.0.1. Pinned versions: {Versions().cache_key}."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__} ({Versions().cache_key})")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{build,up,down,status}")

    def state_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--state-dir", type=Path, default=default_state_dir(),
            help="where the supervisor keeps pidfile, state.json, logs and the cluster dir (default: %(default)s)",
        )

    b = sub.add_parser("build", help="build/cache the binaries", description=(
        f"Build kube-apiserver, kube-controller-manager, kube-scheduler, etcd and kwok from Go modules into "
        f"{bin_dir()} (reused when present and `--version` matches). Needs Go >= 1.26 and the Go module proxy."))
    b.add_argument("--force", action="store_true", help="rebuild even if the cache is valid")
    b.add_argument("--nice", type=int, default=10, help="niceness for the go processes (default: %(default)s)")
    b.add_argument("--heartbeat", type=float, default=30.0, help="seconds between progress lines (default: %(default)s)")
    b.add_argument("--json", action="store_true", help="print the result as JSON")
    b.add_argument("--node", action="store_true",
                   help="also the real node's runtime: containerd + shim + ctr and crictl (go install), the static "
                        "pause binary (gcc), and check the Debian packages (`make node-deps`)")
    b.set_defaults(func=cmd_build)

    def cluster_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--crd", action="append", default=[], metavar="FILE",
                       help="install the CRDs in FILE and wait until Established (repeatable)")
        p.add_argument("--with", dest="with_commands", action="append", default=[], metavar="CMD",
                       help="extra long-running shell command to supervise; gets KUBECONFIG and KAITO_CLUSTER_DIR "
                            "in its env, logs to <cluster dir>/logs/with-N.log, stopped by `down` (repeatable)")
        p.add_argument("--timeout", type=float, default=120.0, help="start timeout in seconds (default: %(default)s)")
        p.add_argument("--no-controller-manager", action="store_true", help="do not start kube-controller-manager")
        p.add_argument("--no-scheduler", action="store_true", help="do not start kube-scheduler")
        p.add_argument("--no-kwok", action="store_true", help="do not start kwok")
        p.add_argument("--real-node", action=argparse.BooleanOptionalAction, default=False,
                       help="also run a real CPU node (containerd + kubelet + kube-proxy + CNI bridge 10.88.0.0/24; "
                            "the apiserver then listens on 10.88.0.1). One per machine; needs root and "
                            "`make node-deps`. `make cluster` turns it on (REAL_NODE=0 turns it off). "
                            "(default: off)")
        state_arg(p)

    u = sub.add_parser("up", help="start a detached cluster", description=(
        "Start the cluster under a detached supervisor and print `export KUBECONFIG=...` on stdout "
        "(so `eval \"$(python -m kaito_localcluster up)\"` works); progress goes to stderr."),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    cluster_flags(u)
    u.add_argument("--nice", type=int, default=10, help="niceness for a build if one is needed (default: %(default)s)")
    u.set_defaults(func=cmd_up)

    s = sub.add_parser("_supervise", description="internal: run the supervisor in the foreground")
    # Hide the internal subcommand from the --help listing.
    sub._choices_actions = [a for a in sub._choices_actions if a.dest != "_supervise"]
    cluster_flags(s)
    s.set_defaults(func=cmd_supervise)

    d = sub.add_parser("down", help="stop the detached cluster", description=(
        "Stop the supervisor, the cluster and every --with command; remove the cluster dir."))
    state_arg(d)
    d.add_argument("--keep-files", action="store_true", help="keep the cluster directory (logs, etcd data)")
    d.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a clean stop (default: %(default)s)")
    d.add_argument("--dir", help="instead: stop a cluster kept by KAITO_TEST_KEEP_CLUSTER=1 (its cluster dir)")
    d.set_defaults(func=cmd_down)

    st = sub.add_parser("status", help="report the detached cluster", description=(
        f"Exit code 0 = running and healthy, 1 = running but unhealthy, {EXIT_NOT_RUNNING} = not running."))
    state_arg(st)
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    rc: int = args.func(args)
    return rc


__all__ = ["main", "build_parser", "cache_root"]
