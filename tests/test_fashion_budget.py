"""scripts/fashion_budget.py: accuracy against schedule length from several results.json."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fashion_budget.py"
spec = importlib.util.spec_from_file_location("fashion_budget", SCRIPT)
fashion_budget = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fashion_budget)


def _results(tmp_path, name, epochs, models):
    path = tmp_path / name
    path.write_text(json.dumps({m: {"accuracy": acc, "accuracy_std": std, "seeds": [acc] * n,
                                    "steps": epochs * 468, "parameters": 1, "seconds": 1.0}
                                for m, (acc, std, n) in models.items()}))
    return path


def test_table_figure_and_gain_of_the_last_doubling(tmp_path, capsys):
    a = _results(tmp_path, "e12.json", 12, {"A": (0.88, 0.002, 3), "B": (0.87, 0.001, 3),
                                            "only once": (0.5, 0.0, 3)})
    b = _results(tmp_path, "e24.json", 24, {"A": (0.895, 0.001, 3), "B": (0.88, 0.003, 2)})
    out = tmp_path / "budget.png"
    fashion_budget.main([str(a), str(b), "--out", str(out)])
    table = capsys.readouterr().out
    assert "| A | 88.00 ± 0.20 | 89.50 ± 0.10 | +1.50 (12 → 24) |" in table
    assert "88.00 ± 0.30 (2 seeds)" in table          # fewer than 3 seeds is said
    assert "only once" not in table                   # one budget: nothing to compare
    assert "| difference from A (points) | 12 epochs | 24 epochs |" in table
    assert "| B | -1.00 (no seed spread: no interval) | -1.50 (no seed spread" in table
    assert out.stat().st_size > 0


def test_difference_from_the_baseline_with_welch_interval(tmp_path):
    def seeds(path, epochs, models):
        path.write_text(json.dumps({m: {"accuracy": sum(a) / len(a), "accuracy_std": 0.0,
                                        "seeds": a, "steps": epochs * 468} for m, a in models.items()}))
        return path
    a = seeds(tmp_path / "a.json", 12, {"base": [0.80, 0.81, 0.82], "far": [0.90, 0.91, 0.92],
                                        "same": [0.80, 0.81, 0.82], "one seed": [0.9]})
    b = seeds(tmp_path / "b.json", 24, {"base": [0.85, 0.86], "far": [0.86, 0.87, 0.88],
                                        "same": [0.85, 0.86], "one seed": [0.9]})
    table = fashion_budget.differences(fashion_budget.load([a, b]), "base").splitlines()
    assert table[0] == "| difference from base (points) | 12 epochs | 24 epochs |"
    far = next(row for row in table if row.startswith("| far |"))
    assert far.startswith("| far | +10.00 [") and "p < 0.01" in far      # 10 points, spread 1
    # equal samples, sd 1 point, df 4: half-width t(0.975, 4) · √(2/3) = 2.776 · 0.816
    assert "| same | +0.00 [-2.27, +2.27], p = 1.00 | +0.00 [" in table[3]
    assert "| one seed |  |  |" in table                # under two seeds: no interval
    with pytest.raises(ValueError, match="baseline 'nobody' is not among"):
        fashion_budget.differences(fashion_budget.load([a, b]), "nobody")


def test_rejects_a_file_that_is_not_fashion_results(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"A": {"accuracy": 0.5}}))
    with pytest.raises(ValueError, match="no 'steps'"):
        fashion_budget.load([bad])
