"""Data URLs: the SSRF guard, retries, the size limit and the content checks, against a loopback server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kaito_servers.tuning.fetch import FetchError, fetch_url
from kaito_servers.tuning.sample_data import dolly_rows, write_parquet


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    parquet = write_parquet(dolly_rows(20), tmp_path_factory.mktemp("served") / "dolly.parquet").read_bytes()
    state = {"flaky": 0, "parquet": parquet}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes = b"", ctype: str = "application/octet-stream", **headers: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?")[0]
            if path == "/dolly.parquet":
                self._send(200, parquet)
            elif path == "/flaky/dolly.parquet":
                state["flaky"] += 1
                self._send(503) if state["flaky"] < 3 else self._send(200, parquet)
            elif path == "/page.parquet":
                self._send(200, b"<!DOCTYPE html><html>Sign in</html>", "text/html; charset=utf-8")
            elif path == "/fake.parquet":
                self._send(200, b"not parquet at all")
            elif path == "/to-metadata":
                self._send(302, Location="http://169.254.169.254/latest/meta-data/data.parquet")
            elif path == "/to-file":
                self._send(302, Location="/dolly.parquet")
            else:
                self._send(404, b"no")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state["base"] = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    thread.join(timeout=10)


ALLOW = {"127.0.0.1"}


def test_loopback_is_refused_without_the_allowance(server: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="must not target a loopback, private, or link-local address.*127.0.0.1 is loopback"):
        fetch_url(server["base"] + "/dolly.parquet", tmp_path)
    assert not list(tmp_path.iterdir())


def test_download_with_allowance_redirect_and_retries(server: dict[str, Any], tmp_path: Path) -> None:
    path = fetch_url(server["base"] + "/dolly.parquet?download=1", tmp_path, allow_hosts=ALLOW)
    assert path == tmp_path / "dolly.parquet" and path.read_bytes() == server["parquet"]
    assert fetch_url(server["base"] + "/to-file", tmp_path / "r", allow_hosts=ALLOW).read_bytes() == server["parquet"]
    flaky = fetch_url(server["base"] + "/flaky/dolly.parquet", tmp_path / "f", allow_hosts=ALLOW, backoff_s=0.01)
    assert flaky.read_bytes() == server["parquet"] and server["flaky"] == 3  # two 503s retried


def test_bad_content_size_status_and_redirects_are_refused_and_leave_nothing(server: dict[str, Any], tmp_path: Path) -> None:
    base = server["base"]
    cases = [
        (base + "/page.parquet", {}, "sent an HTML page .*link to the raw file"),
        (base + "/fake.parquet", {}, "not a parquet file"),
        (base + "/dolly.parquet", {"max_bytes": 100}, "over the limit of 100"),
        (base + "/missing.parquet", {}, "answered HTTP 404"),
        (base + "/to-metadata", {}, "169.254.169.254 is link-local"),
        ("ftp://127.0.0.1/dolly.parquet", {}, "must use HTTP or HTTPS"),
    ]
    for url, kwargs, message in cases:
        with pytest.raises(FetchError, match=message):
            fetch_url(url, tmp_path, allow_hosts=ALLOW, backoff_s=0.01, **kwargs)
    assert not list(tmp_path.iterdir())


def test_host_names_are_checked_after_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A public-looking name that resolves to a private address (DNS rebinding) is refused before connecting."""
    def fake_getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        assert host == "data.example.com"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(FetchError, match="data.example.com resolves to 10.1.2.3 is private"):
        fetch_url("https://data.example.com/dolly.parquet", tmp_path)
    with pytest.raises(FetchError, match="metadata endpoint"):
        fetch_url("http://metadata.google.internal/x.parquet", tmp_path)


def test_runner_fetches_and_checks_data_as_a_data_step(server: dict[str, Any], tmp_path: Path) -> None:
    """``tune --data-url URL --check-only``: what a Job's data-fetch step runs (no model needed)."""
    import os
    import subprocess
    import sys

    def tune(data: Path, **env: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "kaito_servers", "tune", "--method", "qlora", "--data-dir", str(data), "--check-only",
               "--data-url", server["base"] + "/dolly.parquet", "--log-format", "text"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, **env}, check=False)

    refused = tune(tmp_path / "a")
    assert refused.returncode == 2 and "must not target a loopback" in refused.stderr
    assert not (tmp_path / "a" / "dolly.parquet").exists()
    ok = tune(tmp_path / "b", KAITO_TUNING_ALLOW_HOSTS="127.0.0.1")
    assert ok.returncode == 0, ok.stderr
    assert "config and data are valid" in ok.stderr and "rows=20" in ok.stderr
    assert (tmp_path / "b" / "dolly.parquet").read_bytes() == server["parquet"]
