"""The Dynamic MNIST experiment (SPEC §7): does accuracy survive when digits move?

Each 28×28 MNIST digit is pasted on a larger blank canvas (default 42×42, patch 7 → a 6×6 grid +
class token). Models are trained on *static* digits (fixed, patch-aligned centre) and on
*dynamic* digits (random pixel shifts), then tested on static digits, on random patch-aligned
shifts and on random pixel shifts (test placements are seeded, hence the same for every model).

Models: ViT + learned absolute position embedding (the paper's baseline), ViT + relative
position bias (the classic relative baseline), Translution and α-Translution, all of one width
and depth. Every training run is a resumable :func:`translution.train.fit` run in
``OUT/runs/<train setting>/<model>``: re-running the same command continues where it stopped.

Outputs in ``OUT``: ``report.md``, ``results.json``
(``model → setting → {accuracy, parameters, seconds}``), ``accuracy.png``, ``curves.png``,
``kernels_translution.png`` / ``kernels_alpha.png`` (learned value slots as offset maps) and
``attention.png`` (class-token attention on shifted digits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

MODELS = {
    "ViT + abs. pos. emb.": "ape",
    "ViT + rel. pos. bias": "bias",
    "Translution": "translution",
    "α-Translution": "alpha",
}


@dataclass
class DynamicMNISTSettings:
    """Protocol and model sizes. :data:`QUICK` (default) and :data:`FULL` are the two presets."""

    canvas: int = 42
    patch: int = 7
    train_size: Optional[int] = 10000          # None: all 60 000 training digits
    test_size: Optional[int] = 2000            # None: all 10 000 test digits
    epochs: int = 2
    batch_size: int = 128
    dim: int = 64
    depth: int = 3
    heads: int = 4
    dim_head: int = 16
    mlp_dim: int = 128
    rank: int = 8
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.05
    schedule: str = "cosine"
    warmup_steps: int = 20
    step_gamma: float = 0.7
    seed: int = 0
    test_seed: int = 1234
    train_settings: List[str] = field(default_factory=lambda: ["static", "pixel"])
    test_placements: List[str] = field(default_factory=lambda: ["static", "patch", "pixel"])
    models: Dict[str, str] = field(default_factory=lambda: dict(MODELS))


QUICK = DynamicMNISTSettings()
#: SPEC §6's MNIST recipe (dim 64, depth 6, 8 heads of 64, MLP 128, Adadelta lr 1.0,
#: StepLR(1, 0.7), 14 epochs, batch 64) on all 60 000 / 10 000 digits.
FULL = DynamicMNISTSettings(train_size=None, test_size=None, epochs=14, batch_size=64, depth=6,
                            heads=8, dim_head=64, optimizer="adadelta", lr=1.0, weight_decay=0.0,
                            schedule="step", warmup_steps=0)

PLACEMENT_NAMES = {"static": "static", "patch": "patch shift", "pixel": "pixel shift"}


def setting_name(train: str, test: str) -> str:
    return f"train {PLACEMENT_NAMES[train]} → test {PLACEMENT_NAMES[test]}"


def _run_config(s: DynamicMNISTSettings, model_name: str, train_setting: str):
    from ..train import OptimConfig, RunConfig, ScheduleConfig, TrainConfig
    sched = (ScheduleConfig(name="step", step_size=1, gamma=s.step_gamma, per="epoch")
             if s.schedule == "step" else
             ScheduleConfig(name=s.schedule, warmup=s.warmup_steps, per="step"))
    return RunConfig(
        model={"name": model_name},
        data={"dataset": "dynamic-mnist", "canvas": s.canvas, "patch": s.patch,
              "placement": train_setting, "train_size": s.train_size},
        train=TrainConfig(epochs=s.epochs, batch_size=s.batch_size, seed=s.seed,
                          log_every=10, eval_every=0, checkpoint_every=50),
        optim=OptimConfig(name=s.optimizer, lr=s.lr, weight_decay=s.weight_decay,
                          grad_clip=1.0),
        schedule=sched)


def build_model(s: DynamicMNISTSettings, kind: str) -> torch.nn.Module:
    """A ViT of the experiment's size with attention ``kind`` (ape, bias, translution, alpha)."""
    from ..models import create_model
    return create_model(f"vit_mnist_{kind}", image_size=s.canvas, patch_size=s.patch, dim=s.dim,
                        depth=s.depth, heads=s.heads, dim_head=s.dim_head, mlp_dim=s.mlp_dim,
                        rank=s.rank)


def _subset(images, labels, size: Optional[int]):
    return (images, labels) if size is None else (images[:size], labels[:size])


def run(out: Path, settings: DynamicMNISTSettings = QUICK, data_root: Optional[str] = None,
        log: Callable[[str], None] = print) -> Dict:
    """Run (or resume) the whole experiment and write the report; returns ``results.json``'s dict."""
    from ..data.dynamic_mnist import DynamicMNIST
    from ..data.mnist import load_mnist
    from ..train import ClassificationTask, DatasetBatches, fit

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = settings
    torch.manual_seed(s.seed)
    log("loading MNIST ...")
    train_images, train_labels = _subset(*load_mnist("train", root=data_root), s.train_size)
    test_images, test_labels = _subset(*load_mnist("test", root=data_root), s.test_size)
    tests = {p: DynamicMNIST(test_images, test_labels, canvas=s.canvas, patch=s.patch,
                             placement=p, seed=s.test_seed) for p in s.test_placements}
    task = ClassificationTask(topk=(1,))
    results: Dict[str, Dict] = {}
    curves: Dict[str, list] = {}
    trained: Dict[str, Dict[str, torch.nn.Module]] = {}
    for train_setting in s.train_settings:
        train_set = DynamicMNIST(train_images, train_labels, canvas=s.canvas, patch=s.patch,
                                 placement=train_setting, seed=s.seed)
        batches = DatasetBatches(train_set, s.batch_size, shuffle=True, seed=s.seed,
                                 drop_last=True)
        for label, kind in s.models.items():
            run_dir = out / "runs" / train_setting / kind
            torch.manual_seed(s.seed)
            model = build_model(s, kind)
            log(f"[train {PLACEMENT_NAMES[train_setting]}] {label}: "
                f"{model.num_parameters():,} parameters, {len(batches) * s.epochs} steps")
            summary = fit(model, task, batches, _run_config(s, f"vit_mnist_{kind}", train_setting),
                          out_dir=run_dir, device="cpu")
            model.eval()
            trained.setdefault(train_setting, {})[label] = model
            curves[f"{label} ({PLACEMENT_NAMES[train_setting]})"] = _loss_curve(run_dir)
            for placement, test_set in tests.items():
                evaluation = task.evaluate(model, DatasetBatches(
                    test_set, 500, shuffle=False, even_shards=False).batches(0))
                results.setdefault(label, {})[setting_name(train_setting, placement)] = {
                    "accuracy": evaluation["top1"] / 100.0,
                    "parameters": summary["parameters"],
                    "seconds": round(summary["seconds"], 1),
                }
                log(f"    test {PLACEMENT_NAMES[placement]:>11}: {evaluation['top1']:.2f} %")
    _write_json(out / "results.json", results)
    figures = _figures(out, s, results, curves, trained, tests)
    (out / "report.md").write_text(report_markdown(results, s, figures))
    log(f"report: {out / 'report.md'}")
    return results


def _loss_curve(run_dir: Path) -> list:
    from ..train import read_metrics
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir / "metrics.jsonl", "train")
            if "loss" in r]


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    tmp.replace(path)


def _figures(out, s, results, curves, trained, tests) -> List[str]:
    from .. import plots
    figures = []
    accuracy = {m: {k.replace(" → ", "\n→ "): v["accuracy"] for k, v in r.items()}
                for m, r in results.items()}
    plots.accuracy_bars(accuracy, out / "accuracy.png", "Dynamic MNIST: accuracy per test placement")
    figures.append("accuracy.png")
    plots.training_curves(curves, out / "curves.png", title="training loss")
    figures.append("curves.png")
    static_models = trained.get(s.train_settings[0], {})
    for label, model in static_models.items():
        kind = s.models[label]
        if kind in ("translution", "alpha"):
            name = f"kernels_{kind}.png"
            bank = "wv" if kind == "translution" else "mv"
            if plots.value_kernels(model, out / name, bank=bank,
                                   title=f"{label} (trained static): ‖{bank}[δ]‖ per layer"):
                figures.append(name)
    if "pixel" in tests and static_models:
        images = torch.stack([tests["pixel"][i][0] for i in range(6)])
        plots.attention_maps(static_models, images, out / "attention.png", s.patch,
                             title="class-token attention, last block, models trained on "
                                   "static digits, pixel-shifted test digits")
        figures.append("attention.png")
    return figures


def report_markdown(results: Dict, s: DynamicMNISTSettings, figures: List[str]) -> str:
    settings = list(next(iter(results.values())))
    lines = ["# Dynamic MNIST", "",
             f"Canvas {s.canvas}×{s.canvas}, patch {s.patch} "
             f"({s.canvas // s.patch}×{s.canvas // s.patch} grid + class token); "
             f"{s.train_size or 60000} training / {s.test_size or 10000} test digits; "
             f"{s.epochs} epochs, batch {s.batch_size}, {s.optimizer} lr {s.lr}, "
             f"{s.schedule} schedule; models: dim {s.dim}, depth {s.depth}, {s.heads} heads × "
             f"{s.dim_head}, MLP {s.mlp_dim}, α rank {s.rank}.", "",
             "Test accuracy (%):", "",
             "| model | params | train time (s) | " + " | ".join(settings) + " |",
             "|---|---|---|" + "---|" * len(settings)]
    for model, row in results.items():
        first = next(iter(row.values()))
        seconds = [next(v["seconds"] for k, v in row.items()
                        if k.startswith(f"train {PLACEMENT_NAMES[t]} "))
                   for t in s.train_settings]
        lines.append(f"| {model} | {first['parameters']:,} | "
                     f"{' / '.join(f'{t:.0f}' for t in seconds)} | "
                     + " | ".join(f"{100 * row[k]['accuracy']:.1f}" for k in settings) + " |")
    lines += ["", "Train time: one number per training setting ("
              + " / ".join(PLACEMENT_NAMES[t] for t in s.train_settings) + ")."]
    lines += [""] + [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"
