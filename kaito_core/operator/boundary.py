"""The one error boundary: each typed error -> (reconcile result, status, requeue delay, event).

:data:`RULES` is the whole table; the first rule whose ``matches`` accepts the error wins. Every
delay is a named field of :class:`~kaito_core.operator.settings.RequeueSettings`, so the Helm
chart can set it. The status a rule gives is written by the reconciler before the error leaves
it; the kopf errors (:func:`to_kopf`) are derived from the same table for kopf's own handlers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import kopf
from kubernetes import client

from kaito_core.api.reasons import Reason
from kaito_core.errors import KaitoError, NotFoundError, NotReadyError, PluginError, ProvisioningError, ValidationError
from kaito_core.operator.settings import RequeueSettings
from kaito_core.operator.status import Facts

Result = Literal["requeue", "invalid", "error"]
"""How a reconcile round that raised is counted: not ready yet, needs a person, or a bug."""


@dataclass(frozen=True)
class Rule:
    """One row of the table."""

    matches: Callable[[BaseException], bool]
    result: Result
    delay: Callable[[BaseException, RequeueSettings], float]
    status: Callable[[BaseException, int], Facts | None]
    """The status facts to write for the workspace's generation; None: keep the planned status."""
    event_reason: str | None = None
    """Reason of the Warning event posted on the Workspace (None: no event)."""


@dataclass(frozen=True)
class Verdict:
    """What the boundary decided for one error."""

    result: Result
    delay_s: float
    message: str
    facts: Facts | None
    event_reason: str | None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ProvisioningError):
        return exc.reason
    return Reason.PLUGIN_ERROR if isinstance(exc, PluginError) else Reason.NOT_FOUND


def _blocked(exc: BaseException, generation: int) -> Facts:
    """ResourceReady=False naming what a person must fix (an unknown plugin, a refused NodeClaim)."""
    return Facts(generation=generation, blocked_reason=_reason(exc), blocked_message=str(exc))


def _invalid(exc: BaseException, generation: int) -> Facts:
    message = exc.render() if isinstance(exc, ValidationError) else str(exc)
    return Facts(generation=generation, invalid_message=message)


def _keep(exc: BaseException, generation: int) -> None:
    return None


def _api_status(exc: BaseException) -> int | None:
    return exc.status if isinstance(exc, client.ApiException) else None


def _is_permanent_provisioning(exc: BaseException) -> bool:
    return isinstance(exc, ProvisioningError) and not exc.retryable


def _provisioning_delay(exc: BaseException, settings: RequeueSettings) -> float:
    """The cloud's own Retry-After when it gave one, else the setting."""
    delay = exc.delay if isinstance(exc, ProvisioningError) else None
    return delay if delay is not None else settings.provisioning_s


RULES: tuple[Rule, ...] = (
    Rule(lambda e: isinstance(e, NotReadyError), "requeue",
         lambda e, s: e.delay if isinstance(e, NotReadyError) else s.nodes_s, _keep),
    Rule(lambda e: isinstance(e, ValidationError), "invalid", lambda e, s: s.invalid_s, _invalid, Reason.WORKSPACE_INVALID),
    Rule(lambda e: isinstance(e, (NotFoundError, PluginError)), "invalid", lambda e, s: s.invalid_s, _blocked, Reason.PLUGIN_MISSING),
    Rule(_is_permanent_provisioning, "invalid", lambda e, s: s.invalid_s, _blocked, Reason.PROVISIONING_FAILED),
    Rule(lambda e: isinstance(e, ProvisioningError), "requeue", _provisioning_delay, _blocked, Reason.PROVISIONING_FAILED),
    Rule(lambda e: isinstance(e, KaitoError), "requeue", lambda e, s: s.api_error_s, _keep),
    Rule(lambda e: _api_status(e) == 409, "requeue", lambda e, s: s.conflict_s, _keep),
    Rule(lambda e: isinstance(e, client.ApiException), "requeue", lambda e, s: s.api_error_s, _keep),
    Rule(lambda e: True, "error", lambda e, s: s.error_s, _keep),
)


def _message(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return exc.render()
    if isinstance(exc, client.ApiException):
        return f"Kubernetes API error {exc.status}: {exc.reason}: {(exc.body or '')[:500]}"
    return str(exc)


def classify(exc: BaseException, settings: RequeueSettings, generation: int = 1) -> Verdict:
    """The verdict of the table for ``exc``."""
    rule = next(r for r in RULES if r.matches(exc))
    return Verdict(rule.result, rule.delay(exc, settings), _message(exc), rule.status(exc, generation), rule.event_reason)


def to_kopf(exc: BaseException, settings: RequeueSettings | None = None) -> kopf.TemporaryError | kopf.PermanentError | None:
    """The kopf error for ``exc`` by the same table, or None for a bug (let it surface)."""
    verdict = classify(exc, settings or RequeueSettings())
    if verdict.result == "requeue":
        return kopf.TemporaryError(verdict.message, delay=verdict.delay_s)
    if verdict.result == "invalid":
        return kopf.PermanentError(verdict.message)
    return None


@contextlib.contextmanager
def kopf_errors(settings: RequeueSettings | None = None) -> Iterator[None]:
    """Run a block of a kopf handler, re-raising our errors as kopf's."""
    try:
        yield
    except Exception as exc:
        mapped = to_kopf(exc, settings)
        if mapped is None:
            raise
        raise mapped from exc
