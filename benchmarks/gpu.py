"""The prepared accelerator run (issue 7, item 6): exactness on the device first, then the
operation table and one ViT-tiny training step, in fp32 and bf16 autocast, for standard attention
(SDPA), α-Translution, Translution on the grouped and batched backends and the paper's algorithm.

    python benchmarks/gpu.py --out benchmarks/results/gpu          # on a CUDA machine
    python benchmarks/gpu.py --device cpu --quick --out /tmp/gpu   # smoke run anywhere

Writes ``OUT/gpu.json`` and ``OUT/gpu.md`` (machine, torch and commit in the header) and exits
with status 1 when a backend is not exact on the device. Every measurement runs in this process
(the device's peak-memory counter is reset around each one); an out-of-memory case is recorded,
not fatal.
"""

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

import torch

from translution import AlphaTranslution, Translution
from translution.bench.common import PeakMemory, git_commit, timings
from translution.bench.op import Case, build_layer, default_cases, paper_gathered_translution
from translution.layouts import Grid, Sequence
from translution.models import create_model

DTYPES = {"fp32": None, "bf16": torch.bfloat16}
IMPLS = ("sdpa", "alpha", "grouped", "batched", "paper")
EXACT_LAYOUTS = {"grid 3×3+cls": Grid(3, 3, cls_token=True), "grid 2×3": Grid(2, 3),
                 "causal 6": Sequence(6, causal=True), "bidirectional 5": Sequence(5),
                 "causal 9, K=2": Sequence(9, causal=True, max_distance=2)}


def exactness(device: str) -> list:
    """Max |device backend − CPU reference| in float64 over outputs and every gradient."""
    rows = []
    for (name, layout), cls, backend in itertools.product(
            EXACT_LAYOUTS.items(), (Translution, AlphaTranslution), ("grouped", "batched")):
        torch.manual_seed(0)
        ref = cls(8, layout, 2, 4, backend="reference").double()
        layer = cls(8, layout, 2, 4, backend=backend).double().to(device)
        layer.load_state_dict(ref.state_dict())
        x = torch.randn(2, layout.num_tokens, 8, dtype=torch.float64)
        got, want = (_forward_backward(m, x.to(m_dev)) for m, m_dev in
                     ((layer, device), (ref, "cpu")))
        error = max((g.cpu() - w).abs().max().item() for g, w in zip(got, want))
        rows.append({"layout": name, "layer": cls.__name__, "backend": backend,
                     "max_abs_error": error})
    return rows


def _forward_backward(module, x):
    x = x.detach().requires_grad_(True)
    y = module(x)
    y.square().sum().backward()
    return [y.detach(), x.grad, *(p.grad for p in module.parameters())]


def time_layer(case: Case, impl: str, dtype, device: str, repeats: int) -> dict:
    """Median seconds and peak bytes of one layer's forward + backward."""
    memory = PeakMemory(device)
    try:
        torch.manual_seed(0)
        layer = build_layer(case, "grouped" if impl == "paper" else impl).to(device)
        layout = case.build_layout()
        x = torch.randn(case.batch, layout.num_tokens, case.dim, device=device,
                        requires_grad=True)

        def step():
            with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
                y = (layer.out(paper_gathered_translution(x, layer.wq, layer.wk, layer.wv,
                                                          layout, case.heads))
                     if impl == "paper" else layer(x))
            y.float().sum().backward()
        seconds = statistics.median(timings(step, 2 + repeats, memory.sync)[2:])
        return {"seconds": seconds, "peak_bytes": memory.peak() - memory.base}
    except torch.OutOfMemoryError:
        return {"skipped": "out of memory"}
    finally:
        if device == "cuda":
            torch.cuda.empty_cache()


def time_vit_step(attention: str, backend, dtype, device: str, batch: int, repeats: int) -> dict:
    """Median seconds of one ViT-tiny training step (224×224, patch 56: 4×4 + class token)."""
    memory = PeakMemory(device)
    torch.manual_seed(0)
    model = create_model(f"vit_tiny_{attention}", backend=backend).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(batch, 3, 224, 224, device=device)
    labels = torch.randint(0, model.config.num_classes, (batch,), device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(images).float(), labels)
        loss.backward()
        optimizer.step()
    try:
        seconds = statistics.median(timings(step, 2 + repeats, memory.sync)[2:])
    except torch.OutOfMemoryError:
        return {"skipped": "out of memory"}
    return {"seconds": seconds, "peak_bytes": memory.peak() - memory.base}


def markdown(report: dict) -> str:
    lines = [f"# Device run: {report['device_name']}", "",
             f"torch {report['torch']}, commit `{report['commit']}`.", "",
             "## Exactness (float64, device backend against the CPU reference)", "",
             "| layout | layer | backend | max abs error |", "|---|---|---|---|"]
    lines += [f"| {r['layout']} | {r['layer']} | {r['backend']} | {r['max_abs_error']:.1e} |"
              for r in report["exactness"]]

    def cell(r):
        return r.get("skipped") or f"{r['seconds'] * 1e3:.2f} ms, {r['peak_bytes'] / 2**20:.0f} MiB"
    lines += ["", "## One layer, forward + backward (median)", "",
              "| config | dtype | " + " | ".join(IMPLS) + " |", "|---|---|" + "---|" * len(IMPLS)]
    lines += [f"| {r['case']} | {r['dtype']} | " + " | ".join(cell(r[i]) for i in IMPLS) + " |"
              for r in report["layers"]]
    lines += ["", f"## ViT-tiny training step (batch {report['vit_batch']}, median)", "",
              "| model | dtype | step |", "|---|---|---|"]
    lines += [f"| {r['model']} | {r['dtype']} | {cell(r)} |" for r in report["vit"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="two small cases, batch-2 ViT step")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device; use --device cpu for a smoke run")
    report = {"device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "torch": torch.__version__, "commit": git_commit(), "exactness": exactness(device)}
    print(f"exactness: worst {max(r['max_abs_error'] for r in report['exactness']):.1e}",
          flush=True)
    cases = default_cases(quick=args.quick)
    report["layers"] = []
    for case in cases:
        for dname, dtype in DTYPES.items():
            row = {"case": f"{case.label}, batch {case.batch}, dim {case.dim}", "dtype": dname}
            row.update({impl: time_layer(case, impl, dtype, device, args.repeats)
                        for impl in IMPLS})
            report["layers"].append(row)
            print(json.dumps(row), flush=True)
    report["vit_batch"] = 2 if args.quick else 64
    report["vit"] = [
        {"model": f"vit_tiny_{attention}" + (f" ({backend})" if backend else ""), "dtype": dname,
         **time_vit_step(attention, backend, dtype, device, report["vit_batch"], args.repeats)}
        for attention, backend in (("ape", None), ("alpha", "batched"),
                                   ("translution", "grouped"), ("translution", "batched"),
                                   ("translution", "reference"))
        for dname, dtype in DTYPES.items()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(report, indent=1))
    (args.out / "gpu.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if max(r["max_abs_error"] for r in report["exactness"]) < 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
