"""Wake-ups of the per-workspace daemons: an event of an owned object pokes its workspace, but
only when something that matters to the workspace changed (its fingerprint)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from kaito_core.serving import GPU_RESOURCE

Key = tuple[str, str]


class Pokes:
    """Wake-up events of the per-workspace daemons, keyed by (namespace, name)."""

    def __init__(self) -> None:
        self._events: dict[Key, asyncio.Event] = {}
        self._prints: dict[tuple[str, str, str], object] = {}

    def register(self, key: Key) -> asyncio.Event:
        """The event a workspace's daemon sleeps on."""
        event = self._events.get(key) or asyncio.Event()
        self._events[key] = event
        return event

    def unregister(self, key: Key, event: asyncio.Event) -> None:
        """Forget a stopped daemon's event."""
        if self._events.get(key) is event:
            del self._events[key]

    def running(self, key: Key) -> bool:
        """Whether the workspace's daemon is still running (registered and not yet stopped)."""
        return key in self._events

    def poke(self, key: Key) -> None:
        """Wake the workspace's daemon (no-op when it has none)."""
        event = self._events.get(key)
        if event is not None:
            event.set()

    def poke_if_changed(self, ident: tuple[str, str, str], key: Key, print_: object, *, deleted: bool = False) -> None:
        """Poke ``key`` when the fingerprint of object ``ident`` differs from the last one seen
        (a deleted object always pokes, and its fingerprint is forgotten)."""
        if deleted:
            self._prints.pop(ident, None)
            self.poke(key)
        elif self._prints.get(ident) != print_:
            self._prints[ident] = print_
            self.poke(key)

    @staticmethod
    async def sleep(event: asyncio.Event, stopped: Any, delay: float) -> None:
        """Sleep up to ``delay`` seconds, less if poked or the daemon is stopped."""
        waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stopped.wait())]
        try:
            await asyncio.wait(waiters, timeout=max(delay, 0.05), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()


class fingerprint:  # noqa: N801 - a namespace of small pure functions
    """What about an owned object matters to its workspace; pokes happen only when it changes."""

    @staticmethod
    def conditions(body: Mapping[str, Any]) -> object:
        """Condition statuses and deletion (NodeClaims)."""
        conds = tuple(sorted((c.get("type"), c.get("status"), c.get("reason")) for c in (body.get("status") or {}).get("conditions") or []))
        return conds, bool(body.get("metadata", {}).get("deletionTimestamp")), (body.get("status") or {}).get("nodeName")

    @staticmethod
    def node(body: Mapping[str, Any]) -> object:
        """Ready status, GPU capacity, schedulability and deletion (Nodes)."""
        status = body.get("status") or {}
        ready = next((c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        gpus = (status.get("capacity") or {}).get(GPU_RESOURCE)
        return ready, gpus, bool((body.get("spec") or {}).get("unschedulable")), bool(body.get("metadata", {}).get("deletionTimestamp"))

    @staticmethod
    def pod(body: Mapping[str, Any]) -> object:
        """Phase, readiness and container states (Pods)."""
        status = body.get("status") or {}
        conds = tuple(sorted((c.get("type"), c.get("status"), c.get("reason")) for c in status.get("conditions") or []))
        states = tuple(
            (cs.get("name"), cs.get("ready"), tuple(sorted((cs.get("state") or {}).keys())),
             ((cs.get("state") or {}).get("waiting") or {}).get("reason"), cs.get("restartCount"))
            for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
        )
        return status.get("phase"), status.get("reason"), conds, states, body.get("spec", {}).get("nodeName")

    @staticmethod
    def workload(body: Mapping[str, Any]) -> object:
        """Generation and rollout counters (Deployments, StatefulSets)."""
        status = body.get("status") or {}
        keys = ("observedGeneration", "replicas", "readyReplicas", "updatedReplicas", "availableReplicas", "currentRevision", "updateRevision")
        return body.get("metadata", {}).get("generation"), tuple(status.get(k) for k in keys)

    @staticmethod
    def job(body: Mapping[str, Any]) -> object:
        """Counters, conditions and deletion (tuning Jobs)."""
        status = body.get("status") or {}
        conds = tuple(sorted((c.get("type"), c.get("status")) for c in status.get("conditions") or []))
        counters = tuple(status.get(k) for k in ("active", "ready", "succeeded", "failed"))
        return counters, conds, bool(body.get("metadata", {}).get("deletionTimestamp"))

    @staticmethod
    def workspace(body: Mapping[str, Any]) -> object:
        """Generation, annotations and deletion (Workspaces): not the status the operator writes."""
        meta = body.get("metadata") or {}
        annotations = tuple(sorted((k, v) for k, v in (meta.get("annotations") or {}).items() if not k.startswith("kaito.sh/") or k == "kaito.sh/runtime"))
        return meta.get("generation"), annotations, bool(meta.get("deletionTimestamp"))
