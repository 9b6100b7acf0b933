"""The Azure side of ``azure-agentpool``: the credential and the agent-pools client, and ARM
errors turned into :class:`~kaito_core.errors.ProvisioningError` (the operator's error table
makes them Workspace conditions).

The azure packages are the ``azure`` extra of kaito-provisioners and are imported only here, on
first use, so a user without Azure never installs them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from pydantic.alias_generators import to_camel

from kaito_core.api.reasons import Reason
from kaito_core.errors import PluginError, ProvisioningError
from kaito_core.provisioners import AzureSettings
from kaito_provisioners.agentpool import explain

REQUIRED = ("subscription_id", "resource_group", "cluster_name")
INSTALL_HINT = "the azure-agentpool provisioner needs the azure packages: pip install 'kaito-provisioners[azure]'"


def check_settings(settings: AzureSettings | None) -> AzureSettings:
    """The settings, or a ProvisioningError naming every missing field and how to set it."""
    if settings is None:
        raise ProvisioningError("the azure-agentpool provisioner was not configured by the operator", reason=Reason.AZURE_NOT_CONFIGURED, retryable=False)
    missing = [f for f in REQUIRED if not getattr(settings, f)]
    if missing:
        names = ", ".join(f"nodeProvisioner.azure.{to_camel(f)} (KAITO_NODE_PROVISIONER__AZURE__{f.upper()})" for f in missing)
        raise ProvisioningError(f"the azure-agentpool provisioner needs {names}; set them in the Helm values or environment",
                                reason=Reason.AZURE_NOT_CONFIGURED, retryable=False)
    return settings


def require_azure_packages() -> None:
    """PluginError with the install command when the azure extra is missing."""
    import importlib.util

    try:
        missing = any(importlib.util.find_spec(m) is None for m in ("azure.identity", "azure.mgmt.containerservice"))
    except ModuleNotFoundError:  # not even the azure namespace
        missing = True
    if missing:
        raise PluginError(INSTALL_HINT)


def make_credential(settings: AzureSettings) -> Any:
    """WorkloadIdentityCredential when a federated token file is there (an AKS pod with workload
    identity), ManagedIdentityCredential when a client ID is set, else DefaultAzureCredential
    (a developer's machine); ``settings.credential`` forces one."""
    try:
        from azure.identity import DefaultAzureCredential, ManagedIdentityCredential, WorkloadIdentityCredential
    except ImportError as exc:
        raise PluginError(INSTALL_HINT) from exc
    token_file = settings.federated_token_file or os.environ.get("AZURE_FEDERATED_TOKEN_FILE", "")
    tenant = settings.tenant_id or os.environ.get("AZURE_TENANT_ID", "")
    client_id = settings.client_id or os.environ.get("AZURE_CLIENT_ID", "")
    kind = settings.credential
    if kind == "auto":
        kind = "workload" if token_file else ("managed" if client_id else "default")
    transport: dict[str, Any] = {"connection_verify": settings.ca_bundle} if settings.ca_bundle else {}
    if kind == "workload":
        custom_authority = settings.authority_host.rstrip("/") != "https://login.microsoftonline.com"
        return WorkloadIdentityCredential(
            tenant_id=tenant, client_id=client_id, token_file_path=token_file, authority=settings.authority_host,
            disable_instance_discovery=custom_authority, **transport,
        )
    if kind == "managed":
        return ManagedIdentityCredential(client_id=client_id or None, **transport)
    if kind == "default":
        return DefaultAzureCredential(authority=settings.authority_host, **transport)
    raise ProvisioningError(f"nodeProvisioner.azure.credential is {kind!r}; use auto, workload, managed or default",
                            reason=Reason.AZURE_NOT_CONFIGURED, retryable=False)


def make_agent_pools(settings: AzureSettings) -> Any:
    """The sync ``agent_pools`` operations of a ContainerServiceClient for ``settings``.

    Sync on purpose: the reconciler runs in worker threads and never waits on a long operation
    (every ``begin_*`` is called with ``polling=False``). Retries are off: the reconciler's own
    requeue is the retry, so no worker sleeps on a Retry-After.
    """
    try:
        from azure.mgmt.containerservice import ContainerServiceClient
    except ImportError as exc:
        raise PluginError(INSTALL_HINT) from exc
    for noisy in ("azure.core.pipeline.policies.http_logging_policy", "azure.identity"):
        logging.getLogger(noisy).setLevel(logging.WARNING)  # every request at INFO; our own lines say what happened
    endpoint = settings.resource_manager_endpoint.rstrip("/")
    scope = "https://management.azure.com/.default" if endpoint == "https://management.azure.com" else f"{endpoint}/.default"
    transport: dict[str, Any] = {"connection_verify": settings.ca_bundle} if settings.ca_bundle else {}
    client = ContainerServiceClient(
        make_credential(settings), settings.subscription_id, base_url=endpoint, credential_scopes=[scope],
        retry_total=0, connection_timeout=settings.request_timeout_s, read_timeout=settings.request_timeout_s, **transport,
    )
    return client.agent_pools


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@contextlib.contextmanager
def arm_errors(*, pool: str, vm_size: str, location: str) -> Iterator[None]:
    """Turn what the SDK raises into a ProvisioningError that says what to do."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

    try:
        yield
    except ClientAuthenticationError as exc:
        code = getattr(getattr(exc, "error", None), "code", None) or "AuthenticationFailed"
        problem = explain(status=exc.status_code or 401, code=code, message=_first_line(exc), pool=pool, vm_size=vm_size, location=location)
        raise ProvisioningError(problem.message, reason=problem.reason, retryable=problem.retryable) from exc
    except HttpResponseError as exc:
        error = getattr(exc, "error", None)
        retry_after = _retry_after(exc)
        problem = explain(status=exc.status_code, code=getattr(error, "code", None) or "", message=getattr(error, "message", None) or _first_line(exc),
                          pool=pool, vm_size=vm_size, location=location, retry_after=retry_after)
        raise ProvisioningError(problem.message, reason=problem.reason, retryable=problem.retryable, delay=retry_after) from exc
    except ServiceRequestError as exc:
        raise ProvisioningError(f"cannot reach Azure Resource Manager for agent pool {pool}: {_first_line(exc)}; check "
                                "nodeProvisioner.azure.resourceManagerEndpoint and the network", reason=Reason.AZURE_UNREACHABLE) from exc


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc)
    return text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
