"""Plugin packages for the in-cluster operator, without a cluster: the pip command the init
container runs, the real ``kaito install-plugins`` into a prefix from an HTTP find-links server
(as the chart does it), the operator's check of the expected packages, and its ``/readyz``
naming a package that is missing."""

from __future__ import annotations

import asyncio
import functools
import http.server
import importlib.metadata
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kaito_core.operator import plugin_packages
from kaito_core.operator.plugin_packages import PackageProblem, PluginInstallError, check, pip_command
from kaito_core.operator.runtime import run
from kaito_core.operator.settings import OperatorSettings, PluginSettings
from tests.conftest import ROOT


def test_the_pip_command_carries_every_setting() -> None:
    settings = PluginSettings(
        packages=["kaito-smollm2==0.1.0", "kaito-other>=1"], index_url="https://pypi.example.com/simple",
        extra_index_urls=["https://extra.example.com/simple"], find_links=["http://10.88.0.1:8000/"], no_index=True,
        trusted_hosts=["10.88.0.1"], ca_bundle="/etc/kaito/plugins-ca/ca.crt", prefix="/opt/kaito/plugins",
    )
    command = pip_command(settings, python="python3", artifacts=Path("/opt/kaito/plugins/.oci-wheels"))
    assert command[:6] == ["python3", "-m", "pip", "install", "--prefix", "/opt/kaito/plugins"]
    text = " ".join(command)
    for part in ("--no-index", "--index-url https://pypi.example.com/simple", "--extra-index-url https://extra.example.com/simple",
                 "--find-links http://10.88.0.1:8000/", "--find-links /opt/kaito/plugins/.oci-wheels",
                 "--trusted-host 10.88.0.1", "--cert /etc/kaito/plugins-ca/ca.crt", "--no-cache-dir"):
        assert part in text
    assert command[-2:] == ["kaito-smollm2==0.1.0", "kaito-other>=1"]
    with pytest.raises(PluginInstallError, match="plugins.prefix is empty"):
        pip_command(settings.model_copy(update={"prefix": ""}))


def test_a_bad_requirement_names_its_index_and_the_form() -> None:
    with pytest.raises(PluginInstallError, match=r"plugins.packages\[1\] 'kaito smollm2' is not a pip requirement"):
        plugin_packages.parse_requirements(["kaito-ok", "kaito smollm2"])
    assert "plugins.packages[0]" in str(check(["==1"])[0])


class _FakeEntryPoint:
    def __init__(self, name: str, value: str, error: Exception | None = None) -> None:
        self.name, self.value, self.group, self._error = name, value, "kaito", error

    def load(self) -> object:
        if self._error is not None:
            raise self._error
        return object()


class _FakeDist:
    def __init__(self, version: str, entry_points: list[Any]) -> None:
        self.version, self.entry_points = version, entry_points


def test_check_names_each_unusable_package_and_why() -> None:
    dists: dict[str, Any] = {
        "kaito-good": _FakeDist("0.1.0", [_FakeEntryPoint("kaito-good", "kaito_good")]),
        "kaito-old": _FakeDist("0.1.0", [_FakeEntryPoint("kaito-old", "kaito_old")]),
        "kaito-plain": _FakeDist("1.0", []),
        "kaito-broken": _FakeDist("1.0", [_FakeEntryPoint("kaito-broken", "kaito_broken", ImportError("No module named 'torch'"))]),
    }
    problems = check(["kaito-good", "kaito-old>=0.2", "kaito-plain", "kaito-broken", "kaito-absent==1.0"], find=dists.get)
    by_package = {p.package: p.problem for p in problems}
    assert set(by_package) == {"kaito-old>=0.2", "kaito-plain", "kaito-broken", "kaito-absent==1.0"}
    assert "installed version 0.1.0 does not satisfy >=0.2" in by_package["kaito-old>=0.2"]
    assert "declares no entry point in the group 'kaito'" in by_package["kaito-plain"]
    assert "kaito_broken fails to load: ImportError: No module named 'torch'" in by_package["kaito-broken"]
    assert "not installed" in by_package["kaito-absent==1.0"] and "-c install-plugins" in by_package["kaito-absent==1.0"]
    assert str(PackageProblem("kaito-x", "why")) == "plugin package kaito-x: why"


@pytest.fixture(scope="module")
def wheel_server(example_plugin_wheels: Path) -> Iterator[str]:
    """The example plugin's wheel behind a plain HTTP directory listing (pip --find-links), as the
    in-cluster test serves it on the node bridge."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(example_plugin_wheels))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _install_env(prefix: Path, packages: list[str], find_links: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAITO_")}
    env.update({
        "KAITO_PLUGINS__PACKAGES": json.dumps(packages), "KAITO_PLUGINS__FIND_LINKS": json.dumps([find_links]),
        "KAITO_PLUGINS__NO_INDEX": "true", "KAITO_PLUGINS__TRUSTED_HOSTS": json.dumps(["127.0.0.1"]),
        "KAITO_PLUGINS__PREFIX": str(prefix), "PYTHONPATH": str(ROOT),
    })
    return env


def _kaito(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = "import sys; from kaito_core.cli import app; sys.exit(app(args=sys.argv[1:], prog_name='kaito'))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300, check=False)


def test_install_plugins_from_an_http_index_then_the_operator_finds_the_preset(wheel_server: str, tmp_path: Path) -> None:
    prefix = tmp_path / "plugins"
    env = _install_env(prefix, ["kaito-smollm2==0.1.0"], wheel_server)
    result = _kaito("install-plugins", env=env)
    assert result.returncode == 0, result.stderr
    assert f"installed kaito-smollm2==0.1.0 into {prefix}" in result.stdout
    # Only the plugin is in the prefix: kaito-core and its dependencies came from the image.
    installed = sorted(p.name for d in plugin_packages.site_dirs(prefix) for p in d.glob("*.dist-info"))
    assert installed == ["kaito_smollm2-0.1.0.dist-info"]
    # As the operator does at start: the prefix on the path, the check, then the registry.
    code = (
        "import json, os, sys\n"
        "from kaito_core.operator import plugin_packages\n"
        "from kaito_core.plugins import Registry\n"
        "plugin_packages.activate(os.environ['KAITO_PLUGINS__PREFIX'])\n"
        "problems = plugin_packages.check(json.loads(os.environ['KAITO_PLUGINS__PACKAGES']))\n"
        "registry = Registry.from_entry_points()\n"
        "print(json.dumps({'problems': [str(p) for p in problems], 'from': registry.source('preset', 'smollm2-135m-instruct').distribution}))\n"
    )
    seen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert seen.returncode == 0, seen.stderr
    assert json.loads(seen.stdout) == {"problems": [], "from": "kaito-smollm2"}


def test_install_plugins_that_cannot_be_found_names_the_package(wheel_server: str, tmp_path: Path) -> None:
    env = _install_env(tmp_path / "plugins", ["kaito-smollm2==0.1.0", "kaito-no-such-plugin==9.9"], wheel_server)
    result = _kaito("install-plugins", env=env)
    assert result.returncode == 1
    assert "kaito install-plugins: plugin package(s) kaito-smollm2==0.1.0, kaito-no-such-plugin==9.9 could not be installed" in result.stderr
    assert "No matching distribution found for kaito-no-such-plugin==9.9" in result.stderr


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError:
        return 0, ""  # not listening yet


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_missing_plugin_keeps_the_operator_not_ready_naming_it() -> None:
    """No cluster needed: the check comes before the operator connects anywhere."""
    unused_tcp_port = _free_port()
    settings = OperatorSettings.load(
        plugins={"packages": ["kaito-no-such-plugin==9.9"]}, metrics={"port": unused_tcp_port}, webhook={"enabled": False},
    )
    answers: dict[str, tuple[int, str]] = {}

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run(settings, stop_flag=stop))
        for _ in range(100):
            await asyncio.sleep(0.05)
            status, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{unused_tcp_port}/readyz")
            if status:
                answers["readyz"] = (status, body)
                break
        answers["metrics"] = await asyncio.to_thread(_get, f"http://127.0.0.1:{unused_tcp_port}/metrics")
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    status, body = answers["readyz"]
    assert status == 503
    assert "plugin package kaito-no-such-plugin==9.9: not installed" in body
    assert answers["metrics"][0] == 200  # liveness keeps passing: the pod is Running, not Ready


def test_an_installed_plugin_passes_the_check() -> None:
    # The repository's own plugins are installed editable here: one of them stands for "present".
    assert importlib.metadata.distribution("kaito-phi3")
    assert check(["kaito-phi3>=0.1"]) == []
