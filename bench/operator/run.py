"""Operator benchmark (not a test): N Workspaces on the local control plane with kwok nodes.

For each N it starts the operator afresh (as the least-privilege ServiceAccount, so the API
server's audit log can tell its requests from everyone else's), applies N Workspaces at once,
and records:

* time until all N are Ready (WorkspaceSucceeded=True, i.e. WORKSPACEREADY),
* API requests the operator made per Workspace until then (reads and writes, from the audit log),
* writes per Workspace per resync in steady state (a window of several resync periods after all
  are Ready; the target is 0),
* the operator's peak RSS (VmHWM).

Run: ``.venv/bin/python bench/operator/run.py --counts 50 500 --write docs/benchmarks.md``
(or ``make bench-operator``). The gpu-provisioner test stand-in plays the cloud.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import harness  # noqa: E402

from kaito_localcluster.cluster import LocalCluster  # noqa: E402

OPERATOR_USER = "system:serviceaccount:kaito-system:kaito-operator"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
AUDIT_POLICY = f"""apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    users: ["{OPERATOR_USER}"]
  - level: None
"""


def workspace(name: str) -> dict[str, Any]:
    """The user's Phi-3 example under another name."""
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": {"apps": name}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }


def audit_events(path: Path, since: float, until: float) -> list[dict[str, Any]]:
    """Operator requests completed in [since, until] (epoch seconds), one per auditID."""
    seen: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            event = json.loads(line)
            if event.get("user", {}).get("username") != OPERATOR_USER:
                continue
            stamp = time.mktime(time.strptime(event["requestReceivedTimestamp"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
            if since <= stamp <= until:
                seen[event["auditID"]] = event
    return list(seen.values())


def summarize(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts by verb and by verb+resource."""
    verbs = collections.Counter(e["verb"] for e in events)
    by_resource = collections.Counter(f"{e['verb']} {e.get('objectRef', {}).get('resource', '?')}" + ("/" + e["objectRef"]["subresource"] if e.get("objectRef", {}).get("subresource") else "") for e in events)
    writes = sum(n for v, n in verbs.items() if v in WRITE_VERBS)
    watches = verbs.get("watch", 0)
    return {
        "total": len(events), "writes": writes, "reads": len(events) - writes, "gets": len(events) - writes - watches,
        "watches": watches, "by_verb": dict(verbs), "by_resource": dict(by_resource.most_common()),
    }


def peak_rss_mib(pid: int) -> float:
    """VmHWM of a process in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_one(cluster: LocalCluster, audit: Path, workdir: Path, n: int, *, resync: float, window: float, workers: int) -> dict[str, Any]:
    """Apply N Workspaces with a fresh operator; measure; delete them."""
    ns = f"bench-{n}"
    cluster.api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    port = harness.free_port()
    op = harness.operator(
        workdir / "operator.kubeconfig", workdir / f"operator-{n}.log", workdir / "certs", webhook_port=port,
        extra_env={"KAITO_REQUEUE__RESYNC_S": str(resync), "KAITO_CONCURRENCY__WORKERS": str(workers)},
    )
    op.start()
    harness.wait_webhook_ready(cluster, port)
    assert op.proc is not None
    docs = "\n---\n".join(json.dumps(workspace(f"ws-{i:04d}")) for i in range(n))
    t0 = time.time()
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=docs, timeout=600)
    applied = time.time() - t0
    ready_at = None
    progress = []
    while time.time() - t0 < 3600:
        items = cluster.api.get(f"/apis/kaito.sh/v1beta1/namespaces/{ns}/workspaces")["items"]
        ready = sum(
            any(c["type"] == "WorkspaceSucceeded" and c["status"] == "True" for c in (i.get("status") or {}).get("conditions") or [])
            for i in items
        )
        progress.append((round(time.time() - t0, 1), ready))
        if ready == n:
            ready_at = time.time()
            break
        time.sleep(2)
    if ready_at is None:
        raise RuntimeError(f"only {progress[-1][1]}/{n} ready after an hour; see {op.log}")
    time.sleep(2)
    claims = cluster.api.get("/apis/karpenter.sh/v1/nodeclaims")["items"]
    stamps = [
        c["lastTransitionTime"] for claim in claims for c in claim.get("status", {}).get("conditions", []) if c["type"] == "Ready"
    ]
    last_claim_ready = max(time.mktime(time.strptime(t, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone for t in stamps)
    until_ready = audit_events(audit, t0 - 1, ready_at + 1)
    steady_start = ready_at + max(5.0, resync)  # let the last pod/status events settle
    time.sleep(steady_start - time.time() + window)
    steady = audit_events(audit, steady_start, steady_start + window)
    rss = peak_rss_mib(op.proc.pid)
    # Clean up: delete and time it (the finalizer deletes the NodeClaims, then the nodes go).
    t_del = time.time()
    cluster.kubectl("delete", "workspaces", "--all", "-n", ns, "--wait=false", timeout=600)
    while cluster.api.get(f"/apis/kaito.sh/v1beta1/namespaces/{ns}/workspaces")["items"] or cluster.api.get("/apis/karpenter.sh/v1/nodeclaims")["items"]:
        if time.time() - t_del > 1800:
            raise RuntimeError("deletion did not finish in 30 min")
        time.sleep(2)
    deleted_in = time.time() - t_del
    op.stop()
    cluster.api.delete(f"/api/v1/namespaces/{ns}")
    s_ready, s_steady = summarize(until_ready), summarize(steady)
    resyncs = window / resync
    return {
        "n": n,
        "apply_s": round(applied, 1),
        "all_ready_s": round(ready_at - t0, 1),
        "last_nodeclaim_ready_s": round(last_claim_ready - t0, 1),
        "requests_per_ws": round(s_ready["total"] / n, 1),
        "reads_per_ws": round(s_ready["reads"] / n, 1),
        "writes_per_ws": round(s_ready["writes"] / n, 1),
        "steady_window_s": window,
        "resync_s": resync,
        "steady_writes": s_steady["writes"],
        "steady_writes_per_ws_per_resync": round(s_steady["writes"] / (n * resyncs), 3),
        "steady_reads_per_ws_per_resync": round(s_steady["reads"] / (n * resyncs), 2),
        "steady_gets": s_steady["gets"],
        "steady_watches": s_steady["watches"],
        "steady_gets_per_ws_per_resync": round(s_steady["gets"] / (n * resyncs), 3),
        "peak_rss_mib": round(rss, 1),
        "delete_all_s": round(deleted_in, 1),
        "until_ready_by_resource": s_ready["by_resource"],
        "steady_by_resource": s_steady["by_resource"],
        "progress": progress[:: max(1, len(progress) // 20)],
    }


def render(results: list[dict[str, Any]], command: str) -> str:
    """The Operator section of docs/benchmarks.md."""
    lines = [
        "## Operator",
        "",
        f"Reproduce: `{command}` (about {sum(r['all_ready_s'] + r['delete_all_s'] + r['steady_window_s'] for r in results) / 60:.0f} min here).",
        "",
        "Setup: the local control plane of `kaito_localcluster` (etcd, kube-apiserver, kube-controller-manager, "
        "kube-scheduler, kwok, all built from Go modules) on one machine "
        f"({platform.machine()}, {__import__('os').cpu_count()} cores), the gpu-provisioner test stand-in playing Azure "
        "(NodeClaim -> kwok Node -> Launched/Registered/Initialized/Ready), the operator as a subprocess with the "
        "least-privilege ServiceAccount of config/rbac. Each Workspace is the user's Phi-3 example "
        "(Standard_NC6s_v3, one node): one NodeClaim, one Node, one Deployment, one Service. All N are applied "
        "with one `kubectl apply`; requests are counted from the API server's audit log (operator user only, "
        "webhook calls are not API requests). Everything on this machine shares its 2 cores, so the times are "
        "dominated by the API server and etcd, not by the operator alone.",
        "",
        "| N | `kubectl apply` (admission) | last NodeClaim Ready | all Workspaces Ready | API requests / Workspace until Ready (reads + writes) "
        "| steady state per Workspace per resync: get/list, writes | operator peak RSS | delete all |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['n']} | {r['apply_s']} s | {r['last_nodeclaim_ready_s']} s | {r['all_ready_s']} s | "
            f"{r['requests_per_ws']} ({r['reads_per_ws']} + {r['writes_per_ws']}) | "
            f"{r['steady_gets_per_ws_per_resync']}, {r['steady_writes_per_ws_per_resync']} ({r['steady_gets']} get/list and "
            f"{r['steady_writes']} writes in {r['steady_window_s']:.0f} s, resync {r['resync_s']:.0f} s; {r['steady_watches']} watch (re)connects) | "
            f"{r['peak_rss_mib']} MiB | {r['delete_all_s']} s |"
        )
    lines += [
        "",
        "Times are from the start of `kubectl apply` (every create passes the operator's admission webhook). "
        "The gpu-provisioner stand-in walks NodeClaims one at a time (about 1.5 per second here), so with many "
        "Workspaces it, not the operator, sets the pace: compare \"last NodeClaim Ready\" with \"all Workspaces Ready\". "
        "Writes until Ready per Workspace: 3 creates (NodeClaim, Deployment, Service), 4 Workspace metadata patches "
        "(finalizer, hash/revision annotations, kopf's diff base and its managed marker) and one status patch per "
        "visible step (NodeClaim created, launched, registered, initialized, pod pending, ready). Reads come from "
        "the operator's watch caches (kopf indexes on NodeClaims, Nodes, Deployments, StatefulSets, Services and "
        "inference Pods), so the only reads are the watch streams themselves (one per resource kind, reconnected "
        "every 5 min, not per Workspace) and one list of CRDs at start-up; a resync of a ready Workspace sends nothing.",
    ]
    lines += ["", "Requests until Ready, by verb and resource (all N Workspaces):", ""]
    for r in results:
        top = ", ".join(f"{k}: {v}" for k, v in list(r["until_ready_by_resource"].items())[:12])
        lines.append(f"- N={r['n']}: {top}")
    lines += ["", "Steady state (every request in the window; watch streams included):", ""]
    for r in results:
        top = ", ".join(f"{k}: {v}" for k, v in list(r["steady_by_resource"].items())[:8]) or "no requests"
        lines.append(f"- N={r['n']}: {top}")
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace (or append) the '## Operator' section, leaving other sections alone."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    start = text.find("## Operator")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1:] if end != -1 else "")
    path.write_text(text)


def main() -> None:
    """Parse arguments, run, report."""
    parser = argparse.ArgumentParser(description="KAITO operator benchmark on the local control plane")
    parser.add_argument("--counts", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--resync", type=float, default=20.0, help="operator resync period during the run (s)")
    parser.add_argument("--window", type=float, default=60.0, help="steady-state observation window (s)")
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--write", type=Path, default=None, help="write the Operator section of this markdown file")
    parser.add_argument("--json", type=Path, default=None, help="also dump the raw results here")
    args = parser.parse_args()

    workdir = Path("/tmp") / f"kaito-bench-operator-{int(time.time())}"
    workdir.mkdir(parents=True)
    policy = workdir / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    audit = workdir / "audit.log"
    extra = {
        "kube-apiserver": [f"--audit-policy-file={policy}", f"--audit-log-path={audit}", "--audit-log-maxsize=2000",
                           "--service-cluster-ip-range=10.96.0.0/16", "--max-requests-inflight=800", "--max-mutating-requests-inflight=400"],
        "kube-controller-manager": ["--service-cluster-ip-range=10.96.0.0/16", "--kube-api-qps=200", "--kube-api-burst=400"],
        "kube-scheduler": ["--kube-api-qps=200", "--kube-api-burst=400"],
    }
    results = []
    with LocalCluster(extra_args=extra, start_timeout=180) as cluster:
        cluster.install_crds(harness.CRDS)
        harness.operator_kubeconfig(cluster, workdir / "operator.kubeconfig")
        fake = harness.fake_gpu_provisioner(cluster.kubeconfig, workdir / "fake-gpu-provisioner.log", step_delay=0.2)
        fake.start()
        try:
            for n in args.counts:
                print(f"==> N={n}", flush=True)
                result = run_one(cluster, audit, workdir, n, resync=args.resync, window=args.window, workers=args.workers)
                print(json.dumps({k: v for k, v in result.items() if k not in ("until_ready_by_resource", "steady_by_resource", "progress")}), flush=True)
                results.append(result)
        finally:
            fake.stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    section = render(results, "make bench-operator  # = .venv/bin/python bench/operator/run.py --counts " + " ".join(map(str, args.counts)))
    print(section)
    if args.write:
        write_section(args.write, section)


if __name__ == "__main__":
    main()
