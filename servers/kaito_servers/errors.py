"""Typed errors of the inference server, each with its HTTP status and OpenAI error type.

Code raises these; one exception handler in :mod:`kaito_servers.app` turns them into the
OpenAI error envelope ``{"error": {"message", "type", "param", "code"}}`` (plus ``detail``
for the classic ``/chat`` clients). Nothing parses error messages to choose a status.
"""

from __future__ import annotations

from typing import Any


class ServerError(Exception):
    """Base of every error the server answers on purpose."""

    status_code: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        """Extra response headers (Retry-After for 429/503)."""
        return {}

    def envelope(self) -> dict[str, Any]:
        """The OpenAI error object."""
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}


class InvalidRequestError(ServerError):
    """The request is malformed or asks for something this server cannot do (HTTP 400)."""

    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthError(InvalidRequestError):
    """The prompt (plus the requested completion) does not fit the context window (HTTP 400)."""

    code = "context_length_exceeded"


class ModelNotFoundError(ServerError):
    """The request names a model this server does not serve (HTTP 404)."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class QueueFullError(ServerError):
    """Every batch slot is busy and the waiting queue is full (HTTP 429)."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "queue_full"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class NotReadyError(ServerError):
    """The model is still loading, or failed to load (HTTP 503)."""

    status_code = 503
    error_type = "service_unavailable"
    code = "model_loading"

    def __init__(self, message: str, *, retry_after: int = 5, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class GenerationCancelled(ServerError):
    """The client went away; generation was stopped (never sent: the client is gone)."""

    status_code = 499
    error_type = "cancelled"


class EngineError(ServerError):
    """The engine failed while generating (HTTP 500); a bug or a broken model, not the caller's fault."""

    status_code = 500
    error_type = "server_error"


class ConfigurationError(Exception):
    """The server cannot start as configured (bad model path, unknown backend, broken adapter)."""
