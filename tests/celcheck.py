"""Evaluate a CRD's x-kubernetes-validations rules offline with cel-python (celpy).

A small stand-in for the API server's CEL admission: defaults from the schema are applied
first, then every rule is evaluated where its value is present, transition rules (those that
mention ``oldSelf``) only when an old value exists. It checks our rules' syntax and meaning on
sample objects; the real API server additionally enforces its cost limits.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import celpy

_MISSING = object()


@cache
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def compile_rule(rule: str) -> None:
    """Raise if ``rule`` is not valid CEL."""
    _program(rule)


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill in schema defaults, as the API server does before validation."""
    value = copy.deepcopy(value)
    if isinstance(value, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(sub, value[name])
    elif isinstance(value, list) and "items" in schema:
        value = [apply_defaults(schema["items"], v) for v in value]
    return value


def violations(schema: dict[str, Any], obj: Any, old: Any = _MISSING) -> list[str]:
    """Messages of every rule ``obj`` violates (with ``old`` for an update)."""
    new = apply_defaults(schema, obj)
    previous = apply_defaults(schema, old) if old is not _MISSING else _MISSING
    found: list[str] = []
    _walk(schema, new, previous, found)
    return found


def _walk(schema: dict[str, Any], value: Any, old: Any, found: list[str]) -> None:
    for rule in schema.get("x-kubernetes-validations", []):
        transition = "oldSelf" in rule["rule"]
        if transition and old is _MISSING:
            continue
        activation = {"self": celpy.json_to_cel(value)}
        if transition:
            activation["oldSelf"] = celpy.json_to_cel(old)
        try:
            result = _program(rule["rule"]).evaluate(activation)
        except celpy.CELEvalError as exc:  # pragma: no cover - a broken rule
            found.append(f"error evaluating {rule['rule']!r}: {exc}")
            continue
        if isinstance(result, celpy.CELEvalError):
            found.append(f"error evaluating {rule['rule']!r}: {result}")
        elif not bool(result):
            found.append(rule["message"])
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                previous = old.get(name, _MISSING) if isinstance(old, dict) else _MISSING
                _walk(sub, value[name], previous, found)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                _walk(extra, item, _MISSING, found)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            _walk(schema["items"], item, _MISSING, found)
