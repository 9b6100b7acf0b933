"""The ``kaito`` command line.

Commands (each with ``--help``):

* ``kaito plugins``   what the installed plugins provide, and which distribution supplies it;
* ``kaito presets``   the installed model presets and what they need;
* ``kaito validate``  check Workspace YAML files offline, every problem at once;
* ``kaito crd``       print (or write) the Workspace CRD generated from the API models;
* ``kaito chart``     generate the Helm chart's values, schema and values reference.

Other parts of the project add their commands here (``kaito serve``, ``kaito operator``); each
imports its heavy dependencies inside the command function, so ``kaito --help`` and the
commands above stay fast and never import an ML library.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from kaito_core.errors import KaitoError, NotFoundError, ValidationError
from kaito_core.sku import CLOUDS

app = typer.Typer(
    name="kaito",
    help=(
        "KAITO, the Kubernetes AI toolchain operator, in Python.\n\n"
        "Serve or fine-tune a model on Kubernetes by applying one Workspace resource: KAITO picks "
        "the model preset, checks that it fits the GPU, provisions the nodes and runs the server."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _registry() -> Any:
    """The registry of every installed plugin; plugin errors end the command with a message."""
    from kaito_core.plugins import Registry

    try:
        return Registry.from_entry_points()
    except KaitoError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


MARKS = {True: "present", False: "MISSING", None: "not checked"}
"""How `kaito plugins` shows a provisioner need's status."""


def _crd_lookup() -> tuple[Any, str]:
    """A CRD lookup on the current cluster (in-cluster, $KUBECONFIG or ~/.kube/config), or None
    and why there is none. Probed once, so an unreachable cluster costs one short timeout."""
    try:
        from kaito_core.operator.kube import Kube, make_api_client

        api = make_api_client()
        api.configuration.retries = 0
        probe = api.call_api(*api.param_serialize(method="GET", resource_path="/version", auth_settings=["BearerToken"]), _request_timeout=3)
        if probe.status != 200:
            return None, f"the cluster answered /version with HTTP {probe.status}"
        kube = Kube(api)
    except Exception as exc:  # no kubeconfig, unreachable, unauthorised: the needs stay unknown
        return None, f"no cluster to ask ({type(exc).__name__}); set KUBECONFIG"
    return kube.crd_installed, ""


@app.command()
def plugins(
    cluster: Annotated[bool, typer.Option("--cluster/--no-cluster", help="Ask the current cluster (KUBECONFIG) whether the provisioners' CRDs are installed")] = True,
) -> None:
    """List the presets, inference backends and node provisioners the installed plugins provide.

    Each item names the Python distribution that supplies it (e.g. kaito-phi3). Installing a
    plugin package (pip install kaito-phi3) is the only step needed to add its items. Node
    provisioners also list what they need and whether it is there: CRDs are asked of the current
    cluster, settings are read as the operator reads them (KAITO_* environment); the operator
    refuses to start when the chosen one's needs are missing.
    """
    from kaito_core.operator.settings import OperatorSettings

    registry = _registry()
    sections = (
        ("Presets", "preset", registry.presets()),
        ("Inference backends", "backend", registry.backends()),
        ("Node provisioners", "provisioner", registry.provisioners()),
        ("Preset generators (org/model ids)", "generator", registry.preset_generators()),
    )
    crd_installed, no_cluster = _crd_lookup() if cluster else (None, "not asked (--no-cluster)")
    settings = OperatorSettings()
    for title, kind, items in sections:
        typer.echo(f"{title}:")
        if not items:
            typer.echo("  (none installed)")
        rows = [[name, registry.source(kind, name).distribution, getattr(item, "description", "")] for name, item in items.items()]
        if rows:
            typer.echo("\n".join("  " + line for line in _table(["NAME", "DISTRIBUTION", "DESCRIPTION"], rows).splitlines()))
        if kind == "provisioner":
            for name, item in items.items():
                needs = item.need_status(crd_installed=crd_installed, azure=settings.node_provisioner.azure)
                typer.echo(f"  {name} needs" + (":" if needs else " nothing"))
                for need in needs:
                    detail = need.detail
                    if need.present is None and crd_installed is None and need.need.startswith("CRD "):
                        detail = no_cluster
                    typer.echo(f"    {need.need}: {MARKS[need.present]}" + (f" ({detail})" if detail else ""))
        typer.echo("")


@app.command()
def presets(
    output: Annotated[str, typer.Option("--output", "-o", help="table or json")] = "table",
    instance_type: Annotated[
        str | None, typer.Option("--instance-type", "-i", help="Show the nodes and GPUs each preset needs on this instance type")
    ] = None,
    cloud: Annotated[str, typer.Option(help=f"Instance-type catalogue for --instance-type: {', '.join(CLOUDS)}")] = "azure",
) -> None:
    """List the installed model presets by family, and what they need.

    MIN GPU GiB is the memory one GPU must have to serve the preset alone (weights ×1.02 +
    2.3 GiB runtime + KV cache for 2048 tokens, at 84% usable); models larger than that need
    several GPUs. TUNING lists the supported fine-tuning methods; GATED presets need a
    Hugging Face token (presetOptions.modelAccessSecret).

    With --instance-type (e.g. Standard_NC24ads_A100_v4), NODES and GPUS say how many nodes of
    that size and how many GPUs in all each preset needs, as upstream's estimator computes
    them when a model may be split across nodes; FIT says "multi-node" when the preset's
    default backend cannot split it, "no" when it cannot run there at all.
    """
    from kaito_core.errors import NotFoundError
    from kaito_core.preset_listing import summarize
    from kaito_core.sku import get_instance_type

    if output not in ("table", "json"):
        typer.echo(f"error: --output must be table or json, not {output!r}", err=True)
        raise typer.Exit(2)
    if cloud not in CLOUDS:
        typer.echo(f"error: --cloud must be one of {', '.join(CLOUDS)}, not {cloud!r}", err=True)
        raise typer.Exit(2)
    instance = None
    if instance_type:
        try:
            instance = get_instance_type(instance_type, cloud)
        except NotFoundError as exc:
            typer.echo(f"error: --instance-type: {exc}", err=True)
            raise typer.Exit(2) from None
    registry = _registry()
    installed = registry.backends()
    groups = summarize(
        registry.presets(),
        lambda name: registry.source("preset", name).distribution,
        installed.get,
        instance,
    )
    if output == "json":
        records = [
            {
                "name": s.name,
                "family": s.family,
                "backends": list(s.backends),
                "weightsGiB": s.weights_gib,
                "context": s.context,
                "minGpuGiB": s.min_gpu_gib,
                "requiresGpu": s.min_gpu_gib is not None,
                "tuning": list(s.tuning),
                "gated": s.gated,
                "distribution": s.distribution,
                "deprecated": s.deprecated,
                **({"fit": s.fit.model_dump(mode="json", by_alias=True)} if s.fit is not None else {}),
            }
            for items in groups.values()
            for s in items
        ]
        typer.echo(json.dumps(records, indent=2))
        return
    if not groups:
        typer.echo("No presets are installed. Install a preset plugin, e.g.: pip install kaito-phi3")
        return
    if instance is not None:
        typer.echo(f"On {instance.sku} ({instance.describe()}):\n")
    for family, items in groups.items():
        distributions = sorted({s.distribution for s in items})
        typer.echo(f"{family} ({', '.join(distributions)}):")
        headers = ["NAME", "BACKENDS", "WEIGHTS GiB", "CONTEXT"]
        headers += ["NODES", "GPUS", "FIT"] if instance is not None else ["MIN GPU GiB", "TUNING", "GATED"]
        rows = []
        for s in items:
            row = [s.name + (" (deprecated)" if s.deprecated else ""), ",".join(s.backends), f"{s.weights_gib:.2f}", str(s.context)]
            if s.fit is not None:
                fit = s.fit
                gpus = f"{fit.gpus} ({fit.gpus_per_node}/node)" if fit.gpus else "-"
                row += [str(fit.nodes) if fit.nodes else "-", gpus, fit.verdict + (f": {fit.note}" if fit.note and fit.verdict != "no" else "")]
            else:
                row += [
                    f"{s.min_gpu_gib:.2f}" if s.min_gpu_gib is not None else "no GPU needed",
                    ",".join(s.tuning) or "-",
                    "yes" if s.gated else "-",
                ]
            rows.append(row)
        typer.echo("\n".join("  " + line for line in _table(headers, rows).splitlines()))
        typer.echo("")


def _expand(paths: Sequence[str]) -> Iterator[Path]:
    """Files named directly, every *.yaml/*.yml under directories, and glob patterns (** included)."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
        elif path.exists():
            yield path
        else:
            matches = sorted(glob.glob(raw, recursive=True))
            if not matches:
                raise FileNotFoundError(raw)
            for match in matches:
                yield from _expand([match])


@app.command()
def validate(
    files: Annotated[list[str], typer.Argument(help="YAML files, directories or glob patterns (examples/**/*.yaml)")],
    cloud: Annotated[str, typer.Option(help=f"Instance-type catalogue to check against: {', '.join(CLOUDS)}")] = "azure",
    byo: Annotated[bool, typer.Option("--byo", help="Bring-your-own nodes: resource.instanceType must be empty")] = False,
    provisioner: Annotated[
        str | None,
        typer.Option(help="Check as the operator with this node provisioner would (e.g. byo, gpu-provisioner); must be installed here"),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only problems")] = False,
    model_dir: Annotated[
        Path | None,
        typer.Option(
            "--model-dir",
            help="For presets named by a Hugging Face id (org/model): a local copy of the model "
            "(config.json and model.safetensors.index.json suffice) to compute the preset from",
        ),
    ] = None,
    hf_cache: Annotated[
        Path | None,
        typer.Option("--hf-cache", help="For org/model presets: a Hugging Face cache directory holding the model (read offline)"),
    ] = None,
) -> None:
    """Check Workspace files offline, reporting every problem with its field path and a fix.

    Checks the schema, the upstream admission rules (exactly one of inference or tuning, preset
    installed and not deprecated, adapters, tuning input and output, dataset URLs, label
    selector, ...) and that the model fits the instance type's GPU memory. Multi-document YAML
    is supported; documents of other kinds are skipped. Exit status 1 when anything is invalid.

    A preset named by a Hugging Face model id (inference.preset.name: meta-llama/Llama-3.1-8B-Instruct)
    is computed from the model's config.json and safetensors index, as the operator does from
    the hub: give a local copy with --model-dir or a cache with --hf-cache (this command never
    reaches the network). Without either, an id that an installed family preset serves is
    checked against that preset.

    The rules that depend on what is installed are the operator's own: with --provisioner the
    bring-your-own rules follow that provisioner's capabilities, and when the chosen inference
    backend is not installed here the output says that the operator needs it and will check
    what depends on it at admission.
    """
    from kaito_core.preset_sources import ModelLocation
    from kaito_core.validation import check_workspace, installed_context, operator_requirements

    if cloud not in CLOUDS:
        typer.echo(f"error: --cloud must be one of {', '.join(CLOUDS)}, not {cloud!r}", err=True)
        raise typer.Exit(2)
    location = ModelLocation(model_dir=model_dir, cache_dir=hf_cache) if model_dir or hf_cache else None
    registry = _registry()
    try:
        ctx = installed_context(registry, cloud=cloud, provisioner=provisioner)
    except NotFoundError as exc:
        typer.echo(f"error: --provisioner: {exc}", err=True)
        raise typer.Exit(2) from None
    if byo:
        ctx = ctx.model_copy(update={"node_auto_provisioning": False})
    if location is not None:
        ctx = ctx.model_copy(update={"model_location": location})
    failed = 0
    checked = 0
    try:
        targets = list(_expand(files))
    except FileNotFoundError as exc:
        typer.echo(f"error: no such file or directory: {exc}", err=True)
        raise typer.Exit(2) from None
    for path in targets:
        try:
            documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
        except (OSError, yaml.YAMLError) as exc:
            typer.echo(f"{path}: cannot read YAML: {exc}", err=True)
            failed += 1
            continue
        for index, doc in enumerate(documents):
            where = f"{path}" if len(documents) == 1 else f"{path} (document {index + 1})"
            if isinstance(doc, dict) and doc.get("kind") not in (None, "Workspace"):
                if not quiet:
                    typer.echo(f"{where}: skipped {doc.get('kind')} (not a Workspace)")
                continue
            checked += 1
            try:
                ws = check_workspace(doc, registry, ctx=ctx)
            except ValidationError as exc:
                failed += 1
                typer.echo(f"{where}: {exc.render()}", err=True)
                continue
            needs = operator_requirements(ws, registry, ctx)
            if not quiet:
                typer.echo(f"{where}: Workspace {ws.name!r} is valid" + (" here" if needs else ""))
            for need in needs:
                typer.echo(f"{where}: note: {need}")
    if failed:
        typer.echo(f"{failed} invalid of {checked} Workspace document(s)", err=True)
        raise typer.Exit(1)
    if checked == 0:
        typer.echo("error: no Workspace documents found", err=True)
        raise typer.Exit(1)


@app.command()
def crd(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of standard output")
    ] = None,
) -> None:
    """Print the Workspace CustomResourceDefinition generated from the API models.

    The committed copy lives at charts/kaito/crds/kaito.sh_workspaces.yaml (make crd).
    """
    from kaito_core.api.crd import render_crd

    text = render_crd()
    if output is None:
        typer.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {output}", err=True)


@app.command()
def chart(
    root: Annotated[Path, typer.Option(help="Repository root the generated paths are relative to")] = Path("."),
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 listing the stale files")] = False,
) -> None:
    """Generate the Helm chart's values.yaml, values.schema.json and operator environment
    template, and docs/values-reference.md, from the operator's settings model (make chart).

    Run it after adding a field to OperatorSettings: the new value appears in all four.
    """
    from kaito_core.chart import stale_files, write_files

    if check:
        stale = stale_files(root)
        for rel in stale:
            typer.echo(f"stale: {rel} (run `kaito chart` or `make chart`)", err=True)
        if stale:
            raise typer.Exit(1)
        return
    for rel in write_files(root):
        typer.echo(f"wrote {rel}", err=True)


@app.command("install-plugins")
def install_plugins() -> None:
    """Install the plugin packages of the operator's settings (plugins.packages, KAITO_PLUGINS__*)
    into plugins.prefix: the Helm chart's init container runs this in the operator image.

    Pulls plugins.ociArtifacts (wheels pushed with oras) first and adds them as find-links, then
    runs pip install --prefix, which reuses the packages already in the image (kaito-core is never
    reinstalled). On failure the message names the packages and pip's answer; it is also the init
    container's termination message (kubectl describe pod).
    """
    from kaito_core.operator.plugin_packages import PluginInstallError, install
    from kaito_core.operator.settings import OperatorSettings

    settings = OperatorSettings.load().plugins
    try:
        installed = install(settings)
    except PluginInstallError as exc:
        message = f"kaito install-plugins: {exc}"
        typer.echo(message, err=True)
        _termination_message(message)
        raise typer.Exit(1) from None
    typer.echo(f"installed {', '.join(installed)} into {settings.prefix}" if installed else "no plugin packages to install")


def _termination_message(message: str, path: Path = Path("/dev/termination-log")) -> None:
    """Kubernetes shows this file as the container's termination message (when it exists)."""
    try:
        if path.exists():
            path.write_text(message[-4000:], encoding="utf-8")
    except OSError:
        pass


from kaito_core.operator.cli import operator as _operator  # noqa: E402  (the operator's own module)

app.command("operator")(_operator)


def main() -> None:
    """Console-script entry point (``kaito``)."""
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    app()


if __name__ == "__main__":
    main()
