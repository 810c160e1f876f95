"""Smoke test of translution.bench_lm (no timing assertions)."""

import json

import pytest
import torch

@pytest.fixture(scope="module")
def bench_lm():
    from translution import bench_lm
    return bench_lm


def test_quick_run_writes_table(bench_lm, tmp_path):
    threads = torch.get_num_threads()
    lines = []
    out = tmp_path / "lm.md"
    table = bench_lm.run_lm_bench(True, str(out), threads=1, progress=lines.append)
    assert torch.get_num_threads() == threads          # restored
    assert out.read_text() == table
    for text in ("Machine:", "Commit:", "Command:", "torch " + torch.__version__,
                 "| attention | L |"):
        assert text in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and "|---" not in line]
    kinds = {row.split("|")[1].strip() for row in rows[1:]}
    assert kinds == set(bench_lm.DEFAULT_KINDS)
    assert len(rows) - 1 == len(bench_lm.DEFAULT_KINDS) * 2 == len(lines)
    report = json.loads(out.with_suffix(".json").read_text())
    for row in report["cases"]:
        r = row["result"]
        assert "error" not in r, r
        assert r["train_tokens_per_s"] > 0 and r["gen_cached_tokens_per_s"] > 0
        assert r["gen_uncached_tokens_per_s"] > 0 and r["parameters"] > 0


def test_quick_run_without_output(bench_lm):
    table = bench_lm.run_lm_bench(True, None, kinds=["rope"], lengths=[8], progress=lambda m: None)
    assert "| rope | 8 |" in table


def test_invalid_arguments(bench_lm):
    with pytest.raises(ValueError, match="unknown attention kind"):
        bench_lm.run_lm_bench(True, None, kinds=["conv"], progress=lambda m: None)
    with pytest.raises(ValueError, match="length"):
        bench_lm.LMCase("ape", 1)
