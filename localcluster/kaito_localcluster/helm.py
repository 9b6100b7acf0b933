"""Build and cache the real Helm CLI (v4) from Go modules, the way :mod:`.build` caches the
control plane.

``go install helm.sh/helm/v4/cmd/helm@<version>`` (helm's go.mod has no ``replace``
directives, so the published module builds as it is) with helm's own version ldflags, into
``<cache>/helm-<version>/bin/helm``. The entry is trusted only when ``helm version`` reports
the pinned version; a build goes to a scratch directory and the binary is moved into place
atomically, under the same per-entry file lock and ``go`` runner (nice, heartbeat progress,
output tail on failure) as the control-plane build. About 2 minutes on 2 cores with a warm Go
build cache (after the Kubernetes build), 5-8 minutes cold; then a 0.1 s check.

``python -m kaito_localcluster.helm`` prints the path (building it first when needed).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .build import BuildError, ProgressFn, _file_lock, _GoRunner, cache_root

log = logging.getLogger(__name__)

#: helm.sh/helm/v4 tag (the newest v4 served by the Go module proxy when pinned).
HELM_VERSION = "v4.3.1"


def helm_path(version: str = HELM_VERSION) -> Path:
    """Where the cached ``helm`` of ``version`` lives (it may not exist yet)."""
    return cache_root() / f"helm-{version}" / "bin" / "helm"


def helm_version_of(path: Path) -> str | None:
    """The version ``path`` reports (``v4.3.1``), or ``None`` when it does not run."""
    try:
        proc = subprocess.run(
            [str(path), "version", "--template", "{{.Version}}"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def ensure_helm(version: str = HELM_VERSION, *, nice: int = 10, heartbeat: float = 30.0, progress: ProgressFn | None = None) -> Path:
    """The path of a ``helm`` binary reporting ``version``, built and cached when missing.

    Raises :class:`BuildError` when it must be built and there is no ``go`` on PATH or the
    build fails (the message carries the tail of the go output)."""
    say = progress or (lambda message: log.info("%s", message))
    target = helm_path(version)
    with _file_lock(cache_root() / f"helm-{version}.lock", say):
        if target.exists() and helm_version_of(target) == version:
            return target
        go = shutil.which("go")
        if go is None:
            raise BuildError(
                f"no helm {version} in {target.parent} and no `go` on PATH to build it: install Go >= 1.26 "
                "(with access to the Go module proxy) and run `make helm`"
            )
        say(f"building helm {version} into {target.parent} (about 2 minutes with a warm Go build cache)")
        root = cache_root()
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".build-helm-{version}-", dir=root))
        try:
            _GoRunner(go, say, nice, heartbeat).run(
                f"helm {version}",
                [
                    "install", "-v", "-trimpath",
                    "-ldflags", f"-s -w -X helm.sh/helm/v4/internal/version.version={version} "
                    "-X helm.sh/helm/v4/internal/version.gitTreeState=clean",
                    f"helm.sh/helm/v4/cmd/helm@{version}",
                ],
                scratch,
                {"GOBIN": str(scratch)},
            )
            built = scratch / "helm"
            reported = helm_version_of(built)
            if reported != version:
                raise BuildError(f"built {built} but `helm version` reports {reported!r}, expected {version!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(built, target)  # atomic: same filesystem
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def main() -> int:
    """Print the path of the cached helm, building it first when needed."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(ensure_helm())
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
