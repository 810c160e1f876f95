"""Language-model cost across context lengths: training and cached generation, per attention kind.

For a small GPT (default dim 128, depth 2, 2 heads × 64, vocabulary 256) built with
``block_size = L`` for each context length ``L`` (default 256, 512, …, 4096) and each *variant*
(default: RoPE attention, and Translution and α-Translution with ``max_distance=K`` for K in
{32, 128}), it measures:

* **training**: ``batch · L`` tokens divided by the time of one forward + backward pass (loss:
  next-token cross-entropy; no optimiser step); the median of a few steps after one warm-up
  step, or the warm-up step alone when it takes longer than ``slow_step_s``; peak memory of the
  phase (parameters, activations, gradients);
* **cached generation** (:meth:`GPT.decode <translution.models.GPT.decode>`, batch 1): a random
  prompt fills the cache up to ``L − decode_tokens − 2`` positions (the prefill, timed on its
  own), two warm-up tokens follow, then ``decode_tokens`` greedy tokens are timed one at a time
  (the median step is reported), so the context at the timed steps is ≈ ``L``; the cache's size
  (``DecodeCache.nbytes``) and the peak memory during those steps.

Memory is the peak resident set of the process above its level before the model was built (CPU,
Linux ``VmHWM``) or ``torch.cuda.max_memory_allocated`` (CUDA). By default every (variant, L,
phase) runs in its own process, so each peak is its own. The report names the machine, torch
version, git commit and command, says per variant from which ``L`` each cost stops growing, and
draws cost against ``L`` (``--plot``, default next to ``--out``).

Usage::

    translution bench lm --out benchmarks/results/lm.md        # the full sweep (tens of minutes)
    translution bench lm --quick                               # smoke run, seconds
    translution bench lm --variant rope --variant translution:32 --length 256 --length 512

or from Python: ``run_lm_bench(quick=True, out=None)`` returns the markdown report.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .op import _peak_rss_bytes, _reset_peak_rss, git_commit, machine_description

__all__ = ["LMCase", "DEFAULT_VARIANTS", "DEFAULT_LENGTHS", "QUICK_VARIANTS", "QUICK_LENGTHS",
           "parse_variant", "default_cases", "measure", "growth", "run_lm_bench", "markdown",
           "plot_cost", "main"]

#: Attention kinds of ``gpt_micro_<kind>`` the benchmark can build.
KINDS = ("ape", "rope", "bias", "translution", "alpha", "lor_rope", "hybrid")
#: ``kind`` or ``kind:K`` (``max_distance=K``).
DEFAULT_VARIANTS = ("rope", "translution:32", "translution:128", "alpha:32", "alpha:128")
DEFAULT_LENGTHS = (256, 512, 1024, 2048, 4096)
QUICK_VARIANTS = ("rope", "translution:4", "alpha:4")
QUICK_LENGTHS = (32, 64)
PHASES = ("train", "decode")
_WARM_TOKENS = 2                    # untimed decode steps between the prefill and the timed ones
_FLAT = 1.25                        # "stopped growing": < ×1.25 per doubling of L from there on
_MIB = 2.0 ** 20


def parse_variant(text: str) -> Tuple[str, Optional[int]]:
    """``"translution:32"`` → ``("translution", 32)``; ``"rope"`` → ``("rope", None)``."""
    kind, _, k = str(text).partition(":")
    if kind not in KINDS:
        raise ValueError(f"unknown attention kind {kind!r} in variant {text!r}; expected one of "
                         f"{list(KINDS)}, optionally with ':K' (max_distance), e.g. "
                         f"'translution:32'")
    if not k:
        return kind, None
    if not k.isdigit():
        raise ValueError(f"max_distance in variant {text!r} must be a non-negative integer")
    return kind, int(k)


@dataclass
class LMCase:
    """One benchmark configuration (one variant at one context length).

    Attributes:
        kind: Attention kind of ``gpt_micro_<kind>``.
        length: Context length ``L`` (``block_size``).
        max_distance: ``K`` of the relative layers (``None``: unclipped).
        dim, depth, heads, dim_head, vocab_size: The GPT.
        batch: Training batch size (generation uses batch 1).
        train_steps: Timed training steps (the median is reported).
        slow_step_s: A warm-up step slower than this is the measurement (no further steps).
        decode_tokens: Timed cached-generation steps (one token each).
        device: ``"cpu"`` or ``"cuda"``.
    """

    kind: str
    length: int
    max_distance: Optional[int] = None
    dim: int = 128
    depth: int = 2
    heads: int = 2
    dim_head: int = 64
    vocab_size: int = 256
    batch: int = 1
    train_steps: int = 3
    slow_step_s: float = 20.0
    decode_tokens: int = 32
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("length", "dim", "depth", "heads", "dim_head", "vocab_size", "batch",
                     "train_steps", "decode_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.max_distance is not None and (isinstance(self.max_distance, bool) or not
                                              isinstance(self.max_distance, int)
                                              or self.max_distance < 0):
            raise ValueError(f"max_distance must be None or an int >= 0, "
                             f"got {self.max_distance!r}")
        if self.length < self.decode_tokens + _WARM_TOKENS + 1:
            raise ValueError(f"length must be >= decode_tokens + {_WARM_TOKENS + 1} (a prompt, "
                             f"{_WARM_TOKENS} warm-up tokens, then the timed ones), got length "
                             f"{self.length} with decode_tokens {self.decode_tokens}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")

    @property
    def variant(self) -> str:
        """``kind`` or ``kind K=…`` (the table's row label)."""
        return _label(self.kind, self.max_distance)


def _label(kind: str, max_distance: Optional[int]) -> str:
    return kind if max_distance is None else f"{kind} K={max_distance}"


def default_cases(quick: bool = False, variants: Optional[Sequence[str]] = None,
                  lengths: Optional[Sequence[int]] = None, **options) -> List[LMCase]:
    """Every variant at every length (``quick``: a tiny model at L = 32 and 64, K = 4).

    Args:
        quick: The smoke preset.
        variants: ``kind`` or ``kind:K`` strings (default :data:`DEFAULT_VARIANTS`).
        lengths: Context lengths (default :data:`DEFAULT_LENGTHS`).
        **options: Further :class:`LMCase` fields (e.g. ``batch``, ``device``).
    """
    variants = [parse_variant(v) for v in (variants or (QUICK_VARIANTS if quick
                                                        else DEFAULT_VARIANTS))]
    lengths = tuple(lengths) if lengths else (QUICK_LENGTHS if quick else DEFAULT_LENGTHS)
    if quick:
        options = {**dict(dim=32, depth=2, heads=2, dim_head=16, vocab_size=64, batch=2,
                          train_steps=1, decode_tokens=4), **options}
    return [LMCase(kind, n, k, **options) for kind, k in variants for n in lengths]


def _build(case: LMCase):
    from ..models import create_model
    torch.manual_seed(0)
    return create_model(f"gpt_micro_{case.kind}", vocab_size=case.vocab_size,
                        block_size=case.length, dim=case.dim, depth=case.depth,
                        heads=case.heads, dim_head=case.dim_head,
                        max_distance=case.max_distance).to(case.device)


class _Peak:
    """Peak memory above the level at :meth:`reset` (CPU: process RSS; CUDA: allocator)."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"
        self.base = 0

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def reset(self) -> None:
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = _reset_peak_rss()

    def level(self) -> int:
        """Memory in use now (CUDA) or the peak so far (CPU), bytes."""
        return torch.cuda.memory_allocated() if self.cuda else _peak_rss_bytes()

    def peak(self, base: Optional[int] = None) -> int:
        """Peak bytes since the last :meth:`reset`, above ``base`` (default: that reset's)."""
        self.sync()
        top = torch.cuda.max_memory_allocated() if self.cuda else _peak_rss_bytes()
        return max(0, top - (self.base if base is None else base))


def _measure_train(case: LMCase) -> Dict:
    memory = _Peak(case.device)
    torch.randn(64, 64) @ torch.randn(64, 64)          # load the BLAS before the baseline
    memory.reset()
    base = memory.base
    model = _build(case).train()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, case.vocab_size, (case.batch, case.length + 1), generator=g)
    inputs, targets = x[:, :-1].to(case.device), x[:, 1:].to(case.device)

    def step() -> float:
        memory.sync()
        t0 = time.perf_counter()
        logits = model(inputs)                                      # (B, L, V)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        loss.backward()
        memory.sync()
        seconds = time.perf_counter() - t0
        model.zero_grad(set_to_none=True)
        return seconds

    first = step()
    times = [first] if first > case.slow_step_s else [step() for _ in range(case.train_steps)]
    seconds = statistics.median(times)
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "train_step_s": seconds, "train_warmup_only": first > case.slow_step_s,
            "train_tokens_per_s": case.batch * case.length / seconds,
            "train_peak_bytes": memory.peak(base)}


@torch.no_grad()
def _measure_decode(case: LMCase) -> Dict:
    memory = _Peak(case.device)
    torch.randn(64, 64) @ torch.randn(64, 64)
    memory.reset()
    base = memory.base
    model = _build(case).eval()
    g = torch.Generator().manual_seed(1)
    prompt_len = case.length - case.decode_tokens - _WARM_TOKENS
    prompt = torch.randint(0, case.vocab_size, (1, prompt_len), generator=g).to(case.device)
    memory.sync()
    t0 = time.perf_counter()
    logits, cache = model.decode(prompt, capacity=case.length)
    memory.sync()
    prefill_s = time.perf_counter() - t0
    prefill_peak = memory.peak(base)
    memory.reset()                                    # steady state: model + cache + one step
    token = logits[:, -1:].argmax(-1)
    for _ in range(_WARM_TOKENS):
        logits, cache = model.decode(token, cache)
        token = logits[:, -1:].argmax(-1)
    times = []
    for _ in range(case.decode_tokens):
        memory.sync()
        t0 = time.perf_counter()
        logits, cache = model.decode(token, cache)
        token = logits[:, -1:].argmax(-1)
        memory.sync()
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    return {"prefill_s": prefill_s, "prefill_tokens": prompt_len,
            "prefill_peak_bytes": prefill_peak, "decode_token_s": times,
            "decode_tokens_per_s": 1 / seconds, "decode_ms_per_token": 1e3 * seconds,
            "decode_peak_bytes": memory.peak(base), "cache_bytes": cache.nbytes(),
            "context": cache.length}


def measure(case: LMCase, phase: str) -> Dict:
    """Measure one phase (``"train"`` or ``"decode"``) of one configuration in this process."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    return _measure_train(case) if phase == "train" else _measure_decode(case)


def _measure_in_child(case: LMCase, phase: str, threads: Optional[int],
                      timeout: Optional[float]) -> Dict:
    cmd = [sys.executable, "-m", "translution.bench.lm", "--child",
           json.dumps({"case": asdict(case), "phase": phase})]
    if threads:
        cmd += ["--threads", str(threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"{phase}: timed out after {timeout:g} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"{phase}: exit {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


#: Growth metrics: name → (value of a result, unit label for the plot).
_METRICS = {
    "train time/token": lambda r: 1e6 / r["train_tokens_per_s"],
    "train memory": lambda r: r["train_peak_bytes"] / _MIB,
    "decode time/token": lambda r: r["decode_ms_per_token"],
    "cache": lambda r: r["cache_bytes"] / _MIB,
}


def _series(report: Dict) -> Dict[str, List[Tuple[int, Dict]]]:
    """``{variant: [(L, result), …]}`` sorted by ``L``, in the report's variant order."""
    out: Dict[str, List[Tuple[int, Dict]]] = {}
    for row in report["cases"]:
        label = _label(row["case"]["kind"], row["case"].get("max_distance"))
        out.setdefault(label, []).append((row["case"]["length"], row["result"]))
    return {k: sorted(v, key=lambda t: t[0]) for k, v in out.items()}


def growth(report: Dict) -> Dict[str, Dict[str, Dict]]:
    """Per variant and metric of :data:`_METRICS`: the factor by which the metric grows per
    doubling of ``L`` between consecutive lengths, and ``flat_from``: the smallest ``L`` from
    which every further factor is below ×1.25 (``None``: still growing at the largest ``L``).

    Returns:
        ``{variant: {metric: {"lengths": [L…], "values": [v…], "factors": [f…],
        "flat_from": L or None}}}`` (lengths with an error are left out).
    """
    out = {}
    for label, rows in _series(report).items():
        out[label] = {}
        for metric, value in _METRICS.items():
            points = [(n, value(r)) for n, r in rows if "error" not in r]
            factors = [(v2 / v1) ** (1 / math.log2(n2 / n1)) if v1 > 0 else math.inf
                       for (n1, v1), (n2, v2) in zip(points, points[1:])]
            flat = None
            for i in range(len(factors), 0, -1):        # longest flat tail
                if factors[i - 1] >= _FLAT:
                    break
                flat = points[i - 1][0]
            out[label][metric] = {"lengths": [n for n, _ in points],
                                  "values": [v for _, v in points], "factors": factors,
                                  "flat_from": flat}
    return out


def _mib(nbytes: float) -> str:
    return f"{nbytes / _MIB:,.0f}" if nbytes >= 10 * _MIB else f"{nbytes / _MIB:,.1f}"


def _results_table(report: Dict) -> List[str]:
    lines = ["| attention | L | parameters | train tokens/s | train peak MiB | "
             "decode tokens/s | decode ms/token | cache MiB | decode peak MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, rows in _series(report).items():
        for n, r in rows:
            if "error" in r:
                lines.append(f"| {label} | {n} | {r['error']} | | | | | | |")
                continue
            slow = "¹" if r["train_warmup_only"] else ""
            lines.append(
                f"| {label} | {n} | {r['parameters']:,} | {r['train_tokens_per_s']:,.0f}{slow} | "
                f"{_mib(r['train_peak_bytes'])} | {r['decode_tokens_per_s']:,.1f} | "
                f"{r['decode_ms_per_token']:.2f} | {_mib(r['cache_bytes'])} | "
                f"{_mib(r['decode_peak_bytes'])} |")
    return lines


def _growth_table(report: Dict) -> List[str]:
    lines = ["| attention | " + " | ".join(_METRICS) + " | stops growing (time/token) |",
             "|---|" + "---|" * (len(_METRICS) + 1)]
    for label, metrics in growth(report).items():
        cells = [" ".join(f"×{f:.2f}" for f in m["factors"]) or "—" for m in metrics.values()]
        verdict = []
        for phase in ("train", "decode"):
            m = metrics[f"{phase} time/token"]
            if not m["factors"]:
                continue
            where = (f"from L = {m['flat_from']}" if m["flat_from"] is not None
                     else f"still ×{m['factors'][-1]:.2f} at L = {m['lengths'][-1]}")
            verdict.append(f"{phase} {where}")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {'; '.join(verdict) or '—'} |")
    return lines


_WHY = """\
**Why.** *Bank size:* with `max_distance=K` a causal Translution layer holds K+1 slots per
relative projection (3·(K+1)·C·C' parameters), α-Translution K+1 matrices R×R: neither depends
on L, so the parameter count is flat and one model runs at any L. *Training:* every variant
computes the causal B·heads·L² scores and their softmax, so time per token grows ∝ L (memory
∝ L²) once they outweigh the L-independent projections and MLP. Translution's exact grouped
backend also runs one projection GEMM per offset (L offsets of L−d rows each), and the offsets
beyond K re-project their rows with the shared slot-K weight, so its training time per token
grows ∝ L·C·C' from the start, as without clipping: clipping bounds the parameters, not the
training FLOPs (projecting once with the slot-K weights and computing the far pairs as one
masked attention would make the far part cost what RoPE's attention costs). α-Translution does
the same at width R = heads·r. *Cached decoding:* per new token RoPE scores and mixes its L
cached keys and values, O(L·C'). Translution-K projects the new token and its K nearest
partners through the K+1 near slots, O(K·C·C') whatever L is; every partner further than K
shares slot K, whose projection x_j·W[K] is cached once per position, so only the O(L·C')
scores and mix grow with L, as in RoPE: the time per token stays flat while K·C·C' (and the
fixed per-step overhead) outweighs L·C', then grows like RoPE's (unclipped it would be
O(L·C·C')). The cache grows ∝ L for every variant (Translution keeps the inputs x_j and the far
projections, RoPE the keys and values)."""


def markdown(report: Dict) -> str:
    """The report of :func:`run_lm_bench` as markdown (``report.json`` layout)."""
    c = report["cases"][0]["case"] if report["cases"] else asdict(LMCase("rope", 256))
    device = c.get("device", "cpu").upper()
    lines = [
        f"# Language-model cost across context lengths ({device})", "",
        f"Machine: {report['machine']}.  ",
        f"Commit: `{report['commit']}`.  ",
        f"Command: `{report['command']}`", "",
        f"GPT `gpt_micro_<kind>` with dim {c['dim']}, depth {c['depth']}, {c['heads']} heads × "
        f"{c['dim_head']}, vocabulary {c['vocab_size']}, block_size = L; `kind K=k` sets "
        f"`max_distance=k`. Training: batch {c['batch']}, forward + backward (no optimiser "
        f"step), tokens/s = batch·L / median of {c['train_steps']} step(s) after a warm-up step "
        f"(¹: the warm-up step alone, slower than {c['slow_step_s']:g} s). Cached generation: "
        f"batch 1, the prompt fills the cache to L − {c['decode_tokens'] + _WARM_TOKENS}, then "
        f"{_WARM_TOKENS} warm-up and {c['decode_tokens']} greedy tokens, each timed (median "
        "reported; context ≈ L). "
        "Memory: peak above the process's level before the model was built "
        + ("(CUDA allocator)" if device == "CUDA" else "(resident set)")
        + "; decode peak = model + cache + one step. "
        + ("One configuration and phase per process." if report["isolated"]
           else "All configurations in one process (memory peaks are indicative only)."),
        "", *_results_table(report), "",
        "Growth per doubling of L (cost at 2L / cost at L, between consecutive lengths; ×1 = "
        f"flat, ×2 = ∝ L). \"Stops growing\": every further factor is below ×{_FLAT}.", "",
        *_growth_table(report), "", _WHY, "",
        f"Total benchmark time: {report['seconds']:.0f} s."]
    if report.get("plot"):
        lines.append(f"Plot: `{report['plot']}`.")
    return "\n".join(lines) + "\n"


def plot_cost(report: Dict, path) -> Path:
    """Cost against L (log-log), one line per variant: training time per token, training peak
    memory, decode time per token, cache size. Writes a PNG; needs matplotlib."""
    from ..plots import _pyplot, _save
    plt = _pyplot()
    from matplotlib import ticker
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), constrained_layout=True)
    units = {"train time/token": "µs / token", "train memory": "peak MiB",
             "decode time/token": "ms / token", "cache": "MiB"}
    for ax, metric in zip(axes.flat, _METRICS):
        for label, metrics in growth(report).items():
            m = metrics[metric]
            if m["lengths"]:
                ax.plot(m["lengths"], m["values"], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        lengths = sorted({n for ms in growth(report).values() for n in ms[metric]["lengths"]})
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.set_xlabel("context length L")
        ax.set_ylabel(units[metric])
        ax.set_title(metric, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"GPT cost across context lengths — {report['machine'].split(',')[0]}",
                 fontsize=10)
    return _save(fig, path)


def _default_command() -> str:
    argv = list(sys.argv) or ["?"]
    if argv[0].endswith(".py"):
        return "python " + shlex.join(argv)
    return shlex.join([Path(argv[0]).name] + argv[1:])


def _progress_line(case: LMCase, result: Dict) -> str:
    head = f"{case.variant:>18} L={case.length:<5} "
    if "error" in result:
        return head + result["error"]
    return head + (f"train {result['train_tokens_per_s']:,.0f} tok/s, "
                   f"{_mib(result['train_peak_bytes'])} MiB; decode "
                   f"{result['decode_ms_per_token']:.2f} ms/token, cache "
                   f"{_mib(result['cache_bytes'])} MiB")


def _run_case(case: LMCase, isolate: bool, threads: Optional[int],
              timeout: Optional[float]) -> Dict:
    result: Dict = {}
    for phase in PHASES:
        part = (_measure_in_child(case, phase, threads, timeout) if isolate
                else measure(case, phase))
        if "error" in part:
            return part
        result.update(part)
    return result


def run_lm_bench(quick: bool, out: Optional[str], *, variants: Optional[Sequence[str]] = None,
                 lengths: Optional[Sequence[int]] = None, isolate: Optional[bool] = None,
                 threads: Optional[int] = None, timeout: Optional[float] = 3600.0,
                 command: Optional[str] = None, plot: Optional[str] = None,
                 progress: Callable[[str], None] = functools.partial(print, flush=True),
                 **options) -> str:
    """Run the benchmark and return the markdown report (also written to ``out``).

    Args:
        quick: The smoke preset (a tiny model at L = 32 and 64; seconds).
        out: Markdown file to write (its ``.json`` sibling gets the raw numbers, its ``.png``
            sibling the plot unless ``plot`` says otherwise); ``None`` writes nothing.
        variants: ``kind`` or ``kind:K`` strings (default :data:`DEFAULT_VARIANTS`).
        lengths: Context lengths (default :data:`DEFAULT_LENGTHS`).
        isolate: One process per configuration and phase (default: True, except in quick mode).
        threads: ``torch.set_num_threads`` for the measurements (``None``: torch's default).
        timeout: Seconds allowed per isolated phase.
        command: The command line to print in the report (default: from ``sys.argv``).
        plot: PNG to draw (default: next to ``out``; ``""``: no plot).
        progress: Called with one line per configuration.
        **options: Further :class:`LMCase` fields (``batch``, ``decode_tokens``, ``device``…).

    Returns:
        The markdown report.

    Raises:
        ValueError: An unknown variant, a bad length or option.
    """
    cases = default_cases(quick, variants, lengths, **options)
    isolate = (not quick) if isolate is None else isolate
    t0 = time.perf_counter()
    old_threads = torch.get_num_threads()
    rows = []
    try:
        if threads and not isolate:
            torch.set_num_threads(threads)
        for case in cases:
            result = _run_case(case, isolate, threads, timeout)
            rows.append({"case": asdict(case), "result": result})
            progress(_progress_line(case, result))
    finally:
        torch.set_num_threads(old_threads)
    if plot is None and out:
        plot = str(Path(out).with_suffix(".png"))
    report = {"machine": machine_description(threads), "commit": git_commit(),
              "command": command or _default_command(), "isolated": isolate,
              "seconds": time.perf_counter() - t0, "cases": rows, "plot": plot or None}
    if plot:
        plot_cost(report, plot)
    text = markdown(report)
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if path.suffix != ".json":
            path.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    return text


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="translution bench lm",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (seconds)")
    parser.add_argument("--out", help="markdown report to write (plus .json and .png siblings)")
    parser.add_argument("--variant", action="append",
                        help="attention kind, optionally ':K' for max_distance=K (repeatable; "
                             "default: " + ", ".join(DEFAULT_VARIANTS) + ")")
    parser.add_argument("--length", action="append", type=int,
                        help="context length (repeatable; default: "
                             + ", ".join(map(str, DEFAULT_LENGTHS)) + ")")
    parser.add_argument("--batch", type=int, help="training batch (default 1; quick: 2)")
    parser.add_argument("--decode-tokens", type=int, help="timed decode steps (default 32)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cpu")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--plot", help="PNG of cost against L (default: OUT.png; '' for none)")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds per isolated phase (default 3600)")
    parser.add_argument("--no-isolate", action="store_true",
                        help="measure every configuration in this process")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        job = json.loads(args.child)
        print(json.dumps(measure(LMCase(**job["case"]), job["phase"])))
        return 0
    options = {name: value for name, value in (("batch", args.batch),
                                               ("decode_tokens", args.decode_tokens),
                                               ("device", args.device)) if value is not None}
    argv_used = sys.argv[1:] if argv is None else argv
    text = run_lm_bench(args.quick, args.out, variants=args.variant, lengths=args.length,
                        isolate=False if args.no_isolate else None, threads=args.threads,
                        timeout=args.timeout, plot=args.plot,
                        command="translution bench lm " + shlex.join(argv_used), **options)
    print()
    print(text)
    if args.out:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
