"""``python -m kaito_servers pull-adapter``: fetch one LoRA adapter artifact into a directory.

The one adapter format KAITO produces and consumes: an OCI artifact whose layers are the adapter
files at the artifact root, each named by its ``org.opencontainers.image.title`` annotation (what
``oras push <ref> adapter_config.json adapter_model.safetensors`` makes; upstream's tuning push
sidecar makes the same): ``adapter_config.json`` + ``adapter_model.safetensors`` for the
transformers backend and/or ``adapter.gguf`` (a GGUF LoRA) for llama.cpp.  Container images with
the files under ``/data`` (upstream's adapter images) also work: an untitled layer is a tar layer,
and only its ``data/`` regular files are taken.

The registry protocol is the ``oras`` SDK's; this module only picks the auth scheme from the
registry's challenge (the SDK's token backend does not answer a ``Basic`` challenge, as
htpasswd registries send), reads the pod's mounted ``.dockerconfigjson`` and trusts a CA bundle.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from kaito_core.serving import ADAPTER_CA_FILE_ENV, ADAPTER_DIR_ENV, ADAPTER_IMAGE_ENV, ADAPTER_PULL_SECRET_FILE

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "adapter.gguf")
"""File names an adapter directory may hold (plus any other ``*.gguf``)."""

PULL_SECRET_PATH = ADAPTER_PULL_SECRET_FILE
"""Where the operator mounts the adapter's first imagePullSecret."""


class AdapterPullError(RuntimeError):
    """An adapter artifact that cannot be fetched or holds no adapter."""


def registry_of(image: str) -> str:
    """The registry host[:port] of an image reference (``docker.io`` when the reference has none)."""
    first = image.split("/", 1)[0]
    return first if "/" in image and ("." in first or ":" in first or first == "localhost") else "docker.io"


def auth_backend_for(challenge: str) -> str:
    """The oras auth backend for a ``Www-Authenticate`` challenge: ``basic`` or ``token``."""
    return "basic" if challenge.strip().lower().startswith("basic") else "token"


def has_credentials(docker_config: Path | None, registry: str) -> bool:
    """Whether ``docker_config`` (a ``.dockerconfigjson``) has an ``auths`` entry for ``registry``."""
    if docker_config is None or not docker_config.is_file():
        return False
    auths = (json.loads(docker_config.read_text()) or {}).get("auths") or {}
    return any(key.removeprefix("https://").removeprefix("http://").rstrip("/").split("/")[0] == registry for key in auths)


def login_of(auths: Mapping[str, Any], registry: str) -> tuple[str, str] | None:
    """(username, password) for ``registry`` from a docker config's ``auths`` (``auth`` or the pair)."""
    for key, entry in auths.items():
        if key.removeprefix("https://").removeprefix("http://").rstrip("/").split("/")[0] != registry or not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            user, _, password = base64.b64decode(entry["auth"]).decode("utf-8", "replace").partition(":")
            return user, password
        if entry.get("username"):
            return str(entry["username"]), str(entry.get("password", ""))
    return None


def registry_client(registry: str, verify: bool | str, docker_config: Path | None) -> Any:
    """An oras client for ``registry`` with the auth scheme its challenge asks for.

    Raises:
        AdapterPullError: the registry is unreachable, or wants a password ``docker_config`` lacks.
    """
    import oras.provider
    import requests

    try:
        probe = requests.get(f"https://{registry}/v2/", verify=verify, timeout=30)
    except requests.RequestException as exc:
        raise AdapterPullError(f"cannot reach registry {registry}: {exc}") from exc
    backend = auth_backend_for(probe.headers.get("Www-Authenticate", ""))
    if backend == "basic" and not has_credentials(docker_config, registry):
        # Without this the SDK retries the refused request for minutes before giving up.
        raise AdapterPullError(
            f"registry {registry} requires a username and password and "
            f"{'the docker config ' + str(docker_config) if docker_config else 'no docker config'} has none for it: "
            "name a kubernetes.io/dockerconfigjson Secret for it in the adapter's imagePullSecrets"
        )
    client = oras.provider.Registry(hostname=registry, tls_verify=verify, auth_backend=backend)
    if backend == "basic" and docker_config is not None:
        # Send the password with every request (the session's auth): the SDK otherwise sends each
        # request bare first and answers the 401, which a blob upload cannot survive (the registry
        # refuses the PUT and closes the connection while the body is still being sent: SSLEOFError).
        login = login_of((json.loads(docker_config.read_text()) or {}).get("auths") or {}, registry)
        if login is not None:
            client.auth.set_basic_auth(*login)
            client.session.auth = login
    return client


def _extract_data_dir(layer: Path, dest: Path) -> list[Path]:
    """Regular files under ``data/`` of a tar layer, copied flat-by-path into ``dest``.

    Members are read one by one (no ``extractall``): links, devices and paths leaving ``data/``
    are skipped, so a hostile layer cannot write outside ``dest``."""
    out: list[Path] = []
    with tarfile.open(layer) as tar:
        for member in tar:
            parts = PurePosixPath(member.name.lstrip("./")).parts
            if not member.isfile() or len(parts) < 2 or parts[0] != "data" or ".." in parts:
                continue
            target = dest.joinpath(*parts[1:])
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            assert src is not None
            with src, open(target, "wb") as fh:
                shutil.copyfileobj(src, fh)
            out.append(target)
    return out


def is_adapter_dir(path: Path) -> bool:
    return (path / "adapter_config.json").is_file() or any(path.glob("*.gguf"))


def pull_artifact(image: str, dest: Path, *, docker_config: Path | None = None, ca_file: Path | None = None) -> list[Path]:
    """Fetch the files of ``image`` into ``dest`` (created): an artifact's titled layers at the
    root, a container image's ``data/`` files; returns the files written.

    Raises:
        AdapterPullError: the registry refuses or is unreachable.
    """
    verify: bool | str = str(ca_file) if ca_file else True
    client = registry_client(registry_of(image), verify, docker_config)
    dest.mkdir(parents=True, exist_ok=True)
    # Scratch space inside dest, the one writable volume (an adapter's /mnt/adapter/<name>, a data
    # image's /mnt/data): the pods run with a read-only root file system (no writable /tmp), and
    # the SDK downloads directory layers to tempfile's directory.
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=dest) as tmp:
        outdir, scratch = Path(tmp) / "out", Path(tmp) / "scratch"
        outdir.mkdir()
        scratch.mkdir()
        previous, tempfile.tempdir = tempfile.tempdir, str(scratch)
        try:
            fetched = client.pull(target=image, config_path=str(docker_config) if docker_config else None, outdir=str(outdir))
        except Exception as exc:  # the SDK raises ValueError / requests errors with the registry's answer
            raise AdapterPullError(f"cannot pull {image}: {exc}") from exc
        finally:
            tempfile.tempdir = previous
        written: list[Path] = []
        for path in map(Path, fetched):
            if path.name.startswith("sha256:") and tarfile.is_tarfile(path):
                written += _extract_data_dir(path, dest)
            elif path.is_file():
                written.append(Path(shutil.move(str(path), dest / path.name)))
    return written


def pull_adapter(image: str, dest: Path, *, docker_config: Path | None = None, ca_file: Path | None = None) -> list[Path]:
    """Fetch ``image`` into ``dest`` (created); the adapter files written.

    Raises:
        AdapterPullError: the registry refuses or is unreachable, or the artifact holds no adapter.
    """
    written = pull_artifact(image, dest, docker_config=docker_config, ca_file=ca_file)
    if not is_adapter_dir(dest):
        raise AdapterPullError(
            f"adapter {image} holds no adapter: expected {' / '.join(ADAPTER_FILES)} at the artifact root "
            "(oras push <ref> adapter_config.json adapter_model.safetensors, or adapter.gguf for llama.cpp) "
            f"or under /data in an image; found {sorted(p.name for p in written) or 'nothing'}"
        )
    return written


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "pull-adapter",
        help="fetch a LoRA adapter artifact (OCI, files at the root or under /data) into a directory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--image", default=os.environ.get(ADAPTER_IMAGE_ENV), help=f"artifact reference [env {ADAPTER_IMAGE_ENV}]")
    p.add_argument("--dest", default=os.environ.get(ADAPTER_DIR_ENV), help=f"target directory [env {ADAPTER_DIR_ENV}]")
    p.add_argument("--docker-config", default=PULL_SECRET_PATH,
                   help=f"a .dockerconfigjson with the registry's credentials, used if it exists [default {PULL_SECRET_PATH}]")
    p.add_argument("--ca-file", default=os.environ.get(ADAPTER_CA_FILE_ENV),
                   help=f"CA bundle to trust for the registry [env {ADAPTER_CA_FILE_ENV}; default: the system's]")


def run(ns: argparse.Namespace) -> int:
    if not ns.image or not ns.dest:
        print(f"pull-adapter: --image and --dest (or {ADAPTER_IMAGE_ENV} and {ADAPTER_DIR_ENV}) are required", file=sys.stderr)
        return 2
    config = Path(ns.docker_config) if ns.docker_config and Path(ns.docker_config).is_file() else None
    try:
        files = pull_adapter(ns.image, Path(ns.dest), docker_config=config, ca_file=Path(ns.ca_file) if ns.ca_file else None)
    except AdapterPullError as exc:
        print(f"pull-adapter: {exc}", file=sys.stderr)
        return 1
    print(f"pull-adapter: {ns.image} -> {ns.dest}: {', '.join(sorted(p.name for p in files))}", file=sys.stderr)
    return 0
