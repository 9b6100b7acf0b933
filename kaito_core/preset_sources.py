"""Presets generated on demand: ``inference.preset.name: <org>/<model>`` (as upstream v0.12).

A :class:`PresetGenerator` (supplied by a plugin, e.g. kaito-huggingface) turns a model id into
a :class:`~kaito_core.presets.Preset` from the model's own files. Where those files are read is
a :class:`ModelLocation`: a local copy (``kaito validate --model-dir``), a Hugging Face cache
read offline (``--hf-cache``), or the hub itself, which only the operator reaches, at
reconcile time. :func:`resolve_preset` is the one rule for turning a Workspace's preset name
into a preset; :class:`~kaito_core.plugins.Registry` calls it.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import SecretStr

from kaito_core.errors import KaitoError, NotFoundError
from kaito_core.presets import FrozenModel, Preset


class PresetGenerationError(KaitoError):
    """A preset cannot be generated for a model id; the message says why and what to do."""

    def __init__(self, message: str, fix: str = "") -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message}. Fix: {fix}" if fix else message)


class ModelLocation(FrozenModel):
    """Where a generator may read a model's files (config.json, safetensors index, README)."""

    model_dir: Path | None = None
    """A local copy of the model repository (at least config.json and the safetensors index or files)."""
    cache_dir: Path | None = None
    """A Hugging Face hub cache (HF_HUB_CACHE layout), read without network."""
    hub: bool = False
    """Whether the hub may be reached (the operator at reconcile time; never in tests)."""
    token: SecretStr | None = None
    """The Hugging Face token from the Workspace's modelAccessSecret (never logged)."""
    endpoint: str | None = None
    """The Hugging Face endpoint (a mirror) when not huggingface.co; set by the operator's settings."""

    @property
    def has_local_files(self) -> bool:
        """True when a local copy or a cache was named."""
        return self.model_dir is not None or self.cache_dir is not None


class PresetGenerator(abc.ABC):
    """Makes presets for model ids no plugin registers by name."""

    name: str
    """Unique generator name, e.g. ``huggingface``."""
    description: str = ""
    """One line for ``kaito plugins``."""

    @abc.abstractmethod
    def handles(self, name: str) -> bool:
        """Whether ``name`` (a Workspace's preset name) is a model id this generator understands."""

    @abc.abstractmethod
    def generate(self, name: str, where: ModelLocation) -> Preset:
        """The preset for model id ``name`` computed from its files at ``where``.

        Raises:
            PresetGenerationError: the files cannot be read, the architecture is unsupported,
                or the model is gated and no token was given; the message says what to do.
        """


def catalog_match(name: str, presets: Mapping[str, Preset]) -> Preset | None:
    """An installed preset whose source repository is ``name`` (case-insensitive): upstream's
    embedded model catalog, consulted before any hub request."""
    wanted = name.strip().lower()
    return next((p for p in presets.values() if p.source_repo.lower() == wanted), None)


def resolve_preset(
    name: str,
    presets: Mapping[str, Preset],
    generators: Sequence[PresetGenerator],
    where: ModelLocation | None,
    not_installed: NotFoundError,
) -> Preset:
    """The preset a Workspace's ``preset.name`` means.

    1. a registered preset of that name (case-insensitive, as upstream);
    2. for a model id some generator handles: the model's own files when a local copy or cache
       was named (they are what the user asked to check), else an installed preset whose
       source repository is that id (the catalog), else generated from the hub when allowed;
       offline without files the generator explains how to provide them;
    3. otherwise ``not_installed`` is raised.
    """
    found = presets.get(name) or presets.get(name.strip().lower())  # upstream lower-cases preset names
    if found is not None:
        return found
    generator = next((g for g in generators if g.handles(name)), None)
    if generator is None:
        raise not_installed
    where = where or ModelLocation()
    if not where.has_local_files:
        known = catalog_match(name, presets)
        if known is not None:
            return known
    return generator.generate(name, where)
