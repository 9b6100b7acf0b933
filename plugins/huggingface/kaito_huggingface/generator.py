"""The ``huggingface`` preset generator: ``org/model`` -> a preset from the model's own files."""

from __future__ import annotations

import re

from kaito_core.preset_sources import ModelLocation, PresetGenerationError, PresetGenerator
from kaito_core.presets import Preset
from kaito_huggingface.config import preset_from_files
from kaito_huggingface.files import TOKEN_FIX, ModelFiles, read_cache, read_hub, read_local

MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
"""A Hugging Face model id: ``<org or user>/<name>``."""


class HuggingFaceGenerator(PresetGenerator):
    """Any Hugging Face model of a supported architecture, sized from config.json and its weights."""

    name = "huggingface"
    description = "org/model ids: preset computed from the model's config.json and safetensors (as upstream's generator)"

    def handles(self, name: str) -> bool:
        """True for ``org/model`` ids."""
        return bool(MODEL_ID.match(name))

    def generate(self, name: str, where: ModelLocation) -> Preset:
        """Read the files from the local copy, the cache or the hub (in that order; the hub also when
        the cache lacks the model and the hub is allowed) and compute the preset."""
        files = self._read(name, where)
        if files.gated and where.hub and where.token is None:
            raise PresetGenerationError(f"model {name} is gated on Hugging Face and no token was given", TOKEN_FIX)
        return preset_from_files(
            name,
            files.config,
            files.weight_bytes,
            gated=files.gated,
            mistral_format=files.mistral_format,
            revision=files.revision,
            license_name=files.license_name,
        )

    @staticmethod
    def _read(name: str, where: ModelLocation) -> ModelFiles:
        if where.model_dir is not None:
            return read_local(name, where.model_dir)
        if where.cache_dir is not None:
            try:
                return read_cache(name, where.cache_dir)
            except PresetGenerationError:
                if not where.hub:
                    raise
                # not usable from the cache: the hub is allowed (the operator), read it there
        if where.hub:
            token = where.token.get_secret_value() if where.token is not None else None
            return read_hub(name, token, endpoint=where.endpoint)
        raise PresetGenerationError(
            f"the preset for {name} is computed from the model's config.json, and no copy of it was given "
            "(kaito validate does not reach the Hugging Face hub; the operator does)",
            "pass --model-dir DIR (a directory with the model's config.json and model.safetensors.index.json) "
            "or --hf-cache DIR (a Hugging Face cache holding the model)",
        )
