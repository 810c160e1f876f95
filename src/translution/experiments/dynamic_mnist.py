"""The Dynamic MNIST experiment (SPEC §7): does accuracy survive when the digits move?

Digits on a larger canvas (default 42×42, patch 7) trained static (patch-aligned) or shifted,
tested static, patch-/pixel-shifted, rolled and on a sweep of fixed displacements. Arm × seed runs:
``OUT/runs/<train setting>/<run id>/seed<k>``; ``OUT/results.json``: label → "train X → test Y" →
``{accuracy, accuracy_std, seeds, parameters, seconds}``, ``"sweep"`` → "train X" → label →
``"dr,dc"`` → ``{accuracy, accuracy_std, seeds}``. Presets: ``configs/dynamic_mnist_*.yaml``."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, Optional, Tuple

import torch

from ..train.config import bounded, check_model_section, load_settings
from ..utils import Stopwatch, atomic_write_json, atomic_write_text
from .common import (ExperimentSettings, fit_with_bar, markdown_table, mean_std, pm, read_or_train,
                     run_arms, running, seed_stats)

__all__ = ["DynamicMNISTSettings", "QUICK", "FULL", "MODELS", "run", "build_model",
           "sweep_shifts", "direction_of", "setting_name", "report_markdown"]

#: The main comparison (run id → arm).
MODELS: Dict[str, Dict[str, Any]] = {
    "ape": {"label": "ViT + abs. pos. emb.", "kind": "ape"},
    "bias": {"label": "ViT + rel. pos. bias", "kind": "bias"},
    "translution": {"label": "Translution", "kind": "translution"},
    "alpha": {"label": "α-Translution", "kind": "alpha"},
}
KINDS = ("ape", "rope", "bias", "translution", "alpha")
PLACEMENT_NAMES = {"static": "static", "patch": "patch shift", "pixel": "pixel shift",
                   "roll": "circular roll"}
DIGIT = 28
#: Keys of an arm that are not ViT config overrides.
_ARM_KEYS = ("label", "kind", "canvas", "epochs")
#: ViT config fields fixed by the experiment.
_FIXED = ("image_size", "patch_size", "in_channels", "num_classes", "attention")


@dataclass
class DynamicMNISTSettings(ExperimentSettings):
    """Protocol and model sizes (defaults: the quick preset); seeds ``seed … seed + seeds − 1``
    set weights, batch order and training placements, ``test_seed`` the test placements;
    ``optimizer``/``schedule``: AdamW with warm-up and cosine per step, or Adadelta + StepLR."""

    canvas: int = bounded(42, ge=DIGIT)
    patch: int = bounded(7, ge=1)
    train_size: Optional[int] = bounded(None, ge=1)
    test_size: Optional[int] = bounded(2000, ge=1)
    sweep_size: int = bounded(500, ge=0)
    epochs: int = bounded(2, ge=1)
    batch_size: int = bounded(64, ge=1)
    eval_batch_size: int = bounded(500, ge=1)
    dim: int = bounded(32, ge=1)
    depth: int = bounded(3, ge=1)
    heads: int = bounded(4, ge=1)
    dim_head: int = bounded(8, ge=1)
    mlp_dim: int = bounded(64, ge=1)
    rank: int = bounded(4, ge=1)
    optimizer: Literal["adamw", "adadelta"] = "adamw"
    lr: float = bounded(3e-3, gt=0)
    schedule: Literal["cosine", "step"] = "cosine"
    warmup_steps: int = bounded(50, ge=0)
    step_gamma: float = bounded(0.7, gt=0, le=1)
    test_seed: int = bounded(1234, ge=0)
    train_settings: List[Literal["static", "patch", "pixel"]] = field(
        default_factory=lambda: ["static"])
    test_placements: List[Literal["static", "patch", "pixel", "roll"]] = field(
        default_factory=lambda: ["static", "patch", "pixel", "roll"])
    models: Dict[str, Dict[str, Any]] = field(default_factory=lambda: {
        "ape": dict(MODELS["ape"]), "bias": {**MODELS["bias"], "epochs": 5},
        "translution": dict(MODELS["translution"]), "alpha": dict(MODELS["alpha"])})

    def check(self) -> None:
        if not (self.train_settings and self.test_placements and self.models):
            raise ValueError("train_settings, test_placements and models (run id: {label, kind}) "
                             "must not be empty")
        labels = [arm.get("label") for arm in self.models.values()]
        if len(set(labels)) != len(labels):
            raise ValueError(f"every arm needs its own label, got {labels}")
        for run_id, arm in self.models.items():
            where = f"models.{run_id}"
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", run_id):
                raise ValueError(f"{where}: run ids name folders; use lowercase letters, digits, "
                                 f"'_' and '-', got {run_id!r}")
            if not isinstance(arm.get("label"), str) or arm["label"] in ("", "sweep"):
                raise ValueError(f"{where} needs a non-empty 'label' other than 'sweep' "
                                 f"(results.json's sweep), got {arm!r}")
            if arm.get("kind") not in KINDS:
                raise ValueError(f"{where}.kind must be one of {KINDS}, got {arm.get('kind')!r}")
            fixed = sorted(set(arm) & set(_FIXED))
            if fixed:
                raise ValueError(f"{where} may not set {fixed} (fixed by the experiment)")
            canvas = arm.get("canvas", self.canvas)
            if type(canvas) is not int or canvas < DIGIT or canvas % self.patch:
                raise ValueError(f"{where}.canvas must be an int >= {DIGIT} divisible by patch "
                                 f"{self.patch}, got {canvas!r}")
            try:                                         # unknown ViT fields and bad values
                check_model_section(_model_section(self, run_id))
            except (TypeError, ValueError) as e:
                raise type(e)(f"{where}: {e}") from None

    def arm_canvas(self, run_id: str) -> int:
        """The canvas side of arm ``run_id``."""
        return int(self.models[run_id].get("canvas", self.canvas))


def setting_name(train: str, test: str) -> str:
    """The results.json key of a train/test placement pair."""
    return f"train {PLACEMENT_NAMES[train]} → test {PLACEMENT_NAMES[test]}"


def _model_section(s: DynamicMNISTSettings, run_id: str) -> Dict[str, Any]:
    """The ``model`` section of arm ``run_id``: ``{"name": "vit_mnist_<kind>", ...}``."""
    arm = s.models[run_id]
    return {"name": f"vit_mnist_{arm['kind']}", "image_size": s.arm_canvas(run_id),
            "patch_size": s.patch, "in_channels": 1, "num_classes": 10, "dim": s.dim,
            "depth": s.depth, "heads": s.heads, "dim_head": s.dim_head, "mlp_dim": s.mlp_dim,
            "rank": s.rank, **{k: v for k, v in arm.items() if k not in _ARM_KEYS}}


def build_model(s: DynamicMNISTSettings, run_id: str) -> torch.nn.Module:
    """The ViT of arm ``run_id`` (a key of ``s.models``) at the experiment's size."""
    from ..recipes import build_model as build
    return build(_model_section(s, run_id))


#: The main job's protocol (``configs/dynamic_mnist_quick.yaml``).
QUICK = load_settings(DynamicMNISTSettings, "dynamic_mnist_quick")
#: Everything the quick run leaves out (``configs/dynamic_mnist_full.yaml``).
FULL = load_settings(DynamicMNISTSettings, "dynamic_mnist_full")


class _Data:
    """MNIST loaded once; test sets cached per (canvas, placement)."""

    def __init__(self, s: DynamicMNISTSettings, root: Optional[str]):
        from ..data.mnist import load_mnist
        self.s = s
        self.train = [t[:s.train_size] for t in load_mnist("train", root=root)]
        self.test = [t[:s.test_size] for t in load_mnist("test", root=root)]

    @functools.lru_cache(maxsize=None)
    def test_set(self, canvas: int, placement: str, shift: Optional[Tuple[int, int]] = None):
        """The test digits at ``placement``, or the first ``sweep_size`` moved by ``shift``."""
        from ..data.dynamic_mnist import DynamicMNIST
        n = None if shift is None else self.s.sweep_size
        return DynamicMNIST(self.test[0][:n], self.test[1][:n], canvas=canvas, patch=self.s.patch,
                            placement=placement, seed=self.s.test_seed, shift=shift or (0, 0))


@torch.inference_mode()
def accuracy(model: torch.nn.Module, dataset, batch_size: int = 500) -> float:
    """Top-1 accuracy (fraction) of ``model`` on a :class:`DynamicMNIST` set."""
    model.eval()
    device = next(model.parameters()).device
    batches = map(dataset.get_batch, torch.arange(len(dataset)).split(batch_size))
    correct = sum(int((model(x.to(device)).argmax(-1).cpu() == y).sum()) for x, y in batches)
    return correct / max(1, len(dataset))


def sweep_shifts(canvas: int, patch: int, digit: int = DIGIT) -> List[Tuple[int, int]]:
    """Displacements ``(dr, dc)`` (pixels) of the shift sweep, sorted: every whole-patch one and
    ``1 … patch`` pixels along the four axis directions, as far as the digit stays on the canvas."""
    from ..data.dynamic_mnist import static_offset
    base = static_offset(canvas, digit, patch)
    lo, hi = -base, canvas - digit - base
    steps = [k * patch for k in range(-(base // patch), hi // patch + 1)]
    axes = {(dr, dc) for t in range(1, patch + 1) for dr, dc in ((-t, 0), (t, 0), (0, -t), (0, t))
            if lo <= dr <= hi and lo <= dc <= hi}
    return sorted(axes | {(r, c) for r in steps for c in steps})


def direction_of(dr: int, dc: int) -> str:
    """``"up"``, ``"down-left"``, ... for a displacement (rows grow downwards); ``"none"``."""
    vertical = "up" if dr < 0 else "down" if dr > 0 else ""
    horizontal = "left" if dc < 0 else "right" if dc > 0 else ""
    return "-".join(p for p in (vertical, horizontal) if p) or "none"


def _train_one(out: Path, s: DynamicMNISTSettings, data: _Data, setting: str, run_id: str,
               k: int, log: Callable[[str], None]) -> Dict[str, Any]:
    """Train (or resume, or read back) arm ``run_id`` with seed ``s.seed + k``."""
    from ..data.dynamic_mnist import DynamicMNIST
    from ..train import (ClassificationTask, DatasetBatches, OptimConfig, RunConfig,
                         ScheduleConfig, TrainConfig, read_metrics)
    run_dir = out / "runs" / setting / run_id / f"seed{k}"
    seed, canvas = s.seed + k, s.arm_canvas(run_id)
    name = f"[train {PLACEMENT_NAMES[setting]}] {run_id} seed {k}"
    cfg = RunConfig(
        model=_model_section(s, run_id),
        data={"dataset": "dynamic-mnist", "canvas": canvas, "patch": s.patch,
              "placement": setting, "train_size": s.train_size, "test_size": s.test_size,
              "test_placement": "static", "test_seed": s.test_seed},
        train=TrainConfig(epochs=int(s.models[run_id].get("epochs", s.epochs)),
                          batch_size=s.batch_size, seed=seed, log_every=10, eval_every=0,
                          checkpoint_every=100, save_best=False, progress=False, device=s.device),
        optim=OptimConfig(name=s.optimizer, lr=s.lr, weight_decay=s.weight_decay,
                          grad_clip=s.grad_clip),
        schedule=ScheduleConfig(name="step", step_size=1, gamma=s.step_gamma, per="epoch")
        if s.schedule == "step" else ScheduleConfig(name=s.schedule, warmup=s.warmup_steps,
                                                    per="step"))

    def train() -> Dict[str, Any]:
        torch.manual_seed(seed)
        model = build_model(s, run_id)
        batches = DatasetBatches(DynamicMNIST(*data.train, canvas=canvas, patch=s.patch,
                                              placement=setting, seed=seed),
                                 s.batch_size, shuffle=True, seed=seed, drop_last=True)
        total = len(batches) * cfg.train.epochs
        log(f"    {model.num_parameters():,} parameters, {total} steps")
        summary = fit_with_bar(name, total, model, ClassificationTask(topk=(1,)), batches, cfg,
                               out_dir=run_dir, device=s.device)
        with Stopwatch() as watch:
            shifts = sweep_shifts(canvas, s.patch) if s.sweep_size else []
            evaluation = {
                "accuracy": {p: accuracy(model, data.test_set(canvas, p), s.eval_batch_size)
                             for p in s.test_placements},
                "sweep": {f"{dr},{dc}": accuracy(model, data.test_set(canvas, "static", (
                    dr, dc)), s.eval_batch_size) for dr, dc in shifts}}
        log(f"    {summary['seconds']:.0f} s training, {watch.seconds:.0f} s evaluation; "
            + ", ".join(f"{PLACEMENT_NAMES[p]} {100 * a:.2f} %"
                        for p, a in evaluation["accuracy"].items()))
        curve = [(r["step"], r["loss"]) for r in read_metrics(run_dir / "metrics.jsonl", "train")
                 if "loss" in r]
        return {"label": s.models[run_id]["label"], "seed": seed, **evaluation,
                "parameters": summary["parameters"], "seconds": round(summary["seconds"], 1),
                "eval_seconds": round(watch.seconds, 1), "loss_curve": curve}
    evaluated = ("test_placements", "test_size", "sweep_size", "test_seed")
    return read_or_train(run_dir, name, train, log, {f: getattr(s, f) for f in evaluated})


def run(out: Path, settings: DynamicMNISTSettings = QUICK, data_root: Optional[str] = None,
        log: Callable[[str], None] = print) -> Dict:
    """Run (or resume) the whole experiment and write the report; returns ``results.json``'s dict
    (it and ``report.md`` are rewritten after every training, the figures at the end)."""
    from ..train import load_checkpoint
    s, out = settings, Path(out)
    records: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    with running(s, DynamicMNISTSettings), Stopwatch() as wall:
        log("loading MNIST ...")
        data = _Data(s, data_root)

        def write(new: Dict[Tuple[str, str], List[Dict[str, Any]]]) -> None:
            records.update(new)
            results = aggregate(s, records)
            atomic_write_json(out / "results.json", results)
            atomic_write_text(out / "report.md", report_markdown(results, s, [], wall.seconds,
                                                                 records))

        for setting in s.train_settings:     # a whole seed of every arm before the next seed
            run_arms({(setting, r): (setting, r) for r in s.models}, range(s.seeds),
                     lambda arm, k: _train_one(out, s, data, *arm, k, log), write)
        results = aggregate(s, records)
        models = {run_id: [build_model(s, run_id).eval() for _ in range(s.seeds)]
                  for run_id in s.models}                # as trained on the first setting
        for run_id, seeds in models.items():
            for k, model in enumerate(seeds):
                model.load_state_dict(load_checkpoint(out / "runs" / s.train_settings[0] / run_id
                                                      / f"seed{k}" / "last.pt")["model"])
        signals = {s.models[run_id]["label"]: [position_signal(m, s.arm_canvas(run_id))
                                               for m in seeds] for run_id, seeds in models.items()}
        atomic_write_json(out / "position_signal.json", signals)
        figures = _figures(out, s, results, records, data, models, signals)
    atomic_write_text(out / "report.md", report_markdown(results, s, figures, wall.seconds,
                                                         records, signals))
    log(f"report: {out / 'report.md'} ({wall.seconds / 60:.1f} min)")
    return results


def aggregate(s: DynamicMNISTSettings, records: Dict[Tuple[str, str], List[Dict[str, Any]]]
              ) -> Dict[str, Any]:
    """``results.json``'s dict from the per-seed records of every (train setting, run id)."""
    results: Dict[str, Any] = {}
    sweep: Dict[str, Any] = {}                      # train setting → label → shift → stats
    for (setting, run_id), runs in records.items():
        label = s.models[run_id]["label"]
        seconds = round(mean_std([r["seconds"] for r in runs])[0], 1)
        for placement in runs[0]["accuracy"]:
            results.setdefault(label, {})[setting_name(setting, placement)] = {
                **seed_stats([r["accuracy"][placement] for r in runs], "accuracy"),
                "parameters": runs[0]["parameters"], "seconds": seconds}
        if runs[0]["sweep"]:
            sweep.setdefault(f"train {PLACEMENT_NAMES[setting]}", {})[label] = {
                shift: seed_stats([r["sweep"][shift] for r in runs], "accuracy")
                for shift in runs[0]["sweep"]}
    return {**results, "sweep": sweep} if sweep else results


def _sweep_series(per_model: Dict[str, Dict[str, Any]], patch: int):
    """Per model: accuracy against pixel distance along the axes and against whole-patch
    (Chebyshev) distance, ``(distance, mean, mean − std, mean + std)`` over seeds (each seed
    averaged over directions); and per direction along an axis ``(distance, mean)``."""
    pixel, patches, directions = {}, {}, {}
    for label, shifts in per_model.items():
        rings: Dict[str, Dict[int, List[List[float]]]] = {"pixel": {}, "patch": {}}
        lines: Dict[str, List[Tuple[int, float]]] = {}
        for key, stat in shifts.items():
            dr, dc = (int(v) for v in key.split(","))
            if dr == 0 or dc == 0:
                rings["pixel"].setdefault(abs(dr + dc), []).append(stat["seeds"])
                lines.setdefault(direction_of(dr, dc), []).append((abs(dr + dc), stat["accuracy"]))
            if dr % patch == 0 and dc % patch == 0:
                rings["patch"].setdefault(max(abs(dr), abs(dc)) // patch, []).append(stat["seeds"])
        for kind, series in (("pixel", pixel), ("patch", patches)):
            series[label] = [(dist, m, m - sd, m + sd)    # per seed: the mean over the shifts
                             for dist, seeds in sorted(rings[kind].items())
                             for m, sd in [mean_std([mean_std(v)[0] for v in zip(*seeds)])]]
        zero = lines.pop("none", [])
        directions[label] = {name: zero + points for name, points in lines.items()}
    return pixel, patches, directions


@torch.no_grad()
def position_signal(model: torch.nn.Module, canvas: int) -> List[float]:
    """Per block, how much the patch tokens' features differ on a blank canvas:
    ``mean_i ‖h_i − mean_j h_j‖ / mean_i ‖h_i‖`` (0: no absolute position, e.g. a circular layout;
    a ViT with an absolute embedding is far from 0)."""
    from ..data.dynamic_mnist import BACKGROUND
    outs: List[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda m, a, o: outs.append(o[0])) for b in model.blocks]
    try:
        model.eval()(torch.full((1, 1, canvas, canvas), BACKGROUND))
    finally:
        for hook in hooks:
            hook.remove()
    tokens = [h[0 if model.cls_token is None else 1:] for h in outs]     # (patches, dim) each
    return [float((t - t.mean(0)).norm(dim=1).mean() / t.norm(dim=1).mean()) for t in tokens]


def _figures(out: Path, s: DynamicMNISTSettings, results, records, data, models, signals
             ) -> List[str]:
    """Every figure of the report (``models``: run id → first-setting models per seed;
    ``signals``: label → per seed :func:`position_signal`); returns their file names."""
    from . import plots
    figures = [plots.accuracy_bars(
        {m: {k.replace(" → ", "\n→ "): (v["accuracy"], v["accuracy_std"]) for k, v in row.items()}
         for m, row in results.items() if m != "sweep"}, out / "accuracy.png",
        f"Dynamic MNIST: accuracy per test placement (mean ± std, {s.seeds} "
        f"seed{'s' * (s.seeds > 1)})")]
    for slug in s.train_settings:
        setting = f"train {PLACEMENT_NAMES[slug]}"
        if setting in results.get("sweep", {}):
            pixel, patches, directions = _sweep_series(results["sweep"][setting], s.patch)
            figures += [plots.lines({f"pixels along an axis (0 … {s.patch})": pixel,
                                     "whole patches (any direction)": patches},
                                    out / f"sweep_{slug}.png", "displacement", "test accuracy (%)",
                                    f"{setting}: test accuracy vs displacement from the training "
                                    "position (mean ± std over seeds)", scale=100),
                        plots.lines(directions, out / f"directions_{slug}.png", "pixels",
                                    "test accuracy (%)", f"{setting}: accuracy by shift direction "
                                    "(mean over seeds)", scale=100)]
    curves = {f"{runs[0]['label']} ({PLACEMENT_NAMES[train]})": runs[0]["loss_curve"]
              for (train, _), runs in records.items()}
    figures.append(plots.lines({"": curves}, out / "curves.png", "step", "training loss",
                               "training loss (first seed)", ylog=True))
    setting = s.train_settings[0]
    static = {run_id: seeds[0] for run_id, seeds in models.items()}      # first-seed models
    for run_id, model in static.items():
        arm = s.models[run_id]
        bank = {"translution": "wv", "alpha": "mv"}.get(arm["kind"])
        if bank:      # residual: the ΔW of each offset, what it learned beyond the shared W
            bank += "_delta" if arm.get("parameterization") == "residual" else ""
            figures.append(plots.value_kernels(model, out / f"kernels_{run_id}.png", bank, title=(
                f"{arm['label']} (trained {PLACEMENT_NAMES[setting]}): ‖{bank}[δ]‖ per layer")))
    same = {s.models[r]["label"]: m for r, m in static.items() if s.arm_canvas(r) == s.canvas}
    if same and "pixel" in s.test_placements:
        pixel = data.test_set(s.canvas, "pixel")
        figures.append(plots.attention_maps(
            same, pixel.get_batch(torch.arange(min(6, len(pixel))))[0], out / "attention.png",
            s.patch, title="class-token attention, last block, models trained "
                           f"{PLACEMENT_NAMES[setting]}, pixel-shifted test digits"))
    if "patch" in s.test_placements:       # patch-shift accuracy against the signal after block 1
        points = {s.models[run_id]["label"]: [(signals[s.models[run_id]["label"]][k][0],
                                              r["accuracy"]["patch"]) for k, r in enumerate(runs)]
                  for (train, run_id), runs in records.items() if train == setting}
        figures.append(plots.scatter(
            points, out / "position_signal.png", "position signal on a blank canvas, block 1",
            f"test accuracy, {PLACEMENT_NAMES['patch']} (%)",
            f"trained {PLACEMENT_NAMES[setting]}: one point per seed", scale=100))
    return [path.name for path in figures if path is not None]


_cell = functools.partial(pm, metric="accuracy", digits=1, scale=100)


def report_markdown(results: Dict, s: DynamicMNISTSettings, figures: List[str],
                    wall_seconds: float = 0.0, records=None, signals=None) -> str:
    """The report: protocol, accuracy table, sweep tables, automatic checks, the position
    signal (``signals``: label → per seed, per block), figures."""
    main = {label: row for label, row in results.items() if label != "sweep"}
    settings = list(dict.fromkeys(k for row in main.values() for k in row))
    rows = [[label, f"{next(iter(row.values()))['parameters']:,}",
             " / ".join(dict.fromkeys(f"{v['seconds']:.0f}" for v in row.values()))]
            + [_cell(row[k]) if k in row else "–" for k in settings] for label, row in main.items()]
    own = ", ".join(f"{a['label']} {a['epochs']}" for a in s.models.values() if "epochs" in a)
    grid = s.canvas // s.patch
    lines = ["# Dynamic MNIST", "", f"Canvas {s.canvas}×{s.canvas}, patch {s.patch} ({grid}×{grid} "
             f"grid + class token; an arm may set its own canvas); {s.train_size or 60000} "
             f"training / {s.test_size or 10000} test digits ({s.sweep_size} for the shift sweep); "
             f"{s.epochs} epoch(s) (unless an arm says otherwise: {own or 'none does'}), batch "
             f"{s.batch_size}, {s.optimizer} lr {s.lr}, weight decay {s.weight_decay}, "
             f"{s.schedule} schedule; models: dim {s.dim}, depth {s.depth}, {s.heads} heads × "
             f"{s.dim_head}, MLP {s.mlp_dim}, α rank {s.rank}.", "",
             s.seeds_note("accuracies") + f" Wall time of this invocation: "
             f"{wall_seconds / 60:.1f} min for {sum(map(len, (records or {}).values()))} training "
             "run(s) (runs finished by an earlier invocation are read back, not retrained).", "",
             "Test accuracy (%):", ""]
    lines += markdown_table(["model", "params", "train time (s)", *settings], rows)
    lines += ["", "Train time: mean over seeds, one number per training setting."]
    for setting_label, per_model in results.get("sweep", {}).items():
        lines += [""] + _sweep_table(setting_label, per_model, s)
    lines += ["", *_findings(main, results.get("sweep", {}), s), ""]
    if signals:
        depth = max(len(v[0]) for v in signals.values())
        lines += ["Position signal on a blank canvas (spread of the patch tokens' features after "
                  "each block, relative to their norm; 0 = every blank patch alike, i.e. no "
                  "absolute position; mean ± std over seeds):", "", *markdown_table(
                      ["model"] + [f"block {b + 1}" for b in range(depth)],
                      [[label] + [pm(seed_stats([seed[b] for seed in per_seed], "x"), "x", 3)
                                  for b in range(depth)] for label, per_seed in signals.items()]),
                  "", ""]
    return "\n".join(lines + [f"![{f}]({f})" for f in figures]) + "\n"


def _sweep_table(setting_label: str, per_model: Dict[str, Any], s: DynamicMNISTSettings
                 ) -> List[str]:
    one_patch, pixel = _one_patch(s.patch), _sweep_series(per_model, s.patch)[0]
    distances = sorted({point[0] for points in pixel.values() for point in points})
    rows = []
    for label, stats in per_model.items():
        at_patch = [stats[k]["accuracy"] for k in one_patch if k in stats]
        means = {dist: mean for dist, mean, _, _ in pixel[label]}     # arms' canvases differ
        rows.append([label] + [f"{100 * means[d]:.1f}" if d in means else "–" for d in distances]
                    + [_cell(stats[k]) if k in stats else "–" for k in one_patch]
                    + [f"{100 * (max(at_patch) - min(at_patch)):.1f}" if at_patch else "–"])
    head = ([f"{d} px" for d in distances] + [f"{d} 1 patch" for d in one_patch.values()]
            + ["asymmetry"])
    return [f"Shift sweep, {setting_label} (%): mean over the four axis directions for each "
            "pixel distance; then each direction at one patch; asymmetry = max − min of those "
            "four.", ""] + markdown_table(["model", *head], rows)


def _one_patch(patch: int) -> Dict[str, str]:
    """Sweep key → direction of the four one-patch shifts along the axes."""
    return {f"{dr},{dc}": direction_of(dr, dc)
            for dr, dc in ((-patch, 0), (patch, 0), (0, -patch), (0, patch))}


def _gap(hi: Dict[str, Any], lo: Dict[str, Any]) -> str:
    """``hi`` − ``lo`` in points; beyond the seed spread when over twice the larger std."""
    gap = hi["accuracy"] - lo["accuracy"]
    clear = gap > 2 * max(hi["accuracy_std"], lo["accuracy_std"]) and len(hi["seeds"]) > 1
    return f"{100 * gap:.1f} points " + ("(beyond the seed spread)" if clear else
                                         "(within the seed spread or one seed)")


def _findings(main: Dict[str, Any], sweep: Dict[str, Any], s: DynamicMNISTSettings
              ) -> List[str]:
    """Checks (static accuracy ≥ 95 %, circular roll), rankings and gaps computed from the
    tables."""
    lines, both_static = ["Checks:", ""], setting_name("static", "static")
    for label, row in main.items():
        if both_static in row:
            low = min(row[both_static]["seeds"])
            lines.append(f"- {label}: static → static ≥ 95 % in every seed: "
                         f"{'yes' if low >= 0.95 else 'NO'} (lowest {100 * low:.2f} %)")
    static, roll = (setting_name(s.train_settings[0], p) for p in ("static", "roll"))
    for arm in s.models.values():
        row = main.get(arm["label"], {})
        if arm.get("circular") and roll in row:
            same = row[static]["seeds"] == row[roll]["seeds"]
            lines.append(f"- {arm['label']}: rolled digits keep the static accuracy exactly in "
                         f"every seed: {'yes' if same else 'NO'}")
    lines += ["", "Findings (computed from the tables above):", ""]
    for key in (setting_name(t, p) for t in s.train_settings for p in s.test_placements
                if p != "static"):
        ranked = sorted(((row[key], label) for label, row in main.items() if key in row),
                        key=lambda pair: -pair[0]["accuracy"])
        if len(ranked) > 1:
            (a, first), (b, second) = ranked[:2]
            lines.append(f"- {key}: " + " > ".join(f"{label} {_cell(stat)}"
                                                    for stat, label in ranked)
                         + f"; the lead of {first} over {second} is {_gap(a, b)}")
    for setting_label, per_model in sweep.items():
        for label, stats in per_model.items():
            at = {name: stats[k] for k, name in _one_patch(s.patch).items() if k in stats}
            if len(at) < 2:
                continue
            hi = max(at, key=lambda n: at[n]["accuracy"])
            lo = min(at, key=lambda n: at[n]["accuracy"])
            lines.append(f"- {setting_label}, {label}: one-patch shifts {lo} {_cell(at[lo])} "
                         f"vs {hi} {_cell(at[hi])}: asymmetry {_gap(at[hi], at[lo])}")
    return lines
