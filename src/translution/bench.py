"""Operation benchmark: forward+backward time and peak memory of one attention layer.

Compares, side by side and one configuration per process (so peak memory is the process's own):

* ``paper``: the gathered-weight algorithm of the paper's code (every pair's weight gathered into
  an ``N×N×C×C'`` tensor and broadcast against the batch) — kept here as the baseline only;
* ``fast``: :class:`translution.Translution` on the default (grouped) backend;
* ``alpha``: :class:`translution.AlphaTranslution` (rank ``r``);
* ``sdpa``: standard attention (:class:`translution.SelfAttention`, ``scaled_dot_product_attention``).

Also measures the machine's dense fp32 matmul rate, so the fast path's projection throughput can be
reported as a fraction of it. Used by ``translution bench op`` and ``benchmarks/bench_op.py``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch

IMPLS = ("paper", "fast", "alpha", "sdpa")


@dataclass
class Case:
    """One benchmark configuration."""

    layout: str                 # "grid:H,W:cls" or "causal:L"
    dim: int
    heads: int
    dim_head: int = 64
    batch: int = 8
    rank: int = 8

    def build_layout(self):
        from .layouts import Grid, Sequence
        kind, size, *opt = self.layout.split(":")
        if kind == "grid":
            return Grid(*map(int, size.split(",")), cls_token="cls" in opt)
        if kind == "causal":
            return Sequence(int(size), causal=True)
        raise ValueError(f"unknown benchmark layout {self.layout!r}")

    @property
    def label(self) -> str:
        kind, size, *opt = self.layout.split(":")
        if kind == "grid":
            return size.replace(",", "×") + ("+cls" if opt else "")
        return f"causal L={size}"


def paper_gathered_translution(x, wq, wk, wv, layout, heads):
    """The paper code's algorithm (benchmark baseline only): gather ``W[slot(i, j)]`` for every
    pair and broadcast-multiply, materialising ``B×N×N×C×C'`` products and ``B×N×N×C'`` pairs."""
    index = layout.slot_index()
    q = (x[:, :, None, None, :] @ wq[index]).squeeze(-2)                  # (B, N, N, C')
    k = (x[:, None, :, None, :] @ wk[index.t()]).squeeze(-2)
    v = (x[:, None, :, None, :] @ wv[index]).squeeze(-2)
    b, n = x.shape[:2]
    a = (q * k).view(b, n, n, heads, -1).sum(-1) * (q.shape[-1] // heads) ** -0.5
    if layout.causal:
        a = a.masked_fill(~layout.allowed()[None, :, :, None], float("-inf"))
    a = a.softmax(dim=2)
    return torch.einsum("bijh,bijhd->bihd", a, v.view(b, n, n, heads, -1)).flatten(-2)


def paper_memory_estimate(case: Case) -> float:
    """Bytes the paper's algorithm needs (≈ 16·B·N²·C·C', measured on this machine kind)."""
    n = case.build_layout().num_tokens
    return 16.0 * case.batch * n * n * case.dim * case.heads * case.dim_head


def useful_projection_flops(case: Case, impl: str) -> float:
    """FLOPs of the relative projections in forward (×1) and backward (×2), no recompute:
    ``3 · 2·B·P·C·C'`` per relative projection (P = attended pairs)."""
    layout = case.build_layout()
    inner = case.heads * case.dim_head
    if impl == "alpha":
        width = case.heads * case.rank
        return 3 * 3 * 2.0 * case.batch * layout.num_pairs * width * width
    return 3 * 3 * 2.0 * case.batch * layout.num_pairs * case.dim * inner


def matmul_rate(sizes=(1024, 2048, 4096), repeats: int = 5) -> float:
    """Dense fp32 matmul GFLOP/s of this machine: the best rate over square ``sizes``, each the
    best of ``repeats`` after a warm-up."""
    best_rate = 0.0
    for size in sizes:
        a, b = torch.randn(size, size), torch.randn(size, size)
        a @ b
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
        best_rate = max(best_rate, 2.0 * size ** 3 / best / 1e9)
    return best_rate


def _status_bytes(field_name: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS counter (Linux) and return the current RSS in bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    current = _status_bytes("VmRSS")
    return current if current is not None else _peak_rss_bytes()


def _peak_rss_bytes() -> int:
    """Peak resident memory of this process since the last reset (``VmHWM``; ru_maxrss elsewhere)."""
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def run_one(case: Case, impl: str, repeats: int = 3, warmup: int = 1) -> Dict:
    """Time forward+backward of one layer in this process.

    Returns seconds (best of ``repeats``), ``peak_rss`` (peak resident bytes of the process while
    the layer is built and run) and ``base_rss`` (resident bytes just before: torch itself)."""
    from .layers import AlphaTranslution, SelfAttention, Translution
    torch.manual_seed(0)
    layout = case.build_layout()
    torch.randn(64, 64) @ torch.randn(64, 64)          # load the BLAS before the baseline
    base_rss = _reset_peak_rss()
    if impl == "sdpa":
        layer = SelfAttention(case.dim, layout, case.heads, case.dim_head)
    elif impl == "alpha":
        layer = AlphaTranslution(case.dim, layout, case.heads, case.dim_head, rank=case.rank)
    else:
        layer = Translution(case.dim, layout, case.heads, case.dim_head)
    x = torch.randn(case.batch, layout.num_tokens, case.dim, requires_grad=True)

    def step():
        if impl == "paper":
            y = layer.out(paper_gathered_translution(x, layer.wq, layer.wk, layer.wv, layout,
                                                     case.heads))
        else:
            y = layer(x)
        y.sum().backward()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {"seconds": min(times), "times": times, "peak_rss": _peak_rss_bytes(),
            "base_rss": base_rss}


def measure(case: Case, impl: str, repeats: int = 3, memory_limit: float = 14e9,
            timeout: float = 900) -> Dict:
    """Run :func:`run_one` in a fresh process (so peak memory is this case's alone)."""
    if impl == "paper" and paper_memory_estimate(case) > memory_limit:
        return {"skipped": f"needs ≈{paper_memory_estimate(case) / 1e9:.0f} GB"}
    payload = json.dumps({"case": asdict(case), "impl": impl, "repeats": repeats})
    cmd = [sys.executable, "-m", "translution.bench", payload]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"skipped": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"skipped": f"failed: {tail[0][:120]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def default_cases(quick: bool = False) -> List[Case]:
    """The issue's configurations (``quick``: two small ones for a smoke run)."""
    if quick:
        return [Case("grid:4,4:cls", 192, 3), Case("causal:64", 128, 2)]
    grids = [Case(f"grid:{s},{s}:cls", 192, 3) for s in (4, 7, 8, 14)]
    seqs = [Case(f"causal:{n}", dim, dim // 64) for dim in (128, 384) for n in (64, 128, 256)]
    return grids + seqs


def machine_description(threads: Optional[int] = None) -> str:
    """CPU model, core count, torch version and threads, Python version."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({threads or torch.get_num_threads()} threads), Python {platform.python_version()}")


def git_commit() -> str:
    """Short commit of the working tree (``+ uncommitted changes`` when tracked files differ)."""
    cwd = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd, capture_output=True, text=True, check=True).stdout
        return sha + (" + uncommitted changes" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_suite(cases: List[Case], impls=IMPLS, repeats: int = 3, memory_limit: float = 14e9,
              progress=print) -> Dict:
    """Measure every case × implementation; returns a JSON-able dict (see :func:`markdown`)."""
    rate = matmul_rate()
    rows = []
    for case in cases:
        row = {"case": asdict(case), "label": case.label, "results": {}}
        for impl in impls:
            if impl == "alpha" and case.rank <= 0:
                continue
            result = measure(case, impl, repeats, memory_limit)
            if "seconds" in result:
                flops = useful_projection_flops(case, impl) if impl in ("fast", "alpha") else None
                result["projection_gflops"] = flops / result["seconds"] / 1e9 if flops else None
            row["results"][impl] = result
            progress(f"{case.label:>16} dim {case.dim:>3} {impl:>5}: " + (
                f"{result['seconds']:.3f} s, peak {result['peak_rss'] / 1e9:.2f} GB"
                if "seconds" in result else result["skipped"]))
        rows.append(row)
    return {"machine": machine_description(), "commit": git_commit(), "matmul_gflops": rate,
            "rows": rows}


def markdown(report: Dict) -> str:
    """A results table (times in seconds, memory = peak process RSS in GB)."""
    rate = report["matmul_gflops"]
    lines = [f"Machine: {report['machine']}; commit `{report['commit']}`; dense fp32 matmul "
             f"{rate:.0f} GFLOP/s.", "",
             "| config | dim | paper's algorithm | fast (ours) | speed-up | memory ↓ | fast proj. "
             "GFLOP/s (% of matmul) | α (r=8) | α / sdpa | sdpa |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def cell(r):
        return (f"{r['seconds']:.3f} s, {r['peak_rss'] / 1e9:.2f} GB" if "seconds" in r
                else r.get("skipped", "—"))

    for row in report["rows"]:
        res = row["results"]
        paper, fast = res.get("paper", {}), res.get("fast", {})
        alpha, sdpa = res.get("alpha", {}), res.get("sdpa", {})
        speed = mem = "—"
        if "seconds" in paper and "seconds" in fast:
            speed = f"{paper['seconds'] / fast['seconds']:.0f}×"
            mem = (f"{(paper['peak_rss'] - paper['base_rss']) / max(1, fast['peak_rss'] - fast['base_rss']):.0f}×")
        proj = (f"{fast['projection_gflops']:.0f} ({100 * fast['projection_gflops'] / rate:.0f} %)"
                if fast.get("projection_gflops") else "—")
        ratio = (f"{alpha['seconds'] / sdpa['seconds']:.1f}×"
                 if "seconds" in alpha and "seconds" in sdpa else "—")
        lines.append(f"| {row['label']} | {row['case']['dim']} | {cell(paper)} | {cell(fast)} | "
                     f"{speed} | {mem} | {proj} | {cell(alpha)} | {ratio} | {cell(sdpa)} |")
    lines += ["", "Memory ratio compares peak RSS above the process's RSS after importing torch. "
              "Projection GFLOP/s counts the relative projections' useful work "
              "(forward + two backward GEMMs, 3 × 2·B·P·C·C' each; recomputation not counted)."]
    return "\n".join(lines)


def _child(payload: str) -> None:
    spec = json.loads(payload)
    result = run_one(Case(**spec["case"]), spec["impl"], spec["repeats"])
    print(json.dumps(result))


if __name__ == "__main__":
    _child(sys.argv[1])
