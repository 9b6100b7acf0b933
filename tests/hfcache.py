"""A Hugging Face hub cache for tests, in huggingface_hub's own layout
(``models--org--name/{refs/main, snapshots/<sha>/...}``), filled from the local model fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

LLAMA_FIXTURE = Path(__file__).parent / "fixtures" / "hf_models" / "llama-3.1-8b-instruct"
"""config.json, the safetensors index and the (gated) model card of meta-llama/Llama-3.1-8B-Instruct."""
OPEN_ID = "example-org/Open-Llama-8B"
"""A model id no plugin knows (its preset can only be generated); its card is not gated."""
GATED_ID = "meta-llama/Llama-3.1-8B-Instruct"
"""The fixture with its card: gated (extra_gated_* fields)."""
SNAPSHOT = "0e9e39f249a16976918f6564b8830bc894c89659"


def write_hf_cache(root: Path) -> Path:
    """A cache under ``root`` holding OPEN_ID (the llama files without the card) and GATED_ID."""
    for repo_id, with_card in ((OPEN_ID, False), (GATED_ID, True)):
        repo = root / ("models--" + repo_id.replace("/", "--"))
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(SNAPSHOT)
        shutil.copytree(LLAMA_FIXTURE, repo / "snapshots" / SNAPSHOT)
        if not with_card:
            (repo / "snapshots" / SNAPSHOT / "README.md").unlink()
    return root
