"""Watch caches: the objects the reconciler reads, kept in memory from kopf's watch streams.

kopf indexes (``@kopf.index`` in :mod:`kaito_core.operator.wiring`) hold the latest body of
every NodeClaim, Node, Deployment, StatefulSet, Service, tuning Job and workspace Pod the
operator cares about; kopf fills them from its watches and starts no handler before every index has been
listed once, so a reconcile never sees a half-filled cache. A steady-state resync therefore
reads from memory only: the API server sees the watch streams and nothing else.

Writes go to the API server as before, and their answers are also kept here for a short while
(:meth:`ObjectCache.wrote`): the watch event of an object just created may arrive after the next
reconcile, which must not create it a second time. An entry written here gives way as soon as the
watch delivers the same or a newer ``resourceVersion``.

Reads happen in the reconcile threads while kopf updates the indexes on the event loop: every
read copies a store with ``list()`` (one C-level call under the GIL) and tolerates a key that
vanished in between.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

CACHED_KINDS = ("NodeClaim", "Node", "Deployment", "StatefulSet", "Service", "Pod", "Job")
"""The kinds served from memory once the indexes are bound."""
INDEX_IDS = {
    "NodeClaim": "index-nodeclaims",
    "Node": "index-nodes",
    "Deployment": "index-deployments",
    "StatefulSet": "index-statefulsets",
    "Service": "index-services",
    "Pod": "index-pods",
    "Job": "index-jobs",
}
"""kopf handler ids of the indexes, by kind (kopf passes each index to handlers under its id)."""
CLUSTER_KINDS = frozenset({"Node", "NodeClaim"})
"""Cluster-scoped kinds: indexed under one key, filtered by labels on read."""
ALL = "*"
"""Index key under which the Node and NodeClaim indexes keep every object."""
WRITE_TTL_S = 60.0
"""How long an object the operator wrote is preferred over an older cached copy at most."""

Key = tuple[str, str]
Obj = dict[str, Any]


def object_key(obj: Mapping[str, Any]) -> Key:
    """(namespace, name) of a wire object ("" namespace for cluster-scoped ones)."""
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def index_key(kind: str, obj: Mapping[str, Any]) -> object:
    """The key an object is indexed under: every Node and NodeClaim under :data:`ALL`, the
    namespaced kinds under (namespace, name)."""
    return ALL if kind in CLUSTER_KINDS else object_key(obj)


META_KEPT = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
             "labels", "annotations", "ownerReferences", "finalizers")
"""The metadata the operator reads (managedFields, by far the largest part, is dropped)."""
SPEC_KEPT: dict[str, tuple[str, ...] | None] = {
    "Deployment": ("replicas",),
    "StatefulSet": ("replicas",),
    "Service": ("type", "clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"),
    "Pod": (),
    "Job": (),
    "Node": ("unschedulable",),
    "NodeClaim": None,
}
"""Per kind, the spec fields the operator and the provisioners read (None: all of it). A
workload's pod template and a pod's spec are what the operator wrote itself and never re-reads."""
STATUS_KEPT: dict[str, tuple[str, ...] | None] = {
    "Pod": ("phase", "reason", "message", "conditions", "containerStatuses", "initContainerStatuses"),
    "Node": ("conditions", "capacity"),
}
"""Per kind, the status fields kept (absent: all of it); a node's image list and addresses go."""


def _pick(data: Any, keys: tuple[str, ...] | None) -> Any:
    if keys is None or not isinstance(data, Mapping):
        return data
    return {k: data[k] for k in keys if k in data}


def slim(kind: str, body: Mapping[str, Any]) -> Obj:
    """What the caches keep of an object: the fields the reconciler and the provisioners read.

    Keeping whole objects (a Deployment with its defaulted pod template, a Pod with its spec) costs
    tens of KiB each in Python, which at hundreds of Workspaces is most of the operator's memory."""
    out: Obj = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind") or kind}
    out["metadata"] = _pick(body.get("metadata") or {}, META_KEPT)
    if "spec" in body:
        out["spec"] = _pick(body["spec"], SPEC_KEPT.get(kind))
    if "status" in body:
        out["status"] = _pick(body["status"], STATUS_KEPT.get(kind))
    return out


def _version(obj: Mapping[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def labels_match(obj: Mapping[str, Any], match_labels: Mapping[str, str]) -> bool:
    """Whether ``obj`` carries every label of ``match_labels``."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in match_labels.items())


class ObjectCache:
    """Read side of the kopf indexes plus the operator's own recent writes; thread-safe."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._indexes: dict[str, Mapping[Any, Iterable[Obj]]] = {}
        self._written: dict[tuple[str, str, str], tuple[float, Obj | None]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    # -- binding ------------------------------------------------------------------------------

    def bind(self, indexes: Mapping[str, Any]) -> None:
        """Take the kopf indexes (handler kwargs by index id); kinds without one stay uncached."""
        for kind, index_id in INDEX_IDS.items():
            index = indexes.get(index_id)
            if index is not None and kind not in self._indexes:
                self._indexes[kind] = index

    def serves(self, kind: str) -> bool:
        """Whether reads of ``kind`` come from memory."""
        return kind in self._indexes

    # -- reads ----------------------------------------------------------------------------------

    def _store(self, kind: str, key: object) -> list[Obj]:
        index = self._indexes[kind]
        try:
            return list(index[key])
        except KeyError:
            return []

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        """The cached object, or None when the cluster has none."""
        key = (namespace, name)
        found = [o for o in self._store(kind, ALL if kind in CLUSTER_KINDS else key) if object_key(o) == key]
        merged = self._merge(kind, found, lambda k: k == key)
        return merged[0] if merged else None

    def find(self, kind: str, *, namespace: str | None = None, match_labels: Mapping[str, str] | None = None) -> list[Obj]:
        """Cached objects of ``kind`` (in ``namespace`` when given) carrying ``match_labels``."""

        def in_scope(key: Key) -> bool:
            return namespace is None or key[0] == namespace

        if kind in CLUSTER_KINDS:
            found = self._store(kind, ALL)
        else:
            found = []
            for key in list(self._indexes[kind]):
                if isinstance(key, tuple) and in_scope(key):
                    found += self._store(kind, key)
        merged = self._merge(kind, [o for o in found if in_scope(object_key(o))], in_scope)
        return [o for o in merged if labels_match(o, match_labels or {})]

    def _merge(self, kind: str, found: list[Obj], in_scope: Callable[[Key], bool]) -> list[Obj]:
        """``found`` (every cached object of ``kind`` in a scope of keys) with the operator's newer
        writes in that scope laid over it; entries the watch has caught up with are dropped."""
        now = self._clock()
        by_key = {object_key(o): o for o in found}
        with self._lock:
            for ident, (expires, obj) in list(self._written.items()):
                key = (ident[1], ident[2])
                if ident[0] != kind or not in_scope(key):
                    continue
                cached = by_key.get(key)
                deleting = obj is None or bool((obj.get("metadata") or {}).get("deletionTimestamp"))
                if expires < now or (deleting and cached is None):
                    del self._written[ident]  # too old, or deleted by us and gone from the watch too
                elif cached is not None and obj is not None and _version(cached) >= _version(obj):
                    del self._written[ident]  # the watch caught up
                elif obj is None:
                    by_key.pop(key)  # deleted by us; the watch has not said so yet
                else:
                    by_key[key] = obj
        return [by_key[k] for k in sorted(by_key)]

    # -- writes ---------------------------------------------------------------------------------

    def wrote(self, kind: str, obj: Obj) -> None:
        """Remember an object as the API server returned it after a create or update."""
        if kind in self._indexes:
            namespace, name = object_key(obj)
            with self._lock:
                self._written[(kind, namespace, name)] = (self._clock() + WRITE_TTL_S, slim(kind, obj))

    def deleted(self, kind: str, namespace: str, name: str, answer: Mapping[str, Any] | None = None) -> None:
        """Remember that the operator deleted an object: when the API server's ``answer`` is the
        object marked for deletion (finalizers still pending), that object; else it is hidden until
        the watch confirms."""
        if kind not in self._indexes:
            return
        pending = answer is not None and answer.get("kind") == kind and (answer.get("metadata") or {}).get("deletionTimestamp")
        with self._lock:
            self._written[(kind, namespace, name)] = (self._clock() + WRITE_TTL_S, slim(kind, answer) if pending and answer else None)
