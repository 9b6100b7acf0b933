"""Training data: parquet / jsonl / csv, the three row shapes, column mapping, and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kaito_servers.tuning.config import DatasetConfig, TrainingArguments
from kaito_servers.tuning.data import DatasetError, choose_format, find_dataset, read_rows, render, row_examples, split
from kaito_servers.tuning.sample_data import dolly_rows, write_parquet


def _load(path: Path, config: DatasetConfig | None = None, args: TrainingArguments | None = None) -> list:
    config = config or DatasetConfig()
    columns, rows = read_rows(path, config)
    return row_examples(rows, choose_format(columns, config, args, source=str(path)), source=str(path))


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_dolly_parquet_of_messages(tmp_path: Path) -> None:
    path = write_parquet(dolly_rows(40), tmp_path / "data" / "train.parquet")
    assert find_dataset(tmp_path / "data", DatasetConfig()) == path
    examples = _load(path)
    assert len(examples) == 40
    assert [m["role"] for m in examples[0]] == ["system", "user", "assistant"]
    train, evaluation = split(examples, DatasetConfig(train_test_split=0.75))
    assert (len(train), len(evaluation)) == (30, 10)
    assert split(examples, DatasetConfig(train_test_split=0.75)) == (train, evaluation)  # seeded: a resumed run sees the same order


def test_prompt_completion_jsonl_text_csv_and_column_mapping(tmp_path: Path) -> None:
    pc = _jsonl(tmp_path / "pc.jsonl", [{"prompt": "What is a Pod?", "completion": "The smallest unit."}])
    assert _load(pc) == [[{"role": "user", "content": "What is a Pod?"}, {"role": "assistant", "content": "The smallest unit."}]]
    mapped = _jsonl(tmp_path / "mapped.jsonl", [{"question": "Q?", "answer": "A."}])
    assert _load(mapped, DatasetConfig(context_column="question", response_column="answer"))[0][1]["content"] == "A."
    csv = tmp_path / "text.csv"
    csv.write_text('text,other\n"Kubernetes runs containers.",1\n"Pods share a network.",2\n')
    assert _load(csv) == ["Kubernetes runs containers.", "Pods share a network."]
    chat_csv = tmp_path / "chat.csv"
    chat_csv.write_text('conv\n"[{""role"": ""user"", ""content"": ""hi""}, {""role"": ""assistant"", ""content"": ""hello""}]"\n')
    assert _load(chat_csv, DatasetConfig(messages_column="conv"))[0][1] == {"role": "assistant", "content": "hello"}
    field = _jsonl(tmp_path / "field.jsonl", [{"body": "plain text"}])
    assert _load(field, args=TrainingArguments(dataset_text_field="body")) == ["plain text"]  # TRL's key
    array = tmp_path / "array.json"
    array.write_text(json.dumps([{"text": "one"}, {"text": "two"}]))
    assert _load(array) == ["one", "two"]


def test_missing_columns_name_the_column_the_key_and_what_exists(tmp_path: Path) -> None:
    path = write_parquet([{"conversation": [{"role": "user", "content": "x"}], "id": 1}], tmp_path / "d.parquet")
    with pytest.raises(DatasetError) as info:
        _load(path, DatasetConfig(messages_column="messages"))
    assert "column 'messages' (DatasetConfig.messages_column) is not in the data; the columns are: conversation, id" in str(info.value)
    assert "d.parquet" in str(info.value)
    with pytest.raises(DatasetError, match=r"no usable columns: expected 'messages'.*the columns are: conversation, id.*"
                                           r"set DatasetConfig.messages_column"):
        _load(path)


def test_empty_and_malformed_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    with pytest.raises(DatasetError, match=r"empty.parquet is empty \(0 bytes\)"):
        _load(empty)
    no_rows = tmp_path / "norows.jsonl"
    no_rows.write_text("\n\n")
    with pytest.raises(DatasetError, match="has no rows"):
        _load(no_rows)
    html = tmp_path / "dolly.parquet"
    html.write_text("<!DOCTYPE html><html><body>Sign in</body></html>")
    with pytest.raises(DatasetError, match="is an HTML/XML page, not parquet data.*raw file"):
        _load(html)
    truncated = tmp_path / "cut.parquet"
    full = write_parquet(dolly_rows(10), tmp_path / "full.parquet").read_bytes()
    truncated.write_bytes(full[: len(full) // 2])
    with pytest.raises(DatasetError, match="cut.parquet is not a valid parquet file"):
        _load(truncated)
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(DatasetError, match="bad.jsonl: line 2 is not valid JSON"):
        _load(bad_json)
    unknown = tmp_path / "data.txt"
    unknown.write_text("x")
    with pytest.raises(DatasetError, match="set DatasetConfig.dataset_extension"):
        _load(unknown)


def test_malformed_rows_are_all_reported_by_row(tmp_path: Path) -> None:
    rows = dolly_rows(6, system=False)
    rows[1]["messages"] = []
    rows[3]["messages"] = [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]
    rows[4]["messages"] = [{"role": "user", "content": "only a question"}]
    path = _jsonl(tmp_path / "rows.jsonl", rows)
    with pytest.raises(DatasetError) as info:
        _load(path)
    text = str(info.value)
    assert "3 of 6 rows are malformed" in text
    assert "row 1: messages must be a non-empty list" in text
    assert "row 3: messages[0].role is 'robot'" in text
    assert "row 4: messages has no assistant message" in text
    text_rows = _jsonl(tmp_path / "t.jsonl", [{"text": "fine"}, {"text": "  "}, {"text": 5}])
    with pytest.raises(DatasetError, match=r"row 1: text is empty; row 2: text must be a string, got int"):
        _load(text_rows)


def test_finding_the_data_file(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("x")
    with pytest.raises(DatasetError, match=r"no data file in .* \(found: README.md\)"):
        find_dataset(tmp_path, DatasetConfig())
    with pytest.raises(DatasetError, match="DatasetConfig.dataset_path: .*missing.parquet does not exist"):
        find_dataset(tmp_path, DatasetConfig(dataset_path="missing.parquet"))
    with pytest.raises(DatasetError, match="does not exist. Fix: mount the tuning input"):
        find_dataset(tmp_path / "nope", DatasetConfig())


def test_chat_template_rendering(tiny_phi3: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_phi3)
    chat = [{"role": "user", "content": "What is a Pod?"}, {"role": "assistant", "content": "A group of containers."}]
    assert render([chat, "plain"], tok, None) == ["<|user|>\nWhat is a Pod?<|end|>\n<|assistant|>\nA group of containers.<|end|>\n", "plain"]
    custom = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    assert render([chat], tok, custom) == ["[user] What is a Pod?\n[assistant] A group of containers.\n"]
    tok.chat_template = None
    with pytest.raises(DatasetError, match="set ModelConfig.chat_template"):
        render([chat], tok, None)
