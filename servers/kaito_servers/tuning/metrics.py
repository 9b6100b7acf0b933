"""Training progress: step, loss, tokens/s and ETA, for the log and as Prometheus metrics.

:class:`Progress` is pure arithmetic over (step, tokens seen, clock) samples. :class:`TuningMetrics`
holds the gauges in a registry of its own and exposes them on an HTTP port
(``--metrics-port``, what a Job's pod is scraped on) and/or a textfile (``--metrics-file``, for
node-exporter's textfile collector or a sidecar), rewritten atomically at every update.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile


@dataclass
class Snapshot:
    """One progress report."""

    step: int
    max_steps: int
    loss: float | None
    tokens_per_s: float
    steps_per_s: float
    eta_s: float | None
    tokens: int
    elapsed_s: float

    def line(self) -> str:
        """A human-readable log line."""
        loss = f"{self.loss:.4f}" if self.loss is not None else "-"
        eta = f"{self.eta_s:.0f}s" if self.eta_s is not None else "-"
        return (f"step {self.step}/{self.max_steps} loss {loss} {self.tokens_per_s:.0f} tokens/s "
                f"{self.steps_per_s:.2f} steps/s ETA {eta}")


@dataclass
class Progress:
    """Rates since this process started (a resumed run counts from its first step here)."""

    max_steps: int
    clock: Callable[[], float] = time.monotonic
    _start: tuple[float, int, int] | None = field(default=None, init=False)
    _last_loss: float | None = field(default=None, init=False)

    def update(self, step: int, tokens: int, loss: float | None = None) -> Snapshot:
        """Record that ``step`` is done with ``tokens`` input tokens seen in total."""
        now = self.clock()
        if loss is not None:
            self._last_loss = loss
        if self._start is None:
            self._start = (now, step, tokens)
            return Snapshot(step, self.max_steps, self._last_loss, 0.0, 0.0, None, tokens, 0.0)
        t0, s0, k0 = self._start
        elapsed = max(now - t0, 1e-9)
        steps_per_s = (step - s0) / elapsed
        eta = (self.max_steps - step) / steps_per_s if steps_per_s > 0 else None
        return Snapshot(step, self.max_steps, self._last_loss, (tokens - k0) / elapsed, steps_per_s, eta, tokens, elapsed)

    def started_at(self, step: int, tokens: int) -> None:
        """Anchor the rates at ``step`` (the step a run starts or resumes from)."""
        self._start = (self.clock(), step, tokens)


class TuningMetrics:
    """The runner's Prometheus gauges (own registry), served on a port and/or written to a file."""

    def __init__(self, *, method: str, textfile: Path | None = None) -> None:
        self.registry = r = CollectorRegistry()
        self.textfile = textfile
        labels = {"method": method}
        self.info = Gauge("kaito_tuning_info", "Always 1; labels describe the run.", ["method"], registry=r)
        self.info.labels(**labels).set(1)
        self.step = Gauge("kaito_tuning_step", "Optimizer steps done.", registry=r)
        self.max_steps = Gauge("kaito_tuning_max_steps", "Optimizer steps the run will take.", registry=r)
        self.loss = Gauge("kaito_tuning_loss", "Training loss at the last logged step.", registry=r)
        self.tokens_per_s = Gauge("kaito_tuning_tokens_per_second", "Input tokens trained per second.", registry=r)
        self.steps_per_s = Gauge("kaito_tuning_steps_per_second", "Optimizer steps per second.", registry=r)
        self.eta = Gauge("kaito_tuning_eta_seconds", "Estimated seconds until the last step.", registry=r)
        self.tokens = Gauge("kaito_tuning_input_tokens", "Input tokens seen in total (survives a resume).", registry=r)
        self.checkpoints = Counter("kaito_tuning_checkpoints", "Checkpoints saved by this process.", registry=r)
        self.phase = Gauge("kaito_tuning_phase", "1 for the current phase of the run.", ["phase"], registry=r)
        self.resumed_from = Gauge("kaito_tuning_resumed_from_step", "Step the run resumed from (0: fresh start).", registry=r)
        self._server: Any = None

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Expose the metrics on ``http://host:port/metrics``; returns the bound port (0 picks one)."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def stop(self) -> None:
        """Stop the HTTP endpoint if it runs."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def set_phase(self, phase: str) -> None:
        """Mark the run's phase (loading, training, saving, done, failed)."""
        for name in ("loading", "training", "saving", "done", "failed"):
            self.phase.labels(phase=name).set(1 if name == phase else 0)
        self.flush()

    def record(self, snap: Snapshot) -> None:
        """Publish one progress snapshot."""
        self.step.set(snap.step)
        self.max_steps.set(snap.max_steps)
        if snap.loss is not None:
            self.loss.set(snap.loss)
        self.tokens_per_s.set(snap.tokens_per_s)
        self.steps_per_s.set(snap.steps_per_s)
        self.tokens.set(snap.tokens)
        if snap.eta_s is not None:
            self.eta.set(snap.eta_s)
        self.flush()

    def flush(self) -> None:
        """Rewrite the textfile (atomically), when one is configured."""
        if self.textfile is not None:
            self.textfile.parent.mkdir(parents=True, exist_ok=True)
            write_to_textfile(str(self.textfile), self.registry)
