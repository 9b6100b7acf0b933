"""The end-to-end stack: the local control plane (kaito_localcluster's ``local_cluster``), the
Workspace and NodeClaim CRDs, the gpu-provisioner test stand-in, and the operator as a
subprocess running as the least-privilege ServiceAccount of config/rbac."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import harness
from harness import FAILING_MESSAGE, FAILING_SKU, Stack
from tests.hfcache import write_hf_cache


@pytest.fixture(scope="session")
def stack(local_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """CRDs + RBAC + test gpu-provisioner + operator, for the whole session."""
    workdir = tmp_path_factory.mktemp("kaito-e2e")
    local_cluster.install_crds(harness.CRDS)
    operator_config = harness.operator_kubeconfig(local_cluster, workdir / "operator.kubeconfig")
    fake = harness.fake_gpu_provisioner(local_cluster.kubeconfig, workdir / "fake-gpu-provisioner.log", fail_skus={FAILING_SKU: FAILING_MESSAGE})
    port, metrics_port = harness.free_port(), harness.free_port()
    # Presets named by a model id are generated from a local Hugging Face cache; never the hub.
    hf_cache = write_hf_cache(workdir / "hf-cache")
    operator = harness.operator(
        operator_config, workdir / "operator.log", workdir / "webhook-certs", webhook_port=port,
        extra_env={
            "KAITO_REQUEUE__RESYNC_S": "2", "KAITO_METRICS__PORT": str(metrics_port),
            "KAITO_PRESETS__HUB": "false", "KAITO_PRESETS__HF_CACHE_DIR": str(hf_cache),
        },
    )
    fake.start()
    operator.start()
    stack = Stack(local_cluster, operator, fake, port, workdir, metrics_port)
    try:
        harness.wait_webhook_ready(local_cluster, port)
        yield stack
    finally:
        operator.stop()
        fake.stop()
