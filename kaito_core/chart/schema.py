"""``values.schema.json``: the JSON Schema Helm checks values against on install, upgrade,
template and lint, generated from :func:`kaito_core.chart.values.values_model`.

Unknown keys are refused at every level (``additionalProperties: false``), so a misspelt
value fails the install naming the key instead of being silently ignored."""

from __future__ import annotations

import json
from typing import Any

from kaito_core.chart.values import values_model

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def _tidy(node: Any, *, in_properties: bool = False) -> Any:
    """Remove pydantic's generated ``title`` keywords (they repeat the key), keeping property
    names, and put each description on one line."""
    if isinstance(node, dict):
        return {
            key: (" ".join(value.split()) if key == "description" and not in_properties and isinstance(value, str)
                  else _tidy(value, in_properties=key in ("properties", "$defs") and not in_properties))
            for key, value in node.items()
            if in_properties or key != "title"
        }
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    return node


def values_schema() -> dict[str, Any]:
    """The schema as a JSON-ready dict."""
    schema = values_model().model_json_schema(by_alias=True, mode="validation")
    body = _tidy(schema)
    return {"$schema": DRAFT, "title": "Values of the kaito Helm chart", **{k: v for k, v in body.items() if k != "description"}}


def render_values_schema() -> str:
    """The text of ``values.schema.json``."""
    return json.dumps(values_schema(), indent=2) + "\n"
