"""translution.bench.lm: the quick preset end to end, the growth analysis, argument errors
(no timing assertions)."""

import dataclasses
import json

import pytest
import torch


@pytest.fixture(scope="module")
def bench_lm():
    from translution.bench import lm as bench_lm
    return bench_lm


@pytest.fixture(scope="module")
def quick_run(bench_lm, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "lm.md"
    lines = []
    threads = torch.get_num_threads()
    table = bench_lm.run_lm_bench(True, str(out), threads=1, progress=lines.append)
    assert torch.get_num_threads() == threads          # restored
    return out, table, lines


def test_quick_run_writes_report_json_and_plot(bench_lm, quick_run):
    out, table, lines = quick_run
    assert out.read_text() == table
    assert out.with_suffix(".png").stat().st_size > 0
    for text in ("Machine:", "Commit:", "Command:", "torch " + torch.__version__,
                 "| attention | L |", "Growth per doubling of L", "**Why.**"):
        assert text in table
    report = json.loads(out.with_suffix(".json").read_text())
    variants = [bench_lm.parse_variant(v) for v in bench_lm.QUICK_VARIANTS]
    cases = [(r["case"]["kind"], r["case"]["max_distance"], r["case"]["length"])
             for r in report["cases"]]
    assert cases == [(k, d, n) for k, d in variants for n in bench_lm.QUICK_LENGTHS]
    assert len(lines) == len(cases)
    for row in report["cases"]:
        r, case = row["result"], row["case"]
        assert "error" not in r, r
        assert r["train_tokens_per_s"] > 0 and r["decode_tokens_per_s"] > 0
        assert r["context"] == case["length"]            # the timed tokens end at context L
        assert r["prefill_tokens"] == case["length"] - case["decode_tokens"] - 2
        assert r["cache_bytes"] > 0 and r["parameters"] > 0
        assert min(r["train_peak_bytes"], r["decode_peak_bytes"]) >= 0
    rows = {line.split("|")[1].strip() for line in table.splitlines()
            if line.startswith("| ") and "---" not in line}
    assert {"rope", "translution K=4", "alpha K=4"} <= rows


def test_clipped_bank_is_fixed_and_cache_grows_with_length(quick_run):
    """What the table explains: with max_distance the parameter count does not depend on L, the
    cache grows with it (every cached position is kept)."""
    out, _, _ = quick_run
    report = json.loads(out.with_suffix(".json").read_text())
    by = {}
    for row in report["cases"]:
        by.setdefault((row["case"]["kind"], row["case"]["max_distance"]), []).append(row["result"])
    for (kind, k), (short, long) in by.items():
        assert short["parameters"] == long["parameters"], kind
        assert long["cache_bytes"] > short["cache_bytes"], kind


def _report(values):
    """A report with one variant and ``{L: (train tokens/s, decode ms/token)}``."""
    cases = []
    for n, (tps, ms) in values.items():
        cases.append({"case": {"kind": "translution", "length": n, "max_distance": 8},
                      "result": {"train_tokens_per_s": tps, "train_peak_bytes": n * n,
                                 "decode_ms_per_token": ms, "cache_bytes": 10 * n}})
    return {"cases": cases}


def test_growth_factors_and_where_cost_stops_growing(bench_lm):
    # time/token: train ∝ L throughout; decode doubles, then flat from L = 64
    report = _report({16: (1000, 1.0), 32: (500, 2.0), 64: (250, 2.1), 128: (125, 2.2)})
    g = bench_lm.growth(report)["translution K=8"]
    torch.testing.assert_close(g["train time/token"]["factors"], [2.0, 2.0, 2.0])
    assert g["train time/token"]["flat_from"] is None
    torch.testing.assert_close(g["decode time/token"]["factors"], [2.0, 1.05, 2.2 / 2.1])
    assert g["decode time/token"]["flat_from"] == 32
    torch.testing.assert_close(g["train memory"]["factors"], [4.0, 4.0, 4.0])
    assert g["cache"]["lengths"] == [16, 32, 64, 128]
    # non-consecutive lengths: the factor is per doubling (×4 over two doublings → ×2)
    g = bench_lm.growth(_report({16: (100, 1.0), 64: (25, 1.0)}))["translution K=8"]
    torch.testing.assert_close(g["train time/token"]["factors"], [2.0])
    assert g["decode time/token"]["flat_from"] == 16


def test_errors_are_rows_not_crashes(bench_lm):
    report = _report({16: (1000, 1.0), 32: (500, 2.0)})
    report["cases"].append({"case": {"kind": "translution", "length": 64, "max_distance": 8},
                            "result": {"error": "train: timed out after 1 s"}})
    assert bench_lm.growth(report)["translution K=8"]["cache"]["lengths"] == [16, 32]
    report.update(machine="m", commit="c", command="x", isolated=True, seconds=1.0)
    for row in report["cases"]:
        row["case"] = dataclasses.asdict(bench_lm.LMCase(**row["case"], decode_tokens=4))
        row["result"].setdefault("parameters", 1)
    for row in report["cases"][:2]:
        row["result"].update(train_warmup_only=False, decode_tokens_per_s=1.0,
                             decode_peak_bytes=0)
    assert "| translution K=8 | 64 | train: timed out after 1 s |" in bench_lm.markdown(report)


def test_quick_run_without_output(bench_lm):
    table = bench_lm.run_lm_bench(True, None, variants=["lor_rope:2"], lengths=[8],
                                  progress=lambda m: None)
    assert "| lor_rope K=2 | 8 |" in table and "Plot:" not in table


def test_isolated_run_measures_each_phase_in_a_child(bench_lm):
    table = bench_lm.run_lm_bench(True, None, variants=["rope"], lengths=[8], isolate=True,
                                  threads=1, progress=lambda m: None)
    assert "One configuration and phase per process." in table
    row = next(line for line in table.splitlines() if line.startswith("| rope | 8 |"))
    assert "exit" not in row and "timed out" not in row


def test_invalid_arguments(bench_lm):
    with pytest.raises(ValueError, match="bad variant 'conv': expected an attention kind"):
        bench_lm.run_lm_bench(True, None, variants=["conv"], progress=lambda m: None)
    with pytest.raises(ValueError, match="bad variant 'alpha:x'"):
        bench_lm.parse_variant("alpha:x")
    assert bench_lm.parse_variant("translution:32") == ("translution", 32)
    assert bench_lm.parse_variant("rope") == ("rope", None)
    with pytest.raises(ValueError, match="length must be >= decode_tokens"):
        bench_lm.LMCase("rope", 8, decode_tokens=8)
    with pytest.raises(ValueError, match="device"):
        bench_lm.LMCase("rope", 64, device="tpu")
    with pytest.raises(ValueError, match="max_distance"):
        bench_lm.LMCase("rope", 64, max_distance=-1)
    with pytest.raises(ValueError, match="phase"):
        bench_lm.measure(bench_lm.LMCase("rope", 64), "eval")


def test_command_line_quick(bench_lm, tmp_path, capsys):
    out = tmp_path / "cli.md"
    assert bench_lm.main(["--quick", "--variant", "rope", "--length", "16", "--threads", "1",
                          "--out", str(out), "--plot", ""]) == 0
    text = out.read_text()
    assert "Command: `translution bench lm --quick --variant rope --length 16" in text
    assert not out.with_suffix(".png").exists()
    assert "wrote" in capsys.readouterr().out
