"""The engine interface and the batching scheduler both engines share.

An :class:`Engine` turns prompt tokens into a stream of :class:`StreamEvent` objects. Both
engines derive from :class:`BatchingEngine`: a single worker thread owns the model and runs a
loop of *steps*; each step advances every active sequence by one token (or one prompt chunk)
in one batched forward pass. New requests wait in a bounded queue and join the batch when the
engine admits them (at any step for llama.cpp, at the next cohort for transformers). The
asyncio side never touches the model: events cross threads through ``call_soon_threadsafe``.

This module imports no ML library.
"""

from __future__ import annotations

import abc
import asyncio
import codecs
import collections
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kaito_servers.errors import ContextLengthError, EngineError, InvalidRequestError, QueueFullError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens; ``temperature == 0`` means greedy (deterministic)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    """0 disables top-k."""
    min_p: float = 0.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    """Stop strings: generation ends before the first occurrence, which is not returned."""
    min_tokens: int = 0
    """End-of-sequence tokens are suppressed until this many tokens were generated."""
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        """True when the argmax token is always chosen."""
        return self.temperature <= 0.0 or self.top_k == 1


@dataclass(frozen=True)
class StreamEvent:
    """A piece of one request's output."""

    text: str
    """New text since the previous event (may be empty on the final event)."""
    completion_tokens: int
    """Tokens generated so far."""
    prompt_tokens: int
    finish_reason: str | None = None
    """None while running; then stop (EOS or stop string), length (max_tokens or context) or cancelled."""


@dataclass(frozen=True)
class AdapterInfo:
    """A LoRA adapter applied to the served model."""

    name: str
    path: str
    strength: float


class Detokenizer(abc.ABC):
    """Turns generated token ids into text incrementally, never splitting a character."""

    @abc.abstractmethod
    def add(self, token: int) -> str:
        """Text completed by ``token`` (may be empty while a character is incomplete)."""

    @abc.abstractmethod
    def flush(self) -> str:
        """Whatever is still held back at the end of the sequence."""


class ByteDetokenizer(Detokenizer):
    """Detokenizer for engines that give each token's bytes (llama.cpp)."""

    def __init__(self, piece: Callable[[int], bytes]) -> None:
        self._piece = piece
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token: int) -> str:
        return str(self._decoder.decode(self._piece(token)))

    def flush(self) -> str:
        return str(self._decoder.decode(b"", final=True))


class IdsDetokenizer(Detokenizer):
    """Detokenizer for tokenizers that only decode id sequences (transformers).

    Uses the prefix/read-offset method: decode a short window before and after the new token
    and emit the difference once it no longer ends in an incomplete character.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def add(self, token: int) -> str:
        self._ids.append(token)
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        new_text = self._decode(self._ids[self._prefix :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return new_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        new_text = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return new_text[len(prefix_text) :]


@dataclass(eq=False)
class GenSequence:
    """One request inside the scheduler. Engines keep their own per-sequence state in ``state``."""

    request_id: str
    prompt: list[int]
    params: SamplingParams
    detokenizer: Detokenizer
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[StreamEvent | BaseException]
    arrived: float = field(default_factory=time.monotonic)
    generated: list[int] = field(default_factory=list)
    pending_text: str = ""
    cancelled: bool = False
    done: bool = False
    state: Any = None
    max_total: int = 0
    """prompt + completion tokens allowed (the context window)."""

    def emit(self, event: StreamEvent | BaseException) -> None:
        """Hand an event to the request's asyncio task (thread-safe)."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.cancelled = True


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


class GenerationStream:
    """The events of one request; ``aclose()`` (or leaving ``async for`` early) cancels it."""

    def __init__(self, seq: GenSequence, cancel: Callable[[GenSequence], None]) -> None:
        self._seq = seq
        self._cancel = cancel
        self._finished = False

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._finished:
            raise StopAsyncIteration
        try:
            event = await self._seq.queue.get()
        except BaseException:
            self.close()
            raise
        if isinstance(event, BaseException):
            self._finished = True
            raise event
        if event.finish_reason is not None:
            self._finished = True
        return event

    def close(self) -> None:
        """Stop generating (no-op when already finished)."""
        self._finished = True
        if not self._seq.done:
            self._cancel(self._seq)

    async def aclose(self) -> None:
        """Async alias of :meth:`close`."""
        self.close()


class Engine(abc.ABC):
    """What the HTTP layer needs from an inference engine."""

    backend: str = ""
    model_name: str = ""
    """The served model name."""
    context_length: int = 0
    """Maximum prompt + completion tokens per request."""
    adapters: tuple[AdapterInfo, ...] = ()
    max_batch_size: int = 1
    steps_run: int = 0
    """Forward steps run so far."""
    sequences_stepped: int = 0
    """Sum over steps of the sequences each advanced (sequences_stepped / steps_run = mean batch)."""

    @abc.abstractmethod
    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        """Token ids of ``text``; ``add_special`` adds the model's BOS when it wants one."""

    @abc.abstractmethod
    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The prompt text for a chat (chat template with the generation prompt appended).

        Raises:
            InvalidRequestError: the model has no chat template, or the template rejects the messages.
        """

    @abc.abstractmethod
    def generate(self, prompt: list[int], params: SamplingParams, *, request_id: str) -> GenerationStream:
        """Submit ``prompt`` and return the stream of its completion (call from the event loop).

        The request is queued before this returns, so capacity and context errors are raised
        here, before any response is sent. Closing the stream early cancels the generation.

        Raises:
            ContextLengthError: the prompt does not fit.
            QueueFullError: too many requests are waiting.
        """

    @property
    @abc.abstractmethod
    def queue_depth(self) -> int:
        """Requests waiting for a batch slot."""

    @property
    @abc.abstractmethod
    def running(self) -> int:
        """Sequences being generated now."""

    def start(self) -> None:
        """Start background work (the scheduler thread)."""

    def close(self) -> None:
        """Stop background work and free the model."""


class BatchingEngine(Engine):
    """An engine whose worker thread batches every active sequence into each forward step.

    Subclasses implement the model-specific parts: :meth:`_new_detokenizer`,
    :meth:`_can_admit`, :meth:`_admit`, :meth:`_step`, :meth:`_release` and :meth:`_is_eos`.
    """

    batch_wait_s: float = 0.0
    """When idle, how long the first request waits for companions before the batch starts."""

    def __init__(self, *, max_batch_size: int, max_queue: int) -> None:
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self._cond = threading.Condition()
        self._waiting: collections.deque[GenSequence] = collections.deque()
        self._active: list[GenSequence] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._ids = itertools.count()
        self._avg_request_s = 1.0

    # -- subclass hooks -----------------------------------------------------------------------

    @abc.abstractmethod
    def _new_detokenizer(self) -> Detokenizer:
        """A fresh incremental detokenizer."""

    def _can_admit(self, seq: GenSequence, running: list[GenSequence], joining: list[GenSequence]) -> bool:
        """Whether ``seq`` may join the batch now (called with the lock held).

        Args:
            seq: the first waiting sequence.
            running: sequences already generating.
            joining: sequences admitted in this round, before ``seq``.
        """
        return len(running) + len(joining) < self.max_batch_size

    @abc.abstractmethod
    def _admit(self, seq: GenSequence) -> None:
        """Prepare engine state for a sequence that joins the batch (worker thread)."""

    @abc.abstractmethod
    def _step(self, active: list[GenSequence]) -> list[tuple[GenSequence, int]]:
        """One batched forward pass; the sampled token of each sequence that produced one."""

    @abc.abstractmethod
    def _release(self, seq: GenSequence) -> None:
        """Free a finished or cancelled sequence's engine state (worker thread)."""

    @abc.abstractmethod
    def _is_eos(self, token: int) -> bool:
        """Whether ``token`` ends generation."""

    # -- Engine --------------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._active)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"{self.backend}-scheduler", daemon=True)
            self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def check_fits(self, prompt_tokens: int, max_tokens: int | None) -> int:
        """The completion budget for a prompt, or a 400 that names the context limit.

        Args:
            prompt_tokens: length of the tokenized prompt.
            max_tokens: what the client asked for; None lets the server use what is left.
        """
        limit = self.context_length
        if prompt_tokens >= limit:
            raise ContextLengthError(
                f"This model's maximum context length is {limit} tokens, but the prompt has {prompt_tokens} tokens "
                f"(at least one token must be left for the completion). Shorten the prompt.",
                param="messages",
            )
        if max_tokens is not None and prompt_tokens + max_tokens > limit:
            raise ContextLengthError(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, {max_tokens} for the completion). "
                f"Reduce the prompt or max_tokens.",
                param="max_tokens",
            )
        return limit - prompt_tokens

    def generate(self, prompt: list[int], params: SamplingParams, *, request_id: str) -> GenerationStream:
        if not prompt:
            raise InvalidRequestError("the prompt is empty: send at least one token of text", param="prompt")
        self.check_fits(len(prompt), params.max_tokens)
        seq = GenSequence(
            request_id=request_id,
            prompt=list(prompt),
            params=params,
            detokenizer=self._new_detokenizer(),
            loop=asyncio.get_running_loop(),
            queue=asyncio.Queue(),
            max_total=self.context_length,
        )
        self._submit(seq)
        return GenerationStream(seq, self._cancel)

    # -- scheduling ----------------------------------------------------------------------------

    def _submit(self, seq: GenSequence) -> None:
        with self._cond:
            if self._stopping:
                raise EngineError("the server is shutting down")
            free_slots = max(0, self.max_batch_size - len(self._active))
            if len(self._waiting) >= self.max_queue + free_slots:
                waits = len(self._waiting) + 1
                retry = math.ceil(self._avg_request_s * waits / self.max_batch_size)
                raise QueueFullError(
                    f"the server is at capacity: {len(self._active)} requests are generating and "
                    f"{len(self._waiting)} are waiting (queue limit {self.max_queue}); retry after {max(1, retry)} s",
                    retry_after=min(60, retry),
                )
            self._waiting.append(seq)
            self._cond.notify_all()

    def _cancel(self, seq: GenSequence) -> None:
        with self._cond:
            seq.cancelled = True
            if seq in self._waiting:
                self._waiting.remove(seq)
                seq.done = True
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # the worker must never die silently
            log.exception("scheduler crashed")
            with self._cond:
                victims = list(self._active) + list(self._waiting)
                self._active.clear()
                self._waiting.clear()
            for seq in victims:
                seq.emit(EngineError(f"the inference engine failed: {exc}"))

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._waiting and not self._active:
                    self._cond.wait()
                if self._stopping:
                    break
                if not self._active and self._waiting and self.batch_wait_s > 0:
                    deadline = time.monotonic() + self.batch_wait_s
                    while not self._stopping and 0 < len(self._waiting) < self.max_batch_size:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._cond.wait(remaining)
                joining: list[GenSequence] = []
                while self._waiting and self._can_admit(self._waiting[0], self._active, joining):
                    joining.append(self._waiting.popleft())
            for seq in joining:
                try:
                    self._admit(seq)
                except Exception as exc:
                    log.exception("could not start request %s", seq.request_id)
                    seq.done = True
                    seq.emit(EngineError(f"could not start generation: {exc}"))
                    continue
                with self._cond:
                    self._active.append(seq)
            active = [s for s in self._active if not s.cancelled]
            for seq in self._active:
                if seq.cancelled:
                    self._finish(seq, "cancelled")
            if active:
                try:
                    produced = self._step(active)
                except Exception as exc:
                    log.exception("batched step failed")
                    for seq in active:
                        seq.emit(EngineError(f"generation failed: {exc}"))
                        seq.done = True
                    produced = []
                self.steps_run += 1
                self.sequences_stepped += len(active)
                for seq, token in produced:
                    self._on_token(seq, token)
            with self._cond:
                finished = [s for s in self._active if s.done]
                self._active = [s for s in self._active if not s.done]
            for seq in finished:
                self._release(seq)
        with self._cond:
            leftovers = list(self._active) + list(self._waiting)
            self._active.clear()
            self._waiting.clear()
        for seq in leftovers:
            seq.emit(EngineError("the server is shutting down"))
            if seq.state is not None:
                self._release(seq)

    def _finish(self, seq: GenSequence, reason: str) -> None:
        if seq.done:
            return
        seq.done = True
        elapsed = time.monotonic() - seq.arrived
        self._avg_request_s = 0.8 * self._avg_request_s + 0.2 * elapsed
        seq.emit(StreamEvent(seq.pending_text, len(seq.generated), len(seq.prompt), reason))
        seq.pending_text = ""

    def _on_token(self, seq: GenSequence, token: int) -> None:
        if seq.done:
            return
        params = seq.params
        if not params.ignore_eos and self._is_eos(token) and len(seq.generated) >= params.min_tokens:
            seq.pending_text += seq.detokenizer.flush()
            self._finish_with_stops(seq, "stop")
            return
        seq.generated.append(token)
        seq.pending_text += seq.detokenizer.add(token)
        out_of_room = len(seq.prompt) + len(seq.generated) >= seq.max_total
        if len(seq.generated) >= params.max_tokens or out_of_room:
            seq.pending_text += seq.detokenizer.flush()
            self._finish_with_stops(seq, "length")
            return
        if params.stop:
            cut = min((i for i in (seq.pending_text.find(s) for s in params.stop) if i >= 0), default=-1)
            if cut >= 0:
                seq.pending_text = seq.pending_text[:cut]
                self._finish(seq, "stop")
                return
            keep = _held_back(seq.pending_text, params.stop)
            ready, seq.pending_text = seq.pending_text[: len(seq.pending_text) - keep], seq.pending_text[len(seq.pending_text) - keep :]
        else:
            ready, seq.pending_text = seq.pending_text, ""
        if ready or len(seq.generated) == 1:
            seq.emit(StreamEvent(ready, len(seq.generated), len(seq.prompt)))

    def _finish_with_stops(self, seq: GenSequence, reason: str) -> None:
        if seq.params.stop:
            cut = min((i for i in (seq.pending_text.find(s) for s in seq.params.stop) if i >= 0), default=-1)
            if cut >= 0:
                seq.pending_text = seq.pending_text[:cut]
                reason = "stop"
        self._finish(seq, reason)
