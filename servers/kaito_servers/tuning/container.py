"""What the runner adapts to when it runs in a pod: CPU limits, a read-only root file system, SIGTERM.

* **Threads.** torch sizes its thread pool by the CPUs the process may run on, which in a pod
  without the static CPU manager is every core of the node, while the container's CFS quota
  (its CPU limit) lets it use only a few: more threads than that are throttled in turn and
  training slows down. The runner uses ``min(CPUs in the affinity mask, the CPU limit)``
  threads, unless ``KAITO_TUNING_THREADS`` or ``OMP_NUM_THREADS`` says otherwise.
* **Caches.** transformers, huggingface_hub and triton write caches under ``$HOME``; with a
  read-only root file system (the operator's pods) the home directory in the image is not
  writable, so they are pointed at a writable temporary directory instead.
* **SIGTERM.** Python as PID 1 ignores SIGTERM, so deleting a tuning Job would wait for the
  grace period; the runner exits at once (status 143) and an interrupted run later resumes
  from its last checkpoint.

The decisions are pure functions of what was read (:func:`cpu_limit`, :func:`thread_count`,
:func:`cache_env`); :func:`adapt_to_container` applies them.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

THREADS_ENV = "KAITO_TUNING_THREADS"
"""Explicit thread count for torch (wins over everything else)."""
CACHE_VARIABLES = ("HF_HOME", "XDG_CACHE_HOME", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR")
"""Cache locations redirected when ``$HOME`` is not writable (each only when unset)."""


def cpu_limit(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The container's CPU limit in CPUs from its cgroup (v2 ``cpu.max`` or v1 CFS quota); None if unlimited."""
    v2 = cgroup_root / "cpu.max"
    try:
        quota, _, period = v2.read_text(encoding="ascii").strip().partition(" ")
        return None if quota == "max" else int(quota) / int(period or 100000)
    except (OSError, ValueError):
        pass
    for folder in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        try:
            quota_us = int((cgroup_root / folder / "cpu.cfs_quota_us").read_text(encoding="ascii"))
            period_us = int((cgroup_root / folder / "cpu.cfs_period_us").read_text(encoding="ascii"))
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    return None


def thread_count(env: Mapping[str, str], affinity: int, limit: float | None) -> tuple[int, str]:
    """How many torch threads to use and why (for the log)."""
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = env.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value), name
    if limit is not None and limit < affinity:
        return max(1, math.floor(limit)), f"the container's CPU limit ({limit:g} CPUs)"
    return max(1, affinity), "the CPUs this process may run on"


def cache_env(env: Mapping[str, str], home_writable: bool, tmp: str) -> dict[str, str]:
    """Cache variables to set: none when ``$HOME`` is writable, else each unset one under ``tmp``."""
    if home_writable:
        return {}
    base = Path(tmp) / "kaito-cache"
    names = {"HF_HOME": "huggingface", "XDG_CACHE_HOME": "xdg", "TRITON_CACHE_DIR": "triton",
             "TORCHINDUCTOR_CACHE_DIR": "inductor"}
    return {name: str(base / sub) for name, sub in names.items() if not env.get(name)}


def _home_writable() -> bool:
    home = os.environ.get("HOME") or str(Path.home())
    return os.access(home, os.W_OK)


def _terminate(signum: int, frame: FrameType | None) -> None:
    log.warning("SIGTERM: stopping (an interrupted run resumes from its last checkpoint)")
    sys.exit(128 + signum)


def termination_log(message: str) -> None:
    """Write the failure's tail (4000 bytes, what the kubelet keeps) to the container's termination
    log, where the operator reads the failed step's cause; a no-op outside a pod."""
    path = Path(os.environ.get("KAITO_TUNING_TERMINATION_LOG", "/dev/termination-log"))
    if path.exists() or "KAITO_TUNING_TERMINATION_LOG" in os.environ:
        try:
            path.write_text(message[-4000:], encoding="utf-8")
        except OSError:
            pass


def adapt_to_container() -> int:
    """Apply the thread count, cache locations and SIGTERM handler; returns the thread count.

    Runs before torch is imported (``OMP_NUM_THREADS`` is read when its thread pool starts).
    """
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        affinity = os.cpu_count() or 1
    limit = cpu_limit()
    threads, why = thread_count(os.environ, affinity, limit)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    caches = cache_env(os.environ, _home_writable(), tempfile.gettempdir())
    for name, value in caches.items():
        os.environ[name] = value
    if caches:
        log.info("HOME is not writable: caches go to %s", Path(next(iter(caches.values()))).parent,
                 extra={"cache_env": caches})
    if "torch" in sys.modules:  # imported already (tests running in-process): set it directly
        sys.modules["torch"].set_num_threads(threads)
    signal.signal(signal.SIGTERM, _terminate)
    log.info("using %d CPU threads (%s)", threads, why, extra={"threads": threads, "cpu_limit": limit, "affinity": affinity})
    return threads
