"""Fashion-MNIST on the paper's 4×4 token grid (28×28, patch 7): ViT (APE, 2-D RoPE, a
parameter-matched APE), α-Translution, Translution, ``lor_rope`` (``ablations: true`` adds
Translution's relative subsets and ``symmetric``). Arm × seed runs: ``OUT/runs/<arm>/seed<k>``;
``OUT/results.json``: label → ``{accuracy, accuracy_std, seeds, parameters, seconds, ...}``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from ..train.config import bounded, load_settings
from ..utils import atomic_write_json, atomic_write_text
from .common import (ExperimentSettings, check_fingerprint, fit_with_bar, grow_to_match,
                     markdown_table, mean_std, parameter_count, pm, read_or_train, run_arms,
                     running, seed_summary)

__all__ = ["FashionSettings", "QUICK", "FULL", "MODELS", "ABLATIONS", "run", "arm_sections",
           "report_markdown"]

#: The main arms: report label → ``{attention, **ViTConfig overrides, [match, grow]}``.
MODELS: Dict[str, Dict[str, Any]] = {
    "ViT + abs. pos. emb.": {"attention": "ape"},
    "ViT + 2-D RoPE": {"attention": "rope"},
    "α-Translution": {"attention": "alpha"},
    "Translution": {"attention": "translution"},
    "α-Translution v + 2-D RoPE (lor_rope)": {"attention": "lor_rope"},
    "ViT + abs. pos. emb., parameter-matched": {"attention": "ape", "match": "Translution"},
}
#: Added with ``ablations: true``: Translution's relative subsets and direction-free slots.
ABLATIONS: Dict[str, Dict[str, Any]] = {
    **{f"Translution (relative {r})": {"attention": "translution", "relative": r}
       for r in ("q", "k", "v", "qk", "qv", "kv", "qkv")},
    "Translution (symmetric)": {"attention": "translution", "symmetric": True},
}


@dataclass
class FashionSettings(ExperimentSettings):
    """Protocol and sizes (presets ``configs/fashion_{quick,full}.yaml``); ``models``: label →
    ``{attention, **ViTConfig overrides}``, ``match: LABEL`` grows an arm in ``grow: width|depth``
    to that arm's parameters."""

    data_root: Optional[str] = None
    train_size: Optional[int] = bounded(None, ge=1)
    test_size: Optional[int] = bounded(None, ge=1)
    seeds: int = bounded(3, ge=1)
    epochs: int = bounded(1, ge=1)
    batch_size: int = bounded(128, ge=1)
    eval_batch_size: int = bounded(500, ge=1)
    eval_points: int = bounded(0, ge=0)
    dim: int = bounded(64, ge=1)
    depth: int = bounded(4, ge=1)
    heads: int = bounded(4, ge=1)
    dim_head: int = bounded(16, ge=1)
    mlp_dim: int = bounded(128, ge=1)
    rank: int = bounded(8, ge=1)
    min_lr_ratio: float = bounded(0.01, ge=0, le=1)
    warmup_steps: int = bounded(50, ge=0)
    crop_padding: int = bounded(2, ge=0)
    flip: bool = True
    models: Dict[str, Dict[str, Any]] = field(default_factory=lambda: dict(MODELS))
    ablations: bool = False

    def check(self) -> None:
        if not self.models:
            raise ValueError("models must name at least one arm (label: {attention: kind})")
        arms = self.arms()
        for label, arm in arms.items():
            if "attention" not in arm:
                raise ValueError(f"models.{label} needs 'attention' (ape, rope, bias, alpha, "
                                 f"translution, lor_rope or hybrid), got {arm!r}")
            target = arm.get("match")
            if target is not None and (target not in arms or "match" in arms[target]):
                raise ValueError(f"models.{label}.match must name another arm without "
                                 f"'match' (one of {[k for k in arms if 'match' not in arms[k]]})"
                                 f", got {target!r}")
            if arm.get("grow", "width") not in ("width", "depth"):
                raise ValueError(f"models.{label}.grow: 'width' or 'depth', got {arm['grow']!r}")
            _section(self, arm)                         # unknown fields / bad values fail here

    def arms(self) -> Dict[str, Dict[str, Any]]:
        """``models`` plus :data:`ABLATIONS` when ``ablations`` is set."""
        return {**self.models, **(ABLATIONS if self.ablations else {})}


def _section(s: FashionSettings, arm: Dict[str, Any], **size: int) -> Dict[str, Any]:
    """The checked ``model`` section of an arm: ``{"name": "vit_mnist_<kind>", ...}``."""
    from ..train.config import check_model_section
    over = {k: v for k, v in arm.items() if k not in ("attention", "match", "grow")}
    return check_model_section({"name": f"vit_mnist_{arm['attention']}", **{
        k: getattr(s, k) for k in ("dim", "depth", "heads", "dim_head", "mlp_dim", "rank")},
        **size, **over})


def arm_sections(s: FashionSettings) -> Dict[str, Dict[str, Any]]:
    """Label → model section, parameter-matched arms grown (in width or depth) to the closest
    parameter count to their target's."""
    def size(deeper: bool, n: int) -> Dict[str, int]:
        return {"depth": n} if deeper else {"dim": n,
                                            "dim_head": max(1, round(s.dim_head * n / s.dim)),
                                            "mlp_dim": max(1, round(s.mlp_dim * n / s.dim))}
    arms = s.arms()
    out = {label: _section(s, arm) for label, arm in arms.items() if "match" not in arm}
    for label, arm in arms.items():
        if "match" in arm:
            deeper = arm.get("grow", "width") == "depth"
            n = grow_to_match(lambda n: parameter_count(_section(s, arm, **size(deeper, n))),
                              parameter_count(out[arm["match"]]), s.depth if deeper else s.dim)
            out[label] = _section(s, arm, **size(deeper, n))
    return {label: out[label] for label in arms}


def _slug(s: FashionSettings, section: Dict[str, Any]) -> str:
    """Run folder of a section (``translution``, ``translution-relative_q``, ...): its kind plus
    the fields that differ from the kind's defaults at the common size (so ``relative: qkv`` is
    the plain Translution run); ``backend``, ``save_projections`` change speed, not the arm."""
    from ..models import get_model_config
    kind, speed = section["name"][len("vit_mnist_"):], ("name", "backend", "save_projections")
    plain = get_model_config(section["name"], **{k: v for k, v in _section(
        s, {"attention": kind}).items() if k != "name"})
    diff = sorted((k, v) for k, v in section.items() if k not in speed and getattr(plain, k) != v)
    return re.sub(r"[^a-z0-9_.-]+", "", "-".join([kind] + [f"{k}_{v}" for k, v in diff]).lower())


def _run_config(s: FashionSettings, section: Dict[str, Any], seed: int, steps: int):
    from ..train import RunConfig
    every = math.ceil(steps / s.eval_points) if s.eval_points else 0
    root = None if s.data_root is None else str(Path(s.data_root).expanduser().resolve())
    return RunConfig.from_dict({
        "model": section,
        "data": {"dataset": "fashion-mnist", "root": root, "train_size": s.train_size,
                 "test_size": s.test_size, "patch": 7},
        "train": {"epochs": s.epochs, "batch_size": s.batch_size, "seed": seed,
                  "eval_batch_size": s.eval_batch_size, "log_every": 20, "eval_every": every,
                  "checkpoint_every": 200, "checkpoint_every_epochs": 1, "save_best": False,
                  "progress": False, "device": s.device},
        "optim": {"name": "adamw", "lr": s.lr, "weight_decay": s.weight_decay,
                  "grad_clip": s.grad_clip, "decay_1d": False},
        "schedule": {"name": "cosine", "warmup": min(s.warmup_steps, steps - 1),
                     "min_lr": s.lr * s.min_lr_ratio},
    })


def _train_one(run_dir: Path, s: FashionSettings, section: Dict, seed: int, data: Tuple,
               log: Callable[[str], None], name: str) -> Dict[str, Any]:
    """Train (or resume, or read back) one arm at one seed; ``data``: (task, training set,
    test batches); returns its per-seed record."""
    from ..data.mnist import RandomCropFlip
    from ..recipes import build_model
    from ..train import DatasetBatches, read_metrics
    task, train_set, test_batches = data
    augment = RandomCropFlip(s.crop_padding, s.flip, fill=train_set.background)
    batches = DatasetBatches(train_set, s.batch_size, shuffle=True, seed=seed, drop_last=True,
                             batch_transform=augment)
    cfg = _run_config(s, section, seed, len(batches) * s.epochs)
    check_fingerprint(run_dir, {"config": cfg.to_dict(), "augment": repr(augment)})

    def train() -> Dict[str, Any]:
        torch.manual_seed(seed)
        summary = fit_with_bar(name, len(batches) * s.epochs, build_model(section), task,
                               batches, cfg, eval_sets={"test": test_batches}, out_dir=run_dir,
                               device=s.device)
        log(f"    {summary['eval']['top1']:.2f} %, {summary['parameters']:,} parameters, "
            f"{summary['seconds']:.0f} s")
        curve = [(r["time"], r["top1"] / 100)
                 for r in read_metrics(run_dir / "metrics.jsonl", "eval")]
        return {"accuracy": summary["eval"]["top1"] / 100, "parameters": summary["parameters"],
                "seconds": summary["seconds"], "steps": summary["steps"], "curve": curve}
    return read_or_train(run_dir, name, train, log)


#: A few minutes on 2 CPU cores: 2 000 / 1 000 images, dim 32, depth 2, 2 seeds.
QUICK = load_settings(FashionSettings, "fashion_quick")
#: The protocol of the README table (see ``configs/fashion_full.yaml``), ablations included.
FULL = load_settings(FashionSettings, "fashion_full")


def run(out: Path, settings: FashionSettings = QUICK,
        log: Callable[[str], None] = print) -> Dict[str, Dict[str, Any]]:
    """Run (or resume) every arm for every seed and write the report (also after every run);
    returns ``results.json``'s dict. Raises TypeError or ValueError for bad settings, missing
    data, or a folder holding other runs."""
    from ..recipes import build_task_and_batches
    out, s, results = Path(out), settings, {}
    with running(s, FashionSettings):
        sections = arm_sections(s)
        slugs = {label: _slug(s, sec) for label, sec in sections.items()}
        log("loading Fashion-MNIST ...")         # as `translution train`/`eval` build it
        task, train_batches, test_batches = build_task_and_batches(
            _run_config(s, next(iter(sections.values())), s.seed, 1))
        data = (task, train_batches.dataset, test_batches)
        log(f"{len(data[1])} training / {len(test_batches.dataset)} test images; "
            f"{len(sections)} arms × {s.seeds} seeds")

        def train(label: str, seed: int) -> Dict[str, Any]:
            return _train_one(out / "runs" / slugs[label] / f"seed{seed}", s, sections[label],
                              seed, data, log, f"[seed {seed}] {label} ({slugs[label]})")

        def write(records: Dict[str, List[Dict]]) -> None:
            results.update({label: {**seed_summary(recs, "accuracy"), "model": sections[label],
                                    "run": slugs[label], "settings": s.to_dict()}
                            for label, recs in records.items()})
            atomic_write_json(out / "results.json", results)
            figures = _figures(out, results, records)
            atomic_write_text(out / "report.md", report_markdown(results, s, figures))

        run_arms(slugs, range(s.seed, s.seed + s.seeds), train, write)
    log(f"report: {out / 'report.md'}")
    return results


def _figures(out: Path, results: Dict[str, Dict], records: Dict[str, List[Dict]]) -> List[str]:
    """The accuracy bars and the accuracy against training time; returns their file names."""
    from . import plots
    curves = {label: [(mean_std(t)[0], m, m - sd, m + sd)     # per evaluation, over the seeds
                      for t, a in (zip(*p) for p in zip(*(r["curve"] for r in recs)))
                      for m, sd in [mean_std(a)]] for label, recs in records.items()}
    return [plots.accuracy_bars({k: {"test": (r["accuracy"], r["accuracy_std"])}
                                 for k, r in results.items()}, out / "accuracy.png",
                                title="Fashion-MNIST test accuracy (mean ± std over seeds)").name,
            plots.lines({"": curves}, out / "accuracy_vs_time.png", "training time (s)",
                        "test accuracy (%)", "test accuracy against training time (mean ± std "
                        "over seeds)", scale=100, xlog=10).name]


def report_markdown(results: Dict[str, Dict], s: FashionSettings, figures: List[str]) -> str:
    """The report: protocol, table (mean ± std over seeds), parameter matching, figures."""
    seeds = sorted({len(r["seeds"]) for r in results.values()})
    lines = [
        "# Fashion-MNIST on the paper's 4×4 token grid", "",
        f"Fashion-MNIST, {s.train_size or 60000:,} training / {s.test_size or 10000:,} test "
        f"images, 28×28 with patch 7 (4×4 grid + class token). Augmentation: random crop "
        f"(padding {s.crop_padding}){', horizontal flip' if s.flip else ''}. {s.epochs} "
        f"epoch(s), batch {s.batch_size}, AdamW lr {s.lr:g} (weight decay {s.weight_decay:g} on "
        f"matrices), {s.warmup_steps} warm-up steps, cosine to {s.min_lr_ratio:g}·lr, gradient "
        f"clip {s.grad_clip:g}. ViT: dim {s.dim}, depth {s.depth}, {s.heads} heads × "
        f"{s.dim_head}, MLP {s.mlp_dim}, α rank {s.rank}. Test accuracy of the final weights; "
        f"mean ± sample std over {'/'.join(map(str, seeds))} seed(s). Train time: mean "
        f"training seconds of one run (device {s.device or 'auto'}, torch threads "
        f"{torch.get_num_threads()}; a shared machine inflates it).", ""] + markdown_table(
        ["model", "size (dim / depth / heads × dim_head / MLP)", "parameters", "accuracy (%)",
         "seeds", "train time (s)", "steps"],
        [[label, "{dim} / {depth} / {heads} × {dim_head} / {mlp_dim}".format(**r["model"]),
          f"{r['parameters']:,}", pm(r, "accuracy", 2, 100), len(r["seeds"]),
          f"{r['seconds']:.0f}", r["steps"]] for label, r in results.items()])
    for label, arm in s.arms().items():
        if "match" in arm and label in results and arm["match"] in results:
            mine, theirs = results[label]["parameters"], results[arm["match"]]["parameters"]
            lines += ["", f"{label}: grown in {arm.get('grow', 'width')} to {mine:,} "
                      f"parameters against {theirs:,} for {arm['match']} "
                      f"({100 * (mine / theirs - 1):+.1f} %)."]
    return "\n".join(lines + [""] + [f"![{f}]({f})" for f in figures]) + "\n"
