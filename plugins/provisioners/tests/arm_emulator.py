"""A local HTTPS emulator of the Azure endpoints the azure-agentpool provisioner talks to: ARM
``managedClusters/{c}/agentPools`` + ``locations/{l}/operations/{id}``, and the Entra ID token
endpoint that WorkloadIdentityCredential (MSAL) calls. The only fake in the aks tests: the real
azure-mgmt-containerservice and azure-identity run against it.

Contract (shared/reference/test-infra.md section 5): ``api-version`` required; ``Authorization:
Bearer <a token this emulator issued>`` required (401 otherwise); PUT answers 201/200 with
``Azure-AsyncOperation`` and 409 OperationNotAllowed while an operation on the pool runs;
DELETE answers 202 (+ Azure-AsyncOperation, Location) or 204; operations answer InProgress
(+ Retry-After) until ``op_seconds`` passed, then Succeeded or Failed with the injected error
(the pool then shows provisioningState Failed and status.provisioningError, as AKS does).
``throttle()`` answers 429 + Retry-After. Every request is recorded. Pools that succeed become
Nodes through ``on_ready`` / ``on_deleted`` (the tests create kwok Nodes). 127.0.0.1 only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

POOL_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.ContainerService/"
    r"managedClusters/(?P<cluster>[^/]+)/agentPools(?:/(?P<name>[^/]+))?$"
)
OP_PATH = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.ContainerService/locations/(?P<loc>[^/]+)/operations/(?P<id>[^/]+)$")
NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
IN_PROGRESS_MESSAGE = "Operation is not allowed because there's an in progress create node pool operation"


def write_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert.pem, key.pem) made with the cryptography package."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "arm-cert.pem", directory / "arm-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class Recorded:
    """One request as received."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorized: bool


@dataclass
class _Op:
    id: str
    pool: str
    kind: str  # create | delete
    done_at: float
    status: str = "InProgress"
    error: dict[str, str] | None = None


@dataclass
class Subscription:
    """The emulated state: pools by name and operations by id."""

    pools: dict[str, dict[str, Any]] = field(default_factory=dict)
    ops: dict[str, _Op] = field(default_factory=dict)


class ArmEmulator:
    """ARM agent pools + operations + Entra token endpoint on https://127.0.0.1:<port>."""

    def __init__(self, workdir: Path, *, op_seconds: float = 0.3, location: str = "eastus",
                 on_ready: Callable[[dict[str, Any]], None] | None = None,
                 on_deleted: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.cert, self.key = write_cert(workdir)
        self.op_seconds = op_seconds
        self.location = location
        self.on_ready, self.on_deleted = on_ready, on_deleted
        self.state = Subscription()
        self.requests: list[Recorded] = []
        self.tokens: set[str] = set()
        self.fail_ops: dict[str, tuple[str, str]] = {}
        """vmSize -> (code, message): creates of pools of that size fail asynchronously."""
        self.put_errors: dict[str, tuple[int, str, str]] = {}
        """vmSize -> (HTTP status, code, message): PUTs of pools of that size are refused at once."""
        self.throttled = 0
        self.retry_after = 1
        self.token_error: str | None = None
        """An Entra error description: the token endpoint refuses every assertion with it."""
        self._lock = threading.RLock()
        self._stop = threading.Event()
        handler = type("Handler", (_Handler,), {"emulator": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self._threads = [threading.Thread(target=self.server.serve_forever, daemon=True, name="arm-emulator"),
                         threading.Thread(target=self._tick, daemon=True, name="arm-emulator-ops")]

    # -- life ------------------------------------------------------------------------------------

    def start(self) -> ArmEmulator:
        """Serve in background threads."""
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    def throttle(self, count: int, retry_after: int = 1) -> None:
        """Answer the next ``count`` ARM requests with 429 and ``Retry-After``."""
        with self._lock:
            self.throttled, self.retry_after = count, retry_after

    def pools(self) -> dict[str, dict[str, Any]]:
        """A copy of the pools in the subscription."""
        with self._lock:
            return json.loads(json.dumps(self.state.pools))

    def arm_requests(self, method: str | None = None) -> list[Recorded]:
        """Recorded ARM requests (not the token endpoint), optionally of one method."""
        with self._lock:
            return [r for r in self.requests if r.path.startswith("/subscriptions/") and (method is None or r.method == method)]

    # -- operations ------------------------------------------------------------------------------

    def _tick(self) -> None:
        while not self._stop.wait(0.05):
            self.settle()

    def settle(self) -> None:
        """Finish the operations whose time has come (and tell the callbacks, outside the lock)."""
        ready: list[dict[str, Any]] = []
        deleted: list[dict[str, Any]] = []
        with self._lock:
            now = time.monotonic()
            for op in self.state.ops.values():
                if op.status != "InProgress" or now < op.done_at:
                    continue
                pool = self.state.pools.get(op.pool)
                if op.kind == "delete":
                    op.status = "Succeeded"
                    if pool is not None:
                        deleted.append(self.state.pools.pop(op.pool))
                    continue
                if pool is None:
                    op.status = "Canceled"
                    continue
                size = pool["properties"]["vmSize"]
                if size in self.fail_ops:
                    code, message = self.fail_ops[size]
                    op.status, op.error = "Failed", {"code": code, "message": message}
                    pool["properties"]["provisioningState"] = "Failed"
                    pool["properties"]["status"] = {"provisioningError": {"code": code, "message": message}}
                else:
                    op.status = "Succeeded"
                    pool["properties"]["provisioningState"] = "Succeeded"
                    pool["properties"].pop("_op", None)
                    ready.append(json.loads(json.dumps(pool)))
        for pool in deleted:
            if self.on_deleted:
                self.on_deleted(pool)
        for pool in ready:
            if self.on_ready:
                self.on_ready(pool)

    def _begin(self, sub: str, pool: str, kind: str) -> _Op:
        op = _Op(id=uuid.uuid4().hex, pool=pool, kind=kind, done_at=time.monotonic() + self.op_seconds)
        self.state.ops[op.id] = op
        return op

    def _op_url(self, sub: str, op: _Op) -> str:
        return f"{self.url}/subscriptions/{sub}/providers/Microsoft.ContainerService/locations/{self.location}/operations/{op.id}?api-version=2026-08-01"

    def _busy(self, name: str) -> bool:
        return any(o.pool == name and o.status == "InProgress" for o in self.state.ops.values())

    # -- ARM -------------------------------------------------------------------------------------

    def handle_arm(self, method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        """(status, JSON body, headers) for an authorized ARM request."""
        with self._lock:
            if self.throttled > 0:
                self.throttled -= 1
                return _error(429, "TooManyRequests", "The request is being throttled.", {"Retry-After": str(self.retry_after)})
            if match := OP_PATH.match(path):
                op = self.state.ops.get(match["id"])
                if op is None:
                    return _error(404, "NotFound", f"operation {match['id']} not found")
                answer: dict[str, Any] = {"id": path, "name": op.id, "status": op.status}
                if op.error:
                    answer["error"] = op.error
                return 200, answer, ({"Retry-After": "0"} if op.status == "InProgress" else {})
            match = POOL_PATH.match(path)
            if match is None:
                return _error(404, "InvalidResourceType", f"no such resource {path}")
            name, sub = match["name"], match["sub"]
            if name is None:
                if method != "GET":
                    return _error(405, "MethodNotAllowed", method)
                return 200, {"value": list(self.state.pools.values())}, {}
            pool = self.state.pools.get(name)
            if method == "GET":
                return (200, pool, {}) if pool else _error(404, "NotFound", f"Agent Pool not found: {name}")
            if method == "PUT":
                return self._put(sub, path, name, pool, body)
            if method == "DELETE":
                if pool is None:
                    return 204, None, {}
                op = self._begin(sub, name, "delete")
                pool["properties"]["provisioningState"] = "Deleting"
                url = self._op_url(sub, op)
                return 202, None, {"Azure-AsyncOperation": url, "Location": url}
            return _error(405, "MethodNotAllowed", method)

    def _put(self, sub: str, path: str, name: str, pool: dict[str, Any] | None, body: Any) -> tuple[int, Any, dict[str, str]]:
        if not NAME.match(name):
            return _error(400, "InvalidParameter", f"agentpool name({name}) is invalid: must match ^[a-z][a-z0-9]{{0,11}}$")
        props = (body or {}).get("properties") or {}
        size = props.get("vmSize")
        if not size:
            return _error(400, "InvalidParameter", "properties.vmSize is required")
        if self._busy(name):
            return _error(409, "OperationNotAllowed", IN_PROGRESS_MESSAGE)
        if size in self.put_errors:
            status, code, message = self.put_errors[size]
            return _error(status, code, message)
        op = self._begin(sub, name, "create")
        stored = {
            "id": path, "name": name, "type": "Microsoft.ContainerService/managedClusters/agentPools",
            "properties": {**props, "provisioningState": "Creating" if pool is None else "Updating",
                           "powerState": {"code": "Running"}, "orchestratorVersion": "1.33.2",
                           "nodeImageVersion": "AKSUbuntu-2204gen2containerd-202611.01.0"},
        }
        self.state.pools[name] = stored
        return (201 if pool is None else 200), stored, {"Azure-AsyncOperation": self._op_url(sub, op)}

    # -- Entra ID --------------------------------------------------------------------------------

    def handle_login(self, method: str, path: str, form: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        """OpenID configuration and the token endpoint (client-assertion grant)."""
        tenant = path.strip("/").split("/")[0]
        if path.endswith("/.well-known/openid-configuration"):
            base = f"{self.url}/{tenant}"
            return 200, {"token_endpoint": f"{base}/oauth2/v2.0/token", "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                         "issuer": f"{base}/v2.0", "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode"}, {}
        if path.endswith("/oauth2/v2.0/token") and method == "POST":
            if self.token_error or not form.get("client_assertion"):
                return 401, {"error": "invalid_client", "error_description": self.token_error or "AADSTS700024: Client assertion missing"}, {}
            token = f"emulated-{uuid.uuid4().hex}"
            with self._lock:
                self.tokens.add(token)
            return 200, {"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600, "access_token": token}, {}
        return 404, {"error": "not_found"}, {}


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
    return status, {"error": {"code": code, "message": message}}, headers or {}


class _Handler(BaseHTTPRequestHandler):
    emulator: ArmEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, *_: Any) -> None:  # quiet
        pass

    def _serve(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        emu = self.emulator
        auth = self.headers.get("Authorization", "")
        authorized = auth.startswith("Bearer ") and auth[7:] in emu.tokens
        if url.path.startswith("/subscriptions/"):
            body = json.loads(raw) if raw else None
            with emu._lock:
                emu.requests.append(Recorded(self.command, url.path, query, body, authorized))
            if "api-version" not in query:
                status, answer, headers = _error(400, "MissingApiVersionParameter", "The api-version query parameter is required")
            elif not authorized:
                status, answer, headers = _error(401, "InvalidAuthenticationToken", "The access token is missing or invalid.",
                                                 {"WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/"'})
            else:
                status, answer, headers = emu.handle_arm(self.command, url.path, body)
        else:
            form = dict(urllib.parse.parse_qsl(raw.decode())) if raw else {}
            with emu._lock:
                emu.requests.append(Recorded(self.command, url.path, query, {k: v for k, v in form.items() if k != "client_assertion"}, False))
            status, answer, headers = emu.handle_login(self.command, url.path, form)
        data = json.dumps(answer).encode() if answer is not None else b""
        self.send_response(status)
        self.send_header("x-ms-request-id", uuid.uuid4().hex)
        for key, value in headers.items():
            self.send_header(key, value)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = _serve
