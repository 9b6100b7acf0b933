"""pytest plugin (registered through the ``pytest11`` entry point ``kaito_localcluster``).

Fixtures:

* ``local_cluster`` (session): a started :class:`~kaito_localcluster.cluster.LocalCluster`,
  stopped at the end of the session.  Building the binaries on first use prints
  progress lines on the terminal even while output is captured.
* ``kube_namespace`` (function): a fresh namespace name, deleted after the test.
* ``real_node_cluster`` (module, opt-in: only tests that ask for it pay for it): a cluster with
  the real CPU node (containerd + kubelet + kube-proxy + local registry), stopped, with every host
  change undone, at the end of the module.  One real node runs per machine: it waits up to
  ``KAITO_REAL_NODE_WAIT`` seconds (default 900) for another checkout's node.
* ``real_namespace`` (function): a fresh namespace on ``real_node_cluster`` with the registry pull
  secret ``kaito-local-registry`` in it, also set on its ``default`` service account.

Running in parallel (pytest-xdist, ``make test`` runs ``-n 2 --dist loadgroup
--no-loadscope-reorder``), tests are put into ``xdist_group``\ s, each run by one worker in
collection order:

* ``real-node``: every test that uses the real node (the ``real_node_cluster`` fixture, or marked
  ``real_node`` because it starts its own): one real node runs per machine.  Scheduled first, as
  the longest unit.
* ``kwok-cluster``: every test on the session's ``local_cluster``, in their usual order: they share
  that control plane (and the e2e suite's session-wide operator and webhook), so they must not
  interleave differently than in a serial run.
* every other module on its own, so its module-scoped fixtures are set up once.

Environment:

* ``KAITO_TEST_KEEP_CLUSTER=1``: leave the cluster (and namespaces) running after the
  session for debugging; the kubeconfig path and the ``down --dir`` command are printed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from typing import Iterator

import pytest

from .build import ensure_binaries
from .cluster import LocalCluster
from .kubeapi import wait_for
from .nodebuild import ensure_node_tools
from .registry import credentials as registry_credentials

log = logging.getLogger(__name__)

KEEP_ENV = "KAITO_TEST_KEEP_CLUSTER"


def keep_cluster() -> bool:
    """Whether ``KAITO_TEST_KEEP_CLUSTER`` asks to leave the cluster running."""
    return os.environ.get(KEEP_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _reporter(config: pytest.Config) -> "contextlib.AbstractContextManager[None]":
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        return contextlib.nullcontext()
    cm: contextlib.AbstractContextManager[None] = capman.global_and_fixture_disabled()
    return cm


def _say(config: pytest.Config, message: str) -> None:
    log.info("%s", message)
    terminal = config.pluginmanager.getplugin("terminalreporter")
    if terminal is None:
        return
    with _reporter(config):
        terminal.write_line(f"[kaito-localcluster] {message}")


REAL_NODE_GROUP = "real-node"
KWOK_CLUSTER_GROUP = "kwok-cluster"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_node: starts a real node of its own (one per machine: runs in the real-node xdist group)")


def uses_real_node(item: pytest.Item) -> bool:
    """Whether ``item`` needs the machine's one real node."""
    return "real_node_cluster" in getattr(item, "fixturenames", ()) or item.get_closest_marker("real_node") is not None


def xdist_group_of(item: pytest.Item) -> str:
    """The worker group of ``item`` (see the module docstring)."""
    if uses_real_node(item):
        return REAL_NODE_GROUP
    if "local_cluster" in getattr(item, "fixturenames", ()):
        return KWOK_CLUSTER_GROUP
    return item.nodeid.split("::", 1)[0]


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns xdist_group marks into node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist: group the tests, the real-node group first, then the kwok-cluster one."""
    if not hasattr(config, "workerinput"):
        return
    groups = {id(item): xdist_group_of(item) for item in items}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(groups[id(item)]))
    first = {REAL_NODE_GROUP: 0, KWOK_CLUSTER_GROUP: 1}
    items.sort(key=lambda item: first.get(groups[id(item)], 2))  # stable: collection order within each


@pytest.fixture(scope="session")
def local_cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A local control plane (etcd, kube-apiserver, KCM, scheduler, kwok) for the whole session."""
    config = request.config
    binaries = ensure_binaries(progress=lambda msg: _say(config, msg))
    keep = keep_cluster()
    cluster = LocalCluster(binaries=binaries, keep_files=keep, persist=keep)
    cluster.start()
    _say(config, f"cluster ready at {cluster.server} in {cluster.start_seconds:.1f}s (dir {cluster.dir})")
    try:
        yield cluster
    finally:
        if keep:
            _say(
                config,
                f"{KEEP_ENV}=1: leaving the cluster running. export KUBECONFIG={cluster.kubeconfig} ; "
                f"stop it with: python -m kaito_localcluster down --dir {cluster.dir}",
            )
        else:
            cluster.stop()


@pytest.fixture
def kube_namespace(local_cluster: LocalCluster) -> Iterator[str]:
    """Create a fresh namespace (with its ``default`` service account ready); delete it afterwards."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    api = local_cluster.api
    api.create(
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"kaito.sh/test-namespace": "true"}}},
    )
    if any(p.name == "kube-controller-manager" for p in local_cluster.processes):
        # Pods are rejected by the ServiceAccount admission plugin until this exists.
        wait_for(
            lambda: api.exists(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
            timeout=30,
            what=f"service account {name}/default",
        )
    try:
        yield name
    finally:
        if not keep_cluster():
            api.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture(scope="module")
def real_node_cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A local cluster with the real CPU node (module scope; opt-in)."""
    config = request.config
    binaries = ensure_binaries(progress=lambda msg: _say(config, msg))
    tools = ensure_node_tools(progress=lambda msg: _say(config, msg))
    cluster = LocalCluster(
        binaries=binaries, node_tools=tools, real_node=True, start_timeout=240,
        real_node_wait=float(os.environ.get("KAITO_REAL_NODE_WAIT", "900")),
    )
    cluster.start()
    _say(config, f"cluster with a real node ready at {cluster.server} in {cluster.start_seconds:.1f}s")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def real_namespace(real_node_cluster: LocalCluster) -> Iterator[str]:
    """A fresh namespace on the real-node cluster, with the local registry's pull secret."""
    name = f"real-{uuid.uuid4().hex[:10]}"
    api = real_node_cluster.api
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    wait_for(lambda: api.exists(f"/api/v1/namespaces/{name}/serviceaccounts/default"), timeout=30,
             what=f"service account {name}/default")
    secret = registry_credentials().pull_secret(name)
    api.create(f"/api/v1/namespaces/{name}/secrets", secret)
    # Pods of the default service account (e.g. `kubectl run`) pull with it without naming it.
    api.patch(f"/api/v1/namespaces/{name}/serviceaccounts/default",
              {"imagePullSecrets": [{"name": secret["metadata"]["name"]}]})
    try:
        yield name
    finally:
        api.delete(f"/api/v1/namespaces/{name}")
