"""Language-model throughput per attention kind: training and generation tokens/s.

For a small GPT (default dim 128, depth 2, 2 heads × 64, vocabulary 256) and each attention kind
(``ape``, ``rope``, ``alpha``, ``translution``, ``hybrid``) at a few context lengths ``L``:

* **training tokens/s**: ``batch · L`` divided by the median time of one optimiser step
  (forward, backward, AdamW step) over a few steps, after warm-up steps;
* **generation tokens/s**: :func:`translution.generation.decode_throughput` (greedy, batch 1, a
  random prompt of ``L/2`` tokens then ``L/2`` new tokens, prefill included) with the cache
  (``use_cache=True``, best of a few runs) and without (the whole sequence recomputed for every
  new token, one run).

By default every configuration runs in its own process (``--no-isolate`` measures in-process
after a warm-up). The table names the machine, torch version, git commit and the command.

Usage::

    translution bench lm --out benchmarks/results/lm.md
    translution bench lm --quick            # smoke run, a few seconds

or from Python: ``run_lm_bench(quick=True, out=None)`` returns the markdown table.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from .bench import git_commit, machine_description

__all__ = ["LMCase", "DEFAULT_KINDS", "default_cases", "measure", "run_lm_bench", "markdown",
           "main"]

DEFAULT_KINDS = ("ape", "rope", "alpha", "translution", "hybrid")
_KINDS = ("ape", "rope", "bias", "translution", "alpha", "hybrid")


@dataclass
class LMCase:
    """One benchmark configuration.

    Attributes:
        kind: Attention kind of ``gpt_micro_<kind>``.
        length: Context length ``L`` (``block_size``).
        dim, depth, heads, dim_head, vocab_size: The GPT.
        batch: Training batch size.
        warmup_steps: Untimed training steps first.
        train_steps: Timed training steps (the median is reported).
        gen_repeats: Timed cached-generation runs (the best is reported; uncached: one run).
    """

    kind: str
    length: int
    dim: int = 128
    depth: int = 2
    heads: int = 2
    dim_head: int = 64
    vocab_size: int = 256
    batch: int = 8
    warmup_steps: int = 1
    train_steps: int = 3
    gen_repeats: int = 2

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}")
        for name in ("length", "dim", "depth", "heads", "dim_head", "vocab_size", "batch",
                     "train_steps", "gen_repeats"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.length < 2:
            raise ValueError(f"length must be >= 2 (prompt L/2, then L/2 new tokens), "
                             f"got {self.length}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")

    @property
    def prompt_len(self) -> int:
        return self.length // 2

    @property
    def new_tokens(self) -> int:
        return self.length - self.prompt_len


def default_cases(quick: bool = False, kinds: Optional[Sequence[str]] = None,
                  lengths: Optional[Sequence[int]] = None) -> List[LMCase]:
    """The standard grid (``quick``: a tiny model at ``L`` = 16 and 32, for smoke runs)."""
    kinds = tuple(kinds) if kinds else DEFAULT_KINDS
    if quick:
        lengths = tuple(lengths) if lengths else (16, 32)
        return [LMCase(k, n, dim=32, depth=2, heads=2, dim_head=16, vocab_size=64, batch=2,
                       warmup_steps=1, train_steps=2, gen_repeats=1)
                for k in kinds for n in lengths]
    lengths = tuple(lengths) if lengths else (64, 128, 256)
    return [LMCase(k, n) for k in kinds for n in lengths]


def _build(case: LMCase):
    from translution.models import create_model
    torch.manual_seed(0)
    return create_model(f"gpt_micro_{case.kind}", vocab_size=case.vocab_size,
                        block_size=case.length, dim=case.dim, depth=case.depth,
                        heads=case.heads, dim_head=case.dim_head)


def measure(case: LMCase) -> Dict:
    """Measure one configuration in this process (CPU).

    Returns:
        ``{"parameters", "train_tokens_per_s", "train_step_s", "gen_cached_tokens_per_s",
        "gen_uncached_tokens_per_s"}``.
    """
    from translution.generation import decode_throughput

    model = _build(case)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, case.vocab_size, (case.batch, case.length + 1), generator=g)
    inputs, targets = x[:, :-1], x[:, 1:]

    def step() -> float:
        t0 = time.perf_counter()
        logits = model(inputs)                                      # (B, L, V)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    model.train()
    for _ in range(case.warmup_steps):
        step()
    step_s = statistics.median(step() for _ in range(case.train_steps))
    model.eval()
    cached = decode_throughput(model, case.prompt_len, case.new_tokens, use_cache=True,
                               repeats=case.gen_repeats)
    # one run: recomputing every prefix is slow and long enough to average itself
    uncached = decode_throughput(model, case.prompt_len, case.new_tokens, use_cache=False,
                                 repeats=1)
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "train_step_s": step_s,
            "train_tokens_per_s": case.batch * case.length / step_s,
            "gen_cached_tokens_per_s": cached,
            "gen_uncached_tokens_per_s": uncached}


def _measure_in_child(case: LMCase, threads: Optional[int], timeout: Optional[float]) -> Dict:
    cmd = [sys.executable, "-m", "translution.bench_lm", "--child", json.dumps(asdict(case))]
    if threads:
        cmd += ["--threads", str(threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _default_command() -> str:
    argv = list(sys.argv) or ["?"]
    if argv[0].endswith(".py"):
        return "python " + shlex.join(argv)
    return shlex.join([Path(argv[0]).name] + argv[1:])


def markdown(report: Dict) -> str:
    """The results table of a report from :func:`run_lm_bench` (``report.json`` layout)."""
    c = report["cases"][0]["case"] if report["cases"] else asdict(LMCase("ape", 64))
    lines = [
        "# Language-model throughput (CPU)", "",
        f"Machine: {report['machine']}.  ",
        f"Commit: `{report['commit']}`.  ",
        f"Command: `{report['command']}`", "",
        f"GPT `gpt_micro_<kind>` with dim {c['dim']}, depth {c['depth']}, {c['heads']} heads × "
        f"{c['dim_head']}, vocabulary {c['vocab_size']}, context L = block_size. Training: "
        f"batch {c['batch']}, forward + backward + AdamW step, median of {c['train_steps']} "
        f"steps after {c['warmup_steps']} warm-up step(s). Generation: batch 1, greedy, random "
        f"prompt of L/2 tokens then L/2 new tokens (prefill included) after a short warm-up; "
        f"cached = incremental decoding (best of {c['gen_repeats']} run(s)), uncached = whole "
        f"sequence recomputed per token (one run). "
        + ("One configuration per process." if report["isolated"]
           else "All configurations in one process."), "",
        "| attention | L | parameters | train tokens/s | generate tokens/s (cached) | "
        "generate tokens/s (uncached) | cache speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["cases"]:
        case, r = row["case"], row["result"]
        if "error" in r:
            lines.append(f"| {case['kind']} | {case['length']} | — | {r['error']} | — | — | — |")
            continue
        lines.append(
            f"| {case['kind']} | {case['length']} | {r['parameters']:,} | "
            f"{r['train_tokens_per_s']:,.0f} | {r['gen_cached_tokens_per_s']:,.1f} | "
            f"{r['gen_uncached_tokens_per_s']:,.1f} | "
            f"{r['gen_cached_tokens_per_s'] / r['gen_uncached_tokens_per_s']:.1f}× |")
    lines += ["", f"Total benchmark time: {report['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def run_lm_bench(quick: bool, out: Optional[str], *, kinds: Optional[Sequence[str]] = None,
                 lengths: Optional[Sequence[int]] = None, isolate: Optional[bool] = None,
                 threads: Optional[int] = None, timeout: Optional[float] = 1800.0,
                 command: Optional[str] = None,
                 progress: Callable[[str], None] = print) -> str:
    """Run the benchmark and return the markdown table (also written to ``out``).

    Args:
        quick: A tiny model at L = 16 and 32 (a smoke run of a few seconds).
        out: Markdown file to write (its ``.json`` sibling gets the raw numbers); ``None``
            writes nothing.
        kinds: Attention kinds (default :data:`DEFAULT_KINDS`).
        lengths: Context lengths (default 64, 128, 256; quick: 16, 32).
        isolate: One process per configuration (default: True, except in quick mode).
        threads: ``torch.set_num_threads`` for the measurements (``None``: torch's default).
        timeout: Seconds allowed per isolated configuration.
        command: The command line to print in the table (default: from ``sys.argv``).
        progress: Called with one line per configuration.

    Returns:
        The markdown table.

    Raises:
        ValueError: An unknown kind or a bad length.
    """
    if kinds is not None:
        bad = [k for k in kinds if k not in _KINDS]
        if bad:
            raise ValueError(f"unknown attention kind(s) {bad}; expected some of {list(_KINDS)}")
    cases = default_cases(quick, kinds, lengths)
    isolate = (not quick) if isolate is None else isolate
    t0 = time.perf_counter()
    old_threads = torch.get_num_threads()
    rows = []
    try:
        if threads and not isolate:
            torch.set_num_threads(threads)
        for case in cases:
            result = (_measure_in_child(case, threads, timeout) if isolate else measure(case))
            rows.append({"case": asdict(case), "result": result})
            progress(f"{case.kind:>12} L={case.length:<4} " + (
                result["error"] if "error" in result else
                f"train {result['train_tokens_per_s']:,.0f} tok/s, generate "
                f"{result['gen_cached_tokens_per_s']:,.1f} (cached) / "
                f"{result['gen_uncached_tokens_per_s']:,.1f} (uncached) tok/s"))
    finally:
        torch.set_num_threads(old_threads)
    report = {"machine": machine_description(threads), "commit": git_commit(),
              "command": command or _default_command(), "isolated": isolate,
              "seconds": time.perf_counter() - t0, "cases": rows}
    table = markdown(report)
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(table)
        if path.suffix != ".json":
            path.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    return table


def main(argv: Optional[List[str]] = None) -> int:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (seconds)")
    parser.add_argument("--out", help="markdown file to write (plus a .json sibling)")
    parser.add_argument("--kind", action="append", choices=_KINDS,
                        help="attention kind (repeatable; default: " + ", ".join(DEFAULT_KINDS)
                             + ")")
    parser.add_argument("--length", action="append", type=int,
                        help="context length (repeatable; default 64, 128, 256)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--no-isolate", action="store_true",
                        help="measure every configuration in this process")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(measure(LMCase(**json.loads(args.child)))))
        return 0
    argv_used = sys.argv[1:] if argv is None else argv
    table = run_lm_bench(args.quick, args.out, kinds=args.kind, lengths=args.length,
                         isolate=False if args.no_isolate else None, threads=args.threads,
                         command="translution bench lm " + shlex.join(argv_used))
    print()
    print(table)
    if args.out:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
