"""Log set-up of ``kaito operator``: JSON lines (one object per record) or plain text.

Each JSON line has ``ts``, ``level``, ``logger`` and ``message``, plus ``namespace`` and
``workspace`` when the record is about one: kopf's per-object loggers pass the object reference
as ``extra={"k8s_ref": {...}}``, and the operator's own lines pass ``extra={"namespace": ...,
"workspace": ...}``. Only these fields are emitted — never arbitrary record attributes — so
nothing a handler happens to hold (Secret data, tokens) can leak through ``extra``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

LOG_FORMATS = ("json", "text")


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(object_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def object_fields(record: logging.LogRecord) -> dict[str, str]:
    """``namespace``/``workspace`` (or ``kind``/``name`` of another object) the record is about."""
    fields: dict[str, str] = {}
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, dict):
        if ref.get("namespace"):
            fields["namespace"] = str(ref["namespace"])
        if ref.get("kind") == "Workspace":
            fields["workspace"] = str(ref.get("name", ""))
        elif ref.get("name"):
            fields["kind"], fields["name"] = str(ref.get("kind", "")), str(ref["name"])
    for key in ("namespace", "workspace"):
        value = getattr(record, key, None)
        if isinstance(value, str) and value:
            fields[key] = value
    return fields


def default_format() -> str:
    """``text`` on a terminal, ``json`` otherwise (in a pod, under a supervisor)."""
    return "text" if sys.stderr.isatty() else "json"


def configure(log_format: str, *, verbose: bool = False) -> None:
    """Route every logger (kopf's included) to stderr in ``log_format`` (``json`` or ``text``)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:  # kopf logs every handler success at INFO; keep problems and our own lines
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
