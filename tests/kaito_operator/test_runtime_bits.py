"""Settings from the environment, webhook certificates kept across restarts, poke fingerprints,
and the error boundary."""

from __future__ import annotations

import asyncio
from pathlib import Path

import kopf
import pytest
from cryptography import x509

from kaito_core.errors import NotReadyError, ProvisioningError, ValidationError, FieldError
from kaito_core.operator.boundary import to_kopf
from kaito_core.operator.certs import ensure_certificates
from kaito_core.operator.pokes import Pokes, fingerprint
from kaito_core.operator.settings import OperatorSettings


def test_settings_sections_come_from_env_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_NODE_PROVISIONER__NAME", "byo")
    monkeypatch.setenv("KAITO_REQUEUE__RESYNC_S", "30")
    settings = OperatorSettings.load(webhook={"port": 10443})
    assert settings.node_provisioner.name == "byo" and settings.requeue.resync_s == 30.0
    assert settings.webhook.port == 10443 and settings.webhook.host == "127.0.0.1"
    assert settings.images.inference == "ghcr.io/kaito-py/kaito-servers:0.1.0"


def test_webhook_certificates_are_kept_and_renewed_for_new_hosts(tmp_path: Path) -> None:
    first = ensure_certificates(tmp_path, ["127.0.0.1", "localhost"])
    ca_pem = first.ca.read_bytes()
    again = ensure_certificates(tmp_path, ["127.0.0.1", "localhost"])
    assert again.ca.read_bytes() == ca_pem  # a restart keeps the CA the API server trusts
    cert = x509.load_pem_x509_certificate(again.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(ca_pem)
    cert.verify_directly_issued_by(ca)
    renewed = ensure_certificates(tmp_path, ["webhook.kaito-system.svc"])
    assert renewed.ca.read_bytes() != ca_pem
    assert (tmp_path / "tls.key").stat().st_mode & 0o077 == 0


def test_pokes_wake_only_on_meaningful_changes() -> None:
    async def scenario() -> list[bool]:
        pokes = Pokes()
        event = pokes.register(("ns", "ws"))
        seen = []
        node = {"status": {"conditions": [{"type": "Ready", "status": "False"}], "capacity": {}}, "metadata": {}}
        for _ in range(2):
            pokes.poke_if_changed(("Node", "", "n1"), ("ns", "ws"), fingerprint.node(node))
            seen.append(event.is_set())
            event.clear()
        node["status"]["conditions"][0]["status"] = "True"
        pokes.poke_if_changed(("Node", "", "n1"), ("ns", "ws"), fingerprint.node(node))
        seen.append(event.is_set())
        return seen

    assert asyncio.run(scenario()) == [True, False, True]


def test_a_workspace_daemon_counts_as_running_until_it_unregisters() -> None:
    """The finalizer waits while this is True (a round in flight could still create a NodeClaim)."""
    async def scenario() -> list[bool]:
        pokes = Pokes()
        event = pokes.register(("ns", "ws"))
        seen = [pokes.running(("ns", "ws")), pokes.running(("ns", "other"))]
        pokes.unregister(("ns", "ws"), event)
        return [*seen, pokes.running(("ns", "ws"))]

    assert asyncio.run(scenario()) == [True, False, False]


def test_workspace_fingerprint_ignores_our_status_writes() -> None:
    body = {"metadata": {"generation": 1, "annotations": {"workspace.kaito.io/revision": "1"}}, "status": {"state": "Pending"}}
    later = {**body, "status": {"state": "Ready"}}
    assert fingerprint.workspace(body) == fingerprint.workspace(later)
    assert fingerprint.workspace(body) != fingerprint.workspace({**body, "metadata": {"generation": 2}})


def test_the_boundary_maps_our_errors_to_kopf() -> None:
    temp = to_kopf(NotReadyError("nodes", delay=7))
    assert isinstance(temp, kopf.TemporaryError) and temp.delay == 7
    assert isinstance(to_kopf(ValidationError([FieldError("resource.count", "bad")])), kopf.PermanentError)
    assert isinstance(to_kopf(ProvisioningError("quota", retryable=False)), kopf.PermanentError)
    assert isinstance(to_kopf(ProvisioningError("throttled")), kopf.TemporaryError)
    assert to_kopf(ZeroDivisionError()) is None


def test_the_boundary_table_gives_result_status_delay_setting_and_event() -> None:
    from kubernetes import client

    from kaito_core.errors import NotFoundError
    from kaito_core.operator.boundary import classify
    from kaito_core.operator.settings import RequeueSettings

    s = RequeueSettings(provisioning_s=31, conflict_s=2, api_error_s=7, error_s=11, invalid_s=601)
    retry = classify(ProvisioningError("throttled", reason="Throttled"), s, generation=3)
    assert (retry.result, retry.delay_s, retry.event_reason) == ("requeue", 31, "ProvisioningFailed")
    assert retry.facts is not None and retry.facts.blocked_reason == "Throttled" and retry.facts.generation == 3
    invalid = classify(ValidationError([FieldError("resource.count", "bad")]), s)
    assert (invalid.result, invalid.delay_s) == ("invalid", 601) and invalid.facts and "resource.count" in invalid.facts.invalid_message
    missing = classify(NotFoundError("preset 'x' is not installed"), s)
    assert missing.result == "invalid" and missing.facts and missing.facts.blocked_reason == "NotFoundError"
    assert classify(client.ApiException(status=409), s).delay_s == 2
    assert classify(client.ApiException(status=500), s).delay_s == 7
    bug = classify(ZeroDivisionError(), s)
    assert (bug.result, bug.delay_s, bug.facts) == ("error", 11, None)
    waiting = classify(NotReadyError("nodes", delay=3), s)
    assert (waiting.result, waiting.delay_s, waiting.facts, waiting.event_reason) == ("requeue", 3, None, None)
