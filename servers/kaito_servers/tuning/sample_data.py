"""A dolly-15k-shaped chat dataset made here (OpenAI ``messages``), for tests, examples and bench.

Upstream's docs tune on ``philschmid/dolly-15k-oai-style``: one row per conversation, a
``messages`` column of ``{"role", "content"}`` (system, user, assistant). The Hub is not
reachable here, so :func:`dolly_rows` writes rows of the same shape from a small fixed set of
questions and answers about Kubernetes and KAITO.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

SYSTEM = "You are a helpful assistant that answers questions about Kubernetes."
QA = [
    ("What is KAITO?", "KAITO is the Kubernetes AI toolchain operator: it deploys and tunes models in a cluster."),
    ("What is a Pod?", "A Pod is the smallest deployable unit in Kubernetes: one or more containers that share a network."),
    ("What does a Deployment do?", "A Deployment keeps a set of identical Pods running and rolls out new versions."),
    ("What is a Service?", "A Service gives a set of Pods one stable address and balances traffic between them."),
    ("What is a Namespace?", "A Namespace is a named group of resources inside one cluster."),
    ("What is a ConfigMap?", "A ConfigMap holds configuration as key-value pairs that Pods read as files or variables."),
    ("What is a Job?", "A Job runs Pods until a task completes, such as a fine-tuning run."),
    ("What is LoRA?", "LoRA trains small low-rank matrices beside frozen weights, so an adapter is a few megabytes."),
]


def dolly_rows(n: int = 200, *, seed: int = 0, system: bool = True) -> list[dict[str, Any]]:
    """``n`` rows of ``{"messages": [...]}`` cycling through the fixed questions (shuffled, seeded)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        question, answer = QA[i % len(QA)]
        messages = ([{"role": "system", "content": SYSTEM}] if system else []) + [
            {"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        rows.append({"messages": messages, "category": "open_qa"})
    rng.shuffle(rows)
    return rows


def write_parquet(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write rows as a parquet file (pyarrow infers the nested ``messages`` type)."""
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path
