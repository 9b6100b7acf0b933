"""Leader election on a real API server (kaito_core.operator.election): one of two candidates
leads; a leader that stops gives the lease back and the other takes over within a retry period;
a leader whose lease is taken from it reports the loss within its renew deadline."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from kaito_core.operator.election import LeaseElector, LeaseRef, release_lease
from kaito_core.operator.kube import make_api_client
from kaito_core.operator.settings import LeaderElectionSettings

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

FAST = LeaderElectionSettings(enabled=True, lease_duration_s=6, renew_deadline_s=4, retry_period_s=1)


def _holder(cluster: Any, ns: str) -> str | None:
    spec = cluster.api.get(f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/kaito-test").get("spec") or {}
    holder: str | None = spec.get("holderIdentity")
    return holder


async def _wait(event: asyncio.Event, timeout: float) -> float:
    started = time.monotonic()
    await asyncio.wait_for(event.wait(), timeout)
    return time.monotonic() - started


def test_one_leads_and_a_clean_stop_hands_over_within_a_retry_period(local_cluster: Any, kube_namespace: str) -> None:
    api = make_api_client(str(local_cluster.kubeconfig))

    async def scenario() -> float:
        a = LeaseElector(api, FAST, LeaseRef("kaito-test", kube_namespace, "pod-a_1"))
        b = LeaseElector(api, FAST, LeaseRef("kaito-test", kube_namespace, "pod-b_2"))
        a.start()
        await _wait(a.elected, 10)
        b.start()
        await asyncio.sleep(FAST.lease_duration_s / 2)  # b keeps trying while a renews
        assert not b.elected.is_set() and _holder(local_cluster, kube_namespace) == "pod-a_1"
        await a.stop(release=True)
        handover = await _wait(b.elected, FAST.lease_duration_s)
        assert _holder(local_cluster, kube_namespace) == "pod-b_2"
        await b.stop(release=True)
        assert _holder(local_cluster, kube_namespace) is None
        return handover

    handover = asyncio.run(scenario())
    assert handover < FAST.retry_period_s + 2, f"a released lease was taken over only after {handover:.1f}s"


def test_a_leader_whose_lease_is_taken_reports_the_loss(local_cluster: Any, kube_namespace: str) -> None:
    api = make_api_client(str(local_cluster.kubeconfig))
    path = f"/apis/coordination.k8s.io/v1/namespaces/{kube_namespace}/leases/kaito-test"

    async def scenario() -> float:
        a = LeaseElector(api, FAST, LeaseRef("kaito-test", kube_namespace, "pod-a_1"))
        a.start()
        await _wait(a.elected, 10)
        local_cluster.api.patch(path, {"spec": {"holderIdentity": "intruder_9"}})
        lost_after = await _wait(a.lost, FAST.renew_deadline_s + 2 * FAST.retry_period_s + 2)
        await a.stop(release=True)  # a lost lease is not given back: it is not ours
        assert _holder(local_cluster, kube_namespace) == "intruder_9"
        assert not release_lease(api, LeaseRef("kaito-test", kube_namespace, "pod-a_1"))
        return lost_after

    asyncio.run(scenario())
