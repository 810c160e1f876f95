"""The operation benchmark (`translution bench op`): its baseline computes Translution, a tiny
suite runs every implementation in its own process and reports the issue's columns, and the
Dynamic MNIST models' training steps/s make a second table."""

import pytest
import torch

from translution import Translution
from translution.bench import op as bench
from translution.layouts import Grid, Sequence


@pytest.mark.parametrize("layout", [Grid(2, 3, cls_token=True), Sequence(5, causal=True),
                                    Sequence(4), Grid(2, 2)], ids=repr)
def test_paper_baseline_equals_translution(layout):
    """The benchmark's baseline computes the same function on every layout (it is only slower)."""
    torch.manual_seed(0)
    layer = Translution(8, layout, heads=2, dim_head=4).double()
    x = torch.randn(2, layout.num_tokens, 8, dtype=torch.float64)
    y = bench.paper_gathered_translution(x, layer.wq, layer.wk, layer.wv, layout, 2)
    torch.testing.assert_close(layer.out(y), layer(x), rtol=1e-12, atol=1e-12)


def test_bench_op_runs_each_implementation_in_its_own_process(monkeypatch):
    rate = bench.matmul_rate
    monkeypatch.setattr(bench, "matmul_rate", lambda: rate(sizes=(256,), repeats=1))
    case = bench.Case("grid:2,3:cls", dim=16, heads=2, dim_head=8, batch=2, rank=2, name="tiny")
    report = bench.run_suite([case], repeats=1, progress=lambda _: None, models=False)
    row = report["rows"][0]
    assert set(row["results"]) == set(bench.IMPLS)
    for impl, r in row["results"].items():
        assert r["seconds"] > 0 and r["peak_rss"] >= r["base_rss"] > 0 and r["ops"] > 0, impl
    assert row["alpha_flop_ratio"]["F"] > row["alpha_flop_ratio"]["F_core"] > 1
    table = bench.markdown(report)
    header, rule, line = table.splitlines()[2:5]
    assert header.count("|") == rule.count("|") == line.count("|")
    assert line.startswith("| tiny: 2×3+cls | 2 | 16 (2 × 8) |")
    assert "F = " in line and "ops per layer call" in header and "% of matmul rate" in header
    assert report["models"] == [] and "training steps/s" not in table


def test_model_table_builds_the_dynamic_mnist_models():
    from translution.experiments.dynamic_mnist import QUICK, build_model
    rows = bench.train_steps_per_second(["ape"], batch=2, steps=1)
    assert [(r["run_id"], r["label"], r["input_shape"]) for r in rows] == [
        ("ape", QUICK.models["ape"]["label"], [2, 1, 42, 42])]
    assert rows[0]["parameters"] == sum(p.numel() for p in build_model(QUICK, "ape").parameters())
    assert rows[0]["steps_per_s"] > 0 and rows[0]["ms_per_step"] > 0
    report = {"machine": "m", "commit": "c", "matmul_gflops": 1.0, "rows": [], "models": rows}
    table = bench.markdown(report)
    assert "| model (Dynamic MNIST main job) | parameters | training steps/s | ms/step |" in table
    assert f"| {QUICK.models['ape']['label']} | {rows[0]['parameters']:,} |" in table


def test_batched_layer_dispatches_fewer_ops_than_grouped():
    layout = Grid(4, 4, cls_token=True)
    x = torch.randn(2, layout.num_tokens, 16, requires_grad=True)
    counts = {}
    for backend in ("grouped", "batched"):
        layer = Translution(16, layout, heads=2, dim_head=8, backend=backend)
        step = lambda: layer(x).sum().backward()
        step()
        with bench.OpCounter() as counter:
            step()
        counts[backend] = counter.ops
    assert 0 < counts["batched"] < counts["grouped"] / 4


def test_default_cases_include_the_issue_sizes():
    labels = [c.label for c in bench.default_cases()]
    assert "MNIST main job: 6×6+cls" in labels and "paper's grid: 4×4+cls" in labels
    mnist = bench.default_cases()[0]
    assert (mnist.dim, mnist.heads, mnist.dim_head, mnist.batch) == (64, 4, 16, 128)
    assert len(bench.default_cases(quick=True)) == 2


def test_a_failing_case_is_a_skipped_cell_not_a_crash():
    result = bench.measure(bench.Case("hex:3", dim=8, heads=2), "sdpa", timeout=120)
    assert result == {"skipped": "exit 1: ValueError: unknown benchmark layout 'hex:3'"}
