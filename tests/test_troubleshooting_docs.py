"""docs/troubleshooting.md covers every reason the operator can write, and nothing else.

The reasons come from the code itself: :class:`kaito_core.api.reasons.Reason` is their one
home, every member is written somewhere under ``kaito_core`` or ``plugins/``, and no code there
passes a reason as a string literal (so a new reason cannot bypass the enum and the table).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import kaito_core
from kaito_core.api.reasons import Reason, WaitReason

ROOT = Path(kaito_core.__file__).parent.parent
DOC = ROOT / "docs" / "troubleshooting.md"
REASONS_MODULE = Path(kaito_core.__file__).parent / "api" / "reasons.py"

ROW = re.compile(r"^\|\s*`(?P<reason>[A-Za-z]+)`\s*\|(?P<rest>.*)\|\s*$")
REASON_KEYWORDS = frozenset({"reason", "event_reason", "blocked_reason", "problem_reason"})
"""Keyword arguments and variables that carry a reason."""
POSITIONAL_REASON: dict[str, int] = {"_cond": 2, "_overall": 1, "Wait": 0, "CloudProblem": 0, "Rule": 4}
"""Callables that take a reason positionally: name -> index of the reason argument."""


def _doc_rows() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            assert match["reason"] not in rows, f"docs/troubleshooting.md lists {match['reason']} twice"
            rows[match["reason"]] = [cell.strip() for cell in match["rest"].split("|")]
    return rows


def _sources() -> Iterator[Path]:
    """The non-test Python files of kaito_core and of every first-party plugin package."""
    tops = [ROOT / "kaito_core", *sorted(p for p in ROOT.glob("plugins/*/kaito_*") if p.is_dir())]
    for top in tops:
        for path in sorted(top.rglob("*.py")):
            if "tests" not in path.relative_to(top).parts and path != REASONS_MODULE:
                yield path


def _literals(node: ast.AST) -> list[str]:
    """Non-empty string constants a reason expression can evaluate to (``a if c else "B"`` too)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value:
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _literals(node.body) + _literals(node.orelse)
    if isinstance(node, ast.BoolOp):
        return [s for v in node.values for s in _literals(v)]
    return []


def _called(node: ast.Call) -> str:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _literal_reasons(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, literal) of every reason given as a string literal."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg in REASON_KEYWORDS:
                    yield from ((node.lineno, s) for s in _literals(kw.value))
            index = POSITIONAL_REASON.get(_called(node))
            if index is not None and len(node.args) > index:
                yield from ((node.lineno, s) for s in _literals(node.args[index]))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id in REASON_KEYWORDS for t in targets) and node.value is not None:
                yield from ((node.lineno, s) for s in _literals(node.value))
        elif isinstance(node, ast.FunctionDef) and node.name.startswith("classify_pod"):
            for ret in ast.walk(node):
                if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Tuple) and ret.value.elts:
                    yield from ((ret.lineno, s) for s in _literals(ret.value.elts[0]))


def _members_used() -> set[str]:
    used: set[str] = set()
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Reason":
                used.add(node.attr)
    return used


def test_every_reason_the_operator_can_write_has_a_row() -> None:
    rows = _doc_rows()
    missing = sorted(r.value for r in Reason if r.value not in rows)
    assert missing == [], f"add a row to docs/troubleshooting.md for: {missing}"


def test_every_row_names_a_reason_the_operator_can_write() -> None:
    known = {r.value for r in Reason}
    unknown = sorted(set(_doc_rows()) - known)
    assert unknown == [], f"docs/troubleshooting.md lists reasons no code writes (remove them or add them to Reason): {unknown}"


def test_every_row_says_what_to_do() -> None:
    for reason, cells in _doc_rows().items():
        assert len(cells) == 3 and all(cells), f"{reason}: a row is | `Reason` | where | what it means | what to do |"


def test_every_reason_member_is_written_somewhere() -> None:
    unused = sorted(m.name for m in Reason if m.name not in _members_used())
    assert unused == [], f"Reason members no code writes (remove them and their rows): {unused}"


def test_no_code_writes_a_reason_as_a_string_literal() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line} {literal!r}"
        for path in _sources()
        for line, literal in _literal_reasons(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert offenders == [], f"use a member of kaito_core.api.reasons.Reason (or WaitReason) instead: {offenders}"


def test_wait_reasons_are_not_status_reasons() -> None:
    assert not {w.value for w in WaitReason} & {r.value for r in Reason}
    assert not set(_doc_rows()) & {w.value for w in WaitReason}


@pytest.mark.parametrize(
    "source",
    [
        'raise ProvisioningError("m", reason="QuotaHit")',
        'ProvisionResult(reason="" if ok else "Waiting")',
        '_cond(CT.RESOURCE_READY, False, "Blocked", "m", gen)',
        'reason = "Stuck"',
        'def classify_pod(pod):\n    return "Gone", "pod gone"',
    ],
)
def test_the_literal_guard_catches_each_way_of_writing_a_reason(source: str) -> None:
    assert list(_literal_reasons(ast.parse(source)))


def test_the_literal_guard_allows_members_and_no_reason() -> None:
    source = 'ProvisionResult(reason="" if ok else Reason.NODE_NOT_READY)\nreason = Reason.WORKSPACE_PENDING'
    assert list(_literal_reasons(ast.parse(source))) == []
