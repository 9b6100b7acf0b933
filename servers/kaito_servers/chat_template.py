"""Rendering Jinja chat templates (the Hugging Face convention) safely, without transformers.

The llama.cpp engine uses this for GGUF files that carry ``tokenizer.chat_template`` and for
presets that supply one (the Gemma 3 base GGUF has none). Templates run in Jinja's immutable
sandbox; ``raise_exception(...)`` inside a template becomes a 400 for the client.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from kaito_servers.errors import InvalidRequestError


class TemplateRejected(InvalidRequestError):
    """The chat template refused the messages (e.g. roles do not alternate)."""


def load_template_text(value: str) -> str:
    """``value`` itself, or the contents of the file it names."""
    if "{" not in value and len(value) < 4096:
        path = Path(value)
        if path.is_file():
            return path.read_text(encoding="utf-8")
    return value


@lru_cache(maxsize=8)
def _compile(template: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])

    def raise_exception(message: str) -> None:
        raise TemplateRejected(f"the chat template rejected the messages: {message}", param="messages")

    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def render_chat_template(
    template: str,
    messages: list[dict[str, str]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
) -> str:
    """Render ``messages`` with ``template``; template errors become :class:`InvalidRequestError`."""
    from jinja2 import TemplateError

    try:
        compiled = _compile(template)
        return str(
            compiled.render(
                messages=messages,
                bos_token=bos_token,
                eos_token=eos_token,
                add_generation_prompt=add_generation_prompt,
            )
        )
    except InvalidRequestError:
        raise
    except TemplateError as exc:
        raise InvalidRequestError(f"the chat template could not render these messages: {exc}", param="messages") from exc
