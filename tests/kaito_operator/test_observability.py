"""Metrics and structured logs of the operator, driven through the real reconcile and admission
code with the API server replaced by an in-memory fake at the operator's transport."""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import json
import logging
import sys
import urllib.request
from typing import Any

import kopf
import pytest
from fakeapi import FakeApiServer

from kaito_core.operator import wiring
from kaito_core.operator.context import OperatorContext
from kaito_core.operator.kube import Kube
from kaito_core.operator.logs import JsonFormatter
from kaito_core.operator.metrics import OperatorMetrics, api_verb_and_resource
from kaito_core.operator.reconciler import Reconciler
from kaito_core.operator.settings import OperatorSettings
from kaito_core.plugins import Registry
from opgolden import load_example

READY_NODE = {
    "apiVersion": "v1", "kind": "Node",
    "metadata": {"name": "gpu-1", "labels": {"apps": "phi-3"}},
    "spec": {},
    "status": {"conditions": [{"type": "Ready", "status": "True"}], "capacity": {"nvidia.com/gpu": "1"}},
}


class BrokenApi(FakeApiServer):
    """An API server whose node list fails with something that is not an API error (a bug)."""

    def __call__(self, api: Any, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if path == "/api/v1/nodes":
            raise ZeroDivisionError("boom")
        return super().__call__(api, method, path, **kwargs)


def make_ctx(registry: Registry, nodes: list[dict[str, Any]], api: FakeApiServer | None = None) -> OperatorContext:
    """An operator context over an in-memory API server holding the byo nodes ``nodes``."""
    settings = OperatorSettings.load(node_provisioner={"name": "byo"})
    metrics = OperatorMetrics()
    reconciler = Reconciler(Kube(None, on_request=metrics.api_request, send=api or FakeApiServer(*nodes)), registry, settings, metrics)
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    return OperatorContext(settings=settings, registry=registry, reconciler=reconciler, executor=executor, metrics=metrics)


def byo_workspace(name: str = "workspace-phi-3-mini") -> dict[str, Any]:
    """The phi-3 example as a bring-your-own-nodes workspace (no instanceType)."""
    obj = load_example("examples/inference/kaito_workspace_phi_3.yaml", name=name)
    del obj["resource"]["instanceType"]
    return obj


def sample(ctx: OperatorContext, name: str, labels: dict[str, str] | None = None) -> float:
    """One sample value of the context's registry (0 when absent)."""
    return ctx.metrics.registry.get_sample_value(name, labels or {}) or 0.0


def test_reconcile_and_admission_fill_every_family(registry: Registry) -> None:
    waiting = make_ctx(registry, nodes=[])
    ws = byo_workspace()
    bad = byo_workspace("bad")
    bad["inference"]["preset"]["name"] = "no-such-preset"
    asyncio.run(waiting.reconcile_once(ws))
    asyncio.run(waiting.reconcile_once(bad))
    assert sample(waiting, "kaito_workspace_reconcile_total", {"result": "requeue"}) == 1
    assert sample(waiting, "kaito_workspace_reconcile_total", {"result": "invalid"}) == 1
    assert sample(waiting, "kaito_workspaces", {"state": "Pending"}) == 1
    assert sample(waiting, "kaito_workspaces", {"state": "Failed"}) == 1

    ready = make_ctx(registry, nodes=[READY_NODE])
    asyncio.run(ready.reconcile_once(ws))  # creates the workload: not ready as read before
    asyncio.run(ready.reconcile_once(ws))  # reads it ready
    assert sample(ready, "kaito_workspace_reconcile_total", {"result": "ok"}) == 1
    assert sample(ready, "kaito_workspaces", {"state": "Ready"}) == 1
    assert sample(ready, "kaito_workspace_preset_count", {"preset": "phi-3-mini-4k-instruct"}) == 1
    assert sample(ready, "kaito_workspace_reconcile_duration_seconds_count") == 2
    assert sample(ready, "kaito_api_requests_total", {"verb": "create", "resource": "deployments"}) == 1
    assert sample(ready, "kaito_api_requests_total", {"verb": "patch", "resource": "workspaces/status"}) == 2  # pending, then ready

    wiring.admit(ready, ws, None, "CREATE")
    with pytest.raises(kopf.AdmissionError):
        wiring.admit(ready, bad, None, "CREATE")
    assert sample(ready, "kaito_admission_requests_total", {"result": "allowed"}) == 1
    assert sample(ready, "kaito_admission_requests_total", {"result": "denied"}) == 1

    ready.metrics.workspace_gone("default", ws["metadata"]["name"])
    assert sample(ready, "kaito_workspaces", {"state": "Ready"}) == 0
    text = ready.metrics.exposition()
    for family in ("kaito_workspace_reconcile_total", "kaito_workspace_reconcile_duration_seconds_bucket", "kaito_workspaces",
                   "kaito_workspace_preset_count", "kaito_admission_requests_total", "kaito_api_requests_total"):
        assert family in text
    for ctx in (waiting, ready):
        ctx.executor.shutdown()


def test_an_unexpected_error_is_counted_as_error(registry: Registry) -> None:
    ctx = make_ctx(registry, nodes=[], api=BrokenApi())
    asyncio.run(ctx.reconcile_once(byo_workspace()))
    assert sample(ctx, "kaito_workspace_reconcile_total", {"result": "error"}) == 1
    ctx.executor.shutdown()


def test_api_verbs_and_resources_come_from_the_path() -> None:
    assert api_verb_and_resource("GET", "/apis/apps/v1/namespaces/ns/deployments/ws") == ("get", "deployments")
    assert api_verb_and_resource("GET", "/api/v1/namespaces/ns/pods") == ("list", "pods")
    assert api_verb_and_resource("PATCH", "/apis/kaito.sh/v1beta1/namespaces/ns/workspaces/ws/status") == ("patch", "workspaces/status")


def test_the_metrics_server_serves_and_stops() -> None:
    metrics = OperatorMetrics()
    metrics.admission(allowed=True)
    server = metrics.serve("127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = resp.read().decode()
        assert 'kaito_admission_requests_total{result="allowed"} 1.0' in body
    finally:
        server.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


def test_json_logs_carry_the_object_reference() -> None:
    formatter = JsonFormatter()
    ref = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "name": "ws", "namespace": "team", "uid": "u"}
    record = logging.LogRecord("kopf.objects", logging.WARNING, __file__, 1, "handler %s failed", ("x",), None)
    record.k8s_ref = ref
    record.settings = {"token": "s3cret"}  # whatever else rides along in extra is not emitted
    entry = json.loads(formatter.format(record))
    assert entry["level"] == "warning" and entry["logger"] == "kopf.objects" and entry["message"] == "handler x failed"
    assert entry["namespace"] == "team" and entry["workspace"] == "ws" and entry["ts"].endswith("+00:00")
    assert "s3cret" not in json.dumps(entry)

    ours = logging.LogRecord("kaito.operator", logging.INFO, __file__, 1, "not ready", (), None)
    ours.namespace, ours.workspace = "team", "ws2"
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        ours.exc_info = sys.exc_info()
    entry = json.loads(formatter.format(ours))
    assert entry["workspace"] == "ws2" and "RuntimeError: boom" in entry["exc"]
