"""kaito_localcluster: a local Kubernetes control plane for KAITO tests and development.

Public API:

* :class:`LocalCluster` - start/stop etcd, kube-apiserver, kube-controller-manager,
  kube-scheduler and kwok on 127.0.0.1 (context manager).
* :func:`ensure_binaries` - build/cache the binaries from Go modules.
* pytest fixtures ``local_cluster`` and ``kube_namespace`` (auto-registered via the
  ``pytest11`` entry point, see :mod:`kaito_localcluster.pytest_plugin`).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .build import BinarySet, BuildError, Versions, ensure_binaries
from .cluster import ClusterError, LocalCluster, StartError
from .kubeapi import ApiError, KubeApi

__all__ = [
    "ApiError",
    "BinarySet",
    "BuildError",
    "ClusterError",
    "KubeApi",
    "LocalCluster",
    "StartError",
    "Versions",
    "ensure_binaries",
    "__version__",
]
