"""docs/rbac.md lists every verb the chart grants the operator, each with a code path that exists
(the in-cluster test checks the other half: each was used, or the row says why not)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chartkit import CASES, ROOT
from rbacreview import ReviewRow, chart_rules, review_rows, unjustified_unused_rules

#: Value combinations beyond the golden cases that change the RBAC.
EXTRA = [{"leaderElection": {"enabled": False}}, {"operator": {"replicas": 2}}, {"scope": {"namespaces": ["team-*"]}}]


def test_the_review_list_names_exactly_the_granted_verbs(helm: Path, tmp_path: Path) -> None:
    granted = chart_rules(helm, tmp_path, [*CASES.values(), *EXTRA])
    listed = [row.permission for row in review_rows()]
    assert len(listed) == len(set(listed)), "a verb is listed twice in docs/rbac.md"
    assert sorted(granted - set(listed)) == [], "granted by the chart but missing from docs/rbac.md"
    assert sorted(set(listed) - granted) == [], "listed in docs/rbac.md but granted by no render"


@pytest.mark.parametrize("row", review_rows(), ids=lambda r: "/".join(r.permission))
def test_each_row_names_code_that_exists_and_says_whether_the_flow_uses_it(row: ReviewRow) -> None:
    path, _, symbol = row.code_path.partition("::")
    assert (ROOT / path).is_file(), f"{row.permission}: {path} does not exist"
    assert symbol and symbol in (ROOT / path).read_text(), f"{row.permission}: {symbol!r} is not in {path}"
    assert row.why and row.granted_when
    assert row.flow == "used" or row.flow.startswith("not used: "), row.flow


def test_an_unused_verb_must_be_explained() -> None:
    rows = [ReviewRow(("", "pods", "list"), "always", "cache", "x", "used"),
            ReviewRow(("", "secrets", "get"), "opt-in", "token", "x", "not used: off")]
    granted = {("", "pods", "list"), ("", "secrets", "get"), ("", "nodes", "list")}
    assert unjustified_unused_rules(granted, set(), rows) == [
        "('', 'nodes', 'list'): granted, unused and not in docs/rbac.md",
        "('', 'pods', 'list'): docs/rbac.md says 'used', but the in-cluster flow did not use it",
    ]
    assert unjustified_unused_rules(granted, {("", "pods", "list"), ("", "nodes", "list")}, rows) == []
