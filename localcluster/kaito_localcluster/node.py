"""A real node joined to the local control plane: containerd + kubelet + kube-proxy + CNI bridge.

One real node per machine (the kubelet and CNI use a few fixed host paths whatever their roots
are, and the bridge is machine-wide): :class:`HostLease` holds ``/run/lock/kaito-real-node.lock``
and records, before anything changes, what the host looked like (sysctls, which fixed paths
existed) in ``<node dir>/host.json``.  :func:`cleanup_node` undoes everything from that record —
pods, shims, mounts, cgroups, nftables tables, conntrack entries, the bridge, the fixed paths and
the sysctls — so it also works after the owning process was killed (``down`` calls it, and the
next real node start calls it for a dead previous owner).

Start order (see :class:`~kaito_localcluster.cluster.LocalCluster`): :meth:`HostLease.acquire`
and :func:`create_bridge` before the apiserver (it binds :data:`BRIDGE_IP`); after the control
plane is up, :class:`RealNode` starts containerd, imports the pause image, then the kubelet and
kube-proxy, and waits until the Node is Ready.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Any, Callable, Sequence

from .nodebuild import NodeTools
from .nodeconfig import (
    BRIDGE,
    BRIDGE_IP,
    HOST_PATHS,
    KUBE_PROXY_TABLES,
    NODE_POD_CIDR,
    KUBELET_ROOT,
    RUNTIME_DIR,
    SAVED_SYSCTLS,
)

log = logging.getLogger(__name__)

LOCK_PATH = Path("/run/lock/kaito-real-node.lock")
HOST_RECORD = "host.json"
#: cgroup directories the kubelet creates (cgroupfs driver, cgroupsPerQOS) in every hierarchy.
KUBELET_CGROUPS: tuple[str, ...] = ("kubepods", "kubepods.slice")
CGROUP_ROOT = Path("/sys/fs/cgroup")


class NodeError(RuntimeError):
    """The real node could not be started or cleaned up."""


def _run(args: Sequence[str], *, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise NodeError(f"`{' '.join(args)}` failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def read_sysctl(name: str) -> str | None:
    """The value of sysctl ``name`` (``None`` if it does not exist)."""
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return None


def write_sysctl(name: str, value: str) -> None:
    """Set sysctl ``name``."""
    Path("/proc/sys", *name.split(".")).write_text(value + "\n")


# ---------------------------------------------------------------------- the host lease
class HostLease:
    """The machine-wide real-node lock plus the record of the host state before the node."""

    def __init__(self, node_dir: Path, lock_path: Path = LOCK_PATH) -> None:
        self.node_dir = node_dir
        self.lock_path = lock_path
        self._fh: IO[str] | None = None

    @property
    def record_path(self) -> Path:
        """``<node dir>/host.json``."""
        return self.node_dir / HOST_RECORD

    def acquire(self, wait: float = 0.0, progress: Callable[[str], None] | None = None) -> None:
        """Take the lock (waiting up to ``wait`` seconds), clean up after a dead previous owner and
        record the host state.  Raises :class:`NodeError` naming the owner when it is held."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.lock_path, "a+")
        deadline = time.monotonic() + wait
        said = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                fh.seek(0)
                owner = fh.read().strip() or "?"
                if time.monotonic() >= deadline:
                    fh.close()
                    raise NodeError(
                        f"another real node is running on this machine (owner: {owner}); only one can run "
                        f"per machine. Stop it (`python -m kaito_localcluster down` in its checkout) or start "
                        f"this cluster without the real node (--no-real-node, REAL_NODE=0)"
                    ) from None
                if not said and progress:
                    progress(f"waiting for the real node held by {owner} ...")
                    said = True
                time.sleep(2)
        fh.seek(0)
        previous = fh.read().strip()
        if previous:
            prev_dir = Path(json.loads(previous).get("node_dir", ""))
            if (prev_dir / HOST_RECORD).exists():
                log.warning("cleaning up after a real node whose owner died: %s", prev_dir)
                cleanup_node(prev_dir)
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "node_dir": str(self.node_dir)}) + "\n")
        fh.flush()
        self._fh = fh
        self.node_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "sysctls": {name: read_sysctl(name) for name in SAVED_SYSCTLS},
            "existing_paths": [p for p in HOST_PATHS if os.path.lexists(p)],
            "node_dir": str(self.node_dir),
        }
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.record_path)

    def release(self) -> None:
        """Clear the owner and drop the lock (after :func:`cleanup_node`)."""
        if self._fh is None:
            return
        with contextlib.suppress(OSError):
            self._fh.seek(0)
            self._fh.truncate()
            self._fh.flush()
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()
        self._fh = None


def create_bridge(ip: str = "/usr/sbin/ip") -> None:
    """Create the node bridge with the host address :data:`BRIDGE_IP` (idempotent)."""
    if not Path(f"/sys/class/net/{BRIDGE}").exists():
        _run([ip, "link", "add", BRIDGE, "type", "bridge"])
    addrs = _run([ip, "-4", "-o", "addr", "show", "dev", BRIDGE]).stdout
    if f" {BRIDGE_IP}/" not in addrs:
        _run([ip, "addr", "add", f"{BRIDGE_IP}/{NODE_POD_CIDR.split('/')[1]}", "dev", BRIDGE])
    _run([ip, "link", "set", BRIDGE, "up"])


# ---------------------------------------------------------------------- cleanup
def _mounts_under(prefix: Path) -> list[str]:
    """Mount points at or below ``prefix``, deepest first (from /proc/self/mountinfo)."""
    found: list[str] = []
    base = str(prefix).rstrip("/")
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            point = line.split()[4].replace("\\040", " ")
            if point == base or point.startswith(base + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def _unmount_all(prefixes: Sequence[Path]) -> None:
    for prefix in prefixes:
        for _ in range(3):
            points = _mounts_under(prefix)
            if not points:
                break
            for point in points:
                _run(["umount", "-l", point], check=False)


def _processes_with(needle: str) -> list[int]:
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                pids.append(int(entry.name))
    return [p for p in pids if p != os.getpid()]


def _kill_processes_with(needle: str) -> None:
    """SIGKILL every process whose command line mentions ``needle`` (our own socket/dir paths)."""
    for pid in _processes_with(needle):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _remove_cgroups() -> None:
    """Remove the kubelet's pod cgroups (deepest first) from every hierarchy."""
    if not CGROUP_ROOT.is_dir():
        return
    hierarchies = [CGROUP_ROOT] + [p for p in CGROUP_ROOT.iterdir() if p.is_dir() and not p.is_symlink()]
    for hierarchy in hierarchies:
        for name in KUBELET_CGROUPS:
            top = hierarchy / name
            if not top.is_dir():
                continue
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            for directory in [*dirs, top]:
                for _ in range(20):
                    try:
                        directory.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        # Tasks still exiting: kill what is left in it, then retry.
                        with contextlib.suppress(OSError):
                            for pid in (directory / "cgroup.procs").read_text().split():
                                with contextlib.suppress(ProcessLookupError):
                                    os.kill(int(pid), signal.SIGKILL)
                        time.sleep(0.1)


def cleanup_node(node_dir: Path) -> list[str]:
    """Undo everything a real node did to the host, from ``<node_dir>/host.json``.

    Returns human-readable lines of what was removed.  Safe to call twice.
    """
    record_path = node_dir / HOST_RECORD
    try:
        record: dict[str, Any] = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        record = {"sysctls": {}, "existing_paths": list(HOST_PATHS)}
    done: list[str] = []
    # Everything we started names the node dir or the runtime dir (containerd, shims' -address).
    _kill_processes_with(str(node_dir))
    _kill_processes_with(RUNTIME_DIR + "/")
    _remove_cgroups()
    _unmount_all([node_dir, *(Path(p) for p in (KUBELET_ROOT, "/var/lib/kubelet", "/run/containerd", "/var/run/netns", "/run/netns"))])
    nft = shutil.which("nft") or "/usr/sbin/nft"
    for family, table in KUBE_PROXY_TABLES:
        if _run([nft, "delete", "table", family, table], check=False).returncode == 0:
            done.append(f"nft table {family} {table}")
    conntrack = shutil.which("conntrack") or "/usr/sbin/conntrack"
    if os.access(conntrack, os.X_OK):
        for flag in ("-s", "-d"):
            _run([conntrack, "-D", flag, NODE_POD_CIDR], check=False)
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        # veths of pods that were not removed through CNI go with their network namespaces;
        # any left on the bridge are deleted explicitly.
        for port in Path(f"/sys/class/net/{BRIDGE}/brif").iterdir() if Path(f"/sys/class/net/{BRIDGE}/brif").exists() else []:
            _run(["ip", "link", "delete", port.name], check=False)
        _run(["ip", "link", "delete", BRIDGE], check=False)
        done.append(f"bridge {BRIDGE}")
    existing = set(record.get("existing_paths", HOST_PATHS))
    for path in HOST_PATHS:
        if path not in existing and os.path.lexists(path):
            _unmount_all([Path(path)])
            shutil.rmtree(path, ignore_errors=True)
            with contextlib.suppress(OSError):
                os.unlink(path)
            done.append(path)
    for name, value in (record.get("sysctls") or {}).items():
        if value is not None and read_sysctl(name) != value:
            with contextlib.suppress(OSError):
                write_sysctl(name, value)
                done.append(f"sysctl {name}={value}")
    _unmount_all([node_dir])
    record_path.unlink(missing_ok=True)
    return done


# ---------------------------------------------------------------------- the node itself
SpawnFn = Callable[[str, Sequence[str], "dict[str, str] | None"], Any]


class RealNode:
    """containerd, kubelet and kube-proxy of the local real node, under ``node_dir``.

    ``spawn(name, args, env)`` starts a supervised process (the cluster's own spawner, so the
    processes share its lifecycle and logs).
    """

    def __init__(self, node_dir: Path, tools: NodeTools, kubelet: Path, kube_proxy: Path, spawn: SpawnFn) -> None:
        self.dir = node_dir
        self.tools = tools
        self.kubelet = kubelet
        self.kube_proxy = kube_proxy
        self._spawn = spawn
        self.ports: dict[str, int] = {}

    @property
    def socket(self) -> Path:
        """containerd's socket (short fixed path: unix socket paths are limited to 104 bytes)."""
        return Path(RUNTIME_DIR) / "containerd.sock"

    @property
    def certs_dir(self) -> Path:
        """containerd's registry host configuration (``certs.d``)."""
        return self.dir / "containerd" / "certs.d"

    def write_configs(self, *, ca_file: Path, kubelet_kubeconfig: Path, proxy_kubeconfig: Path,
                      ports: dict[str, int]) -> None:
        """Write every config file of the node into its directory."""
        from . import nodeconfig as cfg

        self.ports = dict(ports)
        d = self.dir
        for sub in ("containerd/root", "containerd/state", "containerd/certs.d", "cni/net.d", "cni/ipam"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        Path(KUBELET_ROOT).mkdir(parents=True, exist_ok=True)
        (d / "containerd" / "config.toml").write_text(cfg.containerd_config(
            root=d / "containerd" / "root", state=d / "containerd" / "state", socket=self.socket,
            cni_bin_dir=self.tools.cni_bin_dir, cni_conf_dir=d / "cni" / "net.d", certs_dir=self.certs_dir,
            runc=self.tools.runc,
        ), encoding="utf-8")
        (d / "cni" / "net.d" / "10-kaito-node.conflist").write_text(cfg.cni_conflist_text(d / "cni" / "ipam"), encoding="utf-8")
        (d / "kubelet.yaml").write_text(cfg.to_yaml(cfg.kubelet_config(
            port=ports["kubelet"], healthz_port=ports["kubelet-healthz"], client_ca=ca_file, runtime_socket=self.socket,
        )), encoding="utf-8")
        (d / "kube-proxy.yaml").write_text(cfg.to_yaml(cfg.kube_proxy_config(
            kubeconfig=proxy_kubeconfig, healthz_port=ports["kube-proxy-healthz"], metrics_port=ports["kube-proxy-metrics"],
        )), encoding="utf-8")
        self._kubelet_kubeconfig = kubelet_kubeconfig

    def trust_registry(self, registry: str, ca_file: Path) -> None:
        """Let containerd pull from ``https://<registry>`` with the local CA."""
        from .nodeconfig import registry_hosts_toml

        host_dir = self.certs_dir / registry
        host_dir.mkdir(parents=True, exist_ok=True)
        (host_dir / "hosts.toml").write_text(registry_hosts_toml(registry, ca_file), encoding="utf-8")

    def ctr(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run ``ctr -n k8s.io`` against this node's containerd."""
        return _run([str(self.tools.ctr), f"--address={self.socket}", "--namespace=k8s.io", *args], timeout=timeout)

    def start_containerd(self, deadline: float) -> None:
        """Start containerd and wait until it answers."""
        env = dict(os.environ)
        # containerd finds containerd-shim-runc-v2 on PATH.
        env["PATH"] = os.pathsep.join([str(self.tools.containerd.parent), env.get("PATH", "")])
        Path(RUNTIME_DIR).mkdir(parents=True, exist_ok=True)
        proc = self._spawn("containerd", [str(self.tools.containerd), f"--config={self.dir / 'containerd' / 'config.toml'}",
                                          "--log-level=warn"], env)
        while True:
            if not proc.alive():
                raise NodeError("containerd exited")
            if self.socket.exists() and _run([str(self.tools.ctr), f"--address={self.socket}", "version"],
                                             check=False, timeout=10).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise NodeError(f"containerd did not answer on {self.socket}")
            time.sleep(0.2)

    def import_pause(self) -> None:
        """Import the static pause binary as containerd's sandbox image."""
        from .nodeconfig import PAUSE_IMAGE
        from .oci import ImageConfig, single_file_image, write_archive

        layout = single_file_image(self.dir / "pause-image", PAUSE_IMAGE, "pause", self.tools.pause.read_bytes(),
                                   ImageConfig(entrypoint=["/pause"], user="65535:65535"))
        archive = write_archive(layout.root, self.dir / "pause-image.tar")
        self.ctr("images", "import", str(archive))

    def start_kubelet(self) -> None:
        """Start the kubelet."""
        from .nodeconfig import kubelet_args

        self._spawn("kubelet", kubelet_args(self.kubelet, config=self.dir / "kubelet.yaml",
                                            kubeconfig=self._kubelet_kubeconfig, root_dir=Path(KUBELET_ROOT)), None)

    def start_kube_proxy(self) -> None:
        """Start kube-proxy (nftables mode)."""
        self._spawn("kube-proxy", [str(self.kube_proxy), f"--config={self.dir / 'kube-proxy.yaml'}", "--v=1"], None)

    def remove_pods(self) -> None:
        """Stop and remove every pod sandbox through CRI (runs CNI DEL), while containerd still runs."""
        proc = _run([str(self.tools.crictl), f"--runtime-endpoint=unix://{self.socket}", "--timeout=30s", "rmp", "-fa"],
                    check=False, timeout=120)
        if proc.returncode != 0:
            log.warning("crictl rmp -fa failed (cleanup continues): %s", proc.stderr.strip())
