"""The Helm chart's generated files: values.yaml, values.schema.json, the operator's environment
template and the values reference, all from one model (:mod:`kaito_core.chart.values`).

:func:`generated_files` maps each path (relative to the repository root) to its text;
``kaito chart --write`` writes them and ``kaito chart --check`` lists the stale ones.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

CHART_DIR = Path("charts/kaito")
REFERENCE = Path("docs/values-reference.md")


def generators() -> dict[Path, Callable[[], str]]:
    """Each generated file (relative to the repository root) and the function that renders it."""
    from kaito_core.chart.environment import render_settings_template
    from kaito_core.chart.reference import render_values_reference
    from kaito_core.chart.schema import render_values_schema
    from kaito_core.chart.valuesfile import render_values_yaml

    return {
        CHART_DIR / "values.yaml": render_values_yaml,
        CHART_DIR / "values.schema.json": render_values_schema,
        CHART_DIR / "templates" / "_settings.tpl": render_settings_template,
        REFERENCE: render_values_reference,
    }


def stale_files(root: Path) -> list[Path]:
    """The generated files under ``root`` that are missing or differ from what the model gives."""
    stale = []
    for rel, render in generators().items():
        path = root / rel
        if not path.exists() or path.read_text(encoding="utf-8") != render():
            stale.append(rel)
    return stale


def write_files(root: Path) -> list[Path]:
    """Write every generated file under ``root``; returns those that changed."""
    changed = []
    for rel, render in generators().items():
        path = root / rel
        text = render()
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(rel)
    return changed
