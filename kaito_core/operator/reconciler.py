"""The reconciler: read -> plan -> apply -> write status, for one Workspace at a time.

It is the thin shell around the pure planner (:mod:`kaito_core.operator.plan`): it reads what
the planner needs (from the watch caches, through :class:`~kaito_core.operator.kube.Kube`),
lets the provisioner bring the nodes along, applies the planned objects and writes the planned
status. It is plain synchronous code over the ``kubernetes`` client (kopf runs it in worker
threads). Each round reads the current state instead of remembering anything, so a restart at
any point converges, and an unchanged workspace causes no write at all. Errors leave through
the one boundary (:mod:`kaito_core.operator.boundary`), which also says which status to write.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

from kaito_core import serving
from kaito_core.api.labels import ANNOTATION_HASH, ANNOTATION_REVISION, LABEL_WORKSPACE
from kaito_core.api.workspace import Workspace
from kaito_core.errors import NotReadyError, ProvisioningError
from kaito_core.operator import boundary, checks
from kaito_core.operator.kube import Kube
from kaito_core.operator.manifests import spec_hash
from kaito_core.operator.metrics import OperatorMetrics
from kaito_core.operator.nodeclient import KubeNodeClient
from kaito_core.operator.plan import Desired, Observed, observe_workload, plan_inference, plan_nodes, plan_tuning, plan_tuning_nodes
from kaito_core.operator.presets import PresetSource
from kaito_core.operator.settings import OperatorSettings
from kaito_core.operator.status import Facts, build_status, status_changed
from kaito_core.operator.tuning import default_config_name, job_action, job_succeeded, secret_name_problems
from kaito_core.presets import Preset
from kaito_core.plugins import Registry
from kaito_core.provisioners import NodeProvisioner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """Result of one successful reconcile: the workspace is where it should be for now."""

    ready: bool
    requeue_after: float
    """Seconds until the next level-based check (events of owned objects wake it earlier)."""


@dataclass(frozen=True)
class _Written:
    """The operator's own last writes on one workspace."""

    hash: str
    revision: str
    status: dict[str, Any] | None


class Reconciler:
    """Reconciles one Workspace at a time; safe to use from several threads."""

    def __init__(self, kube: Kube, registry: Registry, settings: OperatorSettings, metrics: OperatorMetrics | None = None) -> None:
        self.kube = kube
        self.nodes = KubeNodeClient(kube)
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self.presets = PresetSource(registry, settings.presets, kube)
        """Preset names -> presets, model ids included (generated ones kept in memory)."""
        self._written: dict[str, _Written] = {}
        """What this process last wrote on each workspace (by uid): the body a reconcile gets may
        predate it (the watch event of our own write arrives later), and writing it again would be a
        wasted request. Only the operator writes these, so its own last write is the newest."""

    @property
    def provisioner(self) -> NodeProvisioner:
        """The configured node provisioner (NotFoundError when it is not installed)."""
        return self.registry.provisioner(self.settings.node_provisioner.name)

    # -- public -----------------------------------------------------------------------------------

    def reconcile(self, obj: dict[str, Any]) -> Outcome:
        """Bring the cluster in line with the Workspace ``obj`` (a wire dict, as read).

        Raises:
            ValidationError: the spec is invalid (status says which fields).
            NotReadyError: nodes or the workload are not ready yet (status says what is missing).
            ProvisioningError, NotFoundError, PluginError: something a person must fix.
        """
        obj = copy.deepcopy(obj)
        generation = int((obj.get("metadata") or {}).get("generation") or 1)
        written = self._written.get(obj["metadata"].get("uid", ""))
        old_status = written.status if written and written.status is not None else obj.get("status") or {}
        try:
            desired = self._read_and_plan(obj, generation)
            for planned in desired.objects:
                _, changed = self.kube.apply(planned, obj["metadata"].get("uid", ""))
                if changed:
                    log.info("%s %s/%s written", planned["kind"], planned["metadata"]["namespace"], planned["metadata"]["name"])
            self._apply_job(obj, desired)
        except Exception as exc:
            facts = boundary.classify(exc, self.settings.requeue, generation).facts
            if facts is not None:
                self._write_status(obj, facts, old_status)
            raise
        status = self._write_status(obj, desired.facts, old_status)
        if desired.wait is not None:
            raise NotReadyError(desired.wait.message, delay=desired.wait.delay_s, reason=desired.wait.reason)
        return Outcome(ready=status.get("state") in ("Ready", "Succeeded"), requeue_after=self.settings.requeue.resync_s)

    def finalize(self, obj: dict[str, Any]) -> None:
        """Stop the inference or tuning pods, then delete what the provisioner created for the workspace.

        The workload (Deployment, StatefulSet or tuning Job, with background propagation) goes
        first so the pods shut down while their nodes still exist (no pods stranded on vanished
        nodes); the Services, the training ConfigMap copy and the rest go by owner references.

        Raises:
            NotReadyError: pods are still terminating, or NodeClaims (and their cloud nodes) are
                still being deleted.
        """
        meta = obj["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta.get("uid", "")
        for kind in ("Deployment", "StatefulSet", "Job"):
            self.kube.delete_if_owned(kind, namespace, name, uid)
        pods = self.kube.list_pods(namespace, {LABEL_WORKSPACE: name})
        if pods:
            raise NotReadyError(
                f"waiting for {len(pods)} pod(s) of workspace {namespace}/{name} to terminate",
                delay=self.settings.requeue.delete_s,
                reason="PodsTerminating",
            )
        self._written.pop(uid, None)
        provisioner = self.provisioner
        if not provisioner.delete_nodes(self.nodes, workspace=name, namespace=namespace):
            raise NotReadyError(
                f"waiting for the nodes of workspace {namespace}/{name} to be deleted by {provisioner.name}",
                delay=self.settings.requeue.delete_s,
                reason="NodesDeleting",
            )

    # -- read and plan ----------------------------------------------------------------------------

    def _read_and_plan(self, obj: dict[str, Any], generation: int) -> Desired:
        """Validate, read what the planner needs (the provisioner brings the nodes along), plan."""
        settings = self.settings
        resolve = self.presets.resolver(obj)
        ws = checks.check(
            {k: v for k, v in obj.items() if k != "status"}, self.registry,
            cloud=settings.cloud.provider, provisioner=settings.node_provisioner.name, resolve_preset=resolve,
            allowed_data_hosts=settings.tuning.allow_data_hosts,
        )
        revision = self._ensure_revision(obj)
        if ws.tuning is not None:
            return self._read_tuning(ws, resolve(ws.tuning.preset.name), obj, generation, revision)
        assert ws.inference is not None
        if ws.inference.preset is None:
            raise ProvisioningError(
                "inference.template (custom pod templates) is not supported by this operator version; use inference.preset",
                reason="TemplateNotSupported",
                retryable=False,
            )
        preset = resolve(ws.inference.preset.name)
        backend = self.registry.backend(serving.choose_backend(preset, ws.metadata.annotations))
        provisioner = self.provisioner
        nodes = plan_nodes(ws, preset, backend, settings)
        provision = provisioner.ensure_nodes(self.nodes, nodes.request)
        workload = self.kube.get(nodes.workload_kind, ws.namespace, ws.name)
        pods = self._pods_if_not_ready(ws, workload)
        observed = Observed(generation=generation, revision=revision, provision=provision, workload=workload, pods=pods)
        return plan_inference(ws, preset, backend, provisioner, settings, observed)

    def _read_tuning(self, ws: Workspace, preset: Preset, obj: dict[str, Any], generation: int, revision: str) -> Desired:
        """Read what plan_tuning needs: the nodes (brought along by the provisioner), the Job, its
        pods while it runs or after it failed, and the training ConfigMap when a Job is to be created."""
        assert ws.tuning is not None
        provisioner = self.provisioner
        nodes = plan_tuning_nodes(ws, preset, self.settings)
        # No nodes for a Job the API server would refuse (the planner says which secret name is wrong).
        provision = None if secret_name_problems(ws) else provisioner.ensure_nodes(self.nodes, nodes.request)
        digest = str((obj["metadata"].get("annotations") or {}).get(ANNOTATION_HASH, ""))
        job = self.kube.get("Job", ws.namespace, ws.name)
        action = job_action(job, digest)
        pods: list[dict[str, Any]] = []
        if action == "keep" and job is not None and not job_succeeded(job):  # pods say which step runs or failed
            pods = self.kube.list_pods(ws.namespace, {LABEL_WORKSPACE: ws.name})
        config = None
        if action == "create" and provision is not None and provision.ready:
            method = ws.tuning.method.value
            config_ns, config_name = (ws.namespace, ws.tuning.config) if ws.tuning.config else \
                (self.settings.tuning.default_config_namespace, default_config_name(method))
            config = self.kube.get("ConfigMap", config_ns, config_name)
        observed = Observed(generation=generation, revision=revision, provision=provision, job=job, pods=pods,
                            spec_hash=digest, training_config=config)
        return plan_tuning(ws, preset, provisioner, self.settings, observed)

    def _apply_job(self, obj: dict[str, Any], desired: Desired) -> None:
        """Create the planned tuning Job, or delete the one of an older spec (foreground: it stays,
        marked, until its pods are gone, so the next one never shares the node with them)."""
        meta = obj["metadata"]
        if desired.job_action == "create" and desired.job is not None:
            _, created = self.kube.apply(desired.job, meta.get("uid", ""))
            if created:
                log.info("Job %s/%s created", meta["namespace"], meta["name"])
        elif desired.job_action == "replace":
            if self.kube.delete_if_owned("Job", meta["namespace"], meta["name"], meta.get("uid", ""), foreground=True):
                log.info("Job %s/%s of an older spec deleted", meta["namespace"], meta["name"])

    def _pods_if_not_ready(self, ws: Workspace, workload: dict[str, Any] | None) -> list[dict[str, Any]]:
        """The workspace's pods, read only when the workload exists and is not ready (to say why)."""
        if workload is None or observe_workload(workload, ()).ready:
            return []
        return self.kube.list_pods(ws.namespace, {LABEL_WORKSPACE: ws.name})

    def _ensure_revision(self, obj: dict[str, Any]) -> str:
        """Set workspace.kaito.io/hash and bump workspace.kaito.io/revision when the spec changed;
        returns the revision."""
        meta = obj["metadata"]
        annotations = meta.setdefault("annotations", {})
        digest = spec_hash(obj)
        if annotations.get(ANNOTATION_HASH) == digest:
            return str(annotations.get(ANNOTATION_REVISION, "1"))
        written = self._written.get(meta.get("uid", ""))
        if written is not None and written.hash == digest:  # stamped by us; the watch has not shown it yet
            annotations.update({ANNOTATION_HASH: digest, ANNOTATION_REVISION: written.revision})
            return written.revision
        try:
            revision = int(annotations.get(ANNOTATION_REVISION, "0")) + 1
        except ValueError:
            revision = 1
        patch = {ANNOTATION_HASH: digest, ANNOTATION_REVISION: str(revision)}
        self.kube.patch_workspace_annotations(meta["namespace"], meta["name"], dict(patch))
        annotations.update(patch)
        uid = meta.get("uid", "")
        prior = self._written.get(uid)
        self._written[uid] = _Written(hash=digest, revision=str(revision), status=prior.status if prior else None)
        return str(revision)

    # -- status -----------------------------------------------------------------------------------

    def _write_status(self, obj: dict[str, Any], facts: Facts, old_status: dict[str, Any]) -> dict[str, Any]:
        """Write the status of ``facts`` when it differs from ``old_status``; returns it (wire form)."""
        new = build_status(facts, old_status).to_wire()
        if status_changed(old_status, new):
            meta = obj["metadata"]
            self.kube.patch_workspace_status(meta["namespace"], meta["name"], new, old_status)
            obj["status"] = new
            uid = meta.get("uid", "")
            prior = self._written.get(uid)
            self._written[uid] = _Written(hash=prior.hash if prior else "", revision=prior.revision if prior else "", status=new)
        if self.metrics is not None:
            self.metrics.workspace_seen(obj, str(new["state"]))
        return new
