"""Figures for experiment reports (matplotlib, Agg backend; every function writes one PNG).

* :func:`accuracy_bars` — accuracy per model and test placement (optionally with error bars);
* :func:`shift_sweep` — accuracy against displacement, one line per model with a spread band;
* :func:`direction_lines` — accuracy against displacement per shift direction, one panel per model;
* :func:`training_curves` — training loss against step per model;
* :func:`value_kernels` — the learned Translution value slots as a ``(2H−1)×(2W−1)`` map of
  matrix norms per layer (the "kernel" Translution learned);
* :func:`attention_maps` — class-token attention of a few (shifted) digits.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Mapping, Optional, Sequence

import torch


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)
    _pyplot().close(fig)
    return path


def _mean_std(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, 0.0)


def accuracy_bars(accuracy: Mapping[str, Mapping[str, object]], path, title: str = "") -> Path:
    """Grouped bars.

    Args:
        accuracy: ``{model: {setting: accuracy}}`` with accuracies in [0, 1], each a number or a
            ``(mean, std)`` pair (drawn as an error bar); settings missing for a model are gaps.
        path: PNG to write.
    """
    plt = _pyplot()
    models = list(accuracy)
    settings = list(dict.fromkeys(k for row in accuracy.values() for k in row))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(settings)), 3.6))
    width = 0.8 / len(models)
    for m, model in enumerate(models):
        xs = [s + (m - (len(models) - 1) / 2) * width for s in range(len(settings))]
        pairs = [_mean_std(accuracy[model].get(setting, float("nan"))) for setting in settings]
        values = [100 * mean for mean, _ in pairs]
        errors = [100 * std for _, std in pairs]
        bars = ax.bar(xs, values, width, label=model, yerr=errors if any(errors) else None,
                      error_kw={"elinewidth": 0.8, "capsize": 1.5})
        for bar, value in zip(bars, values):
            ax.text(bar.get_x() + bar.get_width() / 2, value + 1, f"{value:.0f}",
                    ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(settings)))
    ax.set_xticklabels(settings, fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def training_curves(curves: Mapping[str, Sequence[tuple]], path, ylabel: str = "training loss",
                    title: str = "", xlabel: str = "step") -> Path:
    """Lines of ``{label: [(step, value), ...]}`` (or any ``x`` named by ``xlabel``)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label, points in curves.items():
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, label=label, linewidth=1.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def shift_sweep(panels: Mapping[str, Mapping[str, Sequence[tuple]]], path,
                title: str = "") -> Path:
    """Accuracy against displacement, one panel per sweep, one line per model with a ±std band.

    Args:
        panels: ``{x-axis label: {model: [(displacement, mean, std), ...]}}``, accuracies in
            [0, 1].
        path: PNG to write.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False)
    for ax, (xlabel, series) in zip(axes[0], panels.items()):
        for model, points in series.items():
            xs, means, stds = (list(v) for v in zip(*sorted(points)))
            lower = [100 * (m - s) for m, s in zip(means, stds)]
            upper = [100 * (m + s) for m, s in zip(means, stds)]
            line, = ax.plot(xs, [100 * m for m in means], marker="o", markersize=3,
                            linewidth=1.2, label=model)
            ax.fill_between(xs, lower, upper, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel(f"displacement: {xlabel}", fontsize=8)
        ax.set_ylabel("test accuracy (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def direction_lines(panels: Mapping[str, Mapping[str, Sequence[tuple]]], path,
                    title: str = "") -> Path:
    """One panel per model: accuracy against displacement, one line per shift direction (a
    border effect shows as lines that part).

    Args:
        panels: ``{model: {direction: [(displacement, accuracy), ...]}}``, accuracies in [0, 1].
        path: PNG to write.
    """
    plt = _pyplot()
    n = len(panels)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False,
                             sharey=True, constrained_layout=True)
    for ax, (model, series) in zip(axes.flat, panels.items()):
        for direction, points in sorted(series.items()):
            xs, ys = zip(*sorted(points))
            ax.plot(xs, [100 * y for y in ys], marker="o", markersize=2.5, linewidth=1.0,
                    label=direction)
        ax.set_title(model, fontsize=8)
        ax.set_xlabel("pixels", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes[0][0].set_ylabel("test accuracy (%)", fontsize=7)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def slot_norm_maps(model: torch.nn.Module, bank: str = "wv") -> List[torch.Tensor]:
    """Per relative layer, the Frobenius norm of each grid slot's matrix of ``bank`` as a
    ``(2H−1, 2W−1)`` map (row offset δr downwards, column offset δc rightwards).

    Layers on symmetric, circular or non-2-D layouts are skipped. Works for :class:`~translution.Translution` (``wv``) and
    :class:`~translution.AlphaTranslution` (pass ``bank="mv"``); 2-D grid layouts, unclipped and
    not symmetric.
    """
    maps = []
    for module in model.modules():
        weights = getattr(module, bank, None)
        layout = getattr(module, "layout", None)
        if not isinstance(weights, torch.Tensor) or weights.dim() != 3 or layout is None:
            continue
        if layout.ndim != 2 or layout.symmetric or getattr(layout, "circular", False):
            continue
        rows, cols = (2 * r + 1 for r in layout.radii)
        norms = weights.detach().float().flatten(1).norm(dim=1)[: rows * cols]
        maps.append(norms.reshape(rows, cols).cpu())
    return maps


def value_kernels(model: torch.nn.Module, path, bank: str = "wv", title: str = "") -> Optional[Path]:
    """One heat map per relative layer of :func:`slot_norm_maps`; ``None`` if the model has none."""
    maps = slot_norm_maps(model, bank)
    if not maps:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(maps), figsize=(3.0 * len(maps), 2.6), squeeze=False)
    for layer, (ax, norms) in enumerate(zip(axes[0], maps)):
        rows, cols = norms.shape
        image = ax.imshow(norms.numpy(), cmap="viridis",
                          extent=(-(cols // 2) - .5, cols // 2 + .5, rows // 2 + .5, -(rows // 2) - .5))
        ax.set_title(f"layer {layer + 1}", fontsize=8)
        ax.set_xlabel("δc", fontsize=7)
        ax.set_ylabel("δr", fontsize=7)
        ax.tick_params(labelsize=6)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
    fig.suptitle(title or f"‖{bank}[slot]‖ per relative offset", fontsize=9)
    return _save(fig, path)


@torch.no_grad()
def class_token_attention(model: torch.nn.Module, images: torch.Tensor,
                          layer: int = -1) -> torch.Tensor:
    """Class-token attention over the patches of one block (mean over heads).

    Args:
        model: a ViT with ``blocks[i].attn`` layers that have ``attention_weights`` and
            ``blocks[i].norm1``; ``pool="cls"``.
        images: ``(B, C, H, W)``.

    Returns:
        ``(B, h, w)`` attention of the class token on each patch.
    """
    captured = {}
    block = model.blocks[layer]
    handle = block.attn.register_forward_hook(
        lambda module, args, kwargs_or_out: captured.setdefault("x", args[0]))
    try:
        model(images)
    finally:
        handle.remove()
    grid = model._grid_of(images)
    shape = None if grid == model.config.grid else grid
    attn = block.attn.attention_weights(captured["x"], shape=shape)     # (B, heads, N, N)
    return attn[:, :, 0, 1:].mean(1).reshape(images.shape[0], *grid).float().cpu()


def attention_maps(models: Mapping[str, torch.nn.Module], images: torch.Tensor, path,
                   patch_size: int, title: str = "") -> Path:
    """Rows: the input digits, then each model's last-block class-token attention."""
    plt = _pyplot()
    n = images.shape[0]
    fig, axes = plt.subplots(1 + len(models), n, figsize=(1.5 * n, 1.6 * (1 + len(models))),
                             squeeze=False)
    for i in range(n):
        axes[0][i].imshow(images[i, 0].cpu().numpy(), cmap="gray")
    axes[0][0].set_ylabel("input", fontsize=8)
    for row, (name, model) in enumerate(models.items(), start=1):
        maps = class_token_attention(model, images)
        for i in range(n):
            up = maps[i].repeat_interleave(patch_size, 0).repeat_interleave(patch_size, 1)
            axes[row][i].imshow(images[i, 0].cpu().numpy(), cmap="gray")
            axes[row][i].imshow(up.numpy(), cmap="inferno", alpha=0.6)
        axes[row][0].set_ylabel(name, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or "class-token attention, last block (mean over heads)", fontsize=9)
    return _save(fig, path)


def spread_lines(series: Mapping[str, Mapping[float, Sequence[float]]], path, xlabel: str,
                 ylabel: str, title: str = "") -> Path:
    """One line per label through the mean over repeats (seeds) at each ``x``, with a band from
    the smallest to the largest repeat; ``x`` on a log2 axis.

    Args:
        series: ``{label: {x: [value per repeat]}}``; an ``x`` a label lacks is left out of its
            line (a label with a single ``x`` is one marker).
        path: PNG to write.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ticks = sorted({x for points in series.values() for x, values in points.items() if values})
    for label, points in series.items():
        xs = [x for x in ticks if len(points.get(x, ()))]
        if not xs:
            continue
        runs = [torch.tensor(points[x], dtype=torch.float64) for x in xs]
        line, = ax.plot(xs, [float(r.mean()) for r in runs], marker="o", label=label,
                        linewidth=1.2)
        ax.fill_between(xs, [float(r.min()) for r in runs], [float(r.max()) for r in runs],
                        color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def accuracy_errorbars(accuracy: Mapping[str, Sequence[float]], path, title: str = "") -> Path:
    """Horizontal bars with error bars.

    Args:
        accuracy: ``{model: (mean, std, seeds)}``, accuracies in [0, 1].
        path: PNG to write.
    """
    plt = _pyplot()
    labels = list(accuracy)
    means = [100 * accuracy[k][0] for k in labels]
    stds = [100 * accuracy[k][1] for k in labels]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(labels) + 1.2))
    ys = list(range(len(labels)))[::-1]
    ax.barh(ys, means, xerr=stds, capsize=3, color="tab:blue", alpha=0.8)
    for y, m, s, k in zip(ys, means, stds, labels):
        ax.text(m + s + 0.3, y, f"{m:.2f} ± {s:.2f} (n={int(accuracy[k][2])})", va="center",
                fontsize=7)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    low = min(m - s for m, s in zip(means, stds))
    ax.set_xlim(max(0.0, low - 5), min(100.0, max(m + s for m, s in zip(means, stds)) + 8))
    ax.set_xlabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def accuracy_vs_time(curves: Mapping[str, Sequence[tuple]], path, title: str = "") -> Path:
    """Accuracy against training time, one line per model with error bars.

    Args:
        curves: ``{model: [(seconds, mean accuracy, std), ...]}``, accuracies in [0, 1].
        path: PNG to write.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, points in curves.items():
        if points:
            t, m, s = zip(*points)
            ax.errorbar(t, [100 * v for v in m], yerr=[100 * v for v in s], marker="o",
                        markersize=3, capsize=2, linewidth=1.2, label=label)
    ax.set_xlabel("training time (s)")
    ax.set_xscale("log")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title, fontsize=10)
    return _save(fig, path)
