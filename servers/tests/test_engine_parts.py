"""The scheduler and text handling, on a character-level engine (no ML library, fast)."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from kaito_servers.engine.base import (
    BatchingEngine,
    ByteDetokenizer,
    Detokenizer,
    GenSequence,
    IdsDetokenizer,
    SamplingParams,
    StreamEvent,
    _held_back,
)
from kaito_servers.errors import ContextLengthError, QueueFullError

EOS = 0


class CharEngine(BatchingEngine):
    """Tokens are characters (ord); each sequence 'generates' a fixed script, then EOS."""

    backend = "chars"

    def __init__(self, script: str, **kwargs: int) -> None:
        super().__init__(max_batch_size=kwargs.get("max_batch_size", 4), max_queue=kwargs.get("max_queue", 4))
        self.script = script
        self.context_length = kwargs.get("context_length", 64)
        self.model_name = "chars"
        self.step_sizes: list[int] = []
        self.delay = 0.0

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return [ord(c) for c in text]

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return "".join(m["content"] for m in messages)

    def _new_detokenizer(self) -> Detokenizer:
        return ByteDetokenizer(lambda t: chr(t).encode())

    def _admit(self, seq: GenSequence) -> None:
        seq.state = 0

    def _release(self, seq: GenSequence) -> None:
        seq.state = None

    def _is_eos(self, token: int) -> bool:
        return token == EOS

    def _step(self, active: list[GenSequence]) -> list[tuple[GenSequence, int]]:
        self.step_sizes.append(len(active))
        if self.delay:
            import time

            time.sleep(self.delay)
        out = []
        for seq in active:
            i = seq.state
            seq.state = i + 1
            out.append((seq, ord(self.script[i]) if i < len(self.script) else EOS))
        return out


async def _run(engine: CharEngine, prompt: str, **params: object) -> tuple[str, StreamEvent]:
    p = SamplingParams(**{"max_tokens": 50, "temperature": 0.0, **params})  # type: ignore[arg-type]
    text = []
    last = None
    async for event in engine.generate(engine.tokenize(prompt), p, request_id="t"):
        text.append(event.text)
        last = event
    assert last is not None
    return "".join(text), last


@pytest.fixture
def engine() -> CharEngine:
    e = CharEngine("Hello, world! STOP here")
    e.start()
    yield e
    e.close()


def test_eos_and_max_tokens(engine: CharEngine) -> None:
    text, last = asyncio.run(_run(engine, "hi"))
    assert text == "Hello, world! STOP here" and last.finish_reason == "stop" and last.completion_tokens == 23
    text, last = asyncio.run(_run(engine, "hi", max_tokens=5))
    assert text == "Hello" and last.finish_reason == "length"


def test_stop_string_spanning_tokens_is_cut_and_never_streamed(engine: CharEngine) -> None:
    async def run() -> list[str]:
        pieces = []
        p = SamplingParams(max_tokens=50, temperature=0, stop=(" STOP",))
        async for event in engine.generate([1], p, request_id="t"):
            pieces.append(event.text)
        return pieces

    pieces = asyncio.run(run())
    assert "".join(pieces) == "Hello, world!"
    assert all("S" not in p for p in pieces)


def test_held_back_suffix() -> None:
    assert _held_back("abc ST", (" STOP",)) == 3
    assert _held_back("abc", (" STOP",)) == 0
    assert _held_back("x<", ("<end>", "<|x")) == 1


def test_concurrent_sequences_share_steps(engine: CharEngine) -> None:
    async def run() -> list[tuple[str, StreamEvent]]:
        return list(await asyncio.gather(*(_run(engine, f"p{i}") for i in range(4))))

    results = asyncio.run(run())
    assert all(text == "Hello, world! STOP here" for text, _ in results)
    assert max(engine.step_sizes) == 4


def test_context_limit_and_queue_limit() -> None:
    e = CharEngine("x" * 100, max_batch_size=1, max_queue=0, context_length=16)
    e.start()
    try:
        with pytest.raises(ContextLengthError, match="16 tokens"):
            asyncio.run(_run(e, "a" * 16))
        with pytest.raises(ContextLengthError, match="max_tokens"):
            asyncio.run(_run(e, "a" * 10, max_tokens=10))
        text, last = asyncio.run(_run(e, "a" * 10, max_tokens=6))
        assert last.finish_reason == "length" and len(text) == 6

        e.delay = 0.02

        async def overflow() -> None:
            slow = e.generate([1], SamplingParams(max_tokens=15, temperature=0), request_id="a")
            await asyncio.sleep(0.05)
            with pytest.raises(QueueFullError) as info:
                e.generate([1], SamplingParams(max_tokens=2, temperature=0), request_id="b")
            assert info.value.retry_after >= 1
            await slow.aclose()

        asyncio.run(overflow())
    finally:
        e.close()


def test_closing_a_stream_cancels_it(engine: CharEngine) -> None:
    async def run() -> None:
        stream = engine.generate([1], SamplingParams(max_tokens=20, temperature=0), request_id="t")
        first = await stream.__anext__()
        assert first.completion_tokens >= 1
        await stream.aclose()
        for _ in range(100):
            if engine.running == 0:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the cancelled sequence is still running")

    asyncio.run(run())


def test_ids_detokenizer_never_splits_characters() -> None:
    table = {1: b"\xe2", 2: b"\x82", 3: b"\xac", 4: b"!"}

    def decode(ids: object) -> str:
        return b"".join(table[i] for i in ids).decode("utf-8", errors="replace")  # type: ignore[attr-defined]

    d = IdsDetokenizer(decode)
    assert [d.add(t) for t in (1, 2, 3, 4)] == ["", "", "€", "!"]
    b = ByteDetokenizer(lambda t: table[t])
    assert [b.add(t) for t in (1, 2, 3, 4)] + [b.flush()] == ["", "", "€", "!", ""]


def test_json_logs_carry_extra_fields() -> None:
    from kaito_servers.logs import JsonFormatter

    record = logging.LogRecord("kaito", logging.INFO, __file__, 1, "model ready", None, None)
    record.model = "gemma"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "model ready" and line["model"] == "gemma" and line["level"] == "info"
