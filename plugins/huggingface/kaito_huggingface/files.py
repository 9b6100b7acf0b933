"""Reading a model's files: a local copy, a Hugging Face cache (offline), or the hub.

Each reader returns :class:`ModelFiles`: config.json, the bytes of the weights the server
loads, whether the checkpoint is in Mistral's ``consolidated`` format, and whether the
repository is gated. Weight bytes follow upstream's selection: ``consolidated*.safetensors``
when present (Mistral format), else ``*.safetensors``, else ``*.bin``; a local copy may hold
just the safetensors index instead of the weights (its ``metadata.total_size``).

The hub is reached only through huggingface_hub (``model_info`` for sizes and gating,
``hf_hub_download`` for config.json, which also fills the local cache), and only when the
caller allows it (the operator at reconcile time).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kaito_core.preset_sources import PresetGenerationError

CONSOLIDATED = re.compile(r"(^|/)consolidated[^/]*\.safetensors$")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKEN_FIX = (
    "create a Secret with your Hugging Face token under the key HF_TOKEN "
    "(kubectl create secret generic hf-token --from-literal=HF_TOKEN=<token>) and name it in "
    "inference.preset.presetOptions.modelAccessSecret; accept the model's licence on huggingface.co first"
)


@dataclass(frozen=True)
class ModelFiles:
    """What a preset is computed from."""

    config: Mapping[str, Any]
    weight_bytes: int
    mistral_format: bool = False
    gated: bool = False
    revision: str = "main"
    license_name: str = ""


def select_weight_bytes(files: Iterable[tuple[str, int]]) -> tuple[int, bool]:
    """(bytes, mistral_format) from (path, size) pairs, by upstream's weight-file selection."""
    listed = list(files)
    consolidated = [size for path, size in listed if CONSOLIDATED.search(path)]
    if consolidated:
        return sum(consolidated), True
    safetensors = [size for path, size in listed if path.endswith(".safetensors")]
    if safetensors:
        return sum(safetensors), False
    return sum(size for path, size in listed if path.endswith(".bin")), False


def _card_metadata(readme: Path) -> dict[str, Any]:
    """The YAML front matter of a model card (README.md), {} when there is none."""
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError:
        return {}
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    try:
        data = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def read_local(repo_id: str, model_dir: Path) -> ModelFiles:
    """A local copy of the repository (or a cache snapshot directory).

    Gating is read from the model card: gated repositories carry ``extra_gated_*`` fields in
    README.md's metadata (as meta-llama and google do).
    """
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise PresetGenerationError(
            f"{model_dir} has no config.json for {repo_id}",
            "point --model-dir at a directory holding the model's config.json and model.safetensors.index.json",
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PresetGenerationError(f"cannot read {config_path}: {exc}", "check that it is the model's JSON config") from None
    if not isinstance(config, dict):
        raise PresetGenerationError(f"{config_path} is not a JSON object", "check that it is the model's config.json")
    files = [(str(p.relative_to(model_dir)), p.stat().st_size) for p in model_dir.rglob("*") if p.is_file()]
    weight_bytes, mistral = select_weight_bytes(files)
    has_weights = any(p.endswith((".safetensors", ".bin")) for p, _ in files)
    if not has_weights:  # a copy of the metadata only: the index records the weights' size
        index = next((model_dir / n for n in INDEX_FILES if (model_dir / n).is_file()), None)
        if index is not None:
            weight_bytes = _index_total_size(index)
    card = _card_metadata(model_dir / "README.md")
    gated = bool(card.get("gated")) or any(str(k).startswith("extra_gated") for k in card)
    license_name = str(card.get("license_name") or card.get("license") or "")
    return ModelFiles(config=config, weight_bytes=weight_bytes, mistral_format=mistral, gated=gated, license_name=license_name)


def _index_total_size(index: Path) -> int:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        return int(data["metadata"]["total_size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PresetGenerationError(
            f"cannot read metadata.total_size from {index}: {exc}", "use the model's own safetensors index file"
        ) from None


def read_cache(repo_id: str, cache_dir: Path, revision: str = "main") -> ModelFiles:
    """The repository's snapshot in a Hugging Face cache, located by huggingface_hub, no network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=str(cache_dir), revision=revision)
    if not isinstance(found, str):
        raise PresetGenerationError(
            f"{repo_id} (revision {revision}) is not in the Hugging Face cache {cache_dir}",
            f"download it first (huggingface-cli download {repo_id} config.json model.safetensors.index.json "
            f"--cache-dir {cache_dir}) or use --model-dir",
        )
    return read_local(repo_id, Path(found).parent)


def read_hub(repo_id: str, token: str | None, revision: str = "main", endpoint: str | None = None) -> ModelFiles:  # pragma: no cover - needs the hub
    """The repository on the hub: file sizes and gating from ``model_info``, config.json by download.

    Not exercised by the tests (no network there); the pure parts it feeds are.
    """
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    api = HfApi(endpoint=endpoint, token=token or False)
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
        if info.gated and not token:
            raise PresetGenerationError(f"model {repo_id} is gated on Hugging Face and no token was given", TOKEN_FIX)
        path = hf_hub_download(repo_id, "config.json", revision=revision, token=token or False, endpoint=endpoint)
    except GatedRepoError:
        raise PresetGenerationError(f"model {repo_id} is gated on Hugging Face and the token was refused", TOKEN_FIX) from None
    except RepositoryNotFoundError:
        raise PresetGenerationError(
            f"model {repo_id} does not exist on Hugging Face (or is private)", f"check the id, or provide a token: {TOKEN_FIX}"
        ) from None
    except HfHubHTTPError as exc:
        raise PresetGenerationError(f"cannot reach Hugging Face for {repo_id}: {exc}", "retry later") from None
    files = [(s.rfilename, s.size or 0) for s in info.siblings or []]
    weight_bytes, mistral = select_weight_bytes(files)
    config = json.loads(Path(path).read_text(encoding="utf-8"))
    card: dict[str, Any] = {}
    if info.card_data is not None:
        card = {key: info.card_data.get(key) for key in ("license_name", "license")}
    return ModelFiles(
        config=config,
        weight_bytes=weight_bytes,
        mistral_format=mistral,
        gated=bool(info.gated),
        revision=info.sha or revision,
        license_name=str(card.get("license_name") or card.get("license") or ""),
    )
