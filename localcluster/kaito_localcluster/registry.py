"""The local OCI registry of the real node: Debian's ``docker-registry`` (distribution 2.8).

It listens on the real node's bridge address only, ``10.88.0.1:<port>`` (:data:`REGISTRY_HOST`,
:data:`REGISTRY_PORT`, ``$KAITO_REGISTRY_PORT``; never ``0.0.0.0``): the one address that the host,
the node's containerd and the pods on the bridge all reach, so an image or adapter reference is the
same string wherever it is used (an adapter puller init container or a tuning Job's push step runs
inside a pod, where ``127.0.0.1`` is the pod itself).  The cluster creates the bridge before the
registry starts, exactly as it does before the apiserver binds the same address.  The registry
serves TLS with a certificate from the cluster CA (containerd trusts that CA through ``certs.d``;
pods find it in every namespace's ``kube-root-ca.crt`` ConfigMap, key ``ca.crt``, since the
controller manager publishes the cluster CA there), and requires basic auth from an htpasswd file,
so a pod only pulls with an ``imagePullSecret``.
Credentials are generated once per machine (``<cache>/registry/credentials.json``, mode 0600)
and the blob storage lives in ``<cache>/registry/data``, so pushed images survive cluster
restarts and pushing again only sends what the registry lacks.

:func:`push` uploads an image from the OCI store (:mod:`kaito_localcluster.imagebuild`) with the
registry HTTP API: ``HEAD`` each blob, ``POST``/``PUT`` the missing ones, ``PUT`` the manifest.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import os
import secrets
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any, Callable, Sequence

from .build import BuildError, cache_root
from .imagebuild import BuiltImage
from .nodeconfig import BRIDGE_IP
from .oci import MEDIA_MANIFEST, Layout

#: The bridge address the registry binds (see the module docstring: reachable from host and pods).
REGISTRY_HOST = BRIDGE_IP
REGISTRY_PORT = int(os.environ.get("KAITO_REGISTRY_PORT", "5001"))
REGISTRY_BINARY = "/usr/bin/docker-registry"
HTPASSWD_BINARY = "/usr/bin/htpasswd"
#: Name of the pull secret :meth:`Credentials.pull_secret` builds.
PULL_SECRET_NAME = "kaito-local-registry"
#: The ConfigMap and key holding the CA that pods verify the registry with: the cluster CA, which
#: kube-controller-manager publishes into every namespace (``--root-ca-file``).
CA_CONFIGMAP = ("kube-root-ca.crt", "ca.crt")


def registry_address(port: int | None = None) -> str:
    """``10.88.0.1:<port>`` — the prefix of every image reference in the local registry, for the
    host, the node's containerd and pods alike."""
    return f"{REGISTRY_HOST}:{port or REGISTRY_PORT}"


def registry_dir() -> Path:
    """``<cache>/registry``: credentials, htpasswd, data."""
    return cache_root() / "registry"


@dataclasses.dataclass(frozen=True)
class Credentials:
    """The registry's one user."""

    username: str
    password: str

    def basic(self) -> str:
        """The HTTP ``Authorization`` header value."""
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def dockerconfigjson(self, address: str | None = None) -> str:
        """``.dockerconfigjson`` for a ``kubernetes.io/dockerconfigjson`` Secret."""
        address = address or registry_address()
        auth = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return json.dumps({"auths": {address: {"username": self.username, "password": self.password, "auth": auth}}})

    def pull_secret(self, namespace: str, name: str = PULL_SECRET_NAME) -> dict[str, Any]:
        """A Secret manifest that lets pods pull from the local registry."""
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": name, "namespace": namespace},
            "data": {".dockerconfigjson": base64.b64encode(self.dockerconfigjson().encode()).decode()},
        }


def credentials() -> Credentials:
    """The machine's registry credentials (generated on first use) and the htpasswd file."""
    directory = registry_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "credentials.json"
    if not path.exists():
        creds = {"username": "kaito", "password": secrets.token_urlsafe(18)}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(creds), encoding="utf-8")
        tmp.chmod(0o600)
        os.replace(tmp, path)
    data = json.loads(path.read_text(encoding="utf-8"))
    result = Credentials(data["username"], data["password"])
    htpasswd = directory / "htpasswd"
    if not htpasswd.exists() or htpasswd.stat().st_mtime < path.stat().st_mtime:
        if not os.access(HTPASSWD_BINARY, os.X_OK):
            raise BuildError("the local registry needs htpasswd: `make node-deps` (apt-get install apache2-utils)")
        out = subprocess.run([HTPASSWD_BINARY, "-nbB", result.username, result.password],
                             capture_output=True, text=True, check=True).stdout
        tmp = htpasswd.with_suffix(".tmp")
        tmp.write_text(out, encoding="utf-8")
        tmp.chmod(0o600)
        os.replace(tmp, htpasswd)
    return result


def registry_config(*, port: int, cert: Path, key: Path) -> str:
    """The docker-registry configuration (YAML)."""
    directory = registry_dir()
    return json.dumps({
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(directory / "data")}, "delete": {"enabled": True}},
        "http": {
            "addr": f"{REGISTRY_HOST}:{port}",
            "secret": secrets.token_hex(16),
            "tls": {"certificate": str(cert), "key": str(key)},
        },
        "auth": {"htpasswd": {"realm": "kaito-local", "path": str(directory / "htpasswd")}},
    }, indent=2)


def registry_binary() -> str:
    """Debian's docker-registry, or an error naming the fix."""
    if not os.access(REGISTRY_BINARY, os.X_OK):
        found = shutil.which("docker-registry")
        if found:
            return found
        raise BuildError("the local registry needs Debian's docker-registry: `make node-deps`")
    return REGISTRY_BINARY


class RegistryClient:
    """A minimal registry HTTP API client (basic auth, TLS verified against ``ca_file``)."""

    def __init__(self, address: str, ca_file: Path, creds: Credentials, timeout: float = 600.0) -> None:
        host, port = address.rsplit(":", 1)
        if host != REGISTRY_HOST:
            raise ValueError(f"RegistryClient only talks to the local registry, not {address}")
        self.host, self.port = host, int(port)
        self.ctx = ssl.create_default_context(cafile=str(ca_file))
        self.creds = creds
        self.timeout = timeout
        #: Repositories pushed by this client (sources of cross-repository blob mounts).
        self.pushed_repos: list[str] = []

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                length: int | None = None) -> http.client.HTTPResponse:
        """One request; the caller reads/handles the response."""
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=self.timeout)
        hdrs = {"Authorization": self.creds.basic(), **(headers or {})}
        if length is not None:
            hdrs["Content-Length"] = str(length)
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        resp.read() if method == "HEAD" else None
        return resp

    def ping(self) -> int:
        """Status of ``GET /v2/`` with credentials (200 when up and the password is right)."""
        resp = self.request("GET", "/v2/")
        resp.read()
        return resp.status

    def _check(self, resp: http.client.HTTPResponse, what: str, ok: tuple[int, ...]) -> bytes:
        body = resp.read()
        if resp.status not in ok:
            raise BuildError(f"registry {what}: HTTP {resp.status} {body[:300].decode(errors='replace')}")
        return body

    def push_blob(self, repo: str, digest: str, path: Path, mount_from: Sequence[str] = ()) -> bool:
        """Upload one blob unless present; return whether it was sent.

        A blob the registry holds under another repository of ``mount_from`` is mounted (the
        distribution API's cross-repository mount), not sent again: images that share a 3 GB
        base layer cost one upload.
        """
        if self.request("HEAD", f"/v2/{repo}/blobs/{digest}").status == 200:
            return False
        for source in mount_from:
            if source == repo:
                continue
            resp = self.request("POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from={source}", body=b"", length=0)
            resp.read()
            if resp.status == 201:
                return False
            if resp.status == 202:  # not there: the registry opened a normal upload instead; drop it
                self.request("DELETE", self._upload_path(resp)).read()
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", body=b"", length=0)
        self._check(resp, f"start upload of {digest}", (202,))
        location = self._upload_path(resp)
        sep = "&" if "?" in location else "?"
        with open(path, "rb") as fh:
            resp = self.request("PUT", f"{location}{sep}digest={digest}", body=fh,
                                headers={"Content-Type": "application/octet-stream"}, length=path.stat().st_size)
            self._check(resp, f"upload of {digest}", (201,))
        return True

    @staticmethod
    def _upload_path(resp: http.client.HTTPResponse) -> str:
        location = resp.getheader("Location") or ""
        return "/" + location.split("/", 3)[3] if location.startswith("https://") else location

    def push(self, image: BuiltImage, repo: str, tag: str, progress: Callable[[str], None] | None = None) -> str:
        """Push ``image`` as ``<registry>/<repo>:<tag>``; return the full reference. Layers this
        client pushed before under another repository are mounted from there."""
        layout = Layout(image.layout, create=False)
        manifest_bytes = layout.blob_path(image.manifest_digest).read_bytes()
        manifest = json.loads(manifest_bytes)
        sent = 0
        for desc in [manifest["config"], *manifest["layers"]]:
            if self.push_blob(repo, desc["digest"], layout.blob_path(desc["digest"]), mount_from=self.pushed_repos):
                sent += desc["size"]
        if repo not in self.pushed_repos:
            self.pushed_repos.append(repo)
        resp = self.request("PUT", f"/v2/{repo}/manifests/{tag}", body=manifest_bytes,
                            headers={"Content-Type": MEDIA_MANIFEST}, length=len(manifest_bytes))
        self._check(resp, f"manifest {repo}:{tag}", (201,))
        ref = f"{self.host}:{self.port}/{repo}:{tag}"
        if progress:
            progress(f"pushed {ref} ({sent / 1e6:.1f} MB sent)")
        return ref
