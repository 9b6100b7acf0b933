"""The ``kaito`` entry point of kaito-servers: registers the transformers and llamacpp backends.

Registering imports nothing heavy: the backends import their engines only in create_engine().
"""

from __future__ import annotations

from collections.abc import Callable

from kaito_core.backends import InferenceBackend
from kaito_core.plugins import hookimpl

from kaito_servers.backends import LlamaCppBackend, TransformersBackend


@hookimpl
def register_backends(register: Callable[[InferenceBackend], None]) -> None:
    """Register this package's inference backends."""
    register(TransformersBackend())
    register(LlamaCppBackend())
