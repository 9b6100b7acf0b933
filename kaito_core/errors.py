"""The error family of kaito_core.

Every error a user can cause says *where* (a field path such as
``inference.adapters[0].strength``), *what* is wrong, and *how to fix it*. Code raises these
typed errors; the operator maps them at one boundary (not ready yet -> retry later, invalid
spec -> permanent error plus a status condition), the CLI prints them, and the admission
webhook returns them to ``kubectl``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kaito_core.api.reasons import Reason, WaitReason


class KaitoError(Exception):
    """Base class of every error raised on purpose by kaito_core and its plugins."""


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of a resource.

    Attributes:
        path: dotted path of the offending field, e.g. ``resource.instanceType`` or
            ``inference.adapters[1].source.name``; empty for the whole object.
        message: what is wrong, in one sentence.
        fix: what the user should do about it.
    """

    path: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        text = f"{where}{self.message.rstrip('.')}"
        return f"{text}. Fix: {self.fix}" if self.fix else text


class ValidationError(KaitoError):
    """A resource is invalid; carries every problem found, not only the first."""

    def __init__(self, errors: Sequence[FieldError], *, kind: str = "Workspace", name: str = "") -> None:
        if not errors:
            raise ValueError("ValidationError needs at least one FieldError")
        self.errors: tuple[FieldError, ...] = tuple(errors)
        self.kind = kind
        self.name = name
        super().__init__(self.render())

    def render(self) -> str:
        """All problems, one per line, headed by the object they belong to."""
        head = f"{self.kind} {self.name!r} is invalid" if self.name else f"{self.kind} is invalid"
        count = len(self.errors)
        lines = [f"{head} ({count} problem{'s' if count != 1 else ''}):"]
        lines += [f"  - {e}" for e in self.errors]
        return "\n".join(lines)

    @property
    def paths(self) -> list[str]:
        """The field paths named by the problems, in order."""
        return [e.path for e in self.errors]

    @classmethod
    def collect(cls, errors: Iterable[FieldError], *, kind: str = "Workspace", name: str = "") -> None:
        """Raise a ValidationError if ``errors`` yields anything; otherwise return."""
        found = list(errors)
        if found:
            raise cls(found, kind=kind, name=name)


class PluginError(KaitoError):
    """A plugin is broken: a duplicate name, a bad hook implementation, an invalid item."""


class NotFoundError(KaitoError):
    """A named preset, backend, provisioner or instance type is not installed or not known."""


class NotReadyError(KaitoError):
    """Something the reconciler waits for is not ready yet; try again after ``delay`` seconds."""

    def __init__(self, message: str, *, delay: float = 5.0, reason: str = WaitReason.NOT_READY) -> None:
        super().__init__(message)
        self.delay = delay
        self.reason = reason


class PrerequisiteError(KaitoError):
    """What the chosen node provisioner needs in the cluster is missing (a CRD, credentials): the
    operator refuses to start; the message says what is missing and what to do."""


class ProvisioningError(KaitoError):
    """A node provisioner failed in a way that needs a person (quota, bad SKU, cloud error)."""

    def __init__(self, message: str, *, reason: str = Reason.PROVISIONING_FAILED, retryable: bool = True, delay: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable
        self.delay = delay
        """Seconds to wait before retrying when the cloud said so (e.g. HTTP 429 Retry-After); None: the setting."""
