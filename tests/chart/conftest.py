"""The real helm CLI, built from Go modules once and cached (make helm), and the chart installed
for real on the local cluster with its real node (``in_cluster``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from incluster import InCluster, start_in_cluster
from kaito_localcluster.helm import ensure_helm


@pytest.fixture(scope="session")
def helm() -> Path:
    """Path of the cached helm v4 binary (built on first use when Go is available)."""
    return ensure_helm()


@pytest.fixture(scope="module")
def in_cluster(helm: Path, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InCluster]:
    """The real-node cluster with the operator image in its registry (``in_cluster.push(...)`` for more), the
    namespace kaito-system with the pull secret, and the API server auditing the operator's
    requests; the chart is not installed yet (``in_cluster.install(values...)``). Module scope:
    one real-node cluster start per test module (one per machine at a time)."""
    terminal = request.config.pluginmanager.getplugin("terminalreporter")
    capman = request.config.pluginmanager.getplugin("capturemanager")

    def say(message: str) -> None:
        if terminal is not None and capman is not None:
            with capman.global_and_fixture_disabled():
                terminal.write_line(f"[in-cluster] {message}")

    with start_in_cluster(helm, tmp_path_factory.mktemp("in-cluster"), say) as state:
        yield state
