"""Language-model cost across context lengths: training and cached generation per attention kind.

Small GPTs per variant (``kind[:K]``) and length ``L``; setup: ``benchmarks/README.md`` §2."""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..models import ATTENTION_KINDS as KINDS, create_model
from ..utils import atomic_write_json, atomic_write_text, check_int
from .common import PeakMemory, git_commit, machine_description, run_in_child, timings

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
    if kind not in KINDS or (k and not k.isdigit()):
        raise ValueError(f"bad variant {text!r}: expected an attention kind of {list(KINDS)}, "
                         f"optionally with ':K' (max_distance K >= 0), e.g. 'translution:32'")
    return kind, int(k) if k else None


@dataclass
class LMCase:
    """One variant at one context length (generation always runs at batch 1)."""

    kind: str                       # attention kind of gpt_micro_<kind>
    length: int                     # context length L (block_size)
    max_distance: Optional[int] = None
    dim: int = 128
    depth: int = 2
    heads: int = 2
    dim_head: int = 64
    vocab_size: int = 256
    batch: int = 1                  # training batch
    train_steps: int = 3            # timed training steps (median reported)
    slow_step_s: float = 20.0       # a slower warm-up step is the measurement on its own
    decode_tokens: int = 32         # timed cached-generation steps
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("length", "dim", "depth", "heads", "dim_head", "vocab_size", "batch",
                     "train_steps", "decode_tokens"):
            check_int(name, getattr(self, name), minimum=1)
        if self.max_distance is not None:
            check_int("max_distance", self.max_distance, minimum=0)
        if self.length < self.decode_tokens + _WARM_TOKENS + 1:
            raise ValueError(f"length must be >= decode_tokens + {_WARM_TOKENS + 1} (a prompt, "
                             f"{_WARM_TOKENS} warm-up tokens, then the timed ones), got length "
                             f"{self.length} with decode_tokens {self.decode_tokens}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")


def _label(kind: str, max_distance: Optional[int]) -> str:
    return kind if max_distance is None else f"{kind} K={max_distance}"


def default_cases(quick: bool = False, variants: Optional[Sequence[str]] = None,
                  lengths: Optional[Sequence[int]] = None, **options) -> List[LMCase]:
    """Every variant (``kind[:K]`` strings) at every length; ``options``: further
    :class:`LMCase` fields. ``quick``: a tiny model at L = 32 and 64, K = 4."""
    variants = [parse_variant(v) for v in variants or (QUICK_VARIANTS if quick
                                                       else DEFAULT_VARIANTS)]
    lengths = tuple(lengths or (QUICK_LENGTHS if quick else DEFAULT_LENGTHS))
    if quick:
        options = {**dict(dim=32, depth=2, heads=2, dim_head=16, vocab_size=64, batch=2,
                          train_steps=1, decode_tokens=4), **options}
    return [LMCase(kind, n, k, **options) for kind, k in variants for n in lengths]


def _build(case: LMCase):
    torch.manual_seed(0)
    return create_model(f"gpt_micro_{case.kind}", vocab_size=case.vocab_size,
                        block_size=case.length, dim=case.dim, depth=case.depth,
                        heads=case.heads, dim_head=case.dim_head,
                        max_distance=case.max_distance).to(case.device)


def _measure_train(case: LMCase, memory: PeakMemory) -> Dict:
    model = _build(case).train()
    x = torch.randint(0, case.vocab_size, (case.batch, case.length + 1),
                      generator=torch.Generator().manual_seed(0)).to(case.device)

    def step():
        model.zero_grad(set_to_none=True)
        logits = model(x[:, :-1])                                   # (B, L, V)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).backward()

    times = timings(step, 1, memory.sync)
    slow = times[0] > case.slow_step_s
    seconds = statistics.median(times if slow else timings(step, case.train_steps, memory.sync))
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "train_step_s": seconds, "train_warmup_only": slow,
            "train_tokens_per_s": case.batch * case.length / seconds,
            "train_peak_bytes": max(0, memory.peak() - memory.base)}


@torch.no_grad()
def _measure_decode(case: LMCase, memory: PeakMemory) -> Dict:
    model = _build(case).eval()
    prompt_len = case.length - case.decode_tokens - _WARM_TOKENS
    prompt = torch.randint(0, case.vocab_size, (1, prompt_len),
                           generator=torch.Generator().manual_seed(1)).to(case.device)
    state = {}

    def prefill():
        state["logits"], state["cache"] = model.decode(prompt, capacity=case.length)

    def next_token():
        token = state["logits"][:, -1:].argmax(-1)
        state["logits"], state["cache"] = model.decode(token, state["cache"])

    (prefill_s,) = timings(prefill, 1, memory.sync)
    prefill_peak = max(0, memory.peak() - memory.base)
    memory.reset()                                    # steady state: model + cache + one step
    times = timings(next_token, case.decode_tokens, memory.sync, warmup=_WARM_TOKENS)
    seconds = statistics.median(times)
    return {"prefill_s": prefill_s, "prefill_tokens": prompt_len,
            "prefill_peak_bytes": prefill_peak, "decode_token_s": times,
            "decode_tokens_per_s": 1 / seconds, "decode_ms_per_token": 1e3 * seconds,
            "decode_peak_bytes": max(0, memory.peak() - memory.base),
            "cache_bytes": state["cache"].nbytes(), "context": state["cache"].length}


def measure(case: LMCase, phase: str) -> Dict:
    """Measure one phase (``"train"`` or ``"decode"``) of one configuration in this process."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    return (_measure_train if phase == "train" else _measure_decode)(case, PeakMemory(case.device))


#: Growth metrics: name → (unit, value of a result).
_METRICS = {
    "train time/token": ("µs / token", lambda r: 1e6 / r["train_tokens_per_s"]),
    "train memory": ("peak MiB", lambda r: r["train_peak_bytes"] / _MIB),
    "decode time/token": ("ms / token", lambda r: r["decode_ms_per_token"]),
    "cache": ("MiB", lambda r: r["cache_bytes"] / _MIB),
}


def _series(report: Dict) -> Dict[str, List[Tuple[int, Dict]]]:
    """``{variant: [(L, result), …]}`` sorted by ``L``, in the report's variant order."""
    out: Dict[str, List[Tuple[int, Dict]]] = {}
    for row in report["cases"]:
        label = _label(row["case"]["kind"], row["case"].get("max_distance"))
        out.setdefault(label, []).append((row["case"]["length"], row["result"]))
    return {k: sorted(v, key=lambda t: t[0]) for k, v in out.items()}


def growth(report: Dict) -> Dict[str, Dict[str, Dict]]:
    """``{variant: {metric: {"lengths", "values", "factors", "flat_from"}}}``: each metric's growth
    factor per doubling of ``L`` between consecutive lengths (errors left out) and the smallest
    ``L`` from which every further factor is below ×1.25 (``None``: still growing)."""
    out = {}
    for label, rows in _series(report).items():
        out[label] = {}
        for metric, (_, value) in _METRICS.items():
            points = [(n, value(r)) for n, r in rows if "error" not in r]
            factors = [(v2 / v1) ** (1 / math.log2(n2 / n1)) if v1 > 0 else math.inf
                       for (n1, v1), (n2, v2) in zip(points, points[1:])]
            tail = len(list(itertools.takewhile(lambda f: f < _FLAT, reversed(factors))))
            out[label][metric] = {"lengths": [n for n, _ in points],
                                  "values": [v for _, v in points], "factors": factors,
                                  "flat_from": points[len(factors) - tail][0] if tail else None}
    return out


def _mib(nbytes: float) -> str:
    return f"{nbytes / _MIB:,.0f}" if nbytes >= 10 * _MIB else f"{nbytes / _MIB:,.1f}"


def _tables(report: Dict) -> List[str]:
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
    lines += ["", "Growth per doubling of L (cost at 2L / cost at L, between consecutive lengths; "
              f"×1 = flat, ×2 = ∝ L). \"Stops growing\": every further factor is below ×{_FLAT}.",
              "", "| attention | " + " | ".join(_METRICS) + " | stops growing (time/token) |",
              "|---|" + "---|" * (len(_METRICS) + 1)]
    for label, metrics in growth(report).items():
        cells = [" ".join(f"×{f:.2f}" for f in m["factors"]) or "—" for m in metrics.values()]
        verdict = []
        for phase in ("train", "decode"):
            m = metrics[f"{phase} time/token"]
            if m["factors"]:
                verdict.append(f"{phase} " + (
                    f"from L = {m['flat_from']}" if m["flat_from"] is not None
                    else f"still ×{m['factors'][-1]:.2f} at L = {m['lengths'][-1]}"))
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {'; '.join(verdict) or '—'} |")
    return lines


def markdown(report: Dict) -> str:
    """The report of :func:`run_lm_bench` as markdown (``report.json`` layout)."""
    c = report["cases"][0]["case"]  # every case shares the model and timing settings
    lines = [
        f"# Language-model cost across context lengths ({c['device'].upper()})", "",
        f"Machine: {report['machine']}.  ", f"Commit: `{report['commit']}`.  ",
        f"Command: `{report['command']}`", "",
        f"GPT `gpt_micro_<kind>`: dim {c['dim']}, depth {c['depth']}, {c['heads']} heads × "
        f"{c['dim_head']}, vocabulary {c['vocab_size']}; training batch {c['batch']}, "
        f"{c['train_steps']} timed step(s) (¹: the warm-up step alone, slower than "
        f"{c['slow_step_s']:g} s); {c['decode_tokens']} timed decode tokens. "
        + ("One configuration and phase per process." if report["isolated"]
           else "All configurations in one process (memory peaks are indicative only).")
        + " Setup and columns: `benchmarks/README.md`, section 2.",
        "", *_tables(report), "",
        "**Why.** Why each cost grows with L or stops growing: `benchmarks/README.md`, section 2, "
        "\"Reading the table\".", "", f"Total benchmark time: {report['seconds']:.0f} s."]
    if report.get("plot"):
        lines.append(f"Plot: `{report['plot']}`.")
    return "\n".join(lines) + "\n"


def plot_cost(report: Dict, path) -> Path:
    """Each metric of :func:`growth` against L (log-log), one line per variant; writes a PNG."""
    from matplotlib import ticker

    from ..experiments.plots import _pyplot, _save
    fig, axes = _pyplot().subplots(2, 2, figsize=(10, 7.5), constrained_layout=True)
    curves = growth(report)
    for ax, (metric, (unit, _)) in zip(axes.flat, _METRICS.items()):
        for label, metrics in curves.items():
            if metrics[metric]["lengths"]:
                ax.plot(metrics[metric]["lengths"], metrics[metric]["values"], marker="o",
                        label=label)
        lengths = sorted({n for m in curves.values() for n in m[metric]["lengths"]})
        ax.set(xscale="log", yscale="log", xlabel="context length L", ylabel=unit)
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.set_title(metric, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"GPT cost across context lengths — {report['machine'].split(',')[0]}",
                 fontsize=10)
    return _save(fig, path)


def _run_case(case: LMCase, isolate: bool, threads: Optional[int],
              timeout: Optional[float]) -> Dict:
    result: Dict = {}
    for phase in PHASES:
        job = json.dumps({"case": asdict(case), "phase": phase, "threads": threads})
        part = (run_in_child(["translution.bench.lm", job], timeout) if isolate
                else measure(case, phase))
        if "error" in part:
            return {"error": f"{phase}: {part['error']}"}
        result.update(part)
    return result


def run_lm_bench(quick: bool, out: Optional[str], *, variants: Optional[Sequence[str]] = None,
                 lengths: Optional[Sequence[int]] = None, isolate: Optional[bool] = None,
                 threads: Optional[int] = None, timeout: Optional[float] = 3600.0,
                 command: Optional[str] = None, plot: Optional[str] = None,
                 progress: Callable[[str], None] = functools.partial(print, flush=True),
                 **options) -> str:
    """The markdown report, also written to ``out`` with a ``.json`` sibling and the plot in
    ``plot`` (default ``out``'s ``.png``; ``""``: none); ``isolate`` (default: unless ``quick``):
    one process per case and phase, ``timeout`` s each; ``options``: :class:`LMCase` fields."""
    cases = default_cases(quick, variants, lengths, **options)
    isolate = (not quick) if isolate is None else isolate
    t0 = time.perf_counter()
    old_threads = torch.get_num_threads()
    rows = []
    try:
        if threads and not isolate:
            torch.set_num_threads(threads)
        for case in cases:
            r = _run_case(case, isolate, threads, timeout)
            rows.append({"case": asdict(case), "result": r})
            label = _label(case.kind, case.max_distance)
            progress(f"{label:>18} L={case.length:<5} " + (r["error"] if "error" in r else
                     f"train {r['train_tokens_per_s']:,.0f} tok/s, {_mib(r['train_peak_bytes'])} "
                     f"MiB; decode {r['decode_ms_per_token']:.2f} ms/token, cache "
                     f"{_mib(r['cache_bytes'])} MiB"))
    finally:
        torch.set_num_threads(old_threads)
    plot = str(Path(out).with_suffix(".png")) if plot is None and out else plot
    report = {"machine": machine_description(threads), "commit": git_commit(),
              "command": command or shlex.join(sys.argv), "isolated": isolate,
              "seconds": time.perf_counter() - t0, "cases": rows, "plot": plot or None}
    if plot:
        plot_cost(report, plot)
    text = markdown(report)
    if out:
        atomic_write_text(out, text)
        if Path(out).suffix != ".json":
            atomic_write_json(Path(out).with_suffix(".json"), report)
    return text


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point (``translution bench lm``)."""
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
    args = parser.parse_args(argv)
    options = {name: getattr(args, name) for name in ("batch", "decode_tokens", "device")
               if getattr(args, name) is not None}
    argv_used = sys.argv[1:] if argv is None else argv
    text = run_lm_bench(args.quick, args.out, variants=args.variant, lengths=args.length,
                        isolate=False if args.no_isolate else None, threads=args.threads,
                        timeout=args.timeout, plot=args.plot,
                        command="translution bench lm " + shlex.join(argv_used), **options)
    print(f"\n{text}")
    if args.out:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":  # a child of run_lm_bench: one phase of one case, as JSON
    job = json.loads(sys.argv[1])
    if job["threads"]:
        torch.set_num_threads(job["threads"])
    print(json.dumps(measure(LMCase(**job["case"]), job["phase"])))
