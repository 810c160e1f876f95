"""What both benchmarks share: timing, peak memory, one measurement per process, and the machine
and commit a report names."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
import timeit
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch


def timings(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None,
            warmup: int = 0, warmup_s: float = 0.0) -> List[float]:
    """Seconds of ``repeats`` calls of ``fn``+``sync()``, after ≥ ``warmup`` and ``warmup_s`` s."""
    end = time.perf_counter() + warmup_s
    while warmup > 0 or time.perf_counter() < end:
        fn(), sync()
        warmup -= 1
    return timeit.repeat(lambda: (fn(), sync()), number=1, repeat=repeats)


def _proc_status_bytes(field: str) -> Optional[int]:
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


class PeakMemory:
    """Peak memory since :meth:`reset`, bytes: the process's resident set on CPU (Linux
    ``VmHWM``, ``ru_maxrss`` elsewhere), ``torch.cuda.max_memory_allocated`` on CUDA."""

    def __init__(self, device: str = "cpu"):
        self.cuda = device == "cuda"
        torch.randn(64, 64) @ torch.randn(64, 64)          # load the BLAS before the baseline
        self.base = self.reset()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def reset(self) -> int:
        """Restart the peak at the memory in use now, and return that."""
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.memory_allocated()
        with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
            f.write("5")                                    # Linux: reset VmHWM to VmRSS
        return _proc_status_bytes("VmRSS") or self.peak()

    def peak(self) -> int:
        self.sync()
        if self.cuda:
            return torch.cuda.max_memory_allocated()
        return _proc_status_bytes("VmHWM") or resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def run_in_child(args: Sequence[str], timeout: Optional[float]) -> Dict:
    """``python -m *args`` in a fresh process (so its peak memory is its own): the JSON object of
    its last output line, or ``{"error": …}`` when it fails or times out."""
    try:
        proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    if proc.returncode != 0:
        tail = ((proc.stderr or proc.stdout).strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:120]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine_description(threads: Optional[int] = None) -> str:
    """CPU model, core count, torch version and threads, Python version."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    return (f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({threads or torch.get_num_threads()} threads), Python {platform.python_version()}")


def git_commit() -> str:
    """Short commit of the working tree (``+ uncommitted changes`` when tracked files differ)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True, check=True).stdout.strip()
    try:
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
