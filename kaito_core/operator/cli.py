"""``kaito operator``: run the Workspace operator against the current cluster."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from kaito_core.errors import KaitoError
from kaito_core.operator import logs
from kaito_core.operator.settings import OperatorSettings


def operator(
    kubeconfig: Annotated[Path | None, typer.Option(help="kubeconfig file (default: in-cluster, else $KUBECONFIG / ~/.kube/config)")] = None,
    node_provisioner: Annotated[str | None, typer.Option(help="node provisioner plugin (see `kaito plugins`): gpu-provisioner (default), karpenter, azure-agentpool, byo or another installed one")] = None,
    namespace: Annotated[list[str] | None, typer.Option("--namespace", "-n", help="watch only these namespaces (repeatable); default: all")] = None,
    webhook: Annotated[bool | None, typer.Option("--webhook/--no-webhook", help="serve the validating admission webhook")] = None,
    webhook_host: Annotated[str | None, typer.Option(help="host the API server uses to reach the webhook")] = None,
    webhook_port: Annotated[int | None, typer.Option(help="webhook HTTPS port")] = None,
    webhook_cert_dir: Annotated[Path | None, typer.Option(help="where the webhook CA and certificate are kept")] = None,
    workers: Annotated[int | None, typer.Option(help="reconciles running at once")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus /metrics port (0 disables; default 0)")] = None,
    metrics_host: Annotated[str | None, typer.Option(help="address the metrics endpoint listens on (default 127.0.0.1)")] = None,
    log_format: Annotated[
        str | None, typer.Option(help="json (one object per line) or text; default: text on a terminal, else json")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    """Run the KAITO Workspace operator (settings also from KAITO_* environment variables)."""
    try:
        logs.configure(log_format or logs.default_format(), verbose=verbose)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--log-format") from exc
    if kubeconfig is not None:
        os.environ["KUBECONFIG"] = str(kubeconfig)  # one source for kopf's and the reconciler's clients
    overrides: dict[str, Any] = {}
    if node_provisioner:
        overrides["node_provisioner"] = {"name": node_provisioner}
    if namespace:
        overrides["scope"] = {"namespaces": list(namespace)}
    hook: dict[str, Any] = {}
    for key, value in (("enabled", webhook), ("host", webhook_host), ("port", webhook_port), ("cert_dir", webhook_cert_dir)):
        if value is not None:
            hook[key] = value
    if hook:
        overrides["webhook"] = hook
    if workers:
        overrides["concurrency"] = {"workers": workers}
    metrics = {k: v for k, v in (("port", metrics_port), ("host", metrics_host)) if v is not None}
    if metrics:
        overrides["metrics"] = metrics
    settings = OperatorSettings.load(**overrides)

    from kaito_core.operator.runtime import LeadershipLost, run

    try:
        asyncio.run(run(settings, kubeconfig=str(kubeconfig) if kubeconfig else None))
    except LeadershipLost as exc:  # exit so that the kubelet restarts this replica as a follower
        typer.echo(f"kaito operator: stopped: {exc}", err=True)
        raise typer.Exit(1) from exc
    except KaitoError as exc:  # missing prerequisites, or the chosen plugins refused their settings
        typer.echo(f"kaito operator: cannot start: {exc}", err=True)
        raise typer.Exit(2) from exc


def main() -> None:
    """Entry point of ``python -m kaito_core.operator``."""
    typer.run(operator)
