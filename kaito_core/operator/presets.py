"""How the operator turns a Workspace's preset name into a preset, model ids included.

``inference.preset.name: meta-llama/Llama-3.1-8B-Instruct`` (as upstream v0.12) resolves in
this order: an installed preset of that name; an installed preset whose source repository is
that id (the catalog: no hub traffic); a preset generated from the model's files, read from
the operator's Hugging Face cache (``presets.hfCacheDir``) or, when ``presets.hub`` is on, from
the hub, with the token in the Workspace's modelAccessSecret when
``presets.readModelAccessSecrets`` allows reading it (off by default: least privilege). :class:`PresetSource` is the one
place that builds that :class:`~kaito_core.preset_sources.ModelLocation`; the reconciler and
the admission webhook both use it (through :func:`kaito_core.operator.checks.check`), so they
cannot disagree.

Generated presets are kept in memory per (model id, requested revision): a resync or a second
Workspace naming the same model makes no hub request. Errors are not kept, so a fixed secret
or an accepted licence takes effect on the next round. The token is read only when a preset
must be generated from the hub and reading is allowed, and is never logged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import SecretStr

from kaito_core.operator.kube import Kube
from kaito_core.operator.settings import PresetSourceSettings
from kaito_core.plugins import Registry
from kaito_core.preset_sources import ModelLocation, PresetGenerationError, catalog_match
from kaito_core.presets import Preset
from kaito_core.serving import HF_TOKEN_KEY

log = logging.getLogger(__name__)

REQUESTED_REVISION = "main"
"""The revision generated presets are read at: a Workspace cannot name one (as upstream)."""

Resolve = Callable[[str], Preset]
"""A preset name -> the preset (raises NotFoundError or PresetGenerationError)."""


def model_access_secret(obj: Mapping[str, Any]) -> str | None:
    """The Secret named in ``inference|tuning.preset.presetOptions.modelAccessSecret`` of a wire dict."""
    for section in ("inference", "tuning"):
        part = obj.get(section)
        preset = part.get("preset") if isinstance(part, Mapping) else None
        options = preset.get("presetOptions") if isinstance(preset, Mapping) else None
        secret = options.get("modelAccessSecret") if isinstance(options, Mapping) else None
        if isinstance(secret, str) and secret:
            return secret
    return None


class PresetSource:
    """Resolves preset names for the operator: installed presets, the catalog, generated ones (cached)."""

    def __init__(self, registry: Registry, settings: PresetSourceSettings, kube: Kube | None = None) -> None:
        self.registry = registry
        self.settings = settings
        self.kube = kube
        """Reads the modelAccessSecret for the hub (None: no token is ever read)."""
        self._generated: dict[tuple[str, str], Preset] = {}
        self._lock = threading.Lock()

    def location(self, namespace: str, secret: str | None) -> ModelLocation:
        """Where generated presets read the model's files for a workspace in ``namespace``.

        Raises:
            kubernetes ApiException: the Secret could not be read (other than not found).
        """
        reads = self.settings.hub and self.settings.read_model_access_secrets
        token = self._token(namespace, secret) if reads else None
        return ModelLocation(
            cache_dir=self.settings.hf_cache_dir,
            hub=self.settings.hub,
            token=SecretStr(token) if token else None,
            endpoint=self.settings.hf_endpoint,
        )

    def _token(self, namespace: str, secret: str | None) -> str | None:
        if not secret or self.kube is None:
            return None
        return self.kube.secret_value(namespace, secret, HF_TOKEN_KEY)

    def resolver(self, obj: Mapping[str, Any]) -> Resolve:
        """The resolver for the Workspace ``obj`` (a wire dict): its namespace and secret."""
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        secret = model_access_secret(obj)
        return lambda name: self.resolve(name, namespace, secret)

    def resolve(self, name: str, namespace: str, secret: str | None) -> Preset:
        """The preset ``name`` means for a workspace in ``namespace`` naming ``secret``.

        Raises:
            NotFoundError: not installed and no generator handles the name.
            PresetGenerationError: the model's files cannot be read, its architecture is
                unsupported, or it is gated and no token was given (the message says how).
        """
        presets = self.registry.presets()
        found = presets.get(name) or presets.get(name.strip().lower()) or catalog_match(name, presets)
        if found is not None:
            return found
        key = (name.strip().lower(), REQUESTED_REVISION)
        with self._lock:
            cached = self._generated.get(key)
        if cached is not None:
            return cached
        try:
            preset = self.registry.resolve_preset(name, self.location(namespace, secret))
        except PresetGenerationError as exc:
            if secret and self.settings.hub and not self.settings.read_model_access_secrets:
                raise PresetGenerationError(
                    exc.message,
                    "this operator does not read modelAccessSecrets (presets.readModelAccessSecrets is false): "
                    "ask the cluster admin to enable it, or put the model in the operator's presets.hfCacheDir, "
                    "or use an installed family preset (`kaito presets`)",
                ) from None
            raise
        with self._lock:
            self._generated[key] = preset
        log.info("preset generated for %s (revision %s)", name, preset.revision, extra={"preset": preset.name})
        return preset
