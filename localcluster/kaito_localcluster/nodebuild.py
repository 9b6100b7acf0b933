"""Build and locate what the real node needs besides kubelet and kube-proxy.

* **containerd v2** (``containerd``, ``containerd-shim-runc-v2``, ``ctr``): ``go install
  github.com/containerd/containerd/v2/cmd/...@<ver>`` (its go.mod has no replace directives)
  into ``<cache>/containerd-<ver>/bin``.  Debian 12's containerd 1.6 also runs with kubelet 1.37,
  but only through a fallback (it lacks the CRI RuntimeConfig RPC) slated for removal in 1.38.
* **crictl** (``go install sigs.k8s.io/cri-tools/cmd/crictl@<ver>``): the teardown removes every
  pod sandbox through CRI, so CNI DEL runs and no veth or IP allocation is left.
* **pause**: the pod sandbox binary, ``gcc -static`` from ``csrc/pause.c`` into
  ``<cache>/pause-<source hash>/pause`` (``registry.k8s.io/pause`` cannot be pulled here).
* **host packages** from Debian (``make node-deps`` installs them with apt-get): ``runc``,
  ``containernetworking-plugins`` (bridge, host-local, loopback, portmap), ``nftables``
  (kube-proxy's nftables mode runs ``nft``), ``conntrack`` (teardown flushes the pod CIDR's
  entries), ``docker-registry`` + ``apache2-utils`` (the local registry and its htpasswd) and
  ``mmdebstrap`` (image root filesystems).

Every cache entry is written to a scratch directory and moved in with an atomic rename, under a
lock file, like :mod:`kaito_localcluster.build`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path

from .build import BuildError, ProgressFn, _default_progress, _file_lock, _fmt_elapsed, _GoRunner, cache_root, probe_version
from .versions import CONTAINERD_VERSION, CRICTL_VERSION

#: The containerd commands built from one ``go install``.
CONTAINERD_COMMANDS: tuple[str, ...] = ("containerd", "containerd-shim-runc-v2", "ctr")
#: CNI plugins the node's network configuration uses.
CNI_PLUGINS: tuple[str, ...] = ("bridge", "host-local", "loopback", "portmap")
#: Debian packages that provide the host tools, and one file each that proves it is installed.
DEBIAN_PACKAGES: dict[str, str] = {
    "runc": "/usr/sbin/runc",
    "containernetworking-plugins": "/usr/lib/cni/bridge",
    "nftables": "/usr/sbin/nft",
    "conntrack": "/usr/sbin/conntrack",
    "iproute2": "/usr/sbin/ip",
    "docker-registry": "/usr/bin/docker-registry",
    "apache2-utils": "/usr/bin/htpasswd",
    "mmdebstrap": "/usr/bin/mmdebstrap",
}
CNI_BIN_DIR = Path("/usr/lib/cni")


@dataclasses.dataclass(frozen=True)
class NodeTools:
    """Resolved paths of the real node's runtime pieces."""

    containerd: Path
    containerd_shim: Path
    ctr: Path
    crictl: Path
    pause: Path
    runc: Path
    cni_bin_dir: Path
    nft: Path
    conntrack: Path
    ip: Path


def missing_debian_packages() -> list[str]:
    """The Debian packages of :data:`DEBIAN_PACKAGES` that are not installed."""
    missing = [pkg for pkg, path in DEBIAN_PACKAGES.items() if not os.access(path, os.X_OK)]
    cni_ok = all(os.access(CNI_BIN_DIR / plugin, os.X_OK) for plugin in CNI_PLUGINS)
    if not cni_ok and "containernetworking-plugins" not in missing:
        missing.append("containernetworking-plugins")
    return missing


@dataclasses.dataclass(frozen=True)
class GoTool:
    """Commands installed with one ``go install <module>/<cmd>@<version>`` into one cache entry."""

    name: str
    version: str
    module: str
    commands: tuple[str, ...]
    version_var: str
    """Package variable that receives the version through ``-ldflags -X``."""

    @property
    def bin_dir(self) -> Path:
        """``<cache>/<name>-<version>/bin``."""
        return cache_root() / f"{self.name}-{self.version}" / "bin"

    def ok(self, directory: Path | None = None) -> bool:
        """Whether every command is present and the first one reports the pinned version."""
        directory = directory or self.bin_dir
        if not all(os.access(directory / c, os.X_OK) for c in self.commands):
            return False
        return self.version.lstrip("v") in (probe_version(directory / self.commands[0]) or "")


CONTAINERD = GoTool(
    "containerd", CONTAINERD_VERSION, "github.com/containerd/containerd/v2", CONTAINERD_COMMANDS,
    "github.com/containerd/containerd/v2/version.Version",
)
#: crictl: the CRI client the teardown uses to stop and remove every pod sandbox (CNI DEL included).
CRICTL = GoTool("crictl", CRICTL_VERSION, "sigs.k8s.io/cri-tools", ("crictl",), "sigs.k8s.io/cri-tools/pkg/version.Version")


def ensure_go_tool(tool: GoTool, *, nice: int = 10, heartbeat: float = 30.0, progress: ProgressFn | None = None) -> Path:
    """Return ``tool.bin_dir``, building the commands once with ``go install`` if missing."""
    say = progress or _default_progress
    target = tool.bin_dir
    if tool.ok():
        return target
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f"{tool.name}-{tool.version}.lock", say):
        if tool.ok():
            return target
        go = shutil.which("go")
        if go is None:
            raise BuildError(f"{tool.name} {tool.version} is not in {target} and there is no `go` on PATH: install Go >= 1.26")
        runner = _GoRunner(go, say, nice, heartbeat)
        scratch = Path(tempfile.mkdtemp(prefix=f".build-{tool.name}-{tool.version}-", dir=root))
        started = time.monotonic()
        try:
            with tempfile.TemporaryDirectory(prefix=f"{tool.name}-install-") as cwd:
                runner.run(
                    f"{tool.name} {tool.version}",
                    ["install", "-v", "-trimpath", "-ldflags", f"-s -w -X '{tool.version_var}={tool.version}'",
                     *[f"{tool.module}/cmd/{c}@{tool.version}" for c in tool.commands]],
                    Path(cwd),
                    {"GOBIN": str(scratch)},
                )
            if not tool.ok(scratch):
                raise BuildError(f"built {tool.name} in {scratch} but `{tool.commands[0]} --version` does not report {tool.version}")
            target.mkdir(parents=True, exist_ok=True)
            for command in tool.commands:
                os.replace(scratch / command, target / command)
            say(f"{tool.name} {tool.version} built in {_fmt_elapsed(time.monotonic() - started)}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def pause_source() -> bytes:
    """The C source of the pause binary (package data)."""
    return resources.files("kaito_localcluster").joinpath("csrc", "pause.c").read_bytes()


def ensure_pause(progress: ProgressFn | None = None) -> Path:
    """Return the static pause binary, compiling it once per source hash with ``gcc -static``."""
    say = progress or _default_progress
    source = pause_source()
    entry = cache_root() / f"pause-{hashlib.sha256(source).hexdigest()[:12]}"
    target = entry / "pause"
    if os.access(target, os.X_OK):
        return target
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BuildError("the pause binary needs gcc with static glibc: `apt-get install gcc libc6-dev`")
    entry.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pause-", dir=entry) as tmp:
        src = Path(tmp) / "pause.c"
        src.write_bytes(source)
        out = Path(tmp) / "pause"
        proc = subprocess.run([gcc, "-static", "-Os", "-s", "-o", str(out), str(src)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BuildError(f"gcc -static pause.c failed (need libc6-dev): {proc.stderr.strip()}")
        os.replace(out, target)
    say(f"built the static pause binary {target}")
    return target


def ensure_node_tools(*, nice: int = 10, heartbeat: float = 30.0, progress: ProgressFn | None = None) -> NodeTools:
    """Everything the real node runs besides kubelet/kube-proxy; builds what is cacheable.

    Raises :class:`BuildError` naming ``make node-deps`` when Debian packages are missing.
    """
    missing = missing_debian_packages()
    if missing:
        raise BuildError(
            f"the real node needs the Debian packages {', '.join(missing)}: run `make node-deps` "
            f"(apt-get install {' '.join(DEBIAN_PACKAGES)}) or start the cluster without the real node"
        )
    containerd = ensure_go_tool(CONTAINERD, nice=nice, heartbeat=heartbeat, progress=progress)
    crictl = ensure_go_tool(CRICTL, nice=nice, heartbeat=heartbeat, progress=progress)
    return NodeTools(
        crictl=crictl / "crictl",
        containerd=containerd / "containerd",
        containerd_shim=containerd / "containerd-shim-runc-v2",
        ctr=containerd / "ctr",
        pause=ensure_pause(progress),
        runc=Path(DEBIAN_PACKAGES["runc"]),
        cni_bin_dir=CNI_BIN_DIR,
        nft=Path(DEBIAN_PACKAGES["nftables"]),
        conntrack=Path(DEBIAN_PACKAGES["conntrack"]),
        ip=Path(DEBIAN_PACKAGES["iproute2"]),
    )
