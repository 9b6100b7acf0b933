"""The adapter puller's pure parts: registry of a reference, auth scheme from the challenge, and the
``/data`` extraction of upstream-style adapter images (no path may leave the target directory).
Its registry round trip runs on the local cluster's registry in tests/realnode/test_adapter_registry_round_trip.py."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from kaito_servers.adapter_pull import _extract_data_dir, auth_backend_for, has_credentials, is_adapter_dir, registry_of


@pytest.mark.parametrize(
    ("ref", "registry"),
    [
        ("127.0.0.1:5001/kaito/adapters/kube:1", "127.0.0.1:5001"),
        ("myregistry.azurecr.io/adapters/phi-3:0.0.1", "myregistry.azurecr.io"),
        ("localhost/a:1", "localhost"),
        ("library/adapter:1", "docker.io"),
        ("adapter:1", "docker.io"),
    ],
)
def test_registry_of_a_reference(ref: str, registry: str) -> None:
    assert registry_of(ref) == registry


def test_auth_backend_follows_the_challenge() -> None:
    assert auth_backend_for('Basic realm="basic-realm"') == "basic"
    assert auth_backend_for('Bearer realm="https://ghcr.io/token",service="ghcr.io"') == "token"
    assert auth_backend_for("") == "token"


def _layer(path: Path, members: dict[str, bytes], symlink: tuple[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink[0])
            info.type = tarfile.SYMTYPE
            info.linkname = symlink[1]
            tar.addfile(info)
    return path


def test_upstream_images_give_their_data_dir_and_nothing_else(tmp_path: Path) -> None:
    layer = _layer(tmp_path / "sha256:abc", {
        "data/adapter_config.json": b"{}",
        "./data/adapter_model.safetensors": b"weights",
        "etc/passwd": b"root",
        "data/../../escape": b"x",
    }, symlink=("data/link.gguf", "/etc/shadow"))
    dest = tmp_path / "out"
    written = _extract_data_dir(layer, dest)
    assert sorted(p.name for p in written) == ["adapter_config.json", "adapter_model.safetensors"]
    assert sorted(p.name for p in dest.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert not (tmp_path / "escape").exists() and is_adapter_dir(dest)


def test_a_gguf_alone_is_an_adapter(tmp_path: Path) -> None:
    assert not is_adapter_dir(tmp_path)
    (tmp_path / "adapter.gguf").write_bytes(b"GGUF")
    assert is_adapter_dir(tmp_path)


def test_credentials_are_found_by_registry_host(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"auths": {"https://127.0.0.1:5001/": {"auth": "dTpw"}, "ghcr.io": {"auth": "dTpw"}}}')
    assert has_credentials(config, "127.0.0.1:5001") and has_credentials(config, "ghcr.io")
    assert not has_credentials(config, "myregistry.azurecr.io")
    assert not has_credentials(None, "ghcr.io") and not has_credentials(tmp_path / "absent.json", "ghcr.io")


def test_the_operators_puller_command_and_env_are_this_subcommand() -> None:
    """The operator writes kaito_core.serving's command and env names; this CLI answers to them."""
    import argparse

    from kaito_core.serving import ADAPTER_CA_FILE, ADAPTER_CA_FILE_ENV, ADAPTER_DIR_ENV, ADAPTER_IMAGE_ENV, ADAPTER_PULL_COMMAND
    from kaito_servers.adapter_pull import add_parser

    assert ADAPTER_PULL_COMMAND[:3] == ("python3", "-m", "kaito_servers")
    env = {ADAPTER_IMAGE_ENV: "10.88.0.1:5001/kaito/adapters/a:1", ADAPTER_DIR_ENV: "/mnt/adapter/a", ADAPTER_CA_FILE_ENV: ADAPTER_CA_FILE}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        parser = argparse.ArgumentParser()
        add_parser(parser.add_subparsers(dest="command"))
        ns = parser.parse_args([ADAPTER_PULL_COMMAND[3]])
    assert (ns.image, ns.dest, ns.ca_file) == (env[ADAPTER_IMAGE_ENV], env[ADAPTER_DIR_ENV], ADAPTER_CA_FILE)
