"""Training data: read a parquet / JSON Lines / CSV file and turn each row into one training text.

Three row shapes are understood (chosen from DatasetConfig, else from the columns present):

* ``messages``: an OpenAI-style chat, a list of ``{"role", "content"}`` (the dolly-15k OAI
  file upstream's docs use); rendered with the model's chat template.
* prompt/response: ``DatasetConfig.context_column`` (default ``prompt``) becomes a user turn and
  ``response_column`` (default ``completion`` when a ``prompt`` column exists) the assistant
  turn; rendered with the chat template.
* text: ``response_column`` (default ``text``) used as it is.

Files are read with pyarrow (no ``datasets`` cache or network). Every problem is a
:class:`DatasetError` naming the file, the column and, for bad rows, the row (counted from 0).
Reading and formatting are pure functions of the file; tokenizing needs the tokenizer.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kaito_core.errors import KaitoError

from kaito_servers.tuning.config import DatasetConfig, TrainingArguments

EXTENSIONS = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "json", ".csv": "csv"}
"""File suffixes the runner reads, and their formats."""
ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})
MAX_REPORTED_ROWS = 5


class DatasetError(KaitoError):
    """The training data cannot be used; the message names the file, column or row and the fix."""


@dataclass(frozen=True)
class RowFormat:
    """How rows become texts."""

    kind: Literal["messages", "prompt", "text"]
    columns: tuple[str, ...]


def find_dataset(data_dir: Path, config: DatasetConfig) -> Path:
    """The data file: ``dataset_path`` (relative to ``data_dir``) or the first data file in ``data_dir``."""
    if config.dataset_path:
        path = Path(config.dataset_path)
        path = path if path.is_absolute() else data_dir / path
        if not path.is_file():
            raise DatasetError(f"DatasetConfig.dataset_path: {path} does not exist. Fix: point it at the data file "
                               f"(relative paths are under {data_dir}) or remove it to use the first data file there")
        return path
    if not data_dir.is_dir():
        raise DatasetError(f"data directory {data_dir} does not exist. Fix: mount the tuning input there or pass --data-dir")
    files = sorted(p for p in data_dir.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if not files:
        present = sorted(p.name for p in data_dir.iterdir())[:10]
        raise DatasetError(f"no data file in {data_dir} (found: {', '.join(present) or 'nothing'}). Fix: provide a "
                           f"{', '.join(sorted(EXTENSIONS))} file, or set DatasetConfig.dataset_path")
    return files[0]


def _format_of(path: Path, config: DatasetConfig) -> str:
    if config.dataset_extension:
        return config.dataset_extension
    found = EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise DatasetError(f"{path}: cannot tell the format from the name. Fix: set DatasetConfig.dataset_extension "
                           "to parquet, jsonl, json or csv")
    return found


def _looks_like_html(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(512).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head"))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not valid JSON at line {exc.lineno}: {exc.msg}. Fix: write one JSON "
                               "object per line (JSON Lines) or a valid JSON array of objects") from None
        rows = list(data) if isinstance(data, list) else [data]
    else:
        rows = []
        for number, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}: line {number + 1} is not valid JSON ({exc.msg}). Fix: write one JSON "
                                   "object per line") from None
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DatasetError(f"{path}: row {index} is a {type(row).__name__}, not an object. Fix: each row must be a "
                               'JSON object such as {"messages": [...]}')
    return rows


def read_rows(path: Path, config: DatasetConfig) -> tuple[list[str], list[dict[str, Any]]]:
    """The column names and the rows of a data file.

    Raises:
        DatasetError: unreadable, malformed (an HTML page, a truncated parquet file...) or empty.
    """
    fmt = _format_of(path, config)
    if path.stat().st_size == 0:
        raise DatasetError(f"{path} is empty (0 bytes). Fix: provide a file with at least one row")
    if _looks_like_html(path):
        raise DatasetError(f"{path} is an HTML/XML page, not {fmt} data. Fix: the URL probably points at a web page; "
                           "use the link to the raw file")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq  # type: ignore[import-untyped]

            table = pq.read_table(path)
            columns, rows = list(table.column_names), table.to_pylist()
        elif fmt == "csv":
            import pyarrow.csv as pcsv  # type: ignore[import-untyped]

            table = pcsv.read_csv(path)
            columns, rows = list(table.column_names), table.to_pylist()
        else:
            rows = _read_jsonl(path)
            columns = list(dict.fromkeys(k for row in rows for k in row))
    except DatasetError:
        raise
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError with a useful message
        raise DatasetError(f"{path} is not a valid {fmt} file: {exc}. Fix: check the file (and "
                           "DatasetConfig.dataset_extension if set)") from None
    if not rows:
        raise DatasetError(f"{path} has no rows (columns: {', '.join(columns) or 'none'}). Fix: provide at least one "
                           "training example")
    return columns, rows


def choose_format(columns: Sequence[str], config: DatasetConfig, args: TrainingArguments | None = None, *,
                  source: str = "") -> RowFormat:
    """Which row shape to use, from DatasetConfig or else from the columns present."""
    have = set(columns)
    listing = ", ".join(columns)
    where = f"{source}: " if source else ""

    def need(column: str, key: str) -> str:
        if column not in have:
            raise DatasetError(f"{where}column {column!r} (DatasetConfig.{key}) is not in the data; the columns are: "
                               f"{listing}. Fix: set DatasetConfig.{key} to one of them")
        return column

    if config.messages_column:
        return RowFormat("messages", (need(config.messages_column, "messages_column"),))
    text_column = config.response_column
    if text_column == "text" and args is not None and args.dataset_text_field:
        text_column = args.dataset_text_field
    if config.context_column:
        return RowFormat("prompt", (need(config.context_column, "context_column"), need(text_column, "response_column")))
    if "messages" in have:
        return RowFormat("messages", ("messages",))
    if "prompt" in have and "completion" in have and text_column == "text":
        return RowFormat("prompt", ("prompt", "completion"))
    if text_column in have:
        return RowFormat("text", (text_column,))
    raise DatasetError(f"{where}no usable columns: expected 'messages' (OpenAI chat format), 'prompt' + 'completion', "
                       f"or a text column {text_column!r}; the columns are: {listing}. Fix: rename the columns, or set "
                       "DatasetConfig.messages_column, or context_column + response_column, or response_column")


def _chat(value: Any, column: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"{column} is a string that is not JSON") from None
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list) or not value:
        raise ValueError(f"{column} must be a non-empty list of {{role, content}} messages, got {type(value).__name__}"
                         + (" (empty)" if isinstance(value, list) else ""))
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise ValueError(f"{column}[{i}] is a {type(message).__name__}, not a {{role, content}} object")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ValueError(f"{column}[{i}].role is {role!r}; use one of {', '.join(sorted(ROLES))}")
        if not isinstance(content, str):
            raise ValueError(f"{column}[{i}].content must be a string, got {type(content).__name__}")
        messages.append({"role": str(role), "content": content})
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        raise ValueError(f"{column} has no assistant message with content (nothing to learn)")
    return messages


def _text(value: Any, column: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{column} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{column} is empty")
    return value


def row_examples(rows: Sequence[dict[str, Any]], fmt: RowFormat, *, source: str = "") -> list[list[dict[str, str]] | str]:
    """Each row as a chat (messages/prompt formats) or a text; every bad row is reported (up to 5 shown)."""
    out: list[list[dict[str, str]] | str] = []
    problems: list[str] = []
    for index, row in enumerate(rows):
        try:
            if fmt.kind == "messages":
                out.append(_chat(row.get(fmt.columns[0]), fmt.columns[0]))
            elif fmt.kind == "prompt":
                prompt, response = (_text(row.get(c), c) for c in fmt.columns)
                out.append([{"role": "user", "content": prompt}, {"role": "assistant", "content": response}])
            else:
                out.append(_text(row.get(fmt.columns[0]), fmt.columns[0]))
        except ValueError as exc:
            problems.append(f"row {index}: {exc}")
    if problems:
        shown = "; ".join(problems[:MAX_REPORTED_ROWS])
        more = f" (and {len(problems) - MAX_REPORTED_ROWS} more)" if len(problems) > MAX_REPORTED_ROWS else ""
        raise DatasetError(f"{source}: {len(problems)} of {len(rows)} rows are malformed: {shown}{more}. Fix: correct or "
                           "drop those rows (rows are counted from 0)")
    return out


def split(examples: Sequence[Any], config: DatasetConfig) -> tuple[list[Any], list[Any]]:
    """Shuffle (seeded) and split into training and evaluation examples."""
    items = list(examples)
    if config.shuffle_dataset:
        random.Random(config.shuffle_seed).shuffle(items)
    if config.train_test_split >= 1:
        return items, []
    cut = max(1, int(len(items) * config.train_test_split))
    return items[:cut], items[cut:]


def render(examples: Sequence[list[dict[str, str]] | str], tokenizer: Any, chat_template: str | None) -> list[str]:
    """Chats rendered with the chat template (the model's own unless ``chat_template`` is given); texts as they are."""
    template = chat_template or getattr(tokenizer, "chat_template", None)
    texts = []
    for example in examples:
        if isinstance(example, str):
            texts.append(example)
            continue
        if not template:
            raise DatasetError("the model's tokenizer has no chat template, so chat rows cannot be rendered. Fix: set "
                               "ModelConfig.chat_template (a Jinja template or a file path), or use a text column")
        texts.append(str(tokenizer.apply_chat_template(example, tokenize=False, chat_template=template)))
    return texts


def tokenize(texts: Sequence[str], tokenizer: Any, max_length: int, *, chat: bool) -> list[dict[str, list[int]]]:
    """Token ids per text, truncated to ``max_length``; rendered chats already carry their BOS, plain texts get one."""
    out = []
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=not chat, truncation=True, max_length=max_length)["input_ids"])
        if not chat and tokenizer.eos_token_id is not None and len(ids) < max_length:
            ids.append(int(tokenizer.eos_token_id))
        out.append({"input_ids": ids, "attention_mask": [1] * len(ids)})
    return out
