"""Operation benchmark (``translution bench op``): forward+backward time, peak memory and ops of
one layer per process for each of :data:`IMPLS`; the matmul rate, α's FLOP ratio ``F`` and the
Dynamic MNIST models' training steps/s. Columns: ``benchmarks/README.md`` §1."""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .common import PeakMemory, git_commit, machine_description, run_in_child, timings

IMPLS = ("paper", "grouped", "batched", "alpha", "sdpa")
TRANSLUTION_IMPLS = ("grouped", "batched")        # Translution on that backend


@dataclass
class Case:
    """One benchmark configuration (``name``: an optional title, e.g. "MNIST main job")."""

    layout: str                 # "grid:H,W:cls" or "causal:L"
    dim: int
    heads: int
    dim_head: int = 64
    batch: int = 8
    rank: int = 8
    name: str = ""

    def build_layout(self):
        from ..layouts import Grid, Sequence
        kind, size, *opt = self.layout.split(":")
        if kind == "grid":
            return Grid(*map(int, size.split(",")), cls_token="cls" in opt)
        if kind == "causal":
            return Sequence(int(size), causal=True)
        raise ValueError(f"unknown benchmark layout {self.layout!r}")

    @property
    def label(self) -> str:
        kind, size, *opt = self.layout.split(":")
        shape = (size.replace(",", "×") + ("+cls" if opt else "") if kind == "grid"
                 else f"causal L={size}")
        return f"{self.name}: {shape}" if self.name else shape


def paper_gathered_translution(x, wq, wk, wv, layout, heads):
    """The paper code's algorithm (benchmark baseline only): gather ``W[slot]`` for every pair and
    broadcast-multiply, materialising ``B×N×N×C×C'`` products and ``B×N×N×C'`` pairs. Keys use
    the layout's key slots (``slot(j, i)``; ``slot(i, j)`` on causal layouts), as Translution."""
    index = layout.slot_index()
    q = (x[:, :, None, None, :] @ wq[index]).squeeze(-2)                  # (B, N, N, C')
    k = (x[:, None, :, None, :] @ wk[layout.key_slot_index()]).squeeze(-2)
    v = (x[:, None, :, None, :] @ wv[index]).squeeze(-2)
    b, n = x.shape[:2]
    a = (q * k).view(b, n, n, heads, -1).sum(-1) * (q.shape[-1] // heads) ** -0.5
    if layout.causal:
        a = a.masked_fill(~layout.allowed()[None, :, :, None], float("-inf"))
    a = a.softmax(dim=2)
    return torch.einsum("bijh,bijhd->bihd", a, v.view(b, n, n, heads, -1)).flatten(-2)


def useful_projection_flops(case: Case, impl: str) -> float:
    """FLOPs of the relative projections in forward (×1) and backward (×2), no recompute:
    ``3 · 2·B·P·C·C'`` per relative projection (P = attended pairs)."""
    c_in, c_out = ((case.heads * case.rank,) * 2 if impl == "alpha"
                   else (case.dim, case.heads * case.dim_head))
    return 3 * 3 * 2.0 * case.batch * case.build_layout().num_pairs * c_in * c_out


def matmul_rate(sizes=(1024, 2048, 4096), repeats: int = 5) -> float:
    """Dense fp32 matmul GFLOP/s of this machine: the best over square ``sizes``, each timed
    ``repeats`` times after a warm-up."""
    def rate(size):
        a, b = torch.randn(size, size), torch.randn(size, size)
        return 2.0 * size ** 3 / min(timings(lambda: a @ b, repeats, warmup=1)) / 1e9
    return max(rate(size) for size in sizes)


class OpCounter(TorchDispatchMode):
    """Counts the ops dispatched while it is active (views and in-place ops included) in ``ops``,
    and the bytes of the largest tensor any of them returns in ``largest``."""

    def __init__(self):
        super().__init__()
        self.ops, self.largest = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


def build_layer(case: Case, impl: str):
    """The layer that ``impl`` times (the paper's algorithm uses a Translution layer's weights)."""
    from ..layers import AlphaTranslution, SelfAttention, Translution
    layout = case.build_layout()
    if impl == "sdpa":
        return SelfAttention(case.dim, layout, case.heads, case.dim_head)
    backend = impl.partition(":")[2] or (impl if impl in TRANSLUTION_IMPLS else None)
    if impl.startswith("alpha"):
        return AlphaTranslution(case.dim, layout, case.heads, case.dim_head, rank=case.rank,
                                backend=backend)
    return Translution(case.dim, layout, case.heads, case.dim_head, backend=backend)


def flop_ratios(case: Case) -> Dict[str, float]:
    """α-Translution's forward FLOPs (``grouped`` backend) over attention's (``FlopCounterMode``):
    ``"F"`` without attention's CPU flash kernel (uncounted, as issue 7 defines F), ``"F_core"``
    with it (attention through the math SDPA path)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    torch.manual_seed(0)
    x = torch.randn(case.batch, case.build_layout().num_tokens, case.dim)

    def flops(impl, math_sdpa):
        layer = build_layer(case, impl)
        kernels = sdpa_kernel(SDPBackend.MATH) if math_sdpa else contextlib.nullcontext()
        with torch.no_grad(), kernels, FlopCounterMode(display=False) as counter:
            layer(x)
        return counter.get_total_flops()

    alpha = flops("alpha:grouped", False)
    return {"F": alpha / flops("sdpa", False), "F_core": alpha / flops("sdpa", True)}


def run_one(case: Case, impl: str, repeats: int = 3, warmup: int = 3) -> Dict:
    """Time forward+backward of one layer here: ``seconds`` (best of ``repeats`` after
    ``warmup`` calls and 1 s), ``peak_rss`` (peak resident bytes while the layer is built and
    run), ``base_rss`` (resident bytes before: torch), ``ops`` (ops one call dispatches)."""
    torch.manual_seed(0)
    layout = case.build_layout()
    memory = PeakMemory()
    layer = build_layer(case, impl)
    x = torch.randn(case.batch, layout.num_tokens, case.dim, requires_grad=True)

    def step():
        if impl == "paper":
            y = layer.out(paper_gathered_translution(x, layer.wq, layer.wk, layer.wv, layout,
                                                     case.heads))
        else:
            y = layer(x)
        y.sum().backward()

    times = timings(step, repeats, warmup=warmup, warmup_s=1.0)
    peak = memory.peak()
    with OpCounter() as counter:  # after the warm-up: caches filled on first use
        step()
    return {"seconds": min(times), "times": times, "peak_rss": peak, "base_rss": memory.base,
            "ops": counter.ops}


def measure(case: Case, impl: str, repeats: int = 3, memory_limit: float = 14e9,
            timeout: float = 900) -> Dict:
    """Run :func:`run_one` in a fresh process (so peak memory is this case's alone)."""
    if impl == "paper":  # the paper's algorithm needs ≈ 16·B·N²·C·C' bytes
        n = case.build_layout().num_tokens
        need = 16.0 * case.batch * n * n * case.dim * case.heads * case.dim_head
        if need > memory_limit:
            return {"skipped": f"needs ≈{need / 1e9:.0f} GB"}
    job = json.dumps({"case": asdict(case), "impl": impl, "repeats": repeats})
    result = run_in_child(["translution.bench.op", job], timeout)
    return {"skipped": result["error"]} if "error" in result else result


def train_steps_per_second(run_ids: Optional[Sequence[str]] = None, batch: int = 64,
                           steps: int = 3) -> List[Dict]:
    """Training steps/s (forward + backward + AdamW step, median of ``steps`` after a warm-up)
    of the Dynamic MNIST main job's models (default: all of ``QUICK.models``), built as the
    experiment builds them, on random ``(batch, 1, canvas, canvas)`` images."""
    from ..experiments.dynamic_mnist import QUICK, build_model
    rows = []
    for run_id in run_ids or QUICK.models:
        torch.manual_seed(0)
        model = build_model(QUICK, run_id).train()
        optimizer = torch.optim.AdamW(model.parameters(), QUICK.lr, weight_decay=QUICK.weight_decay)
        canvas = QUICK.arm_canvas(run_id)
        x, y = torch.randn(batch, 1, canvas, canvas), torch.randint(0, 10, (batch,))

        def step():
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()

        seconds = statistics.median(timings(step, steps, warmup=1, warmup_s=1.0))
        rows.append({"run_id": run_id, "label": QUICK.models[run_id]["label"],
                     "parameters": sum(p.numel() for p in model.parameters()),
                     "input_shape": list(x.shape), "steps": steps,
                     "steps_per_s": 1 / seconds, "ms_per_step": 1e3 * seconds})
    return rows


def default_cases(quick: bool = False) -> List[Case]:
    """The issue's configurations (``quick``: two small ones for a smoke run)."""
    if quick:
        return [Case("grid:4,4:cls", 192, 3), Case("causal:64", 128, 2)]
    jobs = [Case("grid:6,6:cls", 64, 4, dim_head=16, batch=128, name="MNIST main job"),
            Case("grid:4,4:cls", 192, 3, batch=64, name="paper's grid")]
    grids = [Case(f"grid:{s},{s}:cls", 192, 3) for s in (4, 7, 8, 14)]
    seqs = [Case(f"causal:{n}", dim, dim // 64) for dim in (128, 384) for n in (64, 128, 256)]
    return jobs + grids + seqs


def run_suite(cases: List[Case], impls=IMPLS, repeats: int = 3, memory_limit: float = 14e9,
              progress=print, models: bool = True) -> Dict:
    """Measure every case × implementation, and with ``models`` the Dynamic MNIST models'
    training steps/s (:func:`train_steps_per_second`); a JSON-able dict (see :func:`markdown`)."""
    rate = matmul_rate()
    rows = []
    for case in cases:
        row = {"case": asdict(case), "label": case.label, "results": {}}
        if "alpha" in impls:
            row["alpha_flop_ratio"] = flop_ratios(case)
        for impl in impls:
            result = measure(case, impl, repeats, memory_limit)
            if "seconds" in result and impl in TRANSLUTION_IMPLS + ("alpha",):
                flops = useful_projection_flops(case, impl)
                result["projection_gflops"] = flops / result["seconds"] / 1e9
            row["results"][impl] = result
            progress(f"{case.label:>30} dim {case.dim:>3} {impl:>7}: " + (
                f"{result['seconds']:.3f} s, peak {result['peak_rss'] / 1e9:.2f} GB, "
                f"{result['ops']} ops" if "seconds" in result else result["skipped"]))
        rows.append(row)
    model_rows = train_steps_per_second() if models else []
    for m in model_rows:
        progress(f"{m['label']:>30}: {m['steps_per_s']:.2f} training steps/s")
    return {"machine": machine_description(), "commit": git_commit(), "matmul_gflops": rate,
            "rows": rows, "models": model_rows}


def _cell(r: Dict, memory: bool = True) -> str:
    if "seconds" not in r:
        return r.get("skipped", "—")
    return f"{r['seconds']:.3f} s" + (f", {r['peak_rss'] / 1e9:.2f} GB" if memory else "")


def _ratio(a: Dict, b: Dict, fmt: str = "{:.1f}×") -> str:
    return fmt.format(a["seconds"] / b["seconds"]) if "seconds" in a and "seconds" in b else "—"


def markdown(report: Dict) -> str:
    """A results table (times in seconds, memory = peak process RSS in GB)."""
    rate = report["matmul_gflops"]
    lines = [f"Machine: {report['machine']}; commit `{report['commit']}`; dense fp32 matmul "
             f"{rate:.0f} GFLOP/s.", "",
             "| config | batch | dim (heads × dim_head) | attention | α (r=8) | α / attention (F; "
             "bound max(4, 1.5·F)) | Translution, grouped | Translution, batched | Translution, "
             "% of matmul rate (grouped / batched) | paper's algorithm | paper / best Translution "
             "| ops per layer call (attention / α / grouped / batched) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        res, case = row["results"], row["case"]
        get = lambda impl: res.get(impl, {})
        ratio = _ratio(get("alpha"), get("sdpa"))
        f = row.get("alpha_flop_ratio")
        if f is not None:
            ratio += (f" (F = {f['F']:.2f}, {f['F_core']:.2f} with the core; "
                      f"bound {max(4.0, 1.5 * f['F']):.1f}×)")
        share = " / ".join(f"{100 * get(i)['projection_gflops'] / rate:.0f} %"
                           if get(i).get("projection_gflops") else "—" for i in TRANSLUTION_IMPLS)
        timed = [get(i) for i in TRANSLUTION_IMPLS if "seconds" in get(i)]
        best = min(timed, key=lambda r: r["seconds"]) if timed else {}
        ops = " / ".join(str(get(i).get("ops", "—")) for i in ("sdpa", "alpha") + TRANSLUTION_IMPLS)
        lines.append(
            f"| {row['label']} | {case['batch']} | {case['dim']} ({case['heads']} × "
            f"{case['dim_head']}) | {_cell(get('sdpa'), False)} | {_cell(get('alpha'), False)} | "
            f"{ratio} | {_cell(get('grouped'))} | {_cell(get('batched'))} | {share} | "
            f"{_cell(get('paper'))} | {_ratio(get('paper'), best, '{:.0f}×')} | {ops} |")
    if report.get("models"):
        lines += ["", "| model (Dynamic MNIST main job) | parameters | training steps/s | "
                  "ms/step |", "|---|---|---|---|"]
        lines += [f"| {m['label']} | {m['parameters']:,} | {m['steps_per_s']:.2f} | "
                  f"{m['ms_per_step']:.1f} |" for m in report["models"]]
    lines += ["", "Every column is defined in `benchmarks/README.md`, section 1."]
    return "\n".join(lines)


if __name__ == "__main__":
    job = json.loads(sys.argv[1])
    print(json.dumps(run_one(Case(**job["case"]), job["impl"], job["repeats"])))
