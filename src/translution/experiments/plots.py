"""Figures of the experiment reports (matplotlib, Agg backend; every function writes one PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

import torch

from ..utils import atomic_write


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path) -> Path:
    path = atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    _pyplot().close(fig)
    return path


def lines(panels: Mapping[str, Mapping[str, Sequence[tuple]]], path, xlabel: str = "step",
          ylabel: str = "", title: str = "", scale: float = 1.0, xlog: int = 0,
          ylog: bool = False, xticks: Optional[Sequence[float]] = None) -> Path:
    """One panel per ``{panel title: {label: points}}`` entry (up to four a row), one line per
    label through points ``(x, y)`` or ``(x, y, low, high)`` (a band); values times ``scale``."""
    plt = _pyplot()
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(6.0, 3.6 * cols), 3.4 * rows),
                             squeeze=False, sharey=True, constrained_layout=True)
    for ax, (name, series) in zip(axes.flat, panels.items()):
        for k, (label, points) in enumerate(series.items()):       # past 10 colours: dashed
            if not points:
                continue
            x, *ys = zip(*sorted(points))
            y, *band = ([scale * v for v in column] for column in ys)
            line, = ax.plot(x, y, label=label, linewidth=1.2, ls="--" if k >= 10 else "-",
                            marker="o" if len(x) <= 40 else None, markersize=2.5)
            if band:
                ax.fill_between(x, *band, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(which="both", labelsize=7)
        ax.grid(alpha=0.3)
        if xlog:
            ax.set_xscale("log", base=xlog)
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
        if xticks is not None:
            ax.set_xticks(list(xticks), [f"{v:g}" for v in xticks])
            ax.minorticks_off()
        if ylog:
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes[0][0].set_ylabel(ylabel, fontsize=8)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def scatter(points: Mapping[str, Sequence[tuple]], path, xlabel: str, ylabel: str,
            title: str = "", scale: float = 1.0) -> Path:
    """One marker per point ``(x, y)`` (``y`` times ``scale``), one colour per label."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    markers = "osD^v<>"                  # 7 markers × 10 colours: 70 distinct styles
    for k, (label, pts) in enumerate(points.items()):
        x, y = zip(*pts)
        ax.scatter(x, [scale * v for v in y], label=label, s=22, marker=markers[k % 7],
                   color=f"C{k % 10}", alpha=.8)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def accuracy_bars(accuracy: Mapping[str, Mapping[str, tuple]], path, title: str = "") -> Path:
    """Grouped bars of ``{model: {setting: (mean, std)}}`` (accuracies in [0, 1]; a setting a
    model lacks is a gap); the axis starts a little below the lowest bar."""
    plt = _pyplot()
    models = list(accuracy)
    settings = list(dict.fromkeys(k for row in accuracy.values() for k in row))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(settings)), 3.6))
    width = 0.8 / len(models)
    low = 100.0
    for m, model in enumerate(models):
        xs = [s + (m - (len(models) - 1) / 2) * width for s in range(len(settings))]
        pairs = [accuracy[model].get(setting, (float("nan"), 0.0)) for setting in settings]
        values, errors = [100 * p[0] for p in pairs], [100 * p[1] for p in pairs]
        low = min([low] + [v - e for v, e in zip(values, errors) if v == v])
        bars = ax.bar(xs, values, width, label=model, yerr=errors if any(errors) else None,
                      error_kw={"elinewidth": 0.8, "capsize": 1.5}, hatch="//" * (m >= 10))
        ax.bar_label(bars, [f"{v:.1f}" for v in values], fontsize=6, padding=2)
    ax.set_xticks(range(len(settings)), settings, fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(max(0.0, 10 * (low // 10) - 10), 105)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def value_kernels(model: torch.nn.Module, path, bank: str = "wv",
                  title: str = "") -> Optional[Path]:
    """One heat map per relative layer on an unclipped, asymmetric, non-circular 2-D grid: the
    norm of each slot's matrix of ``bank`` (``wv``; α-Translution: ``mv``); ``None`` if none."""
    maps = []
    for module in model.modules():
        weights = getattr(module, bank, None)
        layout = getattr(module, "layout", None)
        if (isinstance(weights, torch.Tensor) and weights.dim() == 3 and layout is not None
                and layout.ndim == 2 and not layout.symmetric
                and not getattr(layout, "circular", False)):
            rows, cols = (2 * r + 1 for r in layout.radii)
            norms = weights.detach().float().flatten(1).norm(dim=1)[: rows * cols]
            maps.append(norms.reshape(rows, cols).cpu())
    if not maps:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(maps), figsize=(3.0 * len(maps), 2.6), squeeze=False)
    for layer, (ax, norms) in enumerate(zip(axes[0], maps)):
        rows, cols = norms.shape
        image = ax.imshow(norms.numpy(), cmap="viridis", extent=(
            -(cols // 2) - .5, cols // 2 + .5, rows // 2 + .5, -(rows // 2) - .5))
        ax.set_title(f"layer {layer + 1}", fontsize=8)
        ax.set_xlabel("δc", fontsize=7)
        ax.set_ylabel("δr", fontsize=7)
        ax.tick_params(labelsize=6)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
    fig.suptitle(title or f"‖{bank}[slot]‖ per relative offset", fontsize=9)
    return _save(fig, path)


@torch.no_grad()
def attention_maps(models: Mapping[str, torch.nn.Module], images: torch.Tensor, path,
                   patch_size: int, title: str = "") -> Path:
    """Rows: the input digits ``(B, C, H, W)``, then each model's (a ViT with ``pool="cls"``)
    class-token attention on each patch in the last block, mean over heads."""
    plt = _pyplot()
    n = images.shape[0]
    fig, axes = plt.subplots(1 + len(models), n, figsize=(1.5 * n, 1.6 * (1 + len(models))),
                             squeeze=False)
    for i in range(n):
        axes[0][i].imshow(images[i, 0].cpu().numpy(), cmap="gray")
    axes[0][0].set_ylabel("input", fontsize=8)
    for row, (name, model) in enumerate(models.items(), start=1):
        captured, layer = {}, model.blocks[-1].attn
        handle = layer.register_forward_hook(lambda m, args, out: captured.setdefault("x", args[0]))
        try:
            model(images)
        finally:
            handle.remove()
        grid = model._grid_of(images)
        attn = layer.attention_weights(captured["x"], shape=None if grid == model.config.grid
                                       else grid)                          # (B, heads, N, N)
        maps = attn[:, :, 0, 1:].mean(1).reshape(n, *grid).float().cpu()    # (B, h, w)
        for i in range(n):
            up = maps[i].repeat_interleave(patch_size, 0).repeat_interleave(patch_size, 1)
            axes[row][i].imshow(images[i, 0].cpu().numpy(), cmap="gray")
            axes[row][i].imshow(up.numpy(), cmap="inferno", alpha=0.6)
        axes[row][0].set_ylabel(name, fontsize=7)
    plt.setp(axes.flat, xticks=[], yticks=[])
    fig.suptitle(title or "class-token attention, last block (mean over heads)", fontsize=9)
    return _save(fig, path)
