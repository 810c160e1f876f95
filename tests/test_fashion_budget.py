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
    assert out.stat().st_size > 0


def test_rejects_a_file_that_is_not_fashion_results(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"A": {"accuracy": 0.5}}))
    with pytest.raises(ValueError, match="no 'steps'"):
        fashion_budget.load([bad])
