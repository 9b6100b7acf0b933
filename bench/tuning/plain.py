"""The baseline: the same LoRA/QLoRA training with plain transformers + peft, no runner.

Same data (the parquet's ``messages`` rendered with the tokenizer's chat template), same
LoRA (r, alpha, targets), same Trainer arguments, same dtype rules (float32 on CPU). Prints one
JSON line: steps, wall and CPU seconds inside ``trainer.train()``, input tokens.

    python bench/tuning/plain.py --model DIR --data FILE.parquet --method lora|qlora --steps N --batch B
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import pyarrow.parquet as pq
import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainingArguments,
)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--method", choices=["lora", "qlora"], required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj")
    a = p.parse_args()

    tok = AutoTokenizer.from_pretrained(a.model, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    kwargs = {}
    if a.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=torch.float32, bnb_4bit_use_double_quant=True)
    model = AutoModelForCausalLM.from_pretrained(a.model, local_files_only=True, dtype=torch.float32, device_map="cpu", **kwargs)
    model.config.use_cache = False
    if a.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    rows = pq.read_table(a.data).to_pylist()
    texts = [tok.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    features = []
    for text in texts:
        ids = tok(text, add_special_tokens=False, truncation=True, max_length=1024)["input_ids"]
        features.append({"input_ids": ids, "attention_mask": [1] * len(ids)})
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=8, lora_dropout=0.0, target_modules=a.targets.split(","),
                                             task_type="CAUSAL_LM"))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, max_steps=a.steps, per_device_train_batch_size=a.batch, learning_rate=2e-4,
                                 save_strategy="no", logging_steps=1, report_to="none", disable_tqdm=True, use_cpu=True,
                                 include_num_input_tokens_seen="non_padding", remove_unused_columns=False, seed=0)
        trainer = Trainer(model=model, args=args, train_dataset=features, data_collator=DataCollatorForLanguageModeling(tok, mlm=False))
        start, cpu_start = time.monotonic(), time.process_time()
        trainer.train()
        seconds, cpu_seconds = time.monotonic() - start, time.process_time() - cpu_start
    print(json.dumps({"step": trainer.state.global_step, "seconds": seconds, "cpu_seconds": cpu_seconds,
                      "input_tokens": trainer.state.num_input_tokens_seen}))


if __name__ == "__main__":
    main()
