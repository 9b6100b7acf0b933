"""The tuning Job's registry steps, their parts that need no registry: credentials from the
operator's secretKeyRef variables, the push-secret check before training, and a push that
refuses to start without a finished adapter (so a failed training never creates a tag).
The registry round trip runs on the local cluster's registry (tests/realnode)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_the_push_secret_must_cover_the_output_registry_before_training() -> None:
    ok = {TUNING_PUSH_IMAGE_ENV: "127.0.0.1:5001/kaito/adapters/kube:1", TUNING_PUSH_AUTH_ENV: AUTH_A}
    check_push_credentials(ok)
    check_push_credentials({})  # an output volume: nothing to check
    wrong = {**ok, TUNING_PUSH_AUTH_ENV: AUTH_B}
    with pytest.raises(RegistryStepError, match="imagePushSecret has no credentials for registry 127.0.0.1:5001"):
        check_push_credentials(wrong)


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
