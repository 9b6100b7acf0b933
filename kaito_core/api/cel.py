"""CEL validation rules (``x-kubernetes-validations``) attached to the API models.

A rule is a Common Expression Language expression the Kubernetes API server evaluates on
every create and update; ``self`` is the value of the field (or object) it is attached to and,
in transition rules, ``oldSelf`` the stored value (such rules only run on update). Rules are
attached with ``Field(json_schema_extra=validations(rule(...)))`` on a field, or
``ConfigDict(json_schema_extra=...)`` on a model, and end up in the generated CRD
(:mod:`kaito_core.api.crd`).

Keep rules simple and cheap: the API server rejects a CRD whose rules' *estimated* cost is too
high, and the estimate assumes the largest value the schema allows, so every list a rule
iterates has ``maxItems`` and every string it scans a ``maxLength``. Regular expressions use
``[.]`` rather than ``\\.`` so they need no escaping inside CEL string literals.
"""

from __future__ import annotations

from typing import Any

DNS1123_LABEL_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""A lowercase RFC 1123 label (Kubernetes object names such as a Workspace's)."""
STRENGTH_PATTERN = "^[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)$"
"""A plain decimal number, as adapter strengths are written ("0.5", "1", ".25")."""

KEY = "x-kubernetes-validations"


def rule(expression: str, message: str) -> dict[str, str]:
    """One validation rule: the CEL expression that must be true, and the message when it is not."""
    return {"rule": expression, "message": message}


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    """The ``json_schema_extra`` that attaches ``rules`` to a field or model."""
    return {KEY: list(rules)}
