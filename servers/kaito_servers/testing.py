"""Tiny real models built offline, for tests and benchmarks (needs the ``transformers`` extra).

:func:`build_tiny_phi3` trains a byte-level BPE tokenizer on local text (Python's standard
library sources) and saves a randomly initialised ``Phi3ForCausalLM`` with a Phi-3 chat template:
a real transformers model folder of a few MB that every code path (tokenizer, chat template,
KV cache, batching, peft) exercises like a full-size one. :func:`build_random_lora` saves a
peft LoRA adapter with random (non-zero) weights for it. :class:`RunningServer` runs a server
app under uvicorn in a thread on a random loopback port.
"""

from __future__ import annotations

import sysconfig
import threading
import time
from pathlib import Path
from typing import Any

PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
DOMAIN_TEXT = [
    "What is Kubernetes? Kubernetes is an open-source system for automating deployment, scaling, and management of containerized applications.",
    "A Pod is the smallest deployable unit of computing that you can create and manage in Kubernetes.",
    "KAITO is an operator that automates AI/ML model inference and tuning workloads in a Kubernetes cluster.",
    "The quick brown fox jumps over the lazy dog. Hello, world! How are you today?",
]


def _corpus(limit_bytes: int = 120_000) -> list[str]:
    lines: list[str] = list(DOMAIN_TEXT) * 20
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    total = 0
    for name in ("json/__init__.py", "json/decoder.py", "json/encoder.py", "textwrap.py", "string.py", "argparse.py"):
        path = stdlib / name
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="ignore")
            lines.extend(text.splitlines())
            total += len(text)
            if total > limit_bytes:
                break
    return lines


def build_tiny_phi3(out: Path, *, vocab_size: int = 2048, seed: int = 0, init_range: float = 0.2) -> Path:
    """Write a tiny random Phi-3 model + tokenizer folder to ``out`` and return it.

    Args:
        out: target folder (created).
        vocab_size: BPE vocabulary size.
        seed: torch seed for the weights (the same seed gives the same model).
        init_range: std of the random weights; larger than the usual 0.02 so that greedy
            choices have clear margins (a model of noise would flip on rounding differences).
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    tok = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe,
        eos_token="<|endoftext|>",
        pad_token="<pad>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
        padding_side="left",
        model_max_length=512,
    )
    tok.chat_template = PHI3_CHAT_TEMPLATE
    eos = [int(tok.convert_tokens_to_ids("<|endoftext|>")), int(tok.convert_tokens_to_ids("<|end|>"))]  # type: ignore[arg-type]
    config = Phi3Config(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        original_max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=eos[0],
        eos_token_id=eos,
        initializer_range=init_range,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Phi3ForCausalLM(config)
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        eos_token_id=eos, pad_token_id=tok.pad_token_id, bos_token_id=eos[0])
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_random_lora(base: Path, out: Path, *, seed: int = 1, r: int = 8, alpha: int = 16,
                      target_modules: tuple[str, ...] = ("qkv_proj", "o_proj")) -> Path:
    """Write a peft LoRA adapter with random, non-zero A and B for the model in ``base``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(target_modules), init_lora_weights=False, lora_dropout=0.0)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(str(out))
    return out


class RunningServer:
    """A kaito server app under uvicorn in a background thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.app = app
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="test-uvicorn", daemon=True)
        self.base_url = ""

    def start(self, timeout: float = 180.0, *, wait_ready: bool = True) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        if wait_ready:
            self.wait_ready(deadline - time.monotonic())
        return self

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        import httpx

        deadline = time.monotonic() + timeout
        while True:
            r = httpx.get(self.base_url + "/health", timeout=5)
            if r.status_code == 200:
                return dict(r.json())
            if r.json().get("status") == "failed":
                raise RuntimeError(f"server failed to load: {r.json()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {timeout:.0f} s: {r.json()}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)




def model_of(server: RunningServer) -> str:
    """The model name a running server serves."""
    import httpx

    return str(httpx.get(server.base_url + "/v1/models").json()["data"][0]["id"])


def build_random_gguf_lora(base_gguf: Path, out: Path, *, seed: int = 1, r: int = 8, alpha: float = 16.0,
                           targets: tuple[str, ...] = ("attn_q", "attn_output"), scale: float = 0.05) -> Path:
    """Write a GGUF LoRA adapter (the format of llama.cpp's convert_lora_to_gguf.py) with random weights.

    For every ``blk.N.<target>.weight`` of the base GGUF it stores ``.lora_a`` (r x in) and
    ``.lora_b`` (out x r) in f32, with ``general.type=adapter``, ``adapter.type=lora`` and
    ``adapter.lora.alpha``, under the base model's architecture.
    """
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(base_gguf))
    arch_field = reader.get_field("general.architecture")
    if arch_field is None:
        raise ValueError(f"{base_gguf} has no general.architecture")
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
    rng = np.random.default_rng(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out), arch=arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for tensor in reader.tensors:
        parts = tensor.name.split(".")
        if len(parts) == 4 and parts[0] == "blk" and parts[2] in targets and parts[3] == "weight":
            n_in, n_out = int(tensor.shape[0]), int(tensor.shape[1])
            writer.add_tensor(tensor.name + ".lora_a", (rng.standard_normal((r, n_in)) * scale).astype(np.float32))
            writer.add_tensor(tensor.name + ".lora_b", (rng.standard_normal((n_out, r)) * scale).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
