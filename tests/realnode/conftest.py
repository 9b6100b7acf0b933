"""The real-node end-to-end tests reuse the e2e suite's process harness (tests/e2e/harness.py) and
the real-node helpers of the localcluster tests (localcluster/tests/realnode_support.py)."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
for _path in (_ROOT / "tests" / "e2e", _ROOT / "localcluster" / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
