"""Leader election on a ``coordination.k8s.io`` Lease, so that only one operator replica reconciles.

The election itself is the kubernetes client's ``kubernetes.leaderelection`` module (the Python
port of client-go's leaderelection: a Lease lock with optimistic concurrency on its
resourceVersion, lease duration / renew deadline / retry period). It is thread-based and has no
way to stop or to give the lease back, so :class:`LeaseElector` adds the two things a Deployment
needs around it, and nothing else:

* **stop**: the lock raises :class:`_ElectionStopped` from its next read once :meth:`stop` is
  called, which ends the library's acquire or renew loop and its thread;
* **release** on a clean stop (pod deletion, rolling update): the leader clears
  ``holderIdentity``, which the library's followers take as "no holder" and acquire at their next
  retry (seconds), instead of waiting for the lease to run out. Like client-go's
  ReleaseOnCancel, this happens only after the operator stopped reconciling.

Losing the lease (the API server unreachable for longer than the renew deadline) is reported
through :attr:`LeaseElector.lost`; the runtime then stops reconciling and the process exits,
as controller-runtime does, so that the kubelet restarts it as a follower.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from kaito_core.operator.settings import LeaderElectionSettings

log = logging.getLogger("kaito.operator.election")
#: Where a pod finds its own namespace (the service-account mount).
POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def default_identity() -> str:
    """``<hostname>_<random>``, as client-go does: the pod name first (a pod's hostname), unique per process."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def lease_namespace(configured: str, pod_namespace_file: Path = POD_NAMESPACE_FILE) -> str:
    """The configured namespace, else the pod's own, else ``default`` (a local run)."""
    if configured:
        return configured
    try:
        return pod_namespace_file.read_text(encoding="utf-8").strip() or "default"
    except OSError:
        return "default"


class _ElectionStopped(Exception):
    """Raised inside the election thread to end the library's loops."""


class _StoppableLeaseLock(LeaseLock):
    """The library's Lease lock on our API client, which ends the election once stopped."""

    def __init__(self, name: str, namespace: str, identity: str, api: client.ApiClient, stopped: threading.Event) -> None:
        super().__init__(name, namespace, identity)  # type: ignore[no-untyped-call]  # the library has no annotations
        self.api_instance = client.CoordinationV1Api(api)
        self._stopped = stopped

    def get(self, name: str, namespace: str) -> tuple[bool, Any]:
        if self._stopped.is_set():
            raise _ElectionStopped
        result: tuple[bool, Any] = super().get(name, namespace)  # type: ignore[no-untyped-call]
        return result


@dataclass(frozen=True)
class LeaseRef:
    """Where the lease is and who we are."""

    name: str
    namespace: str
    identity: str


class LeaseElector:
    """Runs the election in a thread; :attr:`elected` and :attr:`lost` are set on the event loop."""

    def __init__(self, api: client.ApiClient, settings: LeaderElectionSettings, ref: LeaseRef) -> None:
        self.api = api
        self.settings = settings
        self.ref = ref
        self.elected = asyncio.Event()
        """Set once this process holds the lease."""
        self.lost = asyncio.Event()
        """Set when the leader failed to renew within the renew deadline."""
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start campaigning (a daemon thread running the library's ``LeaderElection.run``)."""
        self._loop = asyncio.get_running_loop()
        # The library logs every renewal at INFO (every retry period); acquiring, losing and
        # releasing are logged here instead.
        logging.getLogger("leaderelection").setLevel(logging.WARNING)
        lock = _StoppableLeaseLock(self.ref.name, self.ref.namespace, self.ref.identity, self.api, self._stopped)
        config = electionconfig.Config(  # type: ignore[no-untyped-call]
            lock,
            lease_duration=self.settings.lease_duration_s,
            renew_deadline=self.settings.renew_deadline_s,
            retry_period=self.settings.retry_period_s,
            onstarted_leading=self._on_started,
            onstopped_leading=self._on_stopped,
        )
        election = leaderelection.LeaderElection(config)  # type: ignore[no-untyped-call]
        self._thread = threading.Thread(target=self._campaign, args=(election,), name="leader-election", daemon=True)
        log.info("campaigning for lease %s/%s as %s", self.ref.namespace, self.ref.name, self.ref.identity)
        self._thread.start()

    def _campaign(self, election: Any) -> None:
        try:
            election.run()
        except _ElectionStopped:
            return
        except Exception:  # a bug in the library or ours: without an election nobody may reconcile
            log.exception("leader election failed")
            self._signal(self.lost)

    def _signal(self, event: asyncio.Event) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(event.set)

    def _on_started(self) -> None:
        log.info("acquired lease %s/%s as %s: reconciling", self.ref.namespace, self.ref.name, self.ref.identity)
        self._signal(self.elected)

    def _on_stopped(self) -> None:
        if self._stopped.is_set():
            return
        log.error("lost lease %s/%s (not renewed within %ss)", self.ref.namespace, self.ref.name, self.settings.renew_deadline_s)
        self._signal(self.lost)

    async def stop(self, *, release: bool) -> None:
        """End the election; with ``release`` (reconciling has stopped) give the lease back if we hold it."""
        self._stopped.set()
        thread = self._thread
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, thread.join, self.settings.retry_period_s + 10.0)
        if release and self.elected.is_set() and not self.lost.is_set():
            await asyncio.get_running_loop().run_in_executor(None, release_lease, self.api, self.ref)


def release_lease(api: client.ApiClient, ref: LeaseRef) -> bool:
    """Clear the lease's holder if it is still ``ref.identity`` (a conflict means someone else
    wrote it meanwhile: then it is not ours to clear). Returns whether it was released."""
    leases = client.CoordinationV1Api(api)
    try:
        lease = leases.read_namespaced_lease(ref.name, ref.namespace)
        if lease.spec is None or lease.spec.holder_identity != ref.identity:
            return False
        lease.spec.holder_identity = None
        leases.replace_namespaced_lease(ref.name, ref.namespace, lease)
    except client.ApiException as exc:
        log.warning("could not release lease %s/%s: %s %s", ref.namespace, ref.name, exc.status, exc.reason)
        return False
    log.info("released lease %s/%s", ref.namespace, ref.name)
    return True
