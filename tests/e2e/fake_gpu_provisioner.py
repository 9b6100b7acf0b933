"""TEST STAND-IN for Azure's gpu-provisioner: turns Karpenter NodeClaims into kwok Nodes.

This is not part of KAITO. In a real cluster, Azure/gpu-provisioner (a Karpenter fork) creates
a one-node AKS agent pool per NodeClaim. Here there is no cloud, so this process plays that
controller against the local control plane, doing what the real one does as seen from the API
(test-infra.md §4):

* adds the finalizer ``karpenter.sh/termination`` to each NodeClaim;
* "launches" it: ``status.providerID`` ``azure:///subscriptions/.../virtualMachineScaleSets/
  aks-<nc>-12345678-vmss/virtualMachines/0``, imageID, capacity/allocatable from the SKU
  (``nvidia.com/gpu`` from the SKU catalogue), condition ``Launched=True``;
* creates a kwok Node (annotation ``kwok.x-k8s.io/node=fake``) named
  ``aks-<nc>-12345678-vmss000000`` with the NodeClaim's labels, ``agentpool`` /
  ``kubernetes.azure.com/agentpool=<nc>``, instance type, ``kaito.sh/machine-type``, the
  NodeClaim's taints and the providerID; then ``Registered=True`` with ``status.nodeName``;
* once kwok reports the Node Ready with GPU capacity: ``Initialized=True``, then ``Ready=True``;
* on NodeClaim deletion: deletes the Node, then removes its finalizer.

``--fail-sku SKU=MESSAGE`` makes launches of that SKU fail (``Launched=False``, reason
``LaunchFailed``) the way a cloud quota error does. Run: ``python tests/e2e/fake_gpu_provisioner.py
--kubeconfig PATH``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import heapq
import json
import logging
import signal
import threading
import time
from typing import Any

from kubernetes import client, config, watch

from kaito_core import sku
from kaito_core.operator.kube import request

log = logging.getLogger("fake-gpu-provisioner")
GROUP, VERSION, PLURAL = "karpenter.sh", "v1", "nodeclaims"
NC_PATH = f"/apis/{GROUP}/{VERSION}/{PLURAL}"
FINALIZER = "karpenter.sh/termination"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
IMAGE_ID = "AKSUbuntu-2204gen2containerd-202411.12.0"
LIFECYCLE = ("Launched", "Registered", "Initialized")


def now() -> str:
    """RFC 3339 UTC timestamp."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def vmss(nc: str) -> str:
    """The scale set AKS would create for agent pool ``nc``."""
    return f"aks-{nc}-12345678-vmss"


def provider_id(nc: str) -> str:
    """The providerID of the pool's only VM."""
    return (
        f"azure:///subscriptions/{SUBSCRIPTION}/resourceGroups/mc_kaito-local/providers/"
        f"Microsoft.Compute/virtualMachineScaleSets/{vmss(nc)}/virtualMachines/0"
    )


def node_name(nc: str) -> str:
    """The Node name of the pool's only VM."""
    return f"{vmss(nc)}000000"


def instance_type(claim: dict[str, Any]) -> str:
    """First value of the instance-type requirement (what gpu-provisioner reads)."""
    for req in claim["spec"].get("requirements") or []:
        if req.get("key") == "node.kubernetes.io/instance-type" and req.get("values"):
            return str(req["values"][0])
    raise ValueError("NodeClaim has no node.kubernetes.io/instance-type requirement")


def capacity_for(claim: dict[str, Any]) -> dict[str, str]:
    """Node capacity of the SKU (GPU count from the catalogue)."""
    size = instance_type(claim)
    found = sku.lookup(size, "azure")
    storage = (claim["spec"].get("resources") or {}).get("requests", {}).get("storage", "100Gi")
    cap = {"cpu": str(found.vcpus if found and found.vcpus else 8), "memory": f"{int(found.memory_gib if found and found.memory_gib else 64)}Gi",
           "pods": "110", "ephemeral-storage": storage}
    gpus = found.gpu_count if found else (1 if "Standard_N" in size else 0)
    if gpus:
        cap["nvidia.com/gpu"] = str(gpus)
    return cap


class FakeGpuProvisioner:
    """Level-based: each NodeClaim is looked at when it changes and on a timer until Ready."""

    fail_reason = "LaunchFailed"
    """The Launched=False reason of a failing SKU (a subclass plays another controller)."""

    def __init__(self, api: client.ApiClient, *, step_delay: float, fail_skus: dict[str, str]) -> None:
        self.api = api
        self.step_delay = step_delay
        self.fail_skus = fail_skus
        self._due: list[tuple[float, str]] = []
        self._cv = threading.Condition()
        self.stopped = threading.Event()

    # -- scheduling ------------------------------------------------------------------------------

    def schedule(self, name: str, delay: float = 0.0) -> None:
        """Look at NodeClaim ``name`` after ``delay`` seconds."""
        with self._cv:
            heapq.heappush(self._due, (time.monotonic() + delay, name))
            self._cv.notify()

    def watch_loop(self) -> None:
        """Schedule every NodeClaim that changes; re-list on every (re)connect."""
        custom = client.CustomObjectsApi(self.api)
        while not self.stopped.is_set():
            try:
                listed = request(self.api, "GET", NC_PATH)
                for item in listed.get("items") or []:
                    self.schedule(item["metadata"]["name"])
                stream = watch.Watch().stream(
                    custom.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                    resource_version=listed["metadata"]["resourceVersion"], timeout_seconds=60,
                )
                for event in stream:
                    self.schedule(event["object"]["metadata"]["name"])
                    if self.stopped.is_set():
                        break
            except Exception as exc:  # connection trouble: back off and re-list
                log.warning("watch failed: %s", exc)
                self.stopped.wait(1.0)

    def work_loop(self) -> None:
        """Process due NodeClaims one at a time."""
        while not self.stopped.is_set():
            with self._cv:
                while not self._due or self._due[0][0] > time.monotonic():
                    timeout = (self._due[0][0] - time.monotonic()) if self._due else 1.0
                    self._cv.wait(max(timeout, 0.01))
                    if self.stopped.is_set():
                        return
                _, name = heapq.heappop(self._due)
                if any(n == name for _, n in self._due if _ <= time.monotonic()):
                    continue  # a duplicate is due too: handle it once
            try:
                again = self.step(name)
            except Exception as exc:
                log.warning("NodeClaim %s: %s", name, exc)
                again = True
            if again:
                self.schedule(name, self.step_delay)

    # -- the provisioner ---------------------------------------------------------------------------

    def node_name_for(self, nc: str) -> str:
        """The Node name of NodeClaim ``nc``'s machine."""
        return node_name(nc)

    def handles(self, claim: dict[str, Any]) -> bool:
        """gpu-provisioner serves the NodeClaims of KAITO's fake pool ``kaito`` only."""
        return (claim["metadata"].get("labels") or {}).get("karpenter.sh/nodepool") == "kaito"

    def step(self, name: str) -> bool:
        """Advance NodeClaim ``name`` by one lifecycle step; True when it needs another look."""
        try:
            claim = request(self.api, "GET", f"{NC_PATH}/{name}")
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        meta, status = claim["metadata"], claim.get("status") or {}
        if not self.handles(claim):
            return False
        if meta.get("deletionTimestamp"):
            return self._terminate(claim)
        if FINALIZER not in (meta.get("finalizers") or []):
            patch = [{"op": "add", "path": "/metadata/finalizers", "value": [*(meta.get("finalizers") or []), FINALIZER]}]
            request(self.api, "PATCH", f"{NC_PATH}/{name}", body=patch, content_type="application/json-patch+json")
            return True
        conds = {c["type"]: c for c in status.get("conditions") or []}
        size = instance_type(claim)
        if size in self.fail_skus:
            if conds.get("Launched", {}).get("reason") != self.fail_reason:
                self._set(claim, {}, {"Launched": ("False", self.fail_reason, self.fail_skus[size])})
            return False
        if conds.get("Launched", {}).get("status") != "True":
            cap = capacity_for(claim)
            self._set(claim, {"providerID": provider_id(name), "imageID": IMAGE_ID, "capacity": cap, "allocatable": cap},
                      {"Launched": ("True", "Launched", ""), "Registered": ("Unknown", "NodeNotFound", "Node not registered with cluster"),
                       "Initialized": ("Unknown", "NodeNotFound", "Node not registered with cluster"),
                       "Ready": ("Unknown", "ReconcilingDependents", "Registered=Unknown, Initialized=Unknown")})
            return True
        node = self._node(name)
        if node is None:
            self._create_node(claim)
            return True
        if conds.get("Registered", {}).get("status") != "True":
            self._set(claim, {"nodeName": node["metadata"]["name"]}, {"Registered": ("True", "Registered", "")})
            return True
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in (node.get("status") or {}).get("conditions") or [])
        gpus_ok = "nvidia.com/gpu" not in status.get("capacity", {}) or int((node.get("status") or {}).get("capacity", {}).get("nvidia.com/gpu", "0")) > 0
        if not (ready and gpus_ok):
            if conds.get("Initialized", {}).get("reason") != "NodeNotReady":
                self._set(claim, {}, {"Initialized": ("Unknown", "NodeNotReady", "Node status is NotReady")})
            return True
        if conds.get("Initialized", {}).get("status") != "True" or conds.get("Ready", {}).get("status") != "True":
            labels = {"karpenter.sh/initialized": "true"}
            request(self.api, "PATCH", f"/api/v1/nodes/{node['metadata']['name']}", body={"metadata": {"labels": labels}},
                    content_type="application/merge-patch+json")
            self._set(claim, {}, {"Initialized": ("True", "Initialized", ""), "Ready": ("True", "Ready", "")})
        return False

    def _set(self, claim: dict[str, Any], fields: dict[str, Any], conditions: dict[str, tuple[str, str, str]]) -> None:
        status = dict(claim.get("status") or {})
        status.update(fields)
        current = {c["type"]: c for c in status.get("conditions") or []}
        stamp = now()
        for type_, (state, reason, message) in conditions.items():
            prior = current.get(type_)
            changed = prior is None or prior.get("status") != state
            current[type_] = {
                "type": type_, "status": state, "reason": reason, "message": message,
                "lastTransitionTime": stamp if changed else prior["lastTransitionTime"],
                "observedGeneration": claim["metadata"].get("generation", 1),
            }
        status["conditions"] = list(current.values())
        request(self.api, "PATCH", f"{NC_PATH}/{claim['metadata']['name']}/status", body={"status": status},
                content_type="application/merge-patch+json")
        log.info("NodeClaim %s: %s", claim["metadata"]["name"], ", ".join(f"{k}={v[0]}" for k, v in conditions.items()))

    def _node(self, nc: str) -> dict[str, Any] | None:
        try:
            return request(self.api, "GET", f"/api/v1/nodes/{self.node_name_for(nc)}")
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _create_node(self, claim: dict[str, Any]) -> None:
        nc = claim["metadata"]["name"]
        size = instance_type(claim)
        created = dt.datetime.strptime(claim["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").strftime("%Y-%m-%dT%H-%M-%SZ")
        labels = {
            **(claim["metadata"].get("labels") or {}),
            "karpenter.sh/nodepool": (claim["metadata"].get("labels") or {}).get("karpenter.sh/nodepool", "kaito"),
            "agentpool": nc,
            "kubernetes.azure.com/agentpool": nc,
            "node.kubernetes.io/instance-type": size,
            "kaito.sh/machine-type": "gpu" if "Standard_N" in size else "cpu",
            "kaito.sh/creation-timestamp": created,
            "kubernetes.io/hostname": self.node_name_for(nc),
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "karpenter.sh/registered": "true",
            "type": "kwok",
        }
        cap = capacity_for(claim)
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node_name_for(nc), "labels": labels,
                         "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {"providerID": provider_id(nc), "taints": [dict(t) for t in claim["spec"].get("taints") or []]},
            "status": {"capacity": cap, "allocatable": cap,
                       "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "fake", "osImage": IMAGE_ID}},
        }
        try:
            request(self.api, "POST", "/api/v1/nodes", body=node)
            log.info("NodeClaim %s: created node %s", nc, self.node_name_for(nc))
        except client.ApiException as exc:
            if exc.status != 409:
                raise

    def _terminate(self, claim: dict[str, Any]) -> bool:
        nc = claim["metadata"]["name"]
        if self._node(nc) is not None:
            try:
                request(self.api, "DELETE", f"/api/v1/nodes/{self.node_name_for(nc)}")
                log.info("NodeClaim %s: deleting node %s", nc, self.node_name_for(nc))
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
            return True
        finalizers = claim["metadata"].get("finalizers") or []
        if FINALIZER in finalizers:
            patch = [
                {"op": "test", "path": "/metadata/resourceVersion", "value": claim["metadata"]["resourceVersion"]},
                {"op": "replace", "path": "/metadata/finalizers", "value": [f for f in finalizers if f != FINALIZER]},
            ]
            request(self.api, "PATCH", f"{NC_PATH}/{nc}", body=patch, content_type="application/json-patch+json")
            log.info("NodeClaim %s: node gone, finalizer removed", nc)
        return False


def main() -> None:
    """Run until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", default=None)
    parser.add_argument("--step-delay", type=float, default=0.5, help="seconds between lifecycle steps of one NodeClaim")
    parser.add_argument("--fail-sku", action="append", default=[], metavar="SKU=MESSAGE", help="make launches of SKU fail")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = client.Configuration()
    config.load_kube_config(config_file=args.kubeconfig, client_configuration=cfg)
    api = client.ApiClient(cfg)
    fails = dict(item.split("=", 1) for item in args.fail_sku)
    fake = FakeGpuProvisioner(api, step_delay=args.step_delay, fail_skus=fails)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: fake.stopped.set())
    threading.Thread(target=fake.watch_loop, daemon=True, name="watch").start()
    log.info("test stand-in for Azure gpu-provisioner running (step delay %.1fs, failing SKUs: %s)", args.step_delay, json.dumps(fails))
    fake.work_loop()


if __name__ == "__main__":
    main()
