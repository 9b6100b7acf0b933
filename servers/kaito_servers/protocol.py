"""Request and response bodies: the classic KAITO ``/chat`` and the OpenAI-compatible API.

Pure pydantic, no ML imports. Requests accept unknown fields (clients send options we do not
model) except where a field changes the meaning of the request; those are refused with a 400
that names them.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# -- OpenAI-compatible ------------------------------------------------------------------------


class ChatMessage(BaseModel):
    """One chat message; ``content`` may be a string or a list of text parts."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message text (text parts concatenated)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts: list[str] = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError("only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)


class StreamOptions(BaseModel):
    """OpenAI stream_options."""

    include_usage: bool = False


class _SamplingFields(BaseModel):
    """Sampling fields shared by chat and text completions."""

    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    min_tokens: int = Field(default=0, ge=0)
    """Extension (as in vLLM): end-of-sequence is suppressed until this many tokens."""
    ignore_eos: bool = False
    """Extension (as in vLLM): keep generating past end-of-sequence until max_tokens."""
    logprobs: bool | int | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list):
            if len(value) > 4:
                raise ValueError("at most 4 stop sequences are allowed")
            if any(not s for s in value):
                raise ValueError("stop sequences must not be empty")
        return value

    def stop_list(self) -> tuple[str, ...]:
        """Stop strings as a tuple."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatCompletionRequest(_SamplingFields):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage]
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(_SamplingFields):
    """POST /v1/completions."""

    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


class Usage(BaseModel):
    """Token counts of one request."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def new_id(prefix: str) -> str:
    """An OpenAI-style object id."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    """Unix time in seconds."""
    return int(time.time())


class ResponseMessage(BaseModel):
    """The assistant message of a chat completion."""

    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    """One chat completion choice."""

    index: int = 0
    message: ResponseMessage
    finish_reason: str | None
    logprobs: None = None


class ChatCompletion(BaseModel):
    """Response of POST /v1/chat/completions."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(BaseModel):
    """One text completion choice."""

    index: int = 0
    text: str
    finish_reason: str | None
    logprobs: None = None


class Completion(BaseModel):
    """Response of POST /v1/completions."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ModelCard(BaseModel):
    """One entry of GET /v1/models."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "kaito"


class ModelList(BaseModel):
    """Response of GET /v1/models."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


# -- classic KAITO /chat ------------------------------------------------------------------------


class GenerateKwargs(BaseModel):
    """``generate_kwargs`` of /chat: transformers generate() names; unknown keys are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    max_length: int = Field(default=200, ge=1)
    """Prompt plus generated tokens (transformers semantics)."""
    max_new_tokens: int | None = Field(default=None, ge=1)
    """Generated tokens; wins over max_length when given."""
    min_length: int = Field(default=0, ge=0)
    min_new_tokens: int | None = Field(default=None, ge=0)
    do_sample: bool = True
    early_stopping: bool = False
    num_beams: int = Field(default=1, ge=1)
    temperature: float = Field(default=1.0, ge=0.0)
    top_k: int = Field(default=10, ge=0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    typical_p: float = Field(default=1.0, gt=0.0, le=1.0)
    repetition_penalty: float = Field(default=1.0, gt=0.0)
    seed: int | None = None
    stop: list[str] | None = None
    pad_token_id: int | None = None
    eos_token_id: int | list[int] | None = None


class ChatRequest(BaseModel):
    """POST /chat, the classic KAITO contract (text-generation pipeline options)."""

    model_config = ConfigDict(extra="allow")

    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    return_full_text: bool = True
    clean_up_tokenization_spaces: bool = False
    prefix: str | None = None
    handle_long_generation: Literal["hole"] | None = None
    generate_kwargs: GenerateKwargs = Field(default_factory=GenerateKwargs)


class ChatResult(BaseModel):
    """Response of POST /chat."""

    Result: str
