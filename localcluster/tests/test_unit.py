"""Fast tests that need no Kubernetes binaries."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kaito_localcluster import build
from kaito_localcluster.cli import build_parser
from kaito_localcluster.cluster import _format_taint
from kaito_localcluster.pki import ClientIdentity, generate_pki
from kaito_localcluster.versions import staging_version


def test_pki_layout_and_sans(tmp_path: Path) -> None:
    pki = generate_pki(tmp_path, [ClientIdentity("admin", "admin", ("system:masters",))])
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    serving = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())
    serving.verify_directly_issued_by(ca)
    san = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "kubernetes.default.svc"} <= set(san.get_values_for_type(x509.DNSName))
    assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.0.0.1")} <= set(san.get_values_for_type(x509.IPAddress))
    admin = x509.load_pem_x509_certificate(pki.client("admin")[0].read_bytes())
    admin.verify_directly_issued_by(ca)
    assert admin.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "admin"
    assert admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    eku = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert stat.S_IMODE(os.stat(pki.sa_private_key).st_mode) == 0o600
    assert b"PUBLIC KEY" in pki.sa_public_key.read_bytes()


def test_k8s_wrapper_module_pins_all_33_staging_modules(tmp_path: Path) -> None:
    gomod, changed = build.render_wrapper_module(
        "k8s", tmp_path, {"K8S_VERSION": "v1.37.1", "STAGING_VERSION": staging_version("v1.37.1")}
    )
    assert changed
    replaces = [line.split() for line in gomod.splitlines() if "=>" in line]
    assert len(replaces) == 33
    assert all(r[2] == r[0] and r[3] == "v0.37.1" for r in replaces)
    assert "require k8s.io/kubernetes v1.37.1" in gomod
    assert (tmp_path / "tools.go").read_text().count("k8s.io/kubernetes/cmd/") == 5


def test_ldflags_and_versions() -> None:
    flags = build.kubernetes_ldflags("v1.37.1", build_date="2026-01-01T00:00:00Z")
    assert "-X 'k8s.io/component-base/version.gitVersion=v1.37.1'" in flags
    assert "-X 'k8s.io/client-go/pkg/version.gitMinor=37'" in flags
    v = build.Versions("v1.37.1", "v0.8.0", "v3.6.16")
    assert v.cache_key == "k8s-v1.37.1-kwok-v0.8.0-etcd-v3.6.16"
    assert v.expected("etcd") == "etcd Version: 3.6.16"
    with pytest.raises(ValueError):
        staging_version("1.37.1")


def _fake_binary(path: Path, output: str, rc: int = 0) -> None:
    path.write_text(f"#!/bin/sh\necho '{output}'\nexit {rc}\n")
    path.chmod(0o755)


def test_kubebuilder_assets_without_go_runs_degraded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    _fake_binary(assets / "kube-apiserver", "Kubernetes v1.36.0")
    _fake_binary(assets / "etcd", "etcd Version: 3.5.21")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))
    monkeypatch.setenv("KAITO_CACHE_DIR", str(tmp_path / "cache"))
    binaries = build.ensure_binaries(allow_build=False)
    assert binaries.source == "KUBEBUILDER_ASSETS"
    assert binaries.kube_apiserver == assets / "kube-apiserver"
    assert binaries.kube_controller_manager is None and binaries.kwok is None
    assert "running without kube-controller-manager" in caplog.text


def test_missing_binaries_without_build_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("KAITO_CACHE_DIR", str(tmp_path))
    with pytest.raises(build.BuildError, match="kaito_localcluster build"):
        build.ensure_binaries(allow_build=False)


def test_failed_build_leaves_no_partial_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing `go` must leave neither binaries nor scratch dirs behind."""
    fake_go_dir = tmp_path / "fakego"
    fake_go_dir.mkdir()
    (fake_go_dir / "go").write_text("#!/bin/sh\necho 'k8s.io/fake/pkg'\necho 'boom: compile error' >&2\nexit 2\n")
    (fake_go_dir / "go").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_go_dir}:{os.environ['PATH']}")
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("KAITO_CACHE_DIR", str(cache))
    lines: list[str] = []
    with pytest.raises(build.BuildError, match="boom: compile error"):
        build.ensure_binaries(nice=0, progress=lines.append)
    entry = cache / build.Versions().cache_key
    assert not (entry / "bin").exists() or not any((entry / "bin").iterdir())
    assert not [p for p in cache.iterdir() if p.name.startswith(".build-")]
    assert any("go mod tidy" in line for line in lines)


def test_taint_parsing() -> None:
    assert _format_taint("sku=gpu:NoSchedule") == {"key": "sku", "value": "gpu", "effect": "NoSchedule"}
    assert _format_taint("dedicated:NoExecute") == {"key": "dedicated", "effect": "NoExecute"}
    with pytest.raises(ValueError):
        _format_taint("nonsense")


def test_cli_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for word in ("build", "up", "down", "status", "KUBEBUILDER_ASSETS"):
        assert word in out
    assert "_supervise" not in out
    args = build_parser().parse_args(["up", "--crd", "a.yaml", "--crd", "b.yaml", "--with", "sleep 1", "--with", "sleep 2"])
    assert args.crd == ["a.yaml", "b.yaml"] and args.with_commands == ["sleep 1", "sleep 2"]


def test_default_state_dir_is_per_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kaito_localcluster.supervisor import default_state_dir

    monkeypatch.delenv("KAITO_CLUSTER_STATE_DIR", raising=False)
    monkeypatch.setenv("KAITO_CACHE_DIR", str(tmp_path / "cache"))
    a, b = tmp_path / "wt" / "a", tmp_path / "wt" / "b"
    for checkout in (a, b):
        (checkout / "sub").mkdir(parents=True)
        (checkout / ".git").write_text("gitdir: elsewhere\n")  # a worktree's .git is a file
    assert default_state_dir(a / "sub") == default_state_dir(a)
    assert default_state_dir(a) != default_state_dir(b)
    assert default_state_dir(a).name.startswith("a-")
    assert default_state_dir(tmp_path) == tmp_path / "cache" / "cluster" / "default"
    monkeypatch.setenv("KAITO_CLUSTER_STATE_DIR", str(tmp_path / "explicit"))
    assert default_state_dir(a) == tmp_path / "explicit"
