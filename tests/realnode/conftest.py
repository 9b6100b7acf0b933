"""The real-node end-to-end tests reuse the e2e suite's process harness (tests/e2e/harness.py) and
the real-node helpers of the localcluster tests (localcluster/tests/realnode_support.py).

``operator_stack`` (module, on the module's ``real_node_cluster``): the project's images in the
local registry, its pull secret in ``default`` (also on the default service account), the CRDs and
RBAC, and ``kaito operator`` with bring-your-own nodes, one CPU per inference pod, and the
adapter puller trusting the cluster CA (the local registry's) from ``kube-root-ca.crt``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

_ROOT = Path(__file__).resolve().parents[2]
for _path in (_ROOT / "tests" / "e2e", _ROOT / "localcluster" / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import harness  # noqa: E402

from kaito_images.cli import push_all  # noqa: E402
from kaito_images.specs import ImageName  # noqa: E402
from kaito_localcluster import LocalCluster  # noqa: E402
from kaito_localcluster.registry import CA_CONFIGMAP, credentials  # noqa: E402
from realnode_flow import NS  # noqa: E402


@pytest.fixture(scope="module")
def operator_stack(real_node_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Images in the registry, the pull secret, CRDs + RBAC, and `kaito operator` with byo nodes."""
    cluster = real_node_cluster
    assert cluster.registry is not None
    refs = push_all(cluster.registry, (ImageName.GEMMA, ImageName.CURL, ImageName.SERVERS))
    secret = credentials().pull_secret(NS)
    cluster.api.create(f"/api/v1/namespaces/{NS}/secrets", secret)
    cluster.api.patch(f"/api/v1/namespaces/{NS}/serviceaccounts/default", {"imagePullSecrets": [{"name": secret["metadata"]["name"]}]})
    cluster.install_crds(harness.CRDS)
    work = tmp_path_factory.mktemp("realnode-e2e")
    port = harness.free_port()
    ca_config_map, ca_key = CA_CONFIGMAP
    op = harness.operator(
        harness.operator_kubeconfig(cluster, work / "operator.kubeconfig"), work / "operator.log", work / "certs",
        webhook_port=port,
        extra_env={"KAITO_NODE_PROVISIONER__NAME": "byo", "KAITO_CPU_INFERENCE__CPUS": "1",
                   "KAITO_ADAPTER_PULL__CA_CONFIG_MAP": ca_config_map, "KAITO_ADAPTER_PULL__CA_CONFIG_MAP_KEY": ca_key,
                   "KAITO_REQUEUE__WORKLOAD_S": "2", "KAITO_METRICS__PORT": str(harness.free_port())},
    )
    op.start()
    try:
        harness.wait_webhook_ready(cluster, port)
        yield {"curl": refs[ImageName.CURL.value], "servers": refs[ImageName.SERVERS.value], "operator": op}
    finally:
        op.stop()
