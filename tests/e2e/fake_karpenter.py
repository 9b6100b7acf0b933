"""TEST STAND-IN for Karpenter and its cloud provider: turns NodePools into NodeClaims into kwok Nodes.

This is not part of KAITO. In a real cluster Karpenter (with a cloud provider: AKS, AWS, ...)
keeps ``spec.replicas`` NodeClaims for each static NodePool and launches a machine for each.
Here there is no cloud, so this process plays both against the local control plane, as seen
from the API (test-infra.md §4):

* every ``step-delay`` it lists NodePools and NodeClaims; for each NodePool (not deleting) it
  creates the NodeClaims that are missing up to ``spec.replicas`` (name ``<pool>-<5 hex>``,
  label ``karpenter.sh/nodepool=<pool>``, the template's labels, annotations, taints,
  requirements and nodeClassRef, an ownerReference to the NodePool) and deletes surplus ones;
* it deletes the NodeClaims of a NodePool that is gone or being deleted;
* each of those NodeClaims then walks Launched -> Registered -> Initialized -> Ready and gets a
  kwok Node named after the NodeClaim, as in :mod:`fake_gpu_provisioner` (whose lifecycle code this reuses), and on
  deletion its Node goes first, then the finalizer.

``--fail-sku SKU=MESSAGE`` makes launches of that SKU fail with ``Launched=False``, reason
``InsufficientCapacity``. Run: ``python tests/e2e/fake_karpenter.py --kubeconfig PATH``.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import signal
import threading
from typing import Any

from kubernetes import client, config

from fake_gpu_provisioner import NC_PATH, FakeGpuProvisioner
from kaito_core.operator.kube import request

log = logging.getLogger("fake-karpenter")
NP_PATH = "/apis/karpenter.sh/v1/nodepools"
POOL_LABEL = "karpenter.sh/nodepool"


class FakeKarpenter(FakeGpuProvisioner):
    """The NodeClaim lifecycle of the gpu-provisioner stand-in, for NodeClaims of real NodePools."""

    fail_reason = "InsufficientCapacity"

    def handles(self, claim: dict[str, Any]) -> bool:
        """Karpenter serves the NodeClaims of every NodePool except KAITO's fake pool ``kaito``."""
        return (claim["metadata"].get("labels") or {}).get(POOL_LABEL, "kaito") != "kaito"

    def node_name_for(self, nc: str) -> str:
        """Karpenter's kwok provider names the Node after its NodeClaim."""
        return nc

    def nodepool_loop(self) -> None:
        """Keep each NodePool's NodeClaims at spec.replicas (polling: a test stand-in)."""
        while not self.stopped.is_set():
            try:
                self.sync_nodepools()
            except Exception as exc:  # connection trouble: try again next round
                log.warning("nodepool sync failed: %s", exc)
            self.stopped.wait(self.step_delay)

    def sync_nodepools(self) -> None:
        """One round: create missing NodeClaims, delete surplus and orphaned ones."""
        pools = {p["metadata"]["name"]: p for p in request(self.api, "GET", NP_PATH).get("items") or []}
        claims = [c for c in request(self.api, "GET", NC_PATH).get("items") or [] if self.handles(c)]
        by_pool: dict[str, list[dict[str, Any]]] = {}
        for claim in claims:
            if not claim["metadata"].get("deletionTimestamp"):
                by_pool.setdefault(claim["metadata"]["labels"][POOL_LABEL], []).append(claim)
        for name, live in by_pool.items():
            pool = pools.get(name)
            keep = 0 if pool is None or pool["metadata"].get("deletionTimestamp") else int(pool["spec"].get("replicas") or 0)
            for claim in sorted(live, key=lambda c: c["metadata"]["name"])[keep:]:
                request(self.api, "DELETE", f"{NC_PATH}/{claim['metadata']['name']}")
                log.info("NodePool %s: deleting NodeClaim %s", name, claim["metadata"]["name"])
        for name, pool in pools.items():
            if pool["metadata"].get("deletionTimestamp"):
                continue
            for _ in range(int(pool["spec"].get("replicas") or 0) - len(by_pool.get(name, []))):
                self._create_claim(pool)

    def _create_claim(self, pool: dict[str, Any]) -> None:
        name, template = pool["metadata"]["name"], pool["spec"]["template"]
        tspec = template["spec"]
        body = {
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodeClaim",
            "metadata": {
                "name": f"{name}-{secrets.token_hex(3)[:5]}",
                "labels": {**((template.get("metadata") or {}).get("labels") or {}), POOL_LABEL: name},
                "annotations": dict((template.get("metadata") or {}).get("annotations") or {}),
                "ownerReferences": [{"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "name": name,
                                     "uid": pool["metadata"]["uid"], "blockOwnerDeletion": True}],
            },
            "spec": {
                "nodeClassRef": tspec["nodeClassRef"],
                "requirements": [*tspec.get("requirements", []), {"key": POOL_LABEL, "operator": "In", "values": [name]}],
                "taints": tspec.get("taints") or [],
                "expireAfter": tspec.get("expireAfter", "720h"),
            },
        }
        created = request(self.api, "POST", NC_PATH, body=body)
        log.info("NodePool %s: created NodeClaim %s", name, created["metadata"]["name"])
        self.schedule(created["metadata"]["name"])


def main() -> None:
    """Run until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", default=None)
    parser.add_argument("--step-delay", type=float, default=0.3, help="seconds between steps")
    parser.add_argument("--fail-sku", action="append", default=[], metavar="SKU=MESSAGE", help="make launches of SKU fail")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = client.Configuration()
    config.load_kube_config(config_file=args.kubeconfig, client_configuration=cfg)
    fails = dict(item.split("=", 1) for item in args.fail_sku)
    fake = FakeKarpenter(client.ApiClient(cfg), step_delay=args.step_delay, fail_skus=fails)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: fake.stopped.set())
    threading.Thread(target=fake.watch_loop, daemon=True, name="watch").start()
    threading.Thread(target=fake.nodepool_loop, daemon=True, name="nodepools").start()
    log.info("test stand-in for Karpenter running (step delay %.1fs, failing SKUs: %s)", args.step_delay, json.dumps(fails))
    fake.work_loop()


if __name__ == "__main__":
    main()
