"""The real helm CLI, built from Go modules once and cached (make helm)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaito_localcluster.helm import ensure_helm


@pytest.fixture(scope="session")
def helm() -> Path:
    """Path of the cached helm v4 binary (built on first use when Go is available)."""
    return ensure_helm()
