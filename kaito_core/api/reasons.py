"""Every reason the operator can write on a Workspace: the one home of the status vocabulary.

:class:`Reason` holds the ``reason`` of every status condition and Warning event the operator
and the first-party provisioner plugins write; ``docs/troubleshooting.md`` has a row for each
saying what the user should do, and ``tests/test_troubleshooting_docs.py`` fails when a member
has no row, when a row names no member, or when code under ``kaito_core`` or ``plugins/``
passes a reason as a string literal instead of a member. A new reason is a new member here and
a new row there (the tuning controller's reasons go in the tuning group).

:class:`WaitReason` names why a reconcile round waits (:class:`~kaito_core.errors.NotReadyError`);
those are never written on the Workspace, so they have no row.

Upstream KAITO's own spellings are kept where it has them (``workspaceSucceeded``,
``WorkspaceInferenceStatusPending``, ...), so tools written for upstream read ours.
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    """A reason written on a Workspace (condition ``reason`` or Warning event ``reason``)."""

    # -- overall verdict (WorkspaceSucceeded / WorkspaceReady) --------------------------------
    WORKSPACE_SUCCEEDED = "workspaceSucceeded"
    WORKSPACE_PENDING = "workspacePending"
    WORKSPACE_INVALID = "WorkspaceInvalid"
    """The spec failed validation (also the Warning event's reason)."""

    # -- ResourceReady ---------------------------------------------------------------------------
    RESOURCE_READY = "workspaceResourceStatusSuccess"
    RESOURCE_NOT_READY = "workspaceResourceStatusNotReady"
    NOT_FOUND = "NotFoundError"
    """A named preset, backend, provisioner or instance type is not installed (the error's type name)."""
    PLUGIN_ERROR = "PluginError"
    """An installed plugin is broken (the error's type name)."""
    PLUGIN_MISSING = "PluginMissing"
    """Warning event for NOT_FOUND and PLUGIN_ERROR."""
    PROVISIONING_FAILED = "ProvisioningFailed"
    """A provisioner failed without a more specific reason (also the Warning event of every provisioning failure)."""
    RESOURCE_CONFLICT = "ResourceConflict"
    """An object the workspace needs exists and belongs to something else."""
    TEMPLATE_NOT_SUPPORTED = "TemplateNotSupported"

    # -- InferenceReady --------------------------------------------------------------------------
    INFERENCE_READY = "WorkspaceInferenceStatusSuccess"
    INFERENCE_PENDING = "WorkspaceInferenceStatusPending"

    # -- InferenceReady: pod failures (kaito_core.operator.status.classify_pod) ---------------
    POD_EVICTED = "PodEvicted"
    CONTAINER_OOM_KILLED = "ContainerOOMKilled"
    IMAGE_PULL_ERROR = "ImagePullError"
    CONTAINER_CRASH_LOOP = "ContainerCrashLoopBackOff"
    CONTAINER_START_ERROR = "ContainerStartError"
    UNSCHEDULABLE = "Unschedulable"

    # -- tuning (JobStarted and the overall verdict) ----------------------------------------------
    JOB_STARTED = "WorkspaceTuningJobStatusStarted"
    JOB_PENDING = "WorkspaceTuningJobStatusPending"
    JOB_FAILED = "WorkspaceTuningJobStatusFailed"
    """JobStarted after the Job failed (upstream's spelling); the overall verdict says where and why."""
    TUNING_JOB_FAILED = "WorkspaceTuningJobFailed"
    """A step of the tuning Job failed: the message names the step, its exit code and its termination message."""
    TUNING_CONFIG_NOT_FOUND = "TuningConfigNotFound"
    """The training ConfigMap (tuning.config, or the chart's default of the method) does not exist."""
    TUNING_CONFIG_INVALID = "TuningConfigInvalid"
    """The training ConfigMap contradicts the method or is malformed; no Job is created."""
    TUNING_SECRET_INVALID = "TuningSecretInvalid"
    """tuning.output.imagePushSecret is not a Secret name the API server accepts; no Job is created."""

    # -- provisioners: NodeClaims (gpu-provisioner) and NodePools (karpenter) -----------------
    NODECLAIMS_READY = "NodeClaimsReady"
    NODECLAIM_NOT_READY = "NodeClaimNotReady"
    NODE_NOT_READY = "NodeNotReady"
    NODECLAIM_CRD_MISSING = "NodeClaimCRDMissing"
    NODECLAIM_INVALID = "NodeClaimInvalid"
    NODECLAIM_NAME_COLLISION = "NodeClaimNameCollision"
    KARPENTER_CRD_MISSING = "KarpenterCRDMissing"
    NODEPOOL_INVALID = "NodePoolInvalid"

    # -- provisioners: bring-your-own nodes (byo) ---------------------------------------------
    NO_NODE_SELECTOR = "NoNodeSelector"
    NOT_ENOUGH_NODES = "NotEnoughNodes"
    NODES_NOT_UNIFORM = "NodesNotUniform"
    NODES_TOO_SMALL = "NodesTooSmall"

    # -- provisioners: AKS agent pools (azure-agentpool) --------------------------------------
    AGENTPOOL_NOT_READY = "AgentPoolNotReady"
    AZURE_NOT_CONFIGURED = "AzureNotConfigured"
    AZURE_UNREACHABLE = "AzureUnreachable"
    AZURE_AUTH_FAILED = "AzureAuthFailed"
    AZURE_THROTTLED = "AzureThrottled"
    AGENTPOOL_OPERATION_IN_PROGRESS = "AgentPoolOperationInProgress"
    QUOTA_EXCEEDED = "QuotaExceeded"
    CAPACITY_UNAVAILABLE = "CapacityUnavailable"
    AGENTPOOL_INVALID = "AgentPoolInvalid"
    AGENTPOOL_FAILED = "AgentPoolFailed"


class WaitReason(enum.StrEnum):
    """Why a reconcile round waits with nothing for a person to do; never written on the Workspace
    (the round's status carries a :class:`Reason`)."""

    NOT_READY = "NotReady"
    CONFLICT = "Conflict"
    """An object changed underneath a write (HTTP 409); retried at once."""
    NODES_NOT_READY = "NodesNotReady"
    WORKLOAD_NOT_READY = "WorkloadNotReady"
    PODS_TERMINATING = "PodsTerminating"
    TUNING_JOB_CREATED = "TuningJobCreated"
    TUNING_JOB_RUNNING = "TuningJobRunning"
    TUNING_JOB_REPLACING = "TuningJobReplacing"
    """The Job of an older spec is being deleted before the new one is created."""
    NODES_DELETING = "NodesDeleting"
    RECONCILE_STOPPING = "ReconcileStopping"
    """A deleted workspace's reconcile loop has not stopped yet: finalizing waits for it, so that no
    round still in flight creates a NodeClaim after the finalizer's last look."""
