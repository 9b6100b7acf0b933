"""OCI registry steps of a tuning Job: pull the input data image, push the adapter artifact.

Both go through the ``oras`` SDK (:mod:`kaito_servers.adapter_pull` picks the auth scheme from the
registry's challenge); nothing here speaks the registry protocol itself. The credentials come as
environment variables holding a ``.dockerconfigjson`` each (the operator sets them from the
Workspace's Secrets with ``secretKeyRef``, see :mod:`kaito_core.serving`); they are merged into one
docker config file under ``$TMPDIR`` (mode 0600) for the SDK.

The pushed artifact is the one adapter format KAITO produces and consumes (``pull-adapter``):
``adapter_config.json`` + ``adapter_model.safetensors`` (+ ``adapter.gguf`` when the runner wrote
one) as layers titled by their file names, at the artifact root, with the manifest annotation
``sh.kaito.model.name: <preset>`` as upstream's push sidecar writes. The push refuses to start
before the trainer's completion marker exists, and oras uploads the manifest after every blob, so
a failed run never creates or moves the tag.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kaito_core.errors import KaitoError
from kaito_core.serving import (
    TUNING_OUTPUT_DIR,
    TUNING_PULL_AUTH_ENV_PREFIX,
    TUNING_PUSH_AUTH_ENV,
    TUNING_PUSH_IMAGE_ENV,
)

from kaito_servers.tuning.container import termination_log
from kaito_servers.tuning.export import GGUF_ADAPTER_NAME
from kaito_servers.tuning.training import ADAPTER_FILES, COMPLETION_MARKER

log = logging.getLogger(__name__)

MODEL_NAME_ANNOTATION = "sh.kaito.model.name"
"""Manifest annotation naming the base preset (upstream's push sidecar sets it)."""
PUSHED_FILES = (*ADAPTER_FILES, GGUF_ADAPTER_NAME)
"""What an adapter artifact carries, those present (the first two are required)."""
EXIT_REFUSED = 2
"""Exit code for failures a retry cannot fix (the Job fails at once)."""


class RegistryStepError(KaitoError):
    """A registry step cannot succeed as configured; the message names the cause and the fix."""


def docker_config_from_env(environ: Mapping[str, str], names: list[str], *, where: Path | None = None) -> Path | None:
    """Merge the ``auths`` of the .dockerconfigjson values in ``names`` (those set) into one file.

    Raises:
        RegistryStepError: a value is not a docker config (the Secret is not of type
            kubernetes.io/dockerconfigjson).
    """
    auths: dict[str, Any] = {}
    for name in names:
        raw = environ.get(name)
        if not raw:
            continue
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("auths"), dict):
            raise RegistryStepError(f"the registry Secret given as {name} is not a docker config (no \"auths\" object). "
                                    "Fix: create it with kubectl create secret docker-registry (type kubernetes.io/dockerconfigjson)")
        auths.update(doc["auths"])
    if not auths:
        return None
    fd, path = tempfile.mkstemp(prefix="docker-config-", suffix=".json", dir=where)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"auths": auths}, fh)
    os.chmod(path, 0o600)
    return Path(path)


def pull_auth_names(environ: Mapping[str, str]) -> list[str]:
    """The pull-secret variables the operator set, in order."""
    return sorted((k for k in environ if k.startswith(TUNING_PULL_AUTH_ENV_PREFIX)), key=lambda k: (len(k), k))


def pull_data_image(image: str, dest: Path, environ: Mapping[str, str], *, ca_file: Path | None = None) -> list[Path]:
    """Pull the input data image into ``dest`` (its files at the artifact root, or an image's /data).

    Raises:
        RegistryStepError: the registry refuses or is unreachable, or the image holds no file.
    """
    from kaito_servers.adapter_pull import AdapterPullError, pull_artifact

    config = docker_config_from_env(environ, pull_auth_names(environ))
    try:
        files = pull_artifact(image, dest, docker_config=config, ca_file=ca_file)
    except AdapterPullError as exc:
        raise RegistryStepError(f"tuning.input.image: {exc}. Fix: check the image reference and that "
                                "tuning.input.imagePullSecrets names a Secret allowed to pull it") from None
    finally:
        if config is not None:
            config.unlink(missing_ok=True)
    if not files:
        raise RegistryStepError(f"tuning.input.image {image} holds no file (expected the data files at the artifact root "
                                "or under /data). Fix: push the dataset with oras push <ref> train.parquet")
    log.info("input image pulled", extra={"image": image, "files": sorted(p.name for p in files)})
    return files


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ("bearer", {realm, service, ...})."""
    import re

    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), {k: v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}


def verify_push_login(image: str, login: tuple[str, str], *, ca_file: Path | None = None, timeout: float = 30.0) -> None:
    """Log in to the registry of ``image`` the way a push will (Basic, or a Bearer token with push
    scope for the repository), so wrong credentials fail before the training, not after it.

    Raises:
        RegistryStepError: the registry refuses the credentials (HTTP 401/403).
        requests.RequestException: the registry cannot be reached (a retry may help).
    """
    import requests

    from kaito_servers.adapter_pull import registry_of

    registry = registry_of(image)
    verify: bool | str = str(ca_file) if ca_file else True
    probe = requests.get(f"https://{registry}/v2/", verify=verify, timeout=timeout)
    if probe.status_code == 200:
        return
    scheme, params = _parse_challenge(probe.headers.get("Www-Authenticate", ""))
    if scheme == "basic":
        answer = requests.get(f"https://{registry}/v2/", auth=login, verify=verify, timeout=timeout)
    elif scheme == "bearer" and params.get("realm"):
        repository = image.split("/", 1)[1].split("@")[0].rsplit(":", 1)[0] if "/" in image else image
        query = {"service": params.get("service", registry), "scope": f"repository:{repository}:push,pull"}
        answer = requests.get(params["realm"], params=query, auth=login, verify=verify, timeout=timeout)
    else:
        return  # an unknown scheme: leave it to the push
    if answer.status_code in (401, 403):
        raise RegistryStepError(f"registry {registry} refuses the credentials of tuning.output.imagePushSecret (user {login[0]!r}, "
                                f"HTTP {answer.status_code}). Fix: put a username and password (or token) allowed to push to "
                                f"{image} into the Secret (kubectl create secret docker-registry NAME --docker-server={registry} ...)")


def check_push_credentials(environ: Mapping[str, str], *, ca_file: Path | None = None) -> None:
    """Before training: the push secret must hold credentials for the output image's registry,
    and the registry must accept them (:func:`verify_push_login`).

    Raises:
        RegistryStepError: it holds none, or they are refused (the push would fail after the training).
    """
    from kaito_servers.adapter_pull import login_of, registry_of

    image = environ.get(TUNING_PUSH_IMAGE_ENV)
    raw = environ.get(TUNING_PUSH_AUTH_ENV)
    if not image or not raw:
        return
    config = docker_config_from_env(environ, [TUNING_PUSH_AUTH_ENV])
    if config is not None:
        config.unlink(missing_ok=True)  # parsed and checked; the login is read from the variable
    registry = registry_of(image)
    login = login_of(json.loads(raw)["auths"], registry)
    if login is None:
        raise RegistryStepError(f"tuning.output.imagePushSecret has no credentials for registry {registry} "
                                f"(of tuning.output.image {image}). Fix: create the Secret with "
                                f"kubectl create secret docker-registry NAME --docker-server={registry} ...")
    verify_push_login(image, login, ca_file=ca_file)


def adapter_files(src: Path) -> list[Path]:
    """The files to push from the trainer's output directory.

    Raises:
        RegistryStepError: training did not finish (no completion marker) or left no adapter.
    """
    if not (src / COMPLETION_MARKER).is_file():
        raise RegistryStepError(f"{src} has no {COMPLETION_MARKER}: the training did not finish, so nothing is pushed. "
                                "Fix: see the trainer step's log")
    files = [src / name for name in PUSHED_FILES if (src / name).is_file()]
    missing = [n for n in ADAPTER_FILES if not (src / n).is_file()]
    if missing:
        raise RegistryStepError(f"{src} has no {', '.join(missing)}: the trainer wrote no adapter. Fix: see the trainer step's log")
    return files


def push_adapter(src: Path, image: str, *, docker_config: Path | None, preset: str = "", ca_file: Path | None = None) -> None:
    """Push the adapter in ``src`` to ``image`` with oras (manifest last).

    Raises:
        RegistryStepError: no finished adapter in ``src``, or the registry refused the push.
    """
    from kaito_servers.adapter_pull import AdapterPullError, registry_client, registry_of

    files = adapter_files(src)
    registry = registry_of(image)
    try:
        client = registry_client(registry, str(ca_file) if ca_file else True, docker_config)
        annotations = {MODEL_NAME_ANNOTATION: preset} if preset else None
        client.push(target=image, files=[str(f) for f in files], config_path=str(docker_config) if docker_config else None,
                    disable_path_validation=True, manifest_annotations=annotations, quiet=True)
    except AdapterPullError as exc:
        raise RegistryStepError(f"cannot push to {image}: {exc}. Fix: check tuning.output.imagePushSecret") from None
    except Exception as exc:  # the SDK raises ValueError / requests errors with the registry's answer
        raise RegistryStepError(f"the registry refused the push to {image}: {exc}. Fix: check that "
                                "tuning.output.imagePushSecret may push to this repository") from None
    log.info("adapter pushed", extra={"image": image, "files": [f.name for f in files]})


def add_push_parser(sub: Any) -> None:
    """The ``push-adapter`` subcommand."""
    p = sub.add_parser(
        "push-adapter",
        help="push a finished LoRA adapter (the tuning Job's last step) as an OCI artifact",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--image", default=os.environ.get(TUNING_PUSH_IMAGE_ENV), help=f"artifact reference [env {TUNING_PUSH_IMAGE_ENV}]")
    p.add_argument("--src", default=os.environ.get("KAITO_TUNING_OUTPUT_DIR") or TUNING_OUTPUT_DIR,
                   help=f"the trainer's output directory [env KAITO_TUNING_OUTPUT_DIR; default {TUNING_OUTPUT_DIR}]")
    p.add_argument("--preset", default=os.environ.get("KAITO_TUNING_PRESET", ""), help="base preset, recorded in the manifest")
    p.add_argument("--ca-file", default=os.environ.get("KAITO_ADAPTER_CA_FILE"),
                   help="CA bundle to trust for the registry [env KAITO_ADAPTER_CA_FILE; default: the system's]")


def run_push(ns: argparse.Namespace) -> int:
    """Run ``push-adapter``; 0 pushed, 2 refused (named cause and fix)."""
    if not ns.image:
        print(f"push-adapter: --image (or {TUNING_PUSH_IMAGE_ENV}) is required", file=sys.stderr)
        return EXIT_REFUSED
    config = None
    try:
        config = docker_config_from_env(os.environ, [TUNING_PUSH_AUTH_ENV])
        push_adapter(Path(ns.src), ns.image, docker_config=config, preset=ns.preset,
                     ca_file=Path(ns.ca_file) if ns.ca_file else None)
    except RegistryStepError as exc:
        print(f"push-adapter: {exc}", file=sys.stderr)
        termination_log(f"push-adapter: {exc}")
        return EXIT_REFUSED
    finally:
        if config is not None:
            config.unlink(missing_ok=True)
    print(f"push-adapter: {ns.src} -> {ns.image}", file=sys.stderr)
    return 0


