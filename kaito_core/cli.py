"""The ``kaito`` command line.

Commands (each with ``--help``):

* ``kaito plugins``   what the installed plugins provide, and which distribution supplies it;
* ``kaito presets``   the installed model presets and what they need;
* ``kaito validate``  check Workspace YAML files offline, every problem at once;
* ``kaito crd``       print (or write) the Workspace CRD generated from the API models.

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


@app.command()
def plugins() -> None:
    """List the presets, inference backends and node provisioners the installed plugins provide.

    Each item names the Python distribution that supplies it (e.g. kaito-phi3). Installing a
    plugin package (pip install kaito-phi3) is the only step needed to add its items. Node
    provisioners also list what they need in the cluster (CRDs, credentials); the operator
    refuses to start when the chosen one's needs are missing.
    """
    registry = _registry()
    sections = (
        ("Presets", "preset", registry.presets()),
        ("Inference backends", "backend", registry.backends()),
        ("Node provisioners", "provisioner", registry.provisioners()),
    )
    for title, kind, items in sections:
        typer.echo(f"{title}:")
        if not items:
            typer.echo("  (none installed)")
        rows = []
        for name, item in items.items():
            source = registry.source(kind, name)
            row = [name, source.distribution, getattr(item, "description", "")]
            if kind == "provisioner":
                row.insert(2, ", ".join(item.needs()) or "-")
            rows.append(row)
        if rows:
            headers = ["NAME", "DISTRIBUTION", "NEEDS", "DESCRIPTION"] if kind == "provisioner" else ["NAME", "DISTRIBUTION", "DESCRIPTION"]
            typer.echo("\n".join("  " + line for line in _table(headers, rows).splitlines()))
        typer.echo("")


@app.command()
def presets(
    output: Annotated[str, typer.Option("--output", "-o", help="table or json")] = "table",
) -> None:
    """List the installed model presets and what they need.

    MIN GPU GiB is the memory one GPU must have to serve the preset alone (weights ×1.02 +
    2.3 GiB runtime + KV cache for 2048 tokens, at 84% usable); models larger than that need
    several GPUs. TUNING lists the supported fine-tuning methods.
    """
    from kaito_core.fit import DEFAULT_CONTEXT_TOKENS, GPU_MEMORY_UTILIZATION, RUNTIME_GIB_PER_GPU, WEIGHT_OVERHEAD

    registry = _registry()
    records = []
    for name, preset in registry.presets().items():
        need = preset.weights_gib * WEIGHT_OVERHEAD + RUNTIME_GIB_PER_GPU + preset.kv_cache_gib(min(DEFAULT_CONTEXT_TOKENS, preset.context_length))
        records.append(
            {
                "name": name,
                "backends": list(preset.backends),
                "weightsGiB": preset.weights_gib,
                "context": preset.context_length,
                "minGpuGiB": round(need / GPU_MEMORY_UTILIZATION, 2) if preset.requires_gpu else None,
                "requiresGpu": preset.requires_gpu,
                "tuning": list(preset.tuning.methods) if preset.tuning else [],
                "distribution": registry.source("preset", name).distribution,
                "deprecated": preset.deprecated,
            }
        )
    if output == "json":
        typer.echo(json.dumps(records, indent=2))
        return
    if output != "table":
        typer.echo(f"error: --output must be table or json, not {output!r}", err=True)
        raise typer.Exit(2)
    if not records:
        typer.echo("No presets are installed. Install a preset plugin, e.g.: pip install kaito-phi3")
        return
    rows = [
        [
            r["name"],
            ",".join(r["backends"]),
            f"{r['weightsGiB']:.2f}",
            str(r["context"]),
            f"{r['minGpuGiB']:.2f}" if r["minGpuGiB"] is not None else "no GPU needed",
            ",".join(r["tuning"]) or "-",
            r["distribution"],
        ]
        for r in records
    ]
    typer.echo(_table(["NAME", "BACKENDS", "WEIGHTS GiB", "CONTEXT", "MIN GPU GiB", "TUNING", "DISTRIBUTION"], rows))


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
) -> None:
    """Check Workspace files offline, reporting every problem with its field path and a fix.

    Checks the schema, the upstream admission rules (exactly one of inference or tuning, preset
    installed and not deprecated, adapters, tuning input and output, dataset URLs, label
    selector, ...) and that the model fits the instance type's GPU memory. Multi-document YAML
    is supported; documents of other kinds are skipped. Exit status 1 when anything is invalid.

    The rules that depend on what is installed are the operator's own: with --provisioner the
    bring-your-own rules follow that provisioner's capabilities, and when the chosen inference
    backend is not installed here the output says that the operator needs it and will check
    what depends on it at admission.
    """
    from kaito_core.validation import check_workspace, installed_context, operator_requirements

    if cloud not in CLOUDS:
        typer.echo(f"error: --cloud must be one of {', '.join(CLOUDS)}, not {cloud!r}", err=True)
        raise typer.Exit(2)
    registry = _registry()
    try:
        ctx = installed_context(registry, cloud=cloud, provisioner=provisioner)
    except NotFoundError as exc:
        typer.echo(f"error: --provisioner: {exc}", err=True)
        raise typer.Exit(2) from None
    if byo:
        ctx = ctx.model_copy(update={"node_auto_provisioning": False})
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


from kaito_core.operator.cli import operator as _operator  # noqa: E402  (the operator's own module)

app.command("operator")(_operator)


def main() -> None:
    """Console-script entry point (``kaito``)."""
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    app()


if __name__ == "__main__":
    main()
