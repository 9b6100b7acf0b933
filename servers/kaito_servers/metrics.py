"""Prometheus metrics of one server instance (its own registry: no module-level globals)."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
RATE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
THROUGHPUT_WINDOW_S = 10.0


class ServerMetrics:
    """Request, error, latency, TTFT, token, throughput, queue and adapter metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("kaito_server_requests", "HTTP requests by endpoint and status code.", ["endpoint", "status"], registry=r)
        self.errors = Counter("kaito_server_request_errors", "Requests answered with an error, by endpoint and error type.", ["endpoint", "type"], registry=r)
        self.latency = Histogram("kaito_server_request_duration_seconds", "Time from request to last byte of a generation.", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("kaito_server_time_to_first_token_seconds", "Time from request to the first generated token.", ["endpoint"], buckets=TTFT_BUCKETS, registry=r)
        self.prompt_tokens = Counter("kaito_server_prompt_tokens", "Prompt tokens processed.", registry=r)
        self.generated_tokens = Counter("kaito_server_generated_tokens", "Tokens generated.", registry=r)
        self.request_rate = Histogram("kaito_server_request_tokens_per_second", "Per-request decode speed (tokens after the first / time after the first).", buckets=RATE_BUCKETS, registry=r)
        self.finished = Counter("kaito_server_generations_finished", "Generations by finish reason (stop, length, cancelled).", ["reason"], registry=r)
        self.rejected = Counter("kaito_server_requests_rejected", "Requests refused with 429 because the queue was full.", registry=r)
        self.throughput = Gauge("kaito_server_generation_tokens_per_second", f"Tokens generated per second over the last {int(THROUGHPUT_WINDOW_S)} s, all requests together.", registry=r)
        self.queue_depth = Gauge("kaito_server_queue_depth", "Requests waiting for a batch slot.", registry=r)
        self.running = Gauge("kaito_server_running_sequences", "Sequences being generated.", registry=r)
        self.steps = Gauge("kaito_server_engine_steps", "Batched forward steps the engine has run (monotonic).", registry=r)
        self.sequence_steps = Gauge("kaito_server_engine_sequence_steps", "Sum of sequences advanced per step (divide by steps for the mean batch size).", registry=r)
        self.adapters = Gauge("kaito_server_adapter_strength", "Loaded LoRA adapters and their strengths.", ["adapter"], registry=r)
        self.adapters_loaded = Gauge("kaito_server_adapters_loaded", "Number of loaded LoRA adapters.", registry=r)
        self.ready = Gauge("kaito_server_ready", "1 when the model is loaded and requests are served.", registry=r)
        self._window: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()
        self.throughput.set_function(self._throughput)

    def bind_engine(self, engine: Any) -> None:
        """Read queue depth, running sequences and step counts from the engine at scrape time."""
        self.queue_depth.set_function(lambda: float(engine.queue_depth))
        self.running.set_function(lambda: float(engine.running))
        self.steps.set_function(lambda: float(engine.steps_run))
        self.sequence_steps.set_function(lambda: float(engine.sequences_stepped))

    def record_tokens(self, n: int) -> None:
        """Count ``n`` freshly generated tokens (for totals and the throughput window)."""
        if n <= 0:
            return
        self.generated_tokens.inc(n)
        with self._lock:
            self._window.append((time.monotonic(), n))

    def _throughput(self) -> float:
        cutoff = time.monotonic() - THROUGHPUT_WINDOW_S
        with self._lock:
            while self._window and self._window[0][0] < cutoff:
                self._window.popleft()
            return sum(n for _, n in self._window) / THROUGHPUT_WINDOW_S
