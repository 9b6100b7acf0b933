"""Helpers of the real-node tuning tests: the dolly-shaped data (and bad variants) served over HTTP
on the node bridge address, where pods reach it, and the short training config they use."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kaito_localcluster.nodeconfig import BRIDGE_IP
from kaito_servers.tuning.sample_data import QA, SYSTEM, dolly_rows, write_parquet

ROWS = 256
"""A few hundred rows, as the issue asks (only a few steps' worth are trained on)."""
STEPS = 4
"""Optimizer steps per run: enough for the adapter to move the greedy answer, short on 1 CPU."""


def training_config(method: str, *, steps: int = STEPS) -> str:
    """training_config.yaml: few steps, a high constant learning rate, short sequences."""
    quant = ("{load_in_4bit: true, bnb_4bit_quant_type: nf4, bnb_4bit_compute_dtype: bfloat16, "
             "bnb_4bit_use_double_quant: true}" if method == "qlora" else "{load_in_4bit: false}")
    return f"""training_config:
  ModelConfig: {{torch_dtype: bfloat16, local_files_only: true}}
  QuantizationConfig: {quant}
  LoraConfig: {{r: 8, lora_alpha: 16, lora_dropout: 0.0, target_modules: [q_proj, k_proj, v_proj, o_proj]}}
  TrainingArguments:
    max_steps: {steps}
    learning_rate: 0.005
    lr_scheduler_type: constant
    per_device_train_batch_size: 2
    max_seq_length: 64
    save_strategy: "no"
    seed: 0
  DataCollator: {{mlm: false}}
  DatasetConfig: {{shuffle_dataset: true, train_test_split: 1}}
"""


TRAINING_PROMPT = QA[0][0]
"""A question of the training data (its answer is what the adapter learns)."""
__all__ = ["QA", "SYSTEM", "TRAINING_PROMPT", "DataServer", "data_server", "training_config"]


@dataclass
class DataServer:
    """Files served on ``http://<bridge IP>:<port>/<name>`` with chosen content types."""

    port: int
    files: dict[str, tuple[str, bytes]]

    def url(self, name: str) -> str:
        return f"http://{BRIDGE_IP}:{self.port}/{name}"

    @property
    def requests(self) -> list[str]:
        return _REQUESTS.setdefault(self.port, [])


_REQUESTS: dict[int, list[str]] = {}


def _data_files(work: Path) -> dict[str, tuple[str, bytes]]:
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    parquet = "application/vnd.apache.parquet"
    good = write_parquet(dolly_rows(ROWS), work / "dolly.parquet").read_bytes()
    no_messages = work / "no-messages.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": q, "reply": a} for q, a in QA * 8]), no_messages)
    empty = work / "empty.parquet"
    pq.write_table(pa.Table.from_pylist(dolly_rows(1)).slice(0, 0), empty)
    html = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Sign in to download</body></html>"
    return {
        "dolly-15k-oai-style.parquet": (parquet, good),
        "sign-in.parquet": ("text/html; charset=utf-8", html),
        "no-messages.parquet": (parquet, no_messages.read_bytes()),
        "empty.parquet": (parquet, empty.read_bytes()),
    }


@contextmanager
def data_server(work: Path) -> Iterator[DataServer]:
    """Serve the good parquet and the bad variants on the node bridge (only while a real node runs)."""
    files = _data_files(work)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            _REQUESTS.setdefault(self.server.server_address[1], []).append(self.path)
            found = files.get(self.path.lstrip("/"))
            if found is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", found[0])
            self.send_header("Content-Length", str(len(found[1])))
            self.end_headers()
            self.wfile.write(found[1])

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
            pass

    server = http.server.ThreadingHTTPServer((BRIDGE_IP, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="tuning-data", daemon=True)
    thread.start()
    try:
        yield DataServer(server.server_address[1], files)
    finally:
        server.shutdown()
        server.server_close()
