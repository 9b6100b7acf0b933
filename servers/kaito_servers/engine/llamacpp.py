"""The llama.cpp engine: GGUF models on CPU through llama-cpp-python's low-level API.

Concurrency is real batching, not a lock around one sequence: the context is created with
``n_seq_max = max_batch_size`` and one KV stream per sequence (``kv_unified = False``), and
every scheduler step packs the next token of each decoding sequence plus a chunk of each new
prompt into one ``llama_batch`` with per-token ``seq_id`` s, then calls ``llama_decode`` once.
Each sequence samples from its own logits row with its own sampler chain (temperature,
top-k/p, min-p, penalties, seed), so requests with different parameters share a batch.

Batched kernels are not bit-identical to single-sequence ones: llama.cpp picks different
matrix-multiplication paths by batch shape (repacked GEMM for groups of 4 rows vs GEMV,
tinyBLAS only for 2+ rows, flash-attention tiling), and the Q8 quantisation of activations
amplifies the rounding differences, so a greedy sequence decoded next to others can diverge
from the same request decoded alone at a near-tie (measured: logits differ by up to ~1 on a
scale of ~20 after one batched prefill). ``deterministic=True`` decodes each sequence in its
own ``llama_decode`` call, still interleaved step by step and with one KV stream per sequence
(``kv_unified=False``, so other sequences never enter its attention): outputs are then
bit-identical to sequential ones, at sequential speed.

LoRA adapters: GGUF LoRA files (``convert_lora_to_gguf.py`` output), several at once, each
with its own scale, via ``llama_set_adapters_lora``. A peft directory without a GGUF file is
rejected with a message that says how to convert it.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaito_servers.chat_template import load_template_text, render_chat_template
from kaito_servers.engine.base import AdapterInfo, BatchingEngine, ByteDetokenizer, Detokenizer, GenSequence, SamplingParams
from kaito_servers.errors import ConfigurationError, InvalidRequestError

log = logging.getLogger(__name__)

DEFAULT_CONTEXT_CAP = 4096
"""Per-sequence context when neither settings nor preset say (the KV cache is allocated up front)."""
PENALTY_LAST_N = 64


_LOG_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
"""ggml_log_level (DEBUG=1, INFO=2, WARN=3, ERROR=4; 5 continues the previous line) to logging."""
_log_callback: Any = None
"""The ctypes callback handed to llama.cpp (kept alive here for the life of the process)."""


def route_llama_logs() -> None:
    """Send llama.cpp's own log lines to the ``llama_cpp`` Python logger (structured like ours)."""
    global _log_callback
    if _log_callback is not None:
        return
    import llama_cpp

    native = logging.getLogger("llama_cpp")
    last = [logging.DEBUG]

    def forward(level: int, text: bytes, _user: Any) -> None:
        lvl = last[0] if level == 5 else _LOG_LEVELS.get(level, logging.DEBUG)
        last[0] = lvl
        if native.isEnabledFor(lvl):
            message = text.decode("utf-8", errors="replace").rstrip()
            if message:
                native.log(lvl, message)

    _log_callback = llama_cpp.llama_log_callback(forward)
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


@dataclass
class _SeqState:
    slot: int
    sampler: Any
    sampler_free: Any
    """Second chain without EOS suppression, used once min_tokens is reached (or None)."""
    prefilled: int = 0
    n_past: int = 0
    last: int = 0


class LlamaCppEngine(BatchingEngine):
    """A GGUF model served with parallel sequences in one llama.cpp context."""

    backend = "llamacpp"

    def __init__(
        self,
        *,
        model_path: str,
        served_name: str,
        max_batch_size: int = 8,
        max_queue: int = 64,
        threads: int = 2,
        context_length: int | None = None,
        chat_template: str | None = None,
        adapters: list[AdapterInfo] | None = None,
        n_batch: int = 512,
        kv_unified: bool = False,
        repack: bool = True,
        flash_attn: int = -1,
        deterministic: bool = False,
        verbose: bool = False,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, max_queue=max_queue)
        import llama_cpp

        route_llama_logs()
        logging.getLogger("llama_cpp").setLevel(logging.DEBUG if verbose else logging.WARNING)
        self._ll = llama_cpp
        self.model_name = served_name
        self.model_path = model_path
        if not Path(model_path).is_file():
            raise ConfigurationError(f"model file {model_path} does not exist")
        llama_cpp.llama_backend_init()
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = 0
        mparams.use_extra_bufts = repack
        model = llama_cpp.llama_model_load_from_file(model_path.encode(), mparams)
        if not model:
            raise ConfigurationError(f"llama.cpp could not load {model_path} (not a GGUF model, or unsupported architecture)")
        self._model = model
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(model))
        per_seq = min(context_length or min(n_ctx_train, DEFAULT_CONTEXT_CAP), n_ctx_train)
        self._n_batch = n_batch
        cparams = llama_cpp.llama_context_default_params()
        self.deterministic = deterministic
        n_seqs = max_batch_size
        cparams.n_ctx = per_seq * n_seqs
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = n_seqs
        cparams.kv_unified = kv_unified
        cparams.flash_attn_type = flash_attn
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not ctx:
            llama_cpp.llama_model_free(model)
            raise ConfigurationError(f"llama.cpp could not create a context of {cparams.n_ctx} tokens for {model_path}")
        self._ctx = ctx
        self._mem = llama_cpp.llama_get_memory(ctx)
        self.context_length = int(llama_cpp.llama_n_ctx_seq(ctx))
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._free_slots = list(range(max_batch_size))
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self._eog = [t for t in range(self._n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)]
        self._adapter_handles: list[Any] = []
        self.adapters = tuple(self._load_adapters(adapters or []))
        template = load_template_text(chat_template) if chat_template else self._gguf_template()
        self.chat_template = template
        self._bos_text = self._special_text(int(llama_cpp.llama_vocab_bos(self._vocab)))
        self._eos_text = self._special_text(int(llama_cpp.llama_vocab_eos(self._vocab)))
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        log.info(
            "llama.cpp model loaded",
            extra={
                "model": model_path,
                "context_per_sequence": self.context_length,
                "parallel_sequences": max_batch_size,
                "threads": threads,
                "adapters": [a.name for a in self.adapters],
            },
        )

    # -- model facts ------------------------------------------------------------------------------

    def _gguf_template(self) -> str | None:
        raw = self._ll.llama_model_chat_template(self._model, None)
        return raw.decode("utf-8") if raw else None

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._piece(token, special=True).decode("utf-8", errors="replace")

    def _piece(self, token: int, *, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._ll.llama_token_to_piece(self._vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._ll.llama_token_to_piece(self._vocab, token, buf, -n, 0, special)
        return bytes(buf.raw[:n])

    def _load_adapters(self, adapters: list[AdapterInfo]) -> list[AdapterInfo]:
        ll = self._ll
        loaded: list[AdapterInfo] = []
        for adapter in adapters:
            handle = ll.llama_adapter_lora_init(self._model, adapter.path.encode())
            if not handle:
                raise ConfigurationError(
                    f"adapter {adapter.name}: llama.cpp could not load {adapter.path} as a LoRA adapter for this model "
                    "(it must be a GGUF LoRA made for the same base model, e.g. by convert_lora_to_gguf.py)"
                )
            self._adapter_handles.append(handle)
            loaded.append(adapter)
        if loaded:
            arr = (ll.llama_adapter_lora_p_ctypes * len(loaded))(*self._adapter_handles)
            scales = (ctypes.c_float * len(loaded))(*[a.strength for a in loaded])
            rc = ll.llama_set_adapters_lora(self._ctx, arr, len(loaded), scales)
            if rc != 0:
                raise ConfigurationError(f"llama.cpp refused the LoRA adapters (llama_set_adapters_lora returned {rc})")
        return loaded

    # -- Engine ---------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (self._ll.llama_token * cap)()
        n = self._ll.llama_tokenize(self._vocab, data, len(data), buf, cap, add_special and self._add_bos, True)
        if n < 0:
            cap = -n
            buf = (self._ll.llama_token * cap)()
            n = self._ll.llama_tokenize(self._vocab, data, len(data), buf, cap, add_special and self._add_bos, True)
        return list(buf[:n])

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        if not self.chat_template:
            raise InvalidRequestError(
                f"model {self.model_name} has no chat template (the GGUF carries none): use /v1/completions or "
                "/chat with a prompt, or start the server with --chat-template",
                param="messages",
            )
        return render_chat_template(self.chat_template, messages, bos_token=self._bos_text, eos_token=self._eos_text)

    def close(self) -> None:
        super().close()
        ll = self._ll
        if getattr(self, "_batch", None) is not None:
            ll.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "_ctx", None):
            ll.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            ll.llama_model_free(self._model)
            self._model = None

    # -- BatchingEngine hooks -------------------------------------------------------------------

    def _output_piece(self, token: int) -> bytes:
        """A generated token's bytes; special markers such as ``<start_of_image>`` give none.

        llama.cpp renders user-defined special tokens even with special=False, while
        transformers' decode(skip_special_tokens=True) hides them; match transformers.
        """
        piece = self._piece(token)
        if piece.startswith(b"<") and piece.endswith(b">") and len(piece) > 2:
            attr = int(self._ll.llama_vocab_get_attr(self._vocab, token))
            if attr & (self._ll.LLAMA_TOKEN_ATTR_USER_DEFINED | self._ll.LLAMA_TOKEN_ATTR_CONTROL):
                return b""
        return piece

    def _new_detokenizer(self) -> Detokenizer:
        return ByteDetokenizer(self._output_piece)

    def _is_eos(self, token: int) -> bool:
        return bool(self._ll.llama_vocab_is_eog(self._vocab, token))

    def _can_admit(self, seq: GenSequence, running: list[GenSequence], joining: list[GenSequence]) -> bool:
        return len(joining) < len(self._free_slots)

    def _make_sampler(self, params: SamplingParams, prompt: list[int], *, suppress_eog: bool) -> Any:
        ll = self._ll
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        if suppress_eog and self._eog:
            biases = (ll.llama_logit_bias * len(self._eog))()
            for i, tok in enumerate(self._eog):
                biases[i].token = tok
                biases[i].bias = float("-inf")
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_logit_bias(self._n_vocab, len(self._eog), biases))
        penalised = params.repetition_penalty != 1.0 or params.frequency_penalty or params.presence_penalty
        if penalised:
            ll.llama_sampler_chain_add(
                chain,
                ll.llama_sampler_init_penalties(
                    self._n_vocab,
                    PENALTY_LAST_N, params.repetition_penalty, params.frequency_penalty, params.presence_penalty
                ),
            )
        if params.greedy:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
        else:
            if params.top_k > 0:
                ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_k(params.top_k))
            if params.typical_p < 1.0:
                ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_typical(params.typical_p, 1))
            if params.top_p < 1.0:
                ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(params.top_p, 1))
            if params.min_p > 0.0:
                ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_min_p(params.min_p, 1))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(params.temperature))
            seed = params.seed if params.seed is not None else ll.LLAMA_DEFAULT_SEED
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        if penalised:
            for tok in prompt[-PENALTY_LAST_N:]:
                ll.llama_sampler_accept(chain, tok)
        return chain

    def _admit(self, seq: GenSequence) -> None:
        slot = self._free_slots.pop(0)
        self._ll.llama_memory_seq_rm(self._mem, slot, -1, -1)
        params = seq.params
        suppress = params.min_tokens > 0 and not params.ignore_eos
        sampler = self._make_sampler(params, seq.prompt, suppress_eog=suppress)
        free = self._make_sampler(params, seq.prompt, suppress_eog=False) if suppress else None
        seq.state = _SeqState(slot=slot, sampler=sampler, sampler_free=free)

    def _release(self, seq: GenSequence) -> None:
        state: _SeqState | None = seq.state
        if state is None:
            return
        seq.state = None
        self._ll.llama_memory_seq_rm(self._mem, state.slot, -1, -1)
        self._ll.llama_sampler_free(state.sampler)
        if state.sampler_free is not None:
            self._ll.llama_sampler_free(state.sampler_free)
        self._free_slots.append(state.slot)
        self._free_slots.sort()

    def _step(self, active: list[GenSequence]) -> list[tuple[GenSequence, int]]:
        if self.deterministic:
            produced: list[tuple[GenSequence, int]] = []
            for seq in active:
                produced += self._decode_and_sample([seq])
            return produced
        return self._decode_and_sample(active)

    def _decode_and_sample(self, seqs: list[GenSequence]) -> list[tuple[GenSequence, int]]:
        """One llama_decode over ``seqs`` (decode tokens first, then prompt chunks); sample each."""
        ll = self._ll
        batch = self._batch
        n = 0
        outputs: list[tuple[GenSequence, int]] = []

        def add(token: int, pos: int, slot: int, logits: bool) -> None:
            nonlocal n
            batch.token[n] = token
            batch.pos[n] = pos
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = slot
            batch.logits[n] = logits
            n += 1

        # Decoding sequences first: one token each, so a long prompt never starves them.
        for seq in seqs:
            st: _SeqState = seq.state
            if st.prefilled == len(seq.prompt):
                add(st.last, st.n_past, st.slot, True)
                st.n_past += 1
                outputs.append((seq, n - 1))
        budget = self._n_batch - n
        for seq in seqs:
            st = seq.state
            if st.prefilled < len(seq.prompt) and budget > 0:
                chunk = seq.prompt[st.prefilled : st.prefilled + budget]
                for i, tok in enumerate(chunk):
                    add(tok, st.n_past + i, st.slot, st.prefilled + i == len(seq.prompt) - 1)
                st.prefilled += len(chunk)
                st.n_past += len(chunk)
                budget -= len(chunk)
                if st.prefilled == len(seq.prompt):
                    outputs.append((seq, n - 1))
        if n == 0:
            return []
        batch.n_tokens = n
        rc = ll.llama_decode(self._ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc} for a batch of {n} tokens over {len(seqs)} sequences")
        produced: list[tuple[GenSequence, int]] = []
        for seq, idx in outputs:
            st = seq.state
            sampler = st.sampler
            if st.sampler_free is not None and len(seq.generated) >= seq.params.min_tokens:
                sampler = st.sampler_free
            token = int(ll.llama_sampler_sample(sampler, self._ctx, idx))
            st.last = token
            produced.append((seq, token))
        return produced
