"""The operator killed (SIGKILL) in the middle of provisioning converges after a restart with
exactly the NodeClaims it needs: they are found again by labels, never remembered."""

from __future__ import annotations

import pytest
from harness import Stack, dump, load_manifest
from test_workspace_lifecycle import EXAMPLES, nodeclaims, nodes, wait_gone, wait_ready

from kaito_localcluster.kubeapi import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]


def test_killed_mid_provisioning_converges_without_duplicates(stack: Stack, kube_namespace: str) -> None:
    ns = kube_namespace
    ws = load_manifest(EXAMPLES[0])
    ws["metadata"]["name"] = name = "phi-3-restart"
    ws["resource"]["count"] = 2
    stack.kubectl("apply", "-n", ns, "-f", "-", input=dump(ws))
    first = wait_for(lambda: nodeclaims(stack, ns, name), timeout=30, interval=0.05, what="first NodeClaim", on_timeout=stack.diagnostics)
    stack.operator.kill()
    assert not any(c.get("status", {}).get("conditions") and any(x["type"] == "Ready" and x["status"] == "True" for x in c["status"]["conditions"]) for c in first), "killed too late: a NodeClaim was already Ready"

    stack.restart_operator(crash=True)
    wait_ready(stack, ns, name)
    claims = nodeclaims(stack, ns, name)
    assert len(claims) == 2, [c["metadata"]["name"] for c in claims]
    assert {c["metadata"]["name"] for c in first} <= {c["metadata"]["name"] for c in claims}
    assert len(nodes(stack, ns, name)) == 2

    # A graceful restart of a ready workspace changes nothing either.
    before = {c["metadata"]["name"]: c["metadata"]["resourceVersion"] for c in claims}
    stack.restart_operator(crash=False)
    wait_ready(stack, ns, name)
    assert {c["metadata"]["name"]: c["metadata"]["resourceVersion"] for c in nodeclaims(stack, ns, name)} == before

    stack.kubectl("delete", "workspace", name, "-n", ns, "--timeout=90s")
    wait_gone(stack, ns, name)
