"""Pinned versions of the control-plane components.

Kubernetes v1.37.2 is listed by the Go module proxy, but its source zip is not
served (HTTP 403 "This module version is not available"), so v1.37.1 is the
newest 1.37 patch that can be built from Go modules here.
"""

from __future__ import annotations

#: k8s.io/kubernetes tag built for kube-apiserver, kube-controller-manager, kube-scheduler.
KUBERNETES_VERSION = "v1.37.1"
#: sigs.k8s.io/kwok tag built for the fake-kubelet controller.
KWOK_VERSION = "v0.8.0"
#: go.etcd.io/etcd/server/v3 tag (>= 3.5.13 so kube-apiserver gets RequestWatchProgress).
ETCD_VERSION = "v3.6.16"
#: github.com/containerd/containerd/v2 tag of the real node's CRI runtime (the newest the Go
#: module proxy serves; kubelet 1.37 needs containerd 2.x for the RuntimeConfig RPC).
CONTAINERD_VERSION = "v2.4.2"
#: sigs.k8s.io/cri-tools tag of crictl (the real node's teardown and debugging CRI client).
CRICTL_VERSION = "v1.37.0"


def staging_version(kubernetes_version: str) -> str:
    """Return the published staging-module tag matching a Kubernetes tag.

    ``v1.37.1`` -> ``v0.37.1`` (kubernetes/kubernetes#79384: the published
    staging repos are tagged ``v0.<minor>.<patch>`` for Kubernetes ``v1.<minor>.<patch>``).
    """
    if not kubernetes_version.startswith("v1."):
        raise ValueError(f"expected a Kubernetes tag like v1.37.1, got {kubernetes_version!r}")
    return "v0." + kubernetes_version[len("v1."):]
