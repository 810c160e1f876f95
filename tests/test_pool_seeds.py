"""scripts/pool_seeds.py: one results.json from runs of one protocol made at different times."""

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pool_seeds.py"
spec = importlib.util.spec_from_file_location("pool_seeds", SCRIPT)
pool_seeds = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pool_seeds)


def _fashion(seeds, seconds):
    return {"A": {"accuracy": statistics.fmean(seeds), "accuracy_std": 0.0, "seeds": seeds,
                  "parameters": 10, "seconds": statistics.fmean(seconds),
                  "seconds_std": statistics.stdev(seconds) if len(seconds) > 1 else 0.0,
                  "steps": 468, "model": {"dim": 64}}}


def test_pooled_statistics_equal_those_of_all_seeds_at_once(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_fashion([0.90, 0.92], [100.0, 140.0])))
    b.write_text(json.dumps(_fashion([0.95], [130.0])))
    out = tmp_path / "pooled.json"
    pool_seeds.main([str(a), str(b), "--out", str(out)])
    pooled, whole = json.loads(out.read_text())["A"], _fashion([0.90, 0.92, 0.95],
                                                              [100.0, 140.0, 130.0])["A"]
    assert pooled["seeds"] == [0.90, 0.92, 0.95]
    assert pooled["accuracy"] == pytest.approx(whole["accuracy"])
    assert pooled["accuracy_std"] == pytest.approx(statistics.stdev([0.90, 0.92, 0.95]))
    assert pooled["seconds"] == pytest.approx(whole["seconds"])
    assert pooled["seconds_std"] == pytest.approx(whole["seconds_std"])   # exact, not averaged
    assert pooled["model"] == {"dim": 64} and pooled["steps"] == 468


def test_nested_statistics_and_entries_without_seeds():
    def austen(ppl):
        return {"m": {"equal_steps": {"perplexity": ppl[0], "perplexity_std": 0.0, "seeds": ppl,
                                      "seconds": 10.0, "steps": 3},
                      "length": {"256": {"perplexity": None, "perplexity_std": None, "seeds": [],
                                         "note": "absolute positions only up to 128"}}}}
    pooled = pool_seeds.pool([austen([4.0, 5.0]), austen([6.0])])["m"]
    assert pooled["equal_steps"]["seeds"] == [4.0, 5.0, 6.0]
    assert pooled["equal_steps"]["perplexity"] == pytest.approx(5.0)
    assert pooled["equal_steps"]["perplexity_std"] == pytest.approx(1.0)
    assert pooled["length"]["256"] == austen([1.0])["m"]["length"]["256"]   # nothing to pool
    both = [{"m": {"val_loss": v, **austen([v])["m"]}} for v in (1.5, 1.6)]    # + equal time
    with pytest.raises(ValueError, match=r"results.m: an equal-time Austen run is one seed"):
        pool_seeds.pool(both)


def test_refuses_files_of_different_protocols_or_models():
    with pytest.raises(ValueError, match=r"results.A.steps differs between the files: \[468, 936\]"):
        pool_seeds.pool([_fashion([0.9], [1.0]), {"A": {**_fashion([0.9], [1.0])["A"],
                                                        "steps": 936}}])
    with pytest.raises(ValueError, match="the files hold different entries"):
        pool_seeds.pool([_fashion([0.9], [1.0]), {"B": _fashion([0.9], [1.0])["A"]}])


def test_settings_decide_what_may_be_pooled():
    def run(accs, seed, lr=2e-3, **more):
        a = _fashion(accs, [1.0] * len(accs))
        a["A"]["settings"] = {"seed": seed, "seeds": len(accs), "device": "cpu", "lr": lr,
                              "epochs": 48, **more}
        return a
    pooled = pool_seeds.pool([run([0.9, 0.8], 0), run([0.7], 2, device="cuda", threads=1)])["A"]
    assert pooled["seed_numbers"] == [0, 1, 2] and pooled["seeds"] == [0.9, 0.8, 0.7]
    assert pooled["settings"] == {"lr": 2e-3, "epochs": 48}     # the recipe, without seeds/device
    assert pool_seeds.pool([{"A": pooled}, run([0.6], 3)])["A"]["seed_numbers"] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"results.A: seeds \[1\] are in more than one file "
                                         r"\(seed numbers, file by file: \[0, 1, 1\]\)"):
        pool_seeds.pool([run([0.9, 0.8], 0), run([0.7], 1)])
    with pytest.raises(ValueError, match=r"results.A.settings differ between the files in \['lr'\]"
                                         r"; per file, in the order given: \[\{'lr': 0.002\}, "
                                         r"\{'lr': 0.001\}\]"):
        pool_seeds.pool([run([0.9], 0), run([0.7], 1, lr=1e-3)])
    with pytest.raises(ValueError, match=r"\['x'\]; per file, in the order given: \[\{'x': "
                                         r"'<absent>'\}, \{'x': 5\}\]"):        # a newer field
        pool_seeds.pool([run([0.9], 0), run([0.7], 1, x=5)])

    for order in ([_fashion([0.9], [1.0]), run([0.7], 1)], [run([0.7], 1), _fashion([0.9], [1.0])]):
        with pytest.raises(ValueError, match="some files have them and others not"):
            pool_seeds.pool(order)
