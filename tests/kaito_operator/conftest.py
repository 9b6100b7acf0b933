"""Fixtures of the operator's pure tests: a registry of the real phi3 presets, kaito-servers
backends and provisioners (built from the modules, not from whatever else is installed)."""

from __future__ import annotations

import pytest

import kaito_phi3
import kaito_servers.plugin
import kaito_provisioners.plugin
from kaito_core.plugins import Registry


@pytest.fixture(scope="session")
def registry() -> Registry:
    """phi3 presets, transformers/llamacpp backends, gpu-provisioner and byo."""
    return Registry.from_plugins(kaito_phi3, kaito_servers.plugin, kaito_provisioners.plugin)
