"""Which package provides a preset that is not installed: for error messages only.

Upstream KAITO's legacy preset names are a closed list (``LegacyBuiltinToCatalog``, "please
don't introduce new entries", plus the Falcon names it dropped), so they are a table here that
no plugin has to edit: a new family is one new package whose own entry point registers its
names. Hugging Face ids (``org/model``) are provided by the generic ``kaito-huggingface``
plugin. The registry never imports or trusts these names; it only prints them.
"""

from __future__ import annotations

from collections.abc import Mapping

HUGGINGFACE_PACKAGE = "kaito-huggingface"
"""Generates presets for ``inference.preset.name: <org>/<model>`` from the model's config."""

_FAMILIES: Mapping[str, tuple[str, ...]] = {
    "kaito-phi3": (
        "phi-3-mini-4k-instruct",
        "phi-3-mini-128k-instruct",
        "phi-3-medium-4k-instruct",
        "phi-3-medium-128k-instruct",
        "phi-3.5-mini-instruct",
        "phi-4",
        "phi-4-mini-instruct",
    ),
    "kaito-llama": ("llama-3.1-8b-instruct", "llama-3.3-70b-instruct"),
    "kaito-mistral": (
        "mistral-7b",
        "mistral-7b-instruct",
        "ministral-3-3b-instruct",
        "ministral-3-8b-instruct",
        "ministral-3-14b-instruct",
        "mistral-large-3-675b-instruct",
    ),
    "kaito-qwen": ("qwen2.5-coder-7b-instruct", "qwen2.5-coder-32b-instruct"),
    "kaito-deepseek": ("deepseek-r1-distill-llama-8b", "deepseek-r1-distill-qwen-14b", "deepseek-r1-0528", "deepseek-v3-0324"),
    "kaito-gemma3": ("gemma-3-270m", "gemma-3-4b-instruct", "gemma-3-27b-instruct"),
    "kaito-gptoss": ("gpt-oss-20b", "gpt-oss-120b"),
    "kaito-falcon": ("falcon-7b", "falcon-7b-instruct", "falcon-40b", "falcon-40b-instruct"),
}

KNOWN_PRESET_PACKAGES: Mapping[str, str] = {name: dist for dist, names in _FAMILIES.items() for name in names}
"""Every first-party preset name -> the distribution that registers it."""

FAMILY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("phi-", "kaito-phi3"),
    ("llama-", "kaito-llama"),
    ("mistral-", "kaito-mistral"),
    ("ministral-", "kaito-mistral"),
    ("qwen", "kaito-qwen"),
    ("deepseek-", "kaito-deepseek"),
    ("gemma-3", "kaito-gemma3"),
    ("gemma3", "kaito-gemma3"),
    ("gpt-oss-", "kaito-gptoss"),
    ("falcon-", "kaito-falcon"),
)
"""For names that are not first-party presets (a typo, a newer size): the family's package."""


def package_for_preset(name: str) -> str | None:
    """The distribution to ``pip install`` for preset ``name``, or None when unknown.

    Exact first-party names first (case-insensitive, as upstream lower-cases preset names),
    then ``org/model`` ids (the Hugging Face plugin), then family name prefixes.
    """
    lowered = name.strip().lower()
    if lowered in KNOWN_PRESET_PACKAGES:
        return KNOWN_PRESET_PACKAGES[lowered]
    org, sep, model = lowered.partition("/")
    if sep and org and model:
        return HUGGINGFACE_PACKAGE
    return next((dist for prefix, dist in FAMILY_PREFIXES if lowered.startswith(prefix)), None)


def install_line(name: str) -> str | None:
    """The exact command that installs the package providing preset ``name`` (None when unknown)."""
    dist = package_for_preset(name)
    return f"pip install {dist}" if dist else None
