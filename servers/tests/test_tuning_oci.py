"""The tuning Job's registry steps, their parts that need no registry: credentials from the
operator's secretKeyRef variables, the push-secret check before training, and a push that
refuses to start without a finished adapter (so a failed training never creates a tag).
The registry round trip runs on the local cluster's registry (tests/realnode)."""

from __future__ import annotations

import base64
import http.server
import json
import os
import ssl
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from kaito_localcluster.pki import generate_ca, issue_serving_cert

from kaito_core.serving import TUNING_PULL_AUTH_ENV_PREFIX, TUNING_PUSH_AUTH_ENV, TUNING_PUSH_IMAGE_ENV
from kaito_servers.tuning.oci import (
    RegistryStepError,
    adapter_files,
    check_push_credentials,
    docker_config_from_env,
    pull_auth_names,
)

AUTH_A = json.dumps({"auths": {"127.0.0.1:5001": {"auth": "dTpw"}}})
AUTH_B = json.dumps({"auths": {"ghcr.io": {"auth": "dTpx"}}})


def test_pull_secrets_are_merged_into_one_private_docker_config(tmp_path: Path) -> None:
    environ = {f"{TUNING_PULL_AUTH_ENV_PREFIX}1": AUTH_B, f"{TUNING_PULL_AUTH_ENV_PREFIX}0": AUTH_A, "OTHER": "x"}
    names = pull_auth_names(environ)
    assert names == [f"{TUNING_PULL_AUTH_ENV_PREFIX}0", f"{TUNING_PULL_AUTH_ENV_PREFIX}1"]
    path = docker_config_from_env(environ, names, where=tmp_path)
    assert path is not None and path.stat().st_mode & 0o777 == 0o600
    assert set(json.loads(path.read_text())["auths"]) == {"127.0.0.1:5001", "ghcr.io"}
    assert docker_config_from_env({}, names, where=tmp_path) is None


def test_a_secret_that_is_not_a_docker_config_is_named(tmp_path: Path) -> None:
    with pytest.raises(RegistryStepError, match=f"{TUNING_PUSH_AUTH_ENV} is not a docker config.*docker-registry"):
        docker_config_from_env({TUNING_PUSH_AUTH_ENV: '{"username": "u"}'}, [TUNING_PUSH_AUTH_ENV], where=tmp_path)


class FakeRegistry:
    """A registry's /v2/ endpoint over TLS on 127.0.0.1 (a certificate from a fresh CA): Basic
    challenge, 200 for user:pass, 401 otherwise; or, with ``bearer``, a token endpoint that
    grants push scope to user:pass only. It records the token requests' scopes."""

    def __init__(self, tmp: Path, *, bearer: bool = False) -> None:
        ca_cert, ca_key = generate_ca("test-registry-ca")
        cert, key = issue_serving_cert(ca_cert, ca_key, "127.0.0.1", [], ["127.0.0.1"])
        (tmp / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        (tmp / "tls.crt").write_bytes(cert)
        (tmp / "tls.key").write_bytes(key)
        self.ca_file = tmp / "ca.crt"
        self.scopes: list[str] = []
        outer = self
        good = "Basic " + base64.b64encode(b"user:pass").decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                ok = self.headers.get("Authorization") == good
                if self.path.startswith("/token"):
                    outer.scopes.append(urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["scope"][0])
                    self.send_response(200 if ok else 401)
                elif bearer:
                    self.send_response(401)
                    self.send_header("Www-Authenticate", f'Bearer realm="https://127.0.0.1:{outer.port}/token",service="test"')
                else:
                    self.send_response(200 if ok else 401)
                    if not ok:
                        self.send_header("Www-Authenticate", 'Basic realm="registry"')
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tmp / "tls.crt"), str(tmp / "tls.key"))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def auth(self, login: bytes) -> str:
        return json.dumps({"auths": {f"127.0.0.1:{self.port}": {"auth": base64.b64encode(login).decode()}}})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("bearer", [False, True], ids=["basic", "token"])
def test_the_push_secret_must_cover_the_registry_and_be_accepted_before_training(tmp_path: Path, bearer: bool) -> None:
    registry = FakeRegistry(tmp_path, bearer=bearer)
    try:
        image = f"127.0.0.1:{registry.port}/kaito/adapters/kube:1"
        check_push_credentials({TUNING_PUSH_IMAGE_ENV: image, TUNING_PUSH_AUTH_ENV: registry.auth(b"user:pass")}, ca_file=registry.ca_file)
        if bearer:
            assert registry.scopes == ["repository:kaito/adapters/kube:push,pull"]
        check_push_credentials({})  # an output volume: nothing to check
        with pytest.raises(RegistryStepError, match=f"imagePushSecret has no credentials for registry 127.0.0.1:{registry.port}"):
            check_push_credentials({TUNING_PUSH_IMAGE_ENV: image, TUNING_PUSH_AUTH_ENV: AUTH_B}, ca_file=registry.ca_file)
        with pytest.raises(RegistryStepError, match=r"refuses the credentials of tuning.output.imagePushSecret \(user 'user', HTTP 401\)"):
            check_push_credentials({TUNING_PUSH_IMAGE_ENV: image, TUNING_PUSH_AUTH_ENV: registry.auth(b"user:wrong")},
                                   ca_file=registry.ca_file)
    finally:
        registry.close()


def test_nothing_is_pushed_before_the_training_finished(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.safetensors").write_bytes(b"w")
    with pytest.raises(RegistryStepError, match="fine_tuning_completed.txt: the training did not finish"):
        adapter_files(tmp_path)
    (tmp_path / "fine_tuning_completed.txt").write_text("done")
    (tmp_path / "checkpoint-50").mkdir()
    assert [p.name for p in adapter_files(tmp_path)] == ["adapter_config.json", "adapter_model.safetensors"]
    (tmp_path / "adapter.gguf").write_bytes(b"GGUF")
    assert [p.name for p in adapter_files(tmp_path)][-1] == "adapter.gguf"
    (tmp_path / "adapter_model.safetensors").unlink()
    with pytest.raises(RegistryStepError, match="no adapter_model.safetensors"):
        adapter_files(tmp_path)


def test_push_adapter_exits_2_with_the_cause_in_the_termination_log(tmp_path: Path) -> None:
    """The command a Job's push step runs: no finished adapter -> exit 2 (the Job fails at once)
    and the message in the termination log, which the operator copies into the condition."""
    log = tmp_path / "termination-log"
    env = {**os.environ, "KAITO_TUNING_TERMINATION_LOG": str(log), TUNING_PUSH_IMAGE_ENV: "127.0.0.1:5001/a/b:1"}
    done = subprocess.run([sys.executable, "-m", "kaito_servers", "push-adapter", "--src", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "the training did not finish" in log.read_text()


def test_a_basic_auth_registry_gets_the_password_with_every_request(tmp_path: Path) -> None:
    """The oras client of a Basic-auth registry sends the docker config's login up front: a blob
    upload (PUT with a body) answered 401 is cut off by the registry instead of being retried."""
    from kaito_servers.adapter_pull import registry_client

    registry = FakeRegistry(tmp_path)
    try:
        config = tmp_path / "config.json"
        config.write_text(registry.auth(b"user:pass"))
        client = registry_client(f"127.0.0.1:{registry.port}", str(registry.ca_file), config)
        # The first request already carries the password (the fake answers 401 to a bare one).
        assert client.session.get(f"https://127.0.0.1:{registry.port}/v2/", verify=str(registry.ca_file)).status_code == 200
    finally:
        registry.close()
