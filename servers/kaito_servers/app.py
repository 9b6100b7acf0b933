"""The FastAPI application: ``create_app(settings)``.

Layers: :mod:`kaito_servers.protocol` (request/response bodies) -> the service functions here
(request -> prompt tokens + sampling parameters -> engine stream -> response) -> the routes.
The engine lives on ``app.state`` and is loaded in the background by the lifespan, so the
server answers ``/health`` with 503 while the model loads and 200 once it is ready. If the model
fails to load, ``on_failure`` is told (the command line then exits non-zero: in a pod that is a
restart and CrashLoopBackOff with the log tail, not a server answering 503 forever).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kaito_servers.engine.base import Engine, SamplingParams, StreamEvent
from kaito_servers.errors import (
    ContextLengthError,
    EngineError,
    GenerationCancelled,
    InvalidRequestError,
    ModelNotFoundError,
    NotReadyError,
    QueueFullError,
    ServerError,
)
from kaito_servers.metrics import ServerMetrics
from kaito_servers.protocol import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ChatRequest,
    ChatResult,
    Completion,
    CompletionChoice,
    CompletionRequest,
    ModelCard,
    ModelList,
    ResponseMessage,
    Usage,
    new_id,
    now,
)
from kaito_servers.settings import ServerSettings

if TYPE_CHECKING:
    from kaito_core.plugins import Registry
    from kaito_core.presets import Preset

log = logging.getLogger(__name__)

EngineFactory = Callable[[ServerSettings], Engine]


@dataclass
class ServerState:
    """What the app knows about its engine."""

    status: str = "loading"
    """loading, ready or failed."""
    engine: Engine | None = None
    error: str | None = None
    started: float = 0.0
    aliases: frozenset[str] = frozenset()


def default_engine_factory(settings: ServerSettings) -> Engine:
    """Build the engine named by ``settings.backend`` through the installed kaito plugins."""
    from kaito_core.plugins import Registry

    registry = Registry.from_entry_points()
    backend = registry.backend(settings.backend)
    preset = lookup_preset(registry, settings.preset)
    engine: Engine = backend.create_engine(preset, settings)
    return engine


def lookup_preset(registry: Registry, name: str | None) -> Preset | None:
    """The installed preset ``name``; None when there is none, or when ``name`` is a model id
    (``org/model``) the operator generated a preset for. A generated preset carries nothing the
    server needs beyond the model's own files in --model (config, tokenizer, chat template) and
    the arguments the operator passes (--dtype, --trust-remote-code, extra args), so the server
    does not need the generator (or hub access) to start.

    Raises:
        NotFoundError: ``name`` is neither installed nor a model id.
    """
    from kaito_core.errors import NotFoundError

    if not name:
        return None
    try:
        return registry.preset(name)
    except NotFoundError:
        if "/" not in name:
            raise
        log.info("serving model id %s from its own files (generated preset)", name)
        return None


# -- service helpers ---------------------------------------------------------------------------


def _engine(request: Request) -> Engine:
    state: ServerState = request.app.state.server
    if state.status == "ready" and state.engine is not None:
        return state.engine
    if state.status == "failed":
        raise NotReadyError(f"the model failed to load: {state.error}", retry_after=60, code="model_load_failed")
    waited = int(time.monotonic() - state.started)
    raise NotReadyError(f"the model is still loading ({waited} s so far); retry shortly", retry_after=5)


def _check_model(request: Request, engine: Engine, name: str) -> None:
    state: ServerState = request.app.state.server
    if name != engine.model_name and name not in state.aliases:
        raise ModelNotFoundError(
            f"The model {name!r} does not exist on this server; it serves {engine.model_name!r} (see GET /v1/models)",
            param="model",
        )


def _openai_params(body: ChatCompletionRequest | CompletionRequest, max_tokens: int | None, default_max: int) -> SamplingParams:
    if body.n != 1:
        raise InvalidRequestError("n > 1 is not supported: send one request per completion", param="n")
    if body.logprobs:
        raise InvalidRequestError("logprobs are not supported by this server", param="logprobs")
    temperature = 1.0 if body.temperature is None else body.temperature
    return SamplingParams(
        max_tokens=max_tokens if max_tokens is not None else default_max,
        temperature=temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=body.top_k or 0,
        min_p=body.min_p or 0.0,
        repetition_penalty=body.repetition_penalty or 1.0,
        frequency_penalty=body.frequency_penalty,
        presence_penalty=body.presence_penalty,
        seed=body.seed,
        stop=body.stop_list(),
        min_tokens=body.min_tokens,
        ignore_eos=body.ignore_eos,
    )


def _budget(engine: Engine, prompt_len: int, requested: int | None, default_max: int) -> int:
    """max_tokens for a request: what was asked (checked against the context) or the default, clipped."""
    check = getattr(engine, "check_fits", None)
    if check is not None:
        room = int(check(prompt_len, requested))
    else:
        room = engine.context_length - prompt_len
        if room <= 0:
            raise ContextLengthError(f"This model's maximum context length is {engine.context_length} tokens, but the prompt has {prompt_len} tokens.")
    return requested if requested is not None else max(1, min(default_max, room))


def _messages(body_messages: list[Any]) -> list[dict[str, str]]:
    if not body_messages:
        raise InvalidRequestError("messages must contain at least one message", param="messages")
    out = []
    for i, m in enumerate(body_messages):
        try:
            text = m.text()
        except ValueError as exc:
            raise InvalidRequestError(f"messages[{i}].content: {exc}", param=f"messages[{i}].content") from None
        role = "system" if m.role == "developer" else m.role
        out.append({"role": role, "content": text})
    return out


def _chat_prompt(engine: Engine, messages: list[dict[str, str]]) -> list[int]:
    text = engine.render_chat(messages)
    return engine.tokenize(text, add_special=False)


class RequestCounter:
    """Pure ASGI middleware counting requests by route and status (keeps disconnect detection intact)."""

    def __init__(self, app: Any, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def send_and_record(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            endpoint = getattr(scope.get("route"), "path", "other")
            self.metrics.requests.labels(endpoint, str(status[0])).inc()


class _Tracker:
    """Per-request metrics: TTFT, tokens, latency, decode rate."""

    def __init__(self, metrics: ServerMetrics, endpoint: str) -> None:
        self.metrics = metrics
        self.endpoint = endpoint
        self.start = time.monotonic()
        self.first: float | None = None
        self.tokens = 0
        self.finished = False

    def on_event(self, event: StreamEvent) -> None:
        if self.first is None and event.completion_tokens > 0:
            self.first = time.monotonic()
            self.metrics.ttft.labels(self.endpoint).observe(self.first - self.start)
        new = event.completion_tokens - self.tokens
        self.metrics.record_tokens(new)
        self.tokens = event.completion_tokens
        if event.finish_reason is not None:
            self.finished = True
            end = time.monotonic()
            self.metrics.prompt_tokens.inc(event.prompt_tokens)
            self.metrics.latency.labels(self.endpoint).observe(end - self.start)
            self.metrics.finished.labels(event.finish_reason).inc()
            if self.first is not None and self.tokens > 1 and end > self.first:
                self.metrics.request_rate.observe((self.tokens - 1) / (end - self.first))

    def close(self) -> None:
        """The request ended; count it as cancelled when its generation had not finished."""
        if not self.finished:
            self.finished = True
            self.metrics.finished.labels("cancelled").inc()


async def _collect(request: Request, stream: Any, tracker: _Tracker) -> tuple[str, StreamEvent]:
    """Run a generation to the end, cancelling it if the client disconnects."""
    parts: list[str] = []
    last: list[StreamEvent] = []

    async def consume() -> None:
        async for event in stream:
            tracker.on_event(event)
            parts.append(event.text)
            last.append(event)

    task = asyncio.create_task(consume())
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if done:
                break
            if await request.is_disconnected():
                task.cancel()
                raise GenerationCancelled("the client disconnected")
        task.result()
    finally:
        if not task.done():
            task.cancel()
        await stream.aclose()
        tracker.close()
    return "".join(parts), last[-1]


def _sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


def _usage(event: StreamEvent) -> Usage:
    """OpenAI usage from the counts a stream event carries."""
    return Usage(prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens,
                 total_tokens=event.prompt_tokens + event.completion_tokens)


def _sse_response(chunks: AsyncGenerator[bytes, None], stream: Any, tracker: _Tracker, request_id: str) -> StreamingResponse:
    """An SSE response of ``chunks`` then ``[DONE]``; an error mid-stream becomes an error event,
    and the generation is closed (cancelled if unfinished) and counted however the stream ends."""

    async def guarded() -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield chunk
            yield _sse("[DONE]")
        except ServerError as exc:
            yield _sse(exc.envelope())
        finally:
            await chunks.aclose()
            await stream.aclose()
            tracker.close()

    return StreamingResponse(guarded(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Request-Id": request_id})


_CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def clean_up_tokenization(text: str) -> str:
    """transformers' clean_up_tokenization: remove spaces before punctuation and contractions."""
    for old, new in _CLEANUPS:
        text = text.replace(old, new)
    return text


# -- the app -----------------------------------------------------------------------------------


def create_app(
    settings: ServerSettings,
    *,
    engine_factory: EngineFactory | None = None,
    on_ready: Callable[[Engine], None] | None = None,
    on_failure: Callable[[str], None] | None = None,
) -> FastAPI:
    """Build the server app for ``settings``; the engine is loaded in the background at startup.

    Args:
        settings: the server settings.
        engine_factory: builds the engine (default: the backend plugin named in the settings).
        on_ready: called (in the loader thread) once the engine serves requests.
        on_failure: called (in the loader thread) with the error when the model fails to load;
            the command line uses it to exit non-zero, so Kubernetes restarts the container and
            reports CrashLoopBackOff instead of a pod that answers 503 forever.
    """
    factory = engine_factory or default_engine_factory
    metrics = ServerMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = ServerState(started=time.monotonic())
        app.state.server = state
        app.state.metrics = metrics

        def load() -> None:
            try:
                engine = factory(settings)
                engine.start()
            except Exception as exc:
                log.exception("model failed to load")
                state.error = str(exc)
                state.status = "failed"
                if on_failure is not None:
                    on_failure(state.error)
                return
            state.engine = engine
            aliases = {engine.model_name}
            if settings.preset:
                aliases.add(settings.preset)
            if settings.model:
                aliases.add(settings.model)
            state.aliases = frozenset(aliases)
            metrics.bind_engine(engine)
            for adapter in engine.adapters:
                metrics.adapters.labels(adapter.name).set(adapter.strength)
            metrics.adapters_loaded.set(len(engine.adapters))
            metrics.ready.set(1)
            state.status = "ready"
            log.info(
                "model ready",
                extra={"model": engine.model_name, "backend": engine.backend, "load_s": round(time.monotonic() - state.started, 2),
                       "context_length": engine.context_length, "max_batch_size": engine.max_batch_size},
            )
            if on_ready is not None:
                on_ready(engine)

        thread = threading.Thread(target=load, name="model-loader", daemon=True)
        thread.start()
        try:
            yield
        finally:
            await asyncio.to_thread(thread.join)
            if state.engine is not None:
                await asyncio.to_thread(state.engine.close)

    app = FastAPI(
        title="KAITO inference server",
        version="0.1.0",
        description="The classic KAITO /chat contract and an OpenAI-compatible API.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics

    # -- errors ---------------------------------------------------------------------------------

    def _error_response(request: Request, exc: ServerError) -> JSONResponse:
        body = exc.envelope()
        if request.url.path == "/chat":
            body["detail"] = exc.message
        metrics.errors.labels(request.url.path, exc.error_type).inc()
        if isinstance(exc, QueueFullError):
            metrics.rejected.inc()
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers())

    @app.exception_handler(ServerError)
    async def _server_error(request: Request, exc: ServerError) -> JSONResponse:
        if exc.status_code >= 500:
            log.error("request failed", extra={"path": request.url.path, "error": exc.message})
        return _error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        param = None
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p != "body"]
            where = ".".join(loc)
            param = param or where or None
            if err.get("type") == "json_invalid":
                problems.append(f"the request body is not valid JSON ({err.get('ctx', {}).get('error', err.get('msg'))})")
            elif err.get("type") == "missing" and not loc:
                problems.append("the request needs a JSON body")
            else:
                problems.append(f"{where or 'body'}: {err.get('msg')}")
        return _error_response(request, InvalidRequestError("; ".join(problems) or "invalid request", param=param))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", extra={"path": request.url.path})
        return _error_response(request, EngineError(f"internal error: {type(exc).__name__}: {exc}"))

    app.add_middleware(RequestCounter, metrics=metrics)

    # -- health, models, metrics ----------------------------------------------------------------

    def health(request: Request) -> JSONResponse:
        state: ServerState = request.app.state.server
        body: dict[str, Any] = {"status": state.status}
        if state.status == "ready" and state.engine is not None:
            e = state.engine
            body |= {"model": e.model_name, "backend": e.backend, "context_length": e.context_length,
                     "adapters": [{"name": a.name, "strength": a.strength} for a in e.adapters]}
            return JSONResponse(body)
        if state.error:
            body["error"] = state.error
        body["loading_s"] = round(time.monotonic() - state.started, 1)
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})

    app.add_api_route("/health", health, methods=["GET"], summary="Readiness: 200 when the model is loaded, 503 while loading or after a failed load")
    app.add_api_route("/healthz", health, methods=["GET"], include_in_schema=False)

    @app.get("/", include_in_schema=False)
    async def root() -> dict[str, str]:
        return {"message": "Server is running"}

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", response_model=ModelList)
    async def list_models(request: Request) -> ModelList:
        engine = _engine(request)
        state: ServerState = request.app.state.server
        return ModelList(data=[ModelCard(id=engine.model_name, created=int(time.time() - (time.monotonic() - state.started)))])

    # -- /chat (classic KAITO) --------------------------------------------------------------------

    @app.post("/chat", response_model=ChatResult, summary="Classic KAITO text generation: {\"prompt\": ...} -> {\"Result\": ...}")
    async def chat(request: Request, body: ChatRequest) -> ChatResult:
        engine = _engine(request)
        gk = body.generate_kwargs
        if gk.num_beams > 1:
            raise InvalidRequestError("generate_kwargs.num_beams > 1 (beam search) is not supported; use greedy (do_sample=false) or sampling", param="generate_kwargs.num_beams")
        if body.prompt is None and not body.messages:
            raise InvalidRequestError("Text generation parameter prompt required", param="prompt")
        if body.prompt is not None:
            text = (body.prefix or "") + body.prompt
            prompt = engine.tokenize(text, add_special=True)
        else:
            prompt = _chat_prompt(engine, _messages(body.messages or []))
        if gk.max_new_tokens is not None:
            max_new = gk.max_new_tokens
        else:
            max_new = gk.max_length - len(prompt)
            if max_new < 1:
                raise InvalidRequestError(
                    f"the prompt has {len(prompt)} tokens but generate_kwargs.max_length is {gk.max_length} "
                    "(prompt plus generated tokens): raise max_length or set max_new_tokens",
                    param="generate_kwargs.max_length",
                )
        limit = engine.context_length
        if body.handle_long_generation == "hole" and len(prompt) + max_new > limit:
            keep = limit - max_new
            if keep < 1:
                raise ContextLengthError(f"max_new_tokens {max_new} leaves no room for the prompt in the {limit}-token context", param="generate_kwargs")
            prompt = prompt[-keep:]
        if len(prompt) + max_new > limit:
            max_new = limit - len(prompt)
            if max_new < 1:
                raise ContextLengthError(
                    f"This model's maximum context length is {limit} tokens, but the prompt has {len(prompt)} tokens. "
                    'Shorten the prompt, or pass "handle_long_generation": "hole" to keep its end.',
                    param="prompt",
                )
        params = SamplingParams(
            max_tokens=max_new,
            temperature=gk.temperature if gk.do_sample else 0.0,
            top_k=gk.top_k if gk.do_sample else 0,
            top_p=gk.top_p if gk.do_sample else 1.0,
            typical_p=gk.typical_p if gk.do_sample else 1.0,
            repetition_penalty=gk.repetition_penalty,
            seed=gk.seed,
            stop=tuple(gk.stop or ()),
            min_tokens=gk.min_new_tokens if gk.min_new_tokens is not None else max(0, gk.min_length - len(prompt)),
        )
        tracker = _Tracker(metrics, "/chat")
        stream = engine.generate(prompt, params, request_id=new_id("chat"))
        generated, _ = await _collect(request, stream, tracker)
        if body.prompt is not None and body.return_full_text:
            generated = body.prompt + generated
        if body.clean_up_tokenization_spaces:
            generated = clean_up_tokenization(generated)
        return ChatResult(Result=generated)

    # -- OpenAI ----------------------------------------------------------------------------------

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request, body: ChatCompletionRequest) -> Response | ChatCompletion:
        engine = _engine(request)
        _check_model(request, engine, body.model)
        if body.tools:
            raise InvalidRequestError("tool calling is not supported by this server", param="tools")
        if body.response_format and body.response_format.get("type", "text") != "text":
            raise InvalidRequestError("only response_format type 'text' is supported", param="response_format")
        prompt = _chat_prompt(engine, _messages(body.messages))
        requested = body.max_completion_tokens or body.max_tokens
        params = _openai_params(body, _budget(engine, len(prompt), requested, settings.default_max_tokens), settings.default_max_tokens)
        request_id = new_id("chatcmpl")
        tracker = _Tracker(metrics, "/v1/chat/completions")
        stream = engine.generate(prompt, params, request_id=request_id)
        created = now()
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            async def events() -> AsyncGenerator[bytes, None]:
                base = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": engine.model_name}
                yield _sse(base | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
                async for event in stream:
                    tracker.on_event(event)
                    if event.text:
                        yield _sse(base | {"choices": [{"index": 0, "delta": {"content": event.text}, "finish_reason": None}]})
                    if event.finish_reason is not None:
                        yield _sse(base | {"choices": [{"index": 0, "delta": {}, "finish_reason": event.finish_reason}]})
                        if include_usage:
                            yield _sse(base | {"choices": [], "usage": _usage(event).model_dump()})

            return _sse_response(events(), stream, tracker, request_id)
        text, last = await _collect(request, stream, tracker)
        return ChatCompletion(
            id=request_id,
            created=created,
            model=engine.model_name,
            choices=[ChatChoice(message=ResponseMessage(content=text), finish_reason=last.finish_reason)],
            usage=_usage(last),
        )

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request, body: CompletionRequest) -> Response | Completion:
        engine = _engine(request)
        _check_model(request, engine, body.model)
        if body.suffix:
            raise InvalidRequestError("suffix (fill-in-the-middle) is not supported", param="suffix")
        if body.best_of not in (None, 1):
            raise InvalidRequestError("best_of > 1 is not supported", param="best_of")
        if isinstance(body.prompt, list):
            if len(body.prompt) != 1:
                raise InvalidRequestError("send exactly one prompt per request (a list with one string is accepted)", param="prompt")
            prompt_text = body.prompt[0]
        else:
            prompt_text = body.prompt
        if not prompt_text:
            raise InvalidRequestError("prompt must not be empty", param="prompt")
        prompt = engine.tokenize(prompt_text, add_special=True)
        params = _openai_params(body, _budget(engine, len(prompt), body.max_tokens, settings.default_max_tokens), settings.default_max_tokens)
        request_id = new_id("cmpl")
        tracker = _Tracker(metrics, "/v1/completions")
        stream = engine.generate(prompt, params, request_id=request_id)
        created = now()
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            async def events() -> AsyncGenerator[bytes, None]:
                base = {"id": request_id, "object": "text_completion", "created": created, "model": engine.model_name}
                if body.echo:
                    yield _sse(base | {"choices": [{"index": 0, "text": prompt_text, "finish_reason": None, "logprobs": None}]})
                async for event in stream:
                    tracker.on_event(event)
                    if event.text or event.finish_reason is not None:
                        yield _sse(base | {"choices": [{"index": 0, "text": event.text, "finish_reason": event.finish_reason, "logprobs": None}]})
                    if event.finish_reason is not None and include_usage:
                        yield _sse(base | {"choices": [], "usage": _usage(event).model_dump()})

            return _sse_response(events(), stream, tracker, request_id)
        text, last = await _collect(request, stream, tracker)
        return Completion(
            id=request_id,
            created=created,
            model=engine.model_name,
            choices=[CompletionChoice(text=(prompt_text + text) if body.echo else text, finish_reason=last.finish_reason)],
            usage=_usage(last),
        )

    return app


__all__ = ["ServerState", "clean_up_tokenization", "create_app", "default_engine_factory"]
