"""Fashion-MNIST accuracy against training budget, from several ``results.json`` files.

Each file is one ``translution experiment fashion`` run at one schedule length (its epochs are
read from ``steps``: 60,000 images / batch 128 = 468 steps an epoch). Writes a figure (test
accuracy mean ± std over seeds against epochs, one line per model present in at least two
files) and prints a Markdown table with the gain of each doubling, the convergence check the
README uses ("a longer schedule gains less than the seed spread"), and a second table with each
model's difference from the baseline at every budget: mean difference in points, its 95 %
confidence interval and p-value from Welch's t-test over the per-seed accuracies::

    python scripts/fashion_budget.py docs/fashion_results.json docs/fashion_e*_results.json \
        --out docs/fashion_budget.png
"""

import argparse
import json
from pathlib import Path

STEPS_PER_EPOCH = 60_000 // 128


def load(paths):
    """``{model: {epochs: (accuracy %, std %, per-seed accuracies %)}}`` over ``paths``."""
    table = {}
    for path in paths:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
        for model, r in results.items():
            if not isinstance(r, dict) or "steps" not in r:
                raise ValueError(f"{path}: entry {model!r} has no 'steps' (not a fashion results.json)")
            epochs = round(r["steps"] / STEPS_PER_EPOCH)
            table.setdefault(model, {})[epochs] = (
                100 * r["accuracy"], 100 * r["accuracy_std"], [100 * a for a in r.get("seeds", [])])
    return {m: dict(sorted(v.items())) for m, v in table.items() if len(v) >= 2}


def budgets(table):
    """Every schedule length (epochs) in ``table``, ascending."""
    return sorted({e for v in table.values() for e in v})


def markdown(table) -> str:
    columns = budgets(table)
    head = "| model | " + " | ".join(f"{e} epochs (%)" for e in columns) + " | last doubling |"
    lines = [head, "|" + "---|" * (len(columns) + 2)]
    for model, v in table.items():
        cells = [f"{v[e][0]:.2f} ± {v[e][1]:.2f}" + ("" if len(v[e][2]) >= 3 else f" ({len(v[e][2])} seeds)")
                 if e in v else "" for e in columns]
        last, prev = max(v), max(v) // 2
        gain = f"{v[last][0] - v[prev][0]:+.2f} ({prev} → {last})" if prev in v else ""
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {gain} |")
    return "\n".join(lines)


def differences(table, baseline: str) -> str:
    """Markdown: per model and budget, mean − baseline mean (points) [95 % CI], Welch p-value;
    empty where either side has fewer than two seeds, no interval where no side varies."""
    from scipy import stats
    if baseline not in table:
        raise ValueError(f"baseline {baseline!r} is not among the models {list(table)}")
    base, columns = table[baseline], budgets(table)
    lines = [f"| difference from {baseline} (points) | " +
             " | ".join(f"{e} epochs" for e in columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for model, v in table.items():
        cells = []
        for e in columns:
            if model == baseline or e not in v or e not in base or min(
                    len(v[e][2]), len(base[e][2])) < 2:
                cells.append("")
                continue
            if len(set(v[e][2])) == len(set(base[e][2])) == 1:
                cells.append(f"{v[e][0] - base[e][0]:+.2f} (no seed spread: no interval)")
                continue
            test = stats.ttest_ind(v[e][2], base[e][2], equal_var=False)
            ci = test.confidence_interval(0.95)
            p = "p < 0.01" if test.pvalue < 0.01 else f"p = {test.pvalue:.2f}"
            cells.append(f"{v[e][0] - base[e][0]:+.2f} [{ci.low:+.2f}, {ci.high:+.2f}], {p}")
        if model != baseline:
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(table, out: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for model, v in table.items():
        e = list(v)
        ax.errorbar(e, [v[k][0] for k in e], yerr=[v[k][1] for k in e], marker="o", capsize=3,
                    label=model)
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets(table))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("epochs (cosine schedule of that length)")
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    ax.set_title("Fashion-MNIST, 4×4 + cls tokens: accuracy against training budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", nargs="+", help="results.json files, one per schedule length")
    p.add_argument("--out", type=Path, help="figure to write (PNG)")
    p.add_argument("--baseline", help="the model the differences are taken from (default: the "
                   "first model of the first file)")
    args = p.parse_args(argv)
    table = load(args.results)
    if not table:
        raise SystemExit("no model appears in two or more of the files")
    print(markdown(table))
    print()
    print(differences(table, args.baseline or next(iter(table))))
    if args.out:
        plot(table, args.out)


if __name__ == "__main__":
    main()
