"""The chart's RBAC against what the operator really asks for, and against docs/rbac.md.

* :func:`chart_rules`: every (apiGroup, resource, verb) the chart grants the operator (ClusterRole
  and Role) for some values;
* :func:`audited_permissions` / :func:`forbidden_requests`: what the operator's ServiceAccount
  asked the API server for, from the audit log (objectRef + verb), and which requests it was
  refused;
* :func:`review_rows`: the review list of docs/rbac.md, one row per granted verb, each saying why,
  the code path that needs it, and whether the in-cluster flow uses it (``used``) or why not
  (``not used: ...``);
* :func:`unjustified_unused_rules`: granted, not used by the flow, and not explained as such.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chartkit import ROOT, documents, template

RBAC_DOC = ROOT / "docs" / "rbac.md"
Permission = tuple[str, str, str]
"""(apiGroup, resource[/subresource], verb); the core group is ""."""


def _flatten(rules: list[dict[str, Any]]) -> set[Permission]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def rendered_rules(text: str) -> set[Permission]:
    """The operator's permissions in one render (its ClusterRole and Roles)."""
    rules: list[dict[str, Any]] = []
    for doc in documents(text):
        if doc["kind"] in ("ClusterRole", "Role"):
            rules += doc.get("rules") or []
    return _flatten(rules)


def chart_rules(helm: Path, tmp: Path, values_list: list[dict[str, Any]]) -> set[Permission]:
    """The union of the operator's permissions over renders with each of ``values_list``."""
    granted: set[Permission] = set()
    for values in values_list:
        granted |= rendered_rules(template(helm, values, tmp))
    return granted


def _permission(event: dict[str, Any]) -> Permission | None:
    ref = event.get("objectRef")
    if not ref or not ref.get("resource"):
        return None  # discovery and other non-resource URLs (allowed to every authenticated user)
    resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    return ref.get("apiGroup", ""), resource, event["verb"]


def audited_permissions(events: list[dict[str, Any]]) -> set[Permission]:
    """The permissions the audited requests were granted with."""
    used = set()
    for event in events:
        perm = _permission(event)
        if perm is not None and event.get("responseStatus", {}).get("code") != 403:
            used.add(perm)
    return used


def forbidden_requests(events: list[dict[str, Any]]) -> list[str]:
    """Each refused request (HTTP 403) as ``verb group/resource name``: a rule the chart lacks."""
    out = []
    for event in events:
        if event.get("responseStatus", {}).get("code") == 403:
            perm = _permission(event)
            ref = event.get("objectRef") or {}
            out.append(f"{event['verb']} {perm[0] if perm else ''}/{perm[1] if perm else event.get('requestURI')} {ref.get('name', '')}".strip())
    return sorted(set(out))


@dataclass(frozen=True)
class ReviewRow:
    """One granted verb in docs/rbac.md."""

    permission: Permission
    granted_when: str
    why: str
    code_path: str
    flow: str

    @property
    def used_in_flow(self) -> bool:
        """Whether the row says the in-cluster flow uses it."""
        return self.flow == "used"


_ROW = re.compile(r"^\|\s*`(?P<rule>[^`]+)`\s*\|\s*(?P<verb>[a-z]+)\s*\|(?P<when>[^|]*)\|(?P<why>[^|]*)\|(?P<code>[^|]*)\|(?P<flow>[^|]*)\|\s*$")


def review_rows(text: str | None = None) -> list[ReviewRow]:
    """The rows of docs/rbac.md's review table (rule written ``group/resource``, ``core`` for "")."""
    rows = []
    for line in (text if text is not None else RBAC_DOC.read_text()).splitlines():
        match = _ROW.match(line)
        if not match:
            continue
        group, _, resource = match["rule"].partition("/")
        rows.append(ReviewRow(
            ("" if group == "core" else group, resource, match["verb"]),
            match["when"].strip(), match["why"].strip(), match["code"].strip().strip("`"), match["flow"].strip(),
        ))
    return rows


def unjustified_unused_rules(granted: set[Permission], used: set[Permission], rows: list[ReviewRow] | None = None) -> list[str]:
    """Granted permissions the flow did not use whose review row does not say why (or claims ``used``)."""
    by_permission = {row.permission: row for row in (rows if rows is not None else review_rows())}
    problems = []
    for perm in sorted(granted - used):
        row = by_permission.get(perm)
        if row is None:
            problems.append(f"{perm}: granted, unused and not in docs/rbac.md")
        elif not row.flow.startswith("not used: "):
            problems.append(f"{perm}: docs/rbac.md says {row.flow!r}, but the in-cluster flow did not use it")
    return problems
