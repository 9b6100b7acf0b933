"""A small OCI image writer: layers, config, manifest and an OCI image layout, standard library only.

Why not buildah: Debian's buildah 1.28 also works on this host (see ``localcluster/README.md``),
but our images are "a Debian root filesystem plus files", which needs no build engine: a layer is a
``tar.gz`` of a directory, and the rest is three small JSON documents.  This writer takes ~3 s per
image on top of the tar compression, needs no extra package and no storage directory to clean.

Layouts are written in the `OCI image layout`_ format (``oci-layout``, ``index.json``,
``blobs/sha256/...``), which :func:`write_archive` turns into a tar that ``ctr images import``
reads and which :mod:`kaito_localcluster.registry` pushes to a registry.

.. _OCI image layout: https://github.com/opencontainers/image-spec/blob/main/image-layout.md
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
REF_ANNOTATION = "org.opencontainers.image.ref.name"
CONTAINERD_NAME_ANNOTATION = "io.containerd.image.name"
#: Paths left out of a root filesystem layer (the runtime mounts them, or they are caches).
ROOTFS_EXCLUDES: tuple[str, ...] = ("proc", "sys", "dev", "run", "tmp", "var/cache/apt", "var/lib/apt/lists")


@dataclasses.dataclass(frozen=True)
class Blob:
    """A content-addressed blob in a layout."""

    digest: str
    size: int
    media_type: str

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        """The OCI descriptor of this blob."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@dataclasses.dataclass(frozen=True)
class Layer:
    """A layer blob plus the digest of its uncompressed tar (the config's ``diff_id``)."""

    blob: Blob
    diff_id: str


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an image config."""

    entrypoint: Sequence[str] = ()
    cmd: Sequence[str] = ()
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    user: str = ""
    workdir: str = ""
    exposed_ports: Sequence[int] = ()
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``config`` object of the OCI image config."""
        doc: dict[str, Any] = {}
        if self.entrypoint:
            doc["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            doc["Cmd"] = list(self.cmd)
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", **self.env}
        doc["Env"] = [f"{k}={v}" for k, v in env.items()]
        if self.user:
            doc["User"] = self.user
        if self.workdir:
            doc["WorkingDir"] = self.workdir
        if self.exposed_ports:
            doc["ExposedPorts"] = {f"{p}/tcp": {} for p in self.exposed_ports}
        if self.labels:
            doc["Labels"] = dict(self.labels)
        return doc


class Layout:
    """An OCI image layout directory being written."""

    def __init__(self, root: Path, create: bool = True) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        if create:
            self.blobs.mkdir(parents=True, exist_ok=True)
            (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}), encoding="utf-8")

    def blob_path(self, digest: str) -> Path:
        """Path of blob ``sha256:<hex>``."""
        return self.blobs / digest.split(":", 1)[1]

    def add_bytes(self, data: bytes, media_type: str) -> Blob:
        """Store ``data`` as a blob."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return Blob(digest, len(data), media_type)

    def add_json(self, doc: Mapping[str, Any], media_type: str) -> Blob:
        """Store a JSON document (compact, sorted keys) as a blob."""
        return self.add_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode(), media_type)

    def add_layer(self, write_tar: Callable[[tarfile.TarFile], None]) -> Layer:
        """Write one ``tar.gz`` layer whose members ``write_tar`` adds; return its blob and diff_id."""
        tmp = Path(tempfile.mkstemp(prefix=".layer-", dir=self.blobs)[1])
        try:
            raw = _HashingWriter(tmp)
            with raw:
                with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=3, mtime=0) as gz:
                    diff = _HashingWriter(None, gz)
                    with tarfile.open(fileobj=diff, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                        write_tar(tar)
            blob = Blob("sha256:" + raw.sha.hexdigest(), raw.size, MEDIA_LAYER)
            tmp.chmod(0o644)
            os.replace(tmp, self.blob_path(blob.digest))
        finally:
            tmp.unlink(missing_ok=True)
        return Layer(blob, "sha256:" + diff.sha.hexdigest())

    def add_tar_file(self, path: Path) -> Layer:
        """Compress an existing (uncompressed) tar file into a layer."""
        tmp = Path(tempfile.mkstemp(prefix=".layer-", dir=self.blobs)[1])
        diff = hashlib.sha256()
        try:
            raw = _HashingWriter(tmp)
            with raw:
                with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=3, mtime=0) as gz, open(path, "rb") as src:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        diff.update(chunk)
                        gz.write(chunk)
            blob = Blob("sha256:" + raw.sha.hexdigest(), raw.size, MEDIA_LAYER)
            tmp.chmod(0o644)
            os.replace(tmp, self.blob_path(blob.digest))
        finally:
            tmp.unlink(missing_ok=True)
        return Layer(blob, "sha256:" + diff.hexdigest())

    def add_image_ref(self, layers: Sequence[Layer], config: ImageConfig, ref: str) -> Blob:
        """Like :meth:`add_image`, but keep the other images of ``index.json`` (a shared store)."""
        index_path = self.root / "index.json"
        try:
            others = [m for m in json.loads(index_path.read_text(encoding="utf-8"))["manifests"]
                      if m.get("annotations", {}).get(REF_ANNOTATION) != ref]
        except (OSError, ValueError, KeyError):
            others = []
        blob = self.add_image(layers, config, ref)
        index = json.loads(index_path.read_text(encoding="utf-8"))
        index["manifests"] = others + index["manifests"]
        tmp = index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(index, indent=2), encoding="utf-8")
        os.replace(tmp, index_path)
        return blob

    def add_image(self, layers: Sequence[Layer], config: ImageConfig, ref: str) -> Blob:
        """Write config + manifest for ``layers`` and make ``index.json`` list only it, as ``ref``."""
        cfg = {
            "architecture": "amd64",
            "os": "linux",
            "config": config.to_json(),
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        }
        cfg_blob = self.add_json(cfg, MEDIA_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": cfg_blob.descriptor(),
            "layers": [layer.blob.descriptor() for layer in layers],
        }
        man_blob = self.add_json(manifest, MEDIA_MANIFEST)
        index = {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [man_blob.descriptor(annotations={REF_ANNOTATION: ref, CONTAINERD_NAME_ANNOTATION: ref})],
        }
        (self.root / "index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
        return man_blob

    def manifest(self) -> tuple[dict[str, Any], str]:
        """The (single) image manifest of ``index.json`` and its reference name."""
        index = json.loads((self.root / "index.json").read_text(encoding="utf-8"))
        desc = index["manifests"][0]
        return json.loads(self.blob_path(desc["digest"]).read_bytes()), desc["annotations"][REF_ANNOTATION]


class _HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through (to a file or another stream)."""

    def __init__(self, path: Path | None, inner: Any = None) -> None:
        super().__init__()
        self.sha = hashlib.sha256()
        self.size = 0
        self._fh = open(path, "wb") if path is not None else None
        self._inner = inner

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        buf = bytes(data)
        self.sha.update(buf)
        self.size += len(buf)
        if self._fh is not None:
            self._fh.write(buf)
        if self._inner is not None:
            self._inner.write(buf)
        return len(buf)

    def close(self) -> None:
        if self._fh is not None and not self._fh.closed:
            self._fh.close()
        super().close()


def add_file(tar: tarfile.TarFile, arcname: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
    """Add a regular file with fixed metadata (reproducible layers)."""
    info = tarfile.TarInfo(arcname.lstrip("/"))
    info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, uid, gid, 0
    tar.addfile(info, io.BytesIO(data))


def add_dir(tar: tarfile.TarFile, arcname: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
    """Add a directory entry with fixed metadata."""
    info = tarfile.TarInfo(arcname.strip("/"))
    info.type, info.mode, info.uid, info.gid, info.mtime = tarfile.DIRTYPE, mode, uid, gid, 0
    tar.addfile(info)


def add_tree(tar: tarfile.TarFile, root: Path, excludes: Iterable[str] = ROOTFS_EXCLUDES, prefix: str = "",
             reproducible: bool = False) -> None:
    """Add the tree under ``root`` (owners, modes, links kept); an excluded path keeps only its
    (empty) directory. ``reproducible``: every entry owned by root with mtime 0, directories
    0755 (the same files give the same layer)."""
    skip = {e.strip("/") for e in excludes}

    def tarinfo(path: Path, arc: str) -> tarfile.TarInfo | None:
        info = tar.gettarinfo(str(path), arcname=arc)
        if info is not None and reproducible:
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if info.isdir():
                info.mode = 0o755
        return info

    def walk(directory: Path, rel: str) -> None:
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            sub = f"{rel}/{entry.name}" if rel else entry.name
            path = Path(entry.path)
            arc = f"{prefix}{sub}"
            if sub in skip:
                info = tarinfo(path, arc)
                if info is not None and info.isdir():
                    tar.addfile(info)
                continue
            info = tarinfo(path, arc)
            if info is None:  # sockets and other unsupported types
                continue
            if info.isreg():
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
            if entry.is_dir(follow_symlinks=False):
                walk(path, sub)

    walk(root, "")


def write_archive(layout: Path, out: Path) -> Path:
    """Tar an OCI layout directory into ``out`` (what ``ctr images import`` reads)."""
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        for name in ("oci-layout", "index.json"):
            tar.add(layout / name, arcname=name)
        tar.add(layout / "blobs", arcname="blobs")
    os.replace(tmp, out)
    return out


def single_file_image(layout_dir: Path, ref: str, path_in_image: str, data: bytes, config: ImageConfig) -> Layout:
    """A one-layer image with one executable (e.g. the static pause binary)."""
    if layout_dir.exists():
        shutil.rmtree(layout_dir)
    layout = Layout(layout_dir)
    layer = layout.add_layer(lambda tar: add_file(tar, path_in_image, data, mode=0o755))
    layout.add_image([layer], config, ref)
    return layout

