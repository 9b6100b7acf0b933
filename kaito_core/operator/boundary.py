"""The one place where kaito_core's errors become kopf's: not ready yet -> TemporaryError(delay),
needs a person -> PermanentError (the status condition already says what to fix)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import kopf
from kubernetes import client

from kaito_core.errors import KaitoError, NotReadyError, ProvisioningError, ValidationError
from kaito_core.operator.reconciler import is_permanent


def to_kopf(exc: BaseException, *, default_delay: float = 5.0) -> kopf.TemporaryError | kopf.PermanentError | None:
    """The kopf error for ``exc``, or None when it is not one of ours (a bug: let it surface)."""
    if isinstance(exc, NotReadyError):
        return kopf.TemporaryError(str(exc), delay=exc.delay)
    if isinstance(exc, ValidationError):
        return kopf.PermanentError(exc.render())
    if isinstance(exc, KaitoError):
        if is_permanent(exc):
            return kopf.PermanentError(str(exc))
        delay = default_delay * 6 if isinstance(exc, ProvisioningError) else default_delay
        return kopf.TemporaryError(str(exc), delay=delay)
    if isinstance(exc, client.ApiException):
        if exc.status == 409:
            return kopf.TemporaryError(f"conflict: {exc.reason}", delay=1.0)
        return kopf.TemporaryError(f"Kubernetes API error {exc.status}: {exc.reason}: {(exc.body or '')[:500]}", delay=default_delay)
    return None


@contextlib.contextmanager
def kopf_errors(default_delay: float = 5.0) -> Iterator[None]:
    """Run a block, re-raising our errors as kopf's."""
    try:
        yield
    except Exception as exc:
        mapped = to_kopf(exc, default_delay=default_delay)
        if mapped is None:
            raise
        raise mapped from exc
