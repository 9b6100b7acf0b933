"""Import rules: nothing under kaito_core imports torch, transformers or llama_cpp (the operator
image has none); kaito_core's layers import only downwards; plugins stay at the plugin layer and
the servers never import the operator; every such package is type-checked."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import kaito_core

FORBIDDEN = ("torch", "transformers", "llama_cpp")
PACKAGE = Path(kaito_core.__file__).parent


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def test_importing_every_module_loads_no_ml_library() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_no_module_mentions_an_ml_library_in_an_import_statement() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__"):
                names = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            offenders += [f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


# -- layering ---------------------------------------------------------------------------------------

ROOT = PACKAGE.parent
LAYERS: tuple[tuple[str, ...], ...] = (
    ("kaito_core", "kaito_core.errors", "kaito_core.netcheck", "kaito_core.api"),
    (
        "kaito_core.presets",
        "kaito_core.preset_sources",
        "kaito_core.preset_providers",
        "kaito_core.backends",
        "kaito_core.provisioners",
        "kaito_core.serving",
        "kaito_core.sku",
    ),
    ("kaito_core.plugins",),
    ("kaito_core.validation", "kaito_core.fit", "kaito_core.preset_listing"),
    ("kaito_core.operator",),
    ("kaito_core.cli", "kaito_core.chart"),
)
"""kaito_core's layers, lowest first: a module may import its own layer and the ones below
(api <- presets/backends/provisioners <- plugins <- validation/fit <- operator <- cli/chart;
the chart's generated values mirror the operator's settings)."""
PLUGIN_LAYER = 2
"""Plugin packages (plugins/*) sit with the registry: they may not import validation, fit or the operator."""


def _layer(module: str) -> int | None:
    """The layer of a kaito_core module (the longest matching prefix), None outside kaito_core."""
    best: tuple[int, int] | None = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    return best[0] if best else None


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path`` (function-level and TYPE_CHECKING ones included)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.append((node.lineno, f"{base}.{node.module}" if node.module else base))
            elif node.module:
                found.append((node.lineno, node.module))
                found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names if node.module in ("kaito_core", "kaito_core.operator")]
    return found


def _module_name(path: Path, top: Path) -> tuple[str, str]:
    parts = list(path.relative_to(top).with_suffix("").parts)
    package = ".".join(parts[:-1])
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts), package


def test_kaito_core_imports_only_its_own_layer_and_below() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module, package = _module_name(path, ROOT)
        mine = _layer(module)
        assert mine is not None, f"{module} is in no layer; add it to LAYERS"
        for line, imported in _imports(path, package):
            theirs = _layer(imported)
            if theirs is not None and theirs > mine:
                offenders.append(f"{module}:{line} imports {imported} (layer {LAYERS[theirs][0]} above {LAYERS[mine][0]})")
    assert offenders == []


def _outside_packages() -> list[Path]:
    own = (*ROOT.glob("plugins/*/kaito_*"), *ROOT.glob("examples/*/kaito_*"), ROOT / "servers" / "kaito_servers")
    return sorted(p for p in own if p.is_dir() and "." not in p.name)


def test_plugins_stay_at_the_plugin_layer_and_servers_never_import_the_operator() -> None:
    offenders = []
    for top in _outside_packages():
        ceiling = PLUGIN_LAYER if top.parent.parent.name in ("plugins", "examples") else _layer("kaito_core.fit")
        for path in sorted(top.rglob("*.py")):
            module, package = _module_name(path, top.parent)
            for line, imported in _imports(path, package):
                theirs = _layer(imported)
                if theirs is not None and ceiling is not None and theirs > ceiling:
                    offenders.append(f"{module}:{line} imports {imported}")
    assert offenders == []


def test_every_plugin_package_and_the_servers_are_type_checked() -> None:
    import tomllib

    files = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]["files"])
    wanted = {str(p.relative_to(ROOT)) for p in _outside_packages()} | {"kaito_core"}
    assert wanted <= files, f"add to [tool.mypy] files: {sorted(wanted - files)}"
