"""Pool the seeds of several ``results.json`` files of one experiment protocol into one.

For runs of one protocol made at different times (say seeds 0–1 in one session and seed 2 in the
next, the run folders of the first gone): every statistic ``{M: mean, M_std: std, "seeds": [...]}``
of the output holds the seeds of all files in order, with their mean and sample std (ddof 1);
``seconds`` becomes the seed-weighted mean (``seconds_std`` the exact pooled sample std); every
other field must be equal in all files (parameters, steps, model, ...), else ``ValueError``.
``settings`` (the experiment's settings, kept in results.json since December 2026) must agree
in every entry but :data:`RUN_ONLY`, and the seed numbers (from ``seed``) must not repeat; the
output keeps the shared settings and ``seed_numbers``. Older files have no ``settings``: that
their recipes agree and their seeds differ is then the user's to check. Austen files pool only
from the equal-steps protocol (``--set "protocols=[steps]"``): an equal-time run is one seed::

    python scripts/pool_seeds.py docs/austen_steps3000_seeds01_results.json \\
        docs/austen_steps3000_seed2_results.json --out docs/austen_steps3000_results.json
"""

import argparse
import json
import math
from pathlib import Path

from translution.experiments.common import seed_stats

#: Settings outside the recipe: which seeds and arms, where and how fast (device and threads may
#: change last digits), logging, and the equal-time protocol and samples (not pooled).
RUN_ONLY = frozenset({
    "seeds", "seed", "device", "threads", "models", "ablations", "data_root", "eval_points",
    "eval_batch_size", "log_every", "protocols", "budget_seconds", "calibration_steps", "prompt",
    "samples", "sample_tokens", "temperature", "top_k", "sample_seed"})


def _settings(parts, where):
    """The settings shared by the files' stats ``parts`` and the joined seed numbers."""
    given = [p.get("settings") for p in parts]
    if None in given:
        raise ValueError(f"{where}.settings: some files have them and others not (older files "
                         f"cannot be checked; pool those alone)")
    recipes = [{k: v for k, v in g.items() if k not in RUN_ONLY} for g in given]
    differ = [k for k in sorted(set().union(*recipes))
              if any(r.get(k) != recipes[0].get(k) for r in recipes)]
    if differ:
        per_file = [{k: r.get(k, "<absent>") for k in differ} for r in recipes]
        raise ValueError(f"{where}.settings differ between the files in {differ}; per file, in "
                         f"the order given: {per_file}")
    numbers = [n for p, g in zip(parts, given) for n in p.get("seed_numbers") or
               range(g["seed"], g["seed"] + len(p["seeds"]))]
    repeated = sorted({n for n in numbers if numbers.count(n) > 1})
    if repeated:
        raise ValueError(f"{where}: seeds {repeated} are in more than one file (seed numbers, "
                         f"file by file: {numbers})")
    return recipes[0], numbers


def _metric(stats: dict):
    """The name ``M`` of a statistic ``{M, M_std, seeds}``, or ``None``."""
    if not isinstance(stats.get("seeds"), list):
        return None
    names = [k for k in stats if f"{k}_std" in stats and k != "seconds"]
    return names[0] if len(names) == 1 else None


def _seconds(parts):
    """Seed-weighted mean and exact pooled sample std of per-file ``(n, mean, std)``."""
    n = sum(k for k, _, _ in parts)
    mean = sum(k * m for k, m, _ in parts) / n
    spread = sum((k - 1) * s * s + k * (m - mean) ** 2 for k, m, s in parts)
    return mean, math.sqrt(spread / (n - 1)) if n > 1 else 0.0


def pool(parts, where="results"):
    """One results tree from the trees ``parts`` (same shape; see the module docstring)."""
    first = parts[0]
    name = _metric(first) if isinstance(first, dict) else None
    if name is not None:
        seeds = [v for p in parts for v in p["seeds"]]
        out = {k: v for k, v in first.items() if k not in (name, f"{name}_std", "seeds")}
        if any("settings" in p for p in parts):
            out["settings"], out["seed_numbers"] = _settings(parts, where)
        for key in set(out).union(*parts) - {name, f"{name}_std", "seeds", "seconds",
                                              "seconds_std", "settings", "seed_numbers"}:
            if any(p.get(key) != out.get(key) for p in parts):
                raise ValueError(f"{where}.{key} differs between the files: "
                                 f"{[p.get(key) for p in parts]}")
        if "seconds" in out:
            pairs = [(len(p["seeds"]), p["seconds"], p.get("seconds_std", 0.0)) for p in parts]
            out["seconds"], std = _seconds(pairs)
            if "seconds_std" in out:
                out["seconds_std"] = std
        stats = (seed_stats(seeds, name, single_std=first[f"{name}_std"]) if seeds else
                 {name: first[name], f"{name}_std": first[f"{name}_std"], "seeds": []})
        return {**stats, **out}
    if isinstance(first, dict):
        if "equal_steps" in first and "val_loss" in first:
            raise ValueError(f"{where}: an equal-time Austen run is one seed and cannot be pooled; "
                             f"pool files run with protocols=[steps]")
        if any(not isinstance(p, dict) or set(p) != set(first) for p in parts):
            raise ValueError(f"{where}: the files hold different entries: "
                             f"{[sorted(p) if isinstance(p, dict) else p for p in parts]}")
        return {k: pool([p[k] for p in parts], f"{where}.{k}") for k in first}
    if any(p != first for p in parts):
        raise ValueError(f"{where} differs between the files: {parts}")
    return first


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", nargs="+", type=Path, help="results.json files, disjoint seeds")
    p.add_argument("--out", type=Path, required=True, help="pooled results.json to write")
    args = p.parse_args(argv)
    trees = [json.loads(path.read_text(encoding="utf-8")) for path in args.results]
    args.out.write_text(json.dumps(pool(trees), indent=2, ensure_ascii=False) + "\n",
                        encoding="utf-8")


if __name__ == "__main__":
    main()
