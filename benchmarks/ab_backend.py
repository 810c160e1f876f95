"""Side-by-side timing of two versions of the batched backend in one process.

Two separate processes on a shared 2-core machine differ by 10–40 % from run to run; timing the
old and the new backend (and standard attention, the denominator of issue 7's α goal) in one
process, interleaved call by call, cancels most of that drift.

    git show 7662197:src/translution/backends/batched.py > /tmp/batched_old.py
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/ab_backend.py /tmp/batched_old.py \\
        --sizes 14,8,7,mnist --kind alpha

Prints, per size, the best process time of forward + backward (one layer, as in
``translution bench op``) for attention, the old and the new backend, and their ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time

import torch

from translution.backends.batched import BatchedBackend
from translution.bench.op import Case, build_layer
from translution.layers import AlphaTranslution, Translution

SIZES = {"mnist": Case("grid:6,6:cls", 64, 4, dim_head=16, batch=128),
         "paper": Case("grid:4,4:cls", 192, 3, batch=64), "4": Case("grid:4,4:cls", 192, 3),
         "7": Case("grid:7,7:cls", 192, 3), "8": Case("grid:8,8:cls", 192, 3),
         "14": Case("grid:14,14:cls", 192, 3), "c64": Case("causal:64", 128, 2),
         "c128": Case("causal:128", 128, 2), "c256": Case("causal:256", 128, 2),
         "c256w": Case("causal:256", 384, 6),
         "fashion": Case("grid:4,4:cls", 64, 4, dim_head=16, batch=128)}


def load_backend(path: str):
    """The ``BatchedBackend`` class of another version of ``batched.py``."""
    spec = importlib.util.spec_from_file_location("translution.backends._batched_other", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module               # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.BatchedBackend


def compare(case: Case, kind: str, other, rounds: int) -> dict:
    """Best process seconds per variant over ``rounds`` interleaved calls (after one each)."""
    layout = case.build_layout()
    x = torch.randn(case.batch, layout.num_tokens, case.dim, requires_grad=True)

    def layer(backend):
        torch.manual_seed(0)
        if kind == "alpha":
            return AlphaTranslution(case.dim, layout, case.heads, case.dim_head, rank=case.rank,
                                    backend=backend)
        return Translution(case.dim, layout, case.heads, case.dim_head, backend=backend)

    layers = {"attention": build_layer(case, "sdpa"), "old": layer(other()),
              "new": layer(BatchedBackend())}
    best = dict.fromkeys(layers, float("inf"))
    for r in range(rounds + 1):
        for name, module in layers.items():
            start = time.process_time()
            module(x).sum().backward()
            if r:
                best[name] = min(best[name], time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="path of the other version's batched.py")
    parser.add_argument("--sizes", default="14,7,mnist", help=f"comma-separated, of {list(SIZES)}")
    parser.add_argument("--kind", choices=["alpha", "translution"], default="alpha")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    other = load_backend(args.old)
    for name in args.sizes.split(","):
        case = SIZES[name]
        t = compare(case, args.kind, other, args.rounds)
        a = t["attention"]
        print(f"{args.kind} {case.label} b{case.batch}: attention {a * 1e3:.1f} ms, "
              f"old {t['old'] * 1e3:.1f} ms ({t['old'] / a:.2f}×), "
              f"new {t['new'] * 1e3:.1f} ms ({t['new'] / a:.2f}×)", flush=True)


if __name__ == "__main__":
    main()
