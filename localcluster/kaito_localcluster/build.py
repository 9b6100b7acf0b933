"""Build and cache the local control-plane binaries from Go modules.

Binaries live in ``<cache>/k8s-<ver>-kwok-<ver>-etcd-<ver>/bin/`` where ``<cache>``
is ``$KAITO_CACHE_DIR`` or ``~/.cache/kaito``.  A cache entry is trusted only when
the binary runs ``--version`` and reports the pinned version.

* kube-apiserver, kube-controller-manager and kube-scheduler come from a generated
  wrapper Go module that requires ``k8s.io/kubernetes`` and replaces its 33 staging
  modules with the published ``v0.<minor>.<patch>`` tags (templates in
  ``gotemplates/k8s``), built with ``CGO_ENABLED=0 -trimpath`` and the same version
  ldflags as ``hack/lib/version.sh``.
* etcd comes from a second wrapper module requiring ``go.etcd.io/etcd/server/v3``.
* kwok is ``go install sigs.k8s.io/kwok/cmd/kwok@<ver>`` (its go.mod has no replaces).

Every build writes into a scratch directory inside the cache root and each finished
binary is moved into place with an atomic ``os.replace``; a killed build therefore
never leaves a truncated binary in the cache, and the next run builds whatever is
still missing.  A per-version lock file serialises concurrent builds.

``KUBEBUILDER_ASSETS`` (the envtest convention) may point at a directory with
``kube-apiserver`` and ``etcd``; those are used as they are and only the remaining
components are taken from the cache or built.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as _dt
import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import string
import subprocess
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .versions import ETCD_VERSION, KUBERNETES_VERSION, KWOK_VERSION, staging_version

log = logging.getLogger(__name__)

#: All components, in start order.  kubelet and kube-proxy run only on the optional real node
#: (:mod:`kaito_localcluster.node`); they share the Kubernetes build and its cache entry.
COMPONENTS: tuple[str, ...] = (
    "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubelet", "kube-proxy",
)
#: Components without which no cluster can start.
REQUIRED: tuple[str, ...] = ("etcd", "kube-apiserver")
#: Components built together from the Kubernetes wrapper module (one ``go build``, so a fresh
#: machine compiles the shared packages once; an existing cache entry keeps its binaries and
#: only the missing commands are built, because every binary is verified on its own).
K8S_COMPONENTS: tuple[str, ...] = (
    "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy",
)

ProgressFn = Callable[[str], None]


class BuildError(RuntimeError):
    """A binary could not be found, built or verified."""


@dataclasses.dataclass(frozen=True)
class Versions:
    """The component versions that make up one cache entry."""

    kubernetes: str = KUBERNETES_VERSION
    kwok: str = KWOK_VERSION
    etcd: str = ETCD_VERSION

    @property
    def cache_key(self) -> str:
        """Directory name of the cache entry, e.g. ``k8s-v1.37.1-kwok-v0.8.0-etcd-v3.6.16``."""
        return f"k8s-{self.kubernetes}-kwok-{self.kwok}-etcd-{self.etcd}"

    def expected(self, component: str) -> str:
        """Return the text that ``<component> --version`` must contain."""
        if component in K8S_COMPONENTS:
            return f"Kubernetes {self.kubernetes}"
        if component == "etcd":
            return f"etcd Version: {self.etcd.lstrip('v')}"
        if component == "kwok":
            return self.kwok.lstrip("v")
        raise ValueError(f"unknown component {component!r}")


@dataclasses.dataclass(frozen=True)
class BinarySet:
    """Resolved paths of the control-plane binaries.

    ``kube_controller_manager``, ``kube_scheduler`` and ``kwok`` may be ``None`` only
    when ``KUBEBUILDER_ASSETS`` supplied etcd/kube-apiserver and Go was not
    available to build the rest.
    """

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path | None
    kube_scheduler: Path | None
    kwok: Path | None
    versions: dict[str, str]
    source: str
    kubelet: Path | None = None
    kube_proxy: Path | None = None

    def get(self, component: str) -> Path | None:
        """Return the path for a component name such as ``kube-apiserver``."""
        value: Path | None = getattr(self, component.replace("-", "_"))
        return value

    def as_dict(self) -> dict[str, object]:
        """A JSON-friendly description (paths and ``--version`` lines)."""
        return {
            "source": self.source,
            "binaries": {c: (str(p) if (p := self.get(c)) else None) for c in COMPONENTS},
            "versions": dict(self.versions),
        }


def cache_root() -> Path:
    """Return the root of the kaito cache (``$KAITO_CACHE_DIR`` or ``~/.cache/kaito``)."""
    env = os.environ.get("KAITO_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "kaito"


def bin_dir(versions: Versions | None = None) -> Path:
    """Return the cache ``bin/`` directory for a version set."""
    return cache_root() / (versions or Versions()).cache_key / "bin"


def probe_version(path: Path, timeout: float = 30.0) -> str | None:
    """Run ``path --version`` and return its output, or ``None`` if it fails."""
    try:
        proc = subprocess.run(
            [str(path), "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("%s --version failed: %s", path, exc)
        return None
    if proc.returncode != 0:
        log.debug("%s --version exited %s: %s", path, proc.returncode, proc.stderr.strip())
        return None
    return (proc.stdout + proc.stderr).strip()


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else ""


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _fmt_elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


@contextlib.contextmanager
def _file_lock(path: Path, progress: ProgressFn) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another build holding {path} ...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _default_progress(message: str) -> None:
    log.info("%s", message)


class _GoRunner:
    """Runs ``go`` commands with heartbeat progress and a bounded output tail."""

    def __init__(self, go: str, progress: ProgressFn, nice: int, heartbeat: float) -> None:
        self.go = go
        self.progress = progress
        self.nice = nice
        self.heartbeat = heartbeat

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["CGO_ENABLED"] = "0"
        env["GOWORK"] = "off"
        env.setdefault("GOFLAGS", "-buildvcs=false")
        if extra:
            env.update(extra)
        return env

    def run(self, step: str, args: Sequence[str], cwd: Path, extra_env: dict[str, str] | None = None) -> None:
        """Run ``go <args>`` in ``cwd``; raise :class:`BuildError` with the output tail on failure."""
        cmd = [self.go, *args]
        self.progress(f"[{step}] $ {shlex.join(cmd)}")
        started = time.monotonic()
        tail: collections.deque[str] = collections.deque(maxlen=60)
        packages = 0
        lock = threading.Lock()
        done = threading.Event()

        def preexec() -> None:  # runs in the child
            if self.nice:
                os.nice(self.nice)

        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=self.env(extra_env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=preexec,
        )

        def beat() -> None:
            while not done.wait(self.heartbeat):
                with lock:
                    count = packages
                    last = tail[-1] if tail else ""
                self.progress(
                    f"[{step}] still building: {count} packages compiled, "
                    f"{_fmt_elapsed(time.monotonic() - started)} elapsed (last: {last[:100]})"
                )

        ticker = threading.Thread(target=beat, name=f"go-heartbeat-{step}", daemon=True)
        ticker.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                with lock:
                    tail.append(line)
                    # `go build -v` prints one bare import path per compiled package.
                    if line and " " not in line and not line.startswith(("go:", "#")):
                        packages += 1
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            done.set()
            ticker.join(timeout=1)
        elapsed = _fmt_elapsed(time.monotonic() - started)
        if rc != 0:
            raise BuildError(
                f"[{step}] `{' '.join(cmd)}` failed with exit code {rc} after {elapsed} in {cwd}.\n"
                "Last output lines:\n" + "\n".join(tail)
            )
        self.progress(f"[{step}] done in {elapsed} ({packages} packages compiled)")


def _template_text(kind: str, name: str) -> str:
    return resources.files("kaito_localcluster").joinpath("gotemplates", kind, name).read_text(encoding="utf-8")


def render_wrapper_module(kind: str, workdir: Path, mapping: dict[str, str]) -> tuple[str, bool]:
    """Write the wrapper module ``kind`` (``k8s`` or ``etcd``) into ``workdir``.

    Returns the rendered ``go.mod`` text and whether ``go mod tidy`` must run
    (first use, template/version change, a new command in ``tools.go``, or no ``go.sum``
    yet).  ``go mod tidy`` rewrites ``go.mod``, so the rendered text plus ``tools.go`` is
    remembered in ``.kaito-template.mod``: adding a command (kubelet) re-runs ``tidy`` so
    ``go.sum`` covers its dependencies.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    gomod = string.Template(_template_text(kind, "go.mod.tmpl")).substitute(mapping)
    tools = _template_text(kind, "tools.go")
    (workdir / "tools.go").write_text(tools, encoding="utf-8")
    marker = workdir / _TEMPLATE_MARKER
    changed = (
        not marker.exists()
        or marker.read_text(encoding="utf-8") != _marker_text(gomod, tools)
        or not (workdir / "go.sum").exists()
    )
    if changed:
        (workdir / "go.mod").write_text(gomod, encoding="utf-8")
        (workdir / "go.sum").unlink(missing_ok=True)
        marker.unlink(missing_ok=True)
    return gomod, changed


_TEMPLATE_MARKER = ".kaito-template.mod"


def _marker_text(gomod: str, tools: str) -> str:
    return gomod + "\n// tools.go:\n" + tools


def kubernetes_ldflags(version: str, build_date: str | None = None) -> str:
    """The version ldflags of Kubernetes' ``hack/lib/version.sh``, plus ``-s -w``."""
    match = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)(.*)", version)
    if not match:
        raise ValueError(f"not a Kubernetes version tag: {version!r}")
    major, minor = match.group(1), match.group(2)
    date = build_date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X '{pkg}.gitVersion={version}'",
            f"-X '{pkg}.gitMajor={major}'",
            f"-X '{pkg}.gitMinor={minor}'",
            f"-X '{pkg}.gitTreeState=clean'",
            f"-X '{pkg}.buildDate={date}'",
        ]
    return " ".join(flags)


def _prepare_module(runner: _GoRunner, kind: str, workdir: Path, mapping: dict[str, str], step: str) -> None:
    gomod, changed = render_wrapper_module(kind, workdir, mapping)
    if changed:
        runner.run(f"{step}: go mod tidy", ["mod", "tidy"], workdir)
        (workdir / _TEMPLATE_MARKER).write_text(_marker_text(gomod, _template_text(kind, "tools.go")), encoding="utf-8")


def build_kubernetes(runner: _GoRunner, versions: Versions, out_dir: Path, components: Sequence[str]) -> None:
    """Build the requested Kubernetes commands into ``out_dir``."""
    workdir = cache_root() / "gowork" / f"k8s-{versions.kubernetes}"
    mapping = {"K8S_VERSION": versions.kubernetes, "STAGING_VERSION": staging_version(versions.kubernetes)}
    _prepare_module(runner, "k8s", workdir, mapping, "kubernetes")
    packages = [f"k8s.io/kubernetes/cmd/{c}" for c in components]
    runner.run(
        f"kubernetes {versions.kubernetes}: {', '.join(components)}",
        ["build", "-v", "-trimpath", "-ldflags", kubernetes_ldflags(versions.kubernetes), "-o", str(out_dir) + "/", *packages],
        workdir,
    )


def build_etcd(runner: _GoRunner, versions: Versions, out_dir: Path) -> None:
    """Build etcd into ``out_dir/etcd``."""
    workdir = cache_root() / "gowork" / f"etcd-{versions.etcd}"
    _prepare_module(runner, "etcd", workdir, {"ETCD_VERSION": versions.etcd}, "etcd")
    runner.run(
        f"etcd {versions.etcd}",
        [
            "build", "-v", "-trimpath",
            "-ldflags", f"-s -w -X 'go.etcd.io/etcd/api/v3/version.GitSHA=kaito-{versions.etcd}'",
            "-o", str(out_dir / "etcd"),
            "go.etcd.io/etcd/server/v3",
        ],
        workdir,
    )


def build_kwok(runner: _GoRunner, versions: Versions, out_dir: Path) -> None:
    """``go install`` kwok into ``out_dir``."""
    with tempfile.TemporaryDirectory(prefix="kwok-install-") as cwd:
        runner.run(
            f"kwok {versions.kwok}",
            [
                "install", "-v", "-trimpath",
                "-ldflags", f"-s -w -X 'sigs.k8s.io/kwok/pkg/consts.Version={versions.kwok.lstrip('v')}'",
                f"sigs.k8s.io/kwok/cmd/kwok@{versions.kwok}",
            ],
            Path(cwd),
            {"GOBIN": str(out_dir)},
        )


def _verify(path: Path, component: str, versions: Versions) -> str | None:
    out = probe_version(path)
    if out is None:
        return None
    if versions.expected(component) not in out:
        log.warning("%s reports %r, expected %r; ignoring it", path, _first_line(out), versions.expected(component))
        return None
    return _first_line(out)


def _from_assets(progress: ProgressFn) -> dict[str, tuple[Path, str]]:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets:
        return {}
    root = Path(assets).expanduser()
    if not (_is_executable(root / "kube-apiserver") and _is_executable(root / "etcd")):
        progress(f"KUBEBUILDER_ASSETS={assets} lacks kube-apiserver or etcd; ignoring it")
        return {}
    found: dict[str, tuple[Path, str]] = {}
    for component in COMPONENTS:
        path = root / component
        if _is_executable(path):
            out = probe_version(path)
            if out is None:
                raise BuildError(f"{path} (from KUBEBUILDER_ASSETS) does not run `--version`; fix or unset KUBEBUILDER_ASSETS")
            found[component] = (path, _first_line(out))
    progress(f"using {', '.join(sorted(found))} from KUBEBUILDER_ASSETS={assets}")
    return found


def ensure_binaries(
    versions: Versions | None = None,
    *,
    force: bool = False,
    allow_build: bool = True,
    nice: int = 10,
    heartbeat: float = 30.0,
    progress: ProgressFn | None = None,
) -> BinarySet:
    """Return usable binaries, building and caching whatever is missing.

    :param versions: the version set (defaults to :mod:`kaito_localcluster.versions`).
    :param force: rebuild into the cache even if valid binaries are present.
    :param allow_build: if ``False``, raise :class:`BuildError` instead of building.
    :param nice: niceness of the ``go`` processes (the machines are shared).
    :param heartbeat: seconds between "still building" progress lines.
    :param progress: callback for human-readable progress lines (default: ``logging`` INFO).
    """
    versions = versions or Versions()
    say = progress or _default_progress
    found: dict[str, tuple[Path, str]] = {} if force else _from_assets(say)
    source = "KUBEBUILDER_ASSETS" if found else "cache"
    target = bin_dir(versions)
    root = cache_root()

    with _file_lock(root / f"{versions.cache_key}.lock", say):
        for component in COMPONENTS:
            if component in found or force:
                continue
            path = target / component
            if path.exists():
                line = _verify(path, component, versions)
                if line:
                    found[component] = (path, line)
        missing = [c for c in COMPONENTS if c not in found]
        if missing:
            go = shutil.which("go")
            required_missing = [c for c in missing if c in REQUIRED or source != "KUBEBUILDER_ASSETS"]
            if not allow_build or go is None:
                why = "building is disabled" if not allow_build else "no `go` on PATH"
                if required_missing:
                    raise BuildError(
                        f"missing binaries {', '.join(missing)} in {target} and {why}. "
                        "Run `python -m kaito_localcluster build` on a machine with Go >= 1.26 and access to the "
                        "Go module proxy, or point KUBEBUILDER_ASSETS at a directory with kube-apiserver and etcd."
                    )
                log.warning(
                    "running without %s: not in KUBEBUILDER_ASSETS and %s; Deployments/Pods will not be "
                    "created, scheduled or run. Install Go >= 1.26 and run `python -m kaito_localcluster build`.",
                    ", ".join(missing), why,
                )
            else:
                _build_missing(go, versions, missing, target, root, nice, heartbeat, say)
                for component in missing:
                    line = _verify(target / component, component, versions)
                    if not line:
                        raise BuildError(f"built {target / component} but `--version` does not report {versions.expected(component)!r}")
                    found[component] = (target / component, line)
                source = "built" if source == "cache" else f"{source}+built"
        if any(str(p).startswith(str(target)) for p, _ in found.values()):
            _write_manifest(target.parent, versions, found)

    def path_of(c: str) -> Path | None:
        return found[c][0] if c in found else None

    return BinarySet(
        etcd=found["etcd"][0],
        kube_apiserver=found["kube-apiserver"][0],
        kube_controller_manager=path_of("kube-controller-manager"),
        kube_scheduler=path_of("kube-scheduler"),
        kwok=path_of("kwok"),
        kubelet=path_of("kubelet"),
        kube_proxy=path_of("kube-proxy"),
        versions={c: line for c, (_, line) in found.items()},
        source=source,
    )


def _build_missing(
    go: str,
    versions: Versions,
    missing: Sequence[str],
    target: Path,
    root: Path,
    nice: int,
    heartbeat: float,
    say: ProgressFn,
) -> None:
    runner = _GoRunner(go, say, nice, heartbeat)
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    say(f"building {', '.join(missing)} into {target} (this takes 10-25 minutes on 2 cores when the Go caches are cold)")
    scratch = Path(tempfile.mkdtemp(prefix=f".build-{versions.cache_key}-", dir=root))
    try:
        k8s = [c for c in K8S_COMPONENTS if c in missing]
        if k8s:
            build_kubernetes(runner, versions, scratch, k8s)
        if "etcd" in missing:
            build_etcd(runner, versions, scratch)
        if "kwok" in missing:
            build_kwok(runner, versions, scratch)
        target.mkdir(parents=True, exist_ok=True)
        for component in missing:
            built = scratch / component
            if not _verify(built, component, versions):
                raise BuildError(f"{built} was built but does not report {versions.expected(component)!r} from --version")
            os.replace(built, target / component)  # atomic: same filesystem
        say(f"build finished in {_fmt_elapsed(time.monotonic() - started)}: {', '.join(missing)}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_manifest(entry: Path, versions: Versions, found: dict[str, tuple[Path, str]]) -> None:
    manifest = {
        "versions": dataclasses.asdict(versions),
        "binaries": {c: {"path": str(p), "version": line} for c, (p, line) in found.items()},
        "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = entry / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, entry / "manifest.json")
