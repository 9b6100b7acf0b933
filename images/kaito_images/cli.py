"""``python -m kaito_images {build,push,refs}``: build the project's images and push them to the
real node's local registry."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from kaito_localcluster.build import BuildError
from kaito_localcluster.registry import RegistryClient, credentials, registry_address
from kaito_localcluster.supervisor import default_state_dir, read_state

from .specs import IMAGES, ImageName, build_all

#: The stable tag every image is also pushed under (what examples and the operator settings use).
LOCAL_TAG = "local"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def image_ref(name: ImageName, tag: str = LOCAL_TAG) -> str:
    """``10.88.0.1:<port>/<name>:<tag>`` in the local registry (host, containerd and pods alike)."""
    return f"{registry_address()}/{name.value}:{tag}"


def push_all(client: RegistryClient, names: Sequence[ImageName], *, force: bool = False) -> dict[str, str]:
    """Build (cached) and push ``names`` under their content tag and :data:`LOCAL_TAG`."""
    built = build_all(tuple(names), force=force, progress=_say)
    refs: dict[str, str] = {}
    for name, image in built.items():
        client.push(image, name.value, image.tag, progress=_say)
        refs[name.value] = client.push(image, name.value, LOCAL_TAG)
    return refs


def _cluster_ca(state_dir: Path) -> Path:
    state = read_state(state_dir) or {}
    if state.get("status") != "ready" or not state.get("cluster_dir"):
        raise SystemExit(f"error: no running local cluster in {state_dir}; start one with `make cluster` (real node on)")
    ca = Path(state["cluster_dir"]) / "pki" / "ca.crt"
    if not (Path(state["cluster_dir"]) / "node").is_dir():
        raise SystemExit("error: the running cluster has no real node, hence no registry; restart it with `make cluster`")
    return ca


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m kaito_images",
        description="Build the project's container images without Docker (Debian packages via mmdebstrap + a small "
                    "OCI writer; cached by content hash under ~/.cache/kaito/images) and push them to the local "
                    f"cluster's registry ({registry_address()}, TLS from the cluster CA, htpasswd auth).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    names_help = f"images (default: all of {', '.join(n.value for n in IMAGES)})"
    b = sub.add_parser("build", help="build or reuse the images")
    b.add_argument("names", nargs="*", type=ImageName, help=names_help)
    b.add_argument("--force", action="store_true", help="rebuild every layer")
    p = sub.add_parser("push", help="build if needed, then push to the running real node's registry")
    p.add_argument("names", nargs="*", type=ImageName, help=names_help)
    p.add_argument("--state-dir", type=Path, default=default_state_dir(), help="state dir of `make cluster` (default: %(default)s)")
    sub.add_parser("refs", help="print the local registry references as JSON")
    sec = sub.add_parser("pull-secret", help="print the registry's pull Secret (kaito-local-registry) as JSON for kubectl apply -f -")
    sec.add_argument("--namespace", "-n", default="default")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if args.command == "build":
            built = build_all(tuple(args.names) or IMAGES, force=args.force, progress=_say)
            for name, image in built.items():
                print(f"{name.value}:{image.tag}  {image.manifest_digest}")
        elif args.command == "push":
            client = RegistryClient(registry_address(), _cluster_ca(args.state_dir), credentials())
            refs = push_all(client, tuple(args.names) or IMAGES)
            print(json.dumps(refs, indent=2))
        elif args.command == "pull-secret":
            print(json.dumps(credentials().pull_secret(args.namespace), indent=2))
            return 0
        else:
            print(json.dumps({n.value: image_ref(n) for n in IMAGES}, indent=2))
    except (BuildError, FileNotFoundError) as exc:
        _say(f"error: {exc}")
        return 1
    _say(f"done in {time.monotonic() - started:.1f}s")
    return 0
