"""Container images built on this machine without Docker: Debian root filesystems + files.

An image is a list of layer steps and an :class:`~kaito_localcluster.oci.ImageConfig`:

* :class:`DebianRootfs`: ``mmdebstrap --variant=minbase`` (Debian's packages through apt, no
  registry) with extra packages and customize hooks (e.g. ``pip install`` from a wheelhouse copied
  in, ``useradd``), written straight to a tar that becomes one layer;
* :class:`FilesLayer`: files from the host at fixed paths (e.g. GGUF weights);
* :class:`VenvPackages`: wheels installed into a lower layer's virtualenv, so that a heavy,
  rarely changing set of packages (torch and its CUDA libraries) and the project's own code
  live in different layers, and a code change rebuilds and pushes only a thin one.

Every layer is cached by the hash of its inputs (package list, hooks, file contents) in one shared
OCI layout, ``<cache>/images/oci`` (``$KAITO_CACHE_DIR``), and every image by the hash of its
layers and config, which is also its tag (``c-<hash>``): nothing is rebuilt unless an input
changed, and :func:`build_image` with ``force=True`` rebuilds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

from .build import BuildError, _file_lock, cache_root
from .oci import ImageConfig, Layer, Layout, add_dir, add_file, add_tree

ProgressFn = Callable[[str], None]
#: Debian suite of every root filesystem (the host's, so the cached wheels' ABI matches).
SUITE = "bookworm"


def _sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's contents (streamed); for large files remembered by path, size, mtime and inode.

    Layer keys hash every input file on each build (the torch wheelhouse alone is ~3 GB): the
    memo in ``<cache>/images/digests.json`` makes an unchanged large file cost one ``stat``.
    Small files (source files, which an editor may rewrite within one timestamp tick at the same
    size) are always hashed.
    """
    st = path.stat()
    stamp = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
    memo = _digest_memo() if st.st_size >= _MEMO_MIN_BYTES else {}
    if stamp in memo:
        return memo[stamp]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    if st.st_size >= _MEMO_MIN_BYTES:
        memo[stamp] = h.hexdigest()
        _save_digest_memo(memo)
    return h.hexdigest()


_MEMO_MIN_BYTES = 8 << 20
_MEMOS: dict[Path, dict[str, str]] = {}


def _memo_path() -> Path:
    return cache_root() / "images" / "digests.json"


def _digest_memo() -> dict[str, str]:
    path = _memo_path()
    if path not in _MEMOS:
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            loaded = {}
        _MEMOS[path] = loaded if isinstance(loaded, dict) else {}
    return _MEMOS[path]


def _save_digest_memo(memo: dict[str, str]) -> None:
    path = _memo_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        live = {k: v for k, v in memo.items() if os.path.exists(k.rsplit(":", 3)[0])}
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(live, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:  # a read-only cache only costs the hashing again
        pass


@dataclasses.dataclass(frozen=True)
class DebianRootfs:
    """A minbase Debian root filesystem with ``packages`` and customize ``hooks``.

    ``copy_in`` maps host directories to paths inside the rootfs, available to the hooks (their
    contents are part of the cache key); ``hooks`` are shell commands run by mmdebstrap with
    ``$1`` = the rootfs directory (use ``chroot "$1" ...``).
    """

    packages: tuple[str, ...]
    hooks: tuple[str, ...] = ()
    copy_in: tuple[tuple[Path, str], ...] = ()
    options: tuple[str, ...] = ()
    """Extra mmdebstrap options (e.g. ``--dpkgopt=path-exclude=/usr/share/doc/*``)."""
    suite: str = SUITE

    def key(self) -> str:
        """Cache key of the layer."""
        parts: list[str] = ["rootfs-v1", self.suite, *sorted(self.packages), *self.hooks, *self.options]
        for host, target in self.copy_in:
            files = sorted(p for p in host.rglob("*") if p.is_file())
            parts += [target, *(f"{p.relative_to(host)}={file_digest(p)}" for p in files)]
        return _sha(*parts)

    def describe(self) -> str:
        """One line for progress output."""
        return f"Debian {self.suite} minbase + {', '.join(self.packages)}"

    def build(self, layout: Layout, progress: ProgressFn) -> Layer:
        """Run mmdebstrap into a tar and store it as a layer."""
        mmdebstrap = shutil.which("mmdebstrap")
        if mmdebstrap is None:
            raise BuildError("building images needs mmdebstrap: `make node-deps` (apt-get install mmdebstrap)")
        with tempfile.TemporaryDirectory(prefix="rootfs-", dir=layout.root) as tmp:
            out = Path(tmp) / "rootfs.tar"
            cmd = [mmdebstrap, "--variant=minbase", "--mode=root", "--format=tar", "--quiet",
                   f"--include={','.join(self.packages)}", *self.options]
            for host, target in self.copy_in:
                cmd.append(f"--customize-hook=mkdir -p \"$1{target}\" && cp -a {host}/. \"$1{target}\"")
            for hook in self.hooks:
                cmd.append(f"--customize-hook={hook}")
            for _, target in self.copy_in:
                cmd.append(f"--customize-hook=rm -rf \"$1{target}\"")
            cmd += [self.suite, str(out)]
            progress(f"mmdebstrap: {self.describe()} ...")
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise BuildError(f"mmdebstrap failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
            return layout.add_tar_file(out)


@dataclasses.dataclass(frozen=True)
class FilesLayer:
    """Host files placed at fixed paths: ``(path in image, host path, mode, uid)``."""

    files: tuple[tuple[str, Path, int, int], ...]

    def key(self) -> str:
        """Cache key of the layer (paths, modes and contents)."""
        return _sha("files-v1", *(f"{arc}:{mode:o}:{uid}:{file_digest(host)}" for arc, host, mode, uid in self.files))

    def describe(self) -> str:
        """One line for progress output."""
        names = [arc for arc, *_ in self.files]
        if len(names) > 6:
            return f"{len(names)} files under {os.path.commonpath(names)}"
        return "files " + ", ".join(names)

    def build(self, layout: Layout, progress: ProgressFn) -> Layer:
        """Write the files as one layer."""
        progress(f"layer: {self.describe()}")

        def write(tar: tarfile.TarFile) -> None:
            made: set[str] = set()
            for arc, host, mode, uid in self.files:
                parts = arc.strip("/").split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    directory = "/".join(parts[:i])
                    if directory not in made:
                        add_dir(tar, directory, uid=uid, gid=uid)
                        made.add(directory)
                info = tarfile.TarInfo(arc.lstrip("/"))
                info.size, info.mode, info.uid, info.gid, info.mtime = host.stat().st_size, mode, uid, uid, 0
                with open(host, "rb") as fh:
                    tar.addfile(info, fh)

        return layout.add_layer(write)


@dataclasses.dataclass(frozen=True)
class VenvPackages:
    """Wheels installed into the virtualenv ``venv`` of a lower layer, as a layer of their own.

    ``pip install --no-deps --no-index --root <staging> --prefix <venv>`` runs on the host with
    this interpreter (its minor version must be the image's: ``check_python`` names the image's
    ``python3`` version), so a layer of Python packages is built in seconds without a root file
    system; scripts get the image's interpreter, and the byte code is compiled in
    ``unchecked-hash`` mode (no mtimes involved, valid on a read-only root file system). Files
    belong to root and keep pip's modes; ``what`` names the layer in progress output.
    """

    wheels: tuple[Path, ...]
    venv: str
    what: str
    check_python: str = "3.11"

    def key(self) -> str:
        """Cache key of the layer (the wheels' names and contents, the venv, the Python version)."""
        return _sha("venv-packages-v1", self.venv, self.check_python,
                    *sorted(f"{w.name}={file_digest(w)}" for w in self.wheels))

    def describe(self) -> str:
        """One line for progress output."""
        return f"{self.what} ({len(self.wheels)} wheels into {self.venv})"

    def build(self, layout: Layout, progress: ProgressFn) -> Layer:
        """pip-install the wheels into a staging root and store it as one layer."""
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        if here != self.check_python:
            raise BuildError(f"{self.describe()}: the host Python is {here} but the image's is {self.check_python}; "
                             f"run the build with python{self.check_python} (the project's .venv)")
        progress(f"layer: {self.describe()}")
        with tempfile.TemporaryDirectory(prefix="venv-layer-", dir=layout.root) as tmp:
            staging = Path(tmp) / "root"
            cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--ignore-installed",
                   "--no-compile", "--no-warn-script-location", "--disable-pip-version-check",
                   "--root", str(staging), "--prefix", self.venv, *map(str, self.wheels)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise BuildError(f"pip install into the {self.what} layer failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
            prefix = staging / self.venv.lstrip("/")
            _fix_scripts(prefix / "bin", f"{self.venv}/bin/python3")
            for record in prefix.glob("lib/python*/site-packages/*.dist-info/direct_url.json"):
                record.unlink()  # names the host's wheel path
            proc = subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode",
                                   "unchecked-hash", "-s", str(staging), "-p", "/", str(prefix)],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise BuildError(f"compileall in the {self.what} layer failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
            return layout.add_layer(lambda tar: add_tree(tar, staging, excludes=(), reproducible=True))


def _fix_scripts(bin_dir: Path, python: str) -> None:
    """Point the console scripts pip wrote at the image's interpreter (pip used the host's)."""
    if not bin_dir.is_dir():
        return
    for script in bin_dir.iterdir():
        if not script.is_file():
            continue
        data = script.read_bytes()
        if data.startswith(b"#!") and b"python" in data.split(b"\n", 1)[0]:
            script.write_bytes(f"#!{python}\n".encode() + data.split(b"\n", 1)[1])


LayerStep = DebianRootfs | FilesLayer | VenvPackages



@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """A named image: layer steps and config."""

    name: str
    layers: tuple[LayerStep, ...]
    config: ImageConfig


@dataclasses.dataclass(frozen=True)
class BuiltImage:
    """An image in the shared store."""

    name: str
    tag: str
    manifest_digest: str
    layout: Path

    @property
    def ref(self) -> str:
        """``name:tag`` (no registry)."""
        return f"{self.name}:{self.tag}"


#: The unprivileged user of the images built here.
IMAGE_UID = 1000
#: mmdebstrap hook that adds the user ``kaito`` (uid/gid 1000) with a home directory.
USER_HOOK = f'chroot "$1" useradd --uid {IMAGE_UID} --user-group --create-home --shell /usr/sbin/nologin kaito'
#: dpkg excludes that keep root filesystems small (docs, man pages, translations).
SLIM_OPTIONS: tuple[str, ...] = (
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
)
#: curl + busybox (sh, httpd, nc...) as uid 1000: the project's ``kaito/curl`` image and the test
#: workloads of the real-node tests share this one cached layer.
TOOLBOX_ROOTFS = DebianRootfs(("curl", "ca-certificates", "busybox"), hooks=(USER_HOOK,), options=SLIM_OPTIONS)
TOOLBOX_CONFIG = ImageConfig(cmd=("curl", "--version"), user=f"{IMAGE_UID}:{IMAGE_UID}")
TOOLBOX_IMAGE = ImageSpec("kaito/curl", (TOOLBOX_ROOTFS,), TOOLBOX_CONFIG)


def store_dir() -> Path:
    """The shared OCI layout that holds every built layer and image."""
    return cache_root() / "images" / "oci"


def _config_key(config: ImageConfig) -> str:
    return json.dumps(config.to_json(), sort_keys=True)


def build_image(spec: ImageSpec, *, force: bool = False, progress: ProgressFn | None = None) -> BuiltImage:
    """Build ``spec`` into the shared store (or reuse it); return where it is."""
    say = progress or (lambda m: None)
    root = store_dir()
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root.parent / "images.lock", say):
        layout = Layout(root)
        layer_dir = root.parent / "layers"
        layer_dir.mkdir(exist_ok=True)
        layers: list[Layer] = []
        for step in spec.layers:
            key = step.key()
            record = layer_dir / f"{key}.json"
            layer = None if force else _load_layer(layout, record)
            if layer is None:
                started = time.monotonic()
                layer = step.build(layout, say)
                record.write_text(json.dumps(dataclasses.asdict(layer)), encoding="utf-8")
                say(f"  {step.describe()}: {layer.blob.size / 1e6:.1f} MB in {time.monotonic() - started:.0f}s")
            layers.append(layer)
        tag = "c-" + _sha(spec.name, *(layer.blob.digest for layer in layers), _config_key(spec.config))[:16]
        ref = f"{spec.name}:{tag}"
        manifest = layout.add_image_ref(layers, spec.config, ref)
        return BuiltImage(spec.name, tag, manifest.digest, root)


def _load_layer(layout: Layout, record: Path) -> Layer | None:
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    from .oci import Blob

    layer = Layer(Blob(**data["blob"]), data["diff_id"])
    path = layout.blob_path(layer.blob.digest)
    return layer if path.exists() and path.stat().st_size == layer.blob.size else None


def export_archive(image: BuiltImage, out: Path, ref: str | None = None) -> Path:
    """A tar with just this image (OCI layout) for ``ctr images import``, named ``ref``."""
    layout = Layout(image.layout, create=False)
    manifest = json.loads(layout.blob_path(image.manifest_digest).read_bytes())
    digests = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
    name = ref or image.ref
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": image.manifest_digest,
            "size": layout.blob_path(image.manifest_digest).stat().st_size,
            "annotations": {"org.opencontainers.image.ref.name": name, "io.containerd.image.name": name},
        }],
    }
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        add_file(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        add_file(tar, "index.json", json.dumps(index).encode())
        for digest in [image.manifest_digest, *digests]:
            tar.add(layout.blob_path(digest), arcname=f"blobs/sha256/{digest.split(':', 1)[1]}")
    os.replace(tmp, out)
    return out


def sequence_key(items: Sequence[str]) -> str:
    """Hash of a list of strings (for callers that key wheelhouses and such)."""
    return _sha(*items)
