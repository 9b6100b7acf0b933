"""Fixtures of the operator's pure tests: a registry with real presets and provisioners."""

from __future__ import annotations

import pytest

import golden_backend
import kaito_phi3
import kaito_provisioners.plugin
from kaito_core.plugins import Registry


@pytest.fixture(scope="session")
def registry() -> Registry:
    """phi3 presets, the test transformers double, gpu-provisioner and byo."""
    return Registry.from_plugins(kaito_phi3, golden_backend, kaito_provisioners.plugin)
