"""The Fashion-MNIST experiment on fake data: results.json, mean ± std over seeds, the
parameter-matched arm, checkpoints that `translution eval` reloads, resume; the augmentation and
the shared arms × seeds helpers."""

import contextlib
import io
import json
import statistics

import pytest
import torch

from translution.cli import main
from translution.data.mnist import RandomCropFlip
from translution.experiments import common, fashion
from translution.train.config import replace_settings
from translution.train.rng import seeded_rng

TINY = ["train_size=96", "test_size=40", "epochs=1", "batch_size=32", "eval_batch_size=25",
        "eval_points=1", "dim=8", "depth=1", "heads=2", "dim_head=4", "mlp_dim=16", "rank=2",
        "warmup_steps=1", "threads=1"]


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory, idx_writer):
    """A Fashion-MNIST folder of full-size splits (the loader requires them): the first images
    random, the rest blank."""
    root = tmp_path_factory.mktemp("fashion")
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 60000), ("t10k", 10000)):
        images = torch.zeros(n, 28, 28, dtype=torch.uint8)
        images[:128] = torch.randint(0, 256, (128, 28, 28), generator=g, dtype=torch.uint8)
        idx_writer(root / f"{split}-images-idx3-ubyte", images)
        idx_writer(root / f"{split}-labels-idx1-ubyte",
                  torch.randint(0, 10, (n,), generator=g, dtype=torch.uint8))
    return root


def _cli(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def test_quick_path_results_matching_and_checkpoints(tmp_path, fake_root):
    threads = torch.get_num_threads()
    try:
        out = tmp_path / "fashion"
        sets = [x for item in TINY + [f"data_root={fake_root}"] for x in ("--set", item)]
        assert _cli("experiment", "fashion", "--out", str(out), "--seeds", "2", *sets)[0] == 0
        results = json.loads((out / "results.json").read_text())
        settings = replace_settings(fashion.QUICK, TINY + ["seeds=2", f"data_root={fake_root}"])
        assert list(results) == list(fashion.MODELS)
        for label, r in results.items():
            assert len(r["seeds"]) == 2 and all(0 <= a <= 1 for a in r["seeds"])
            assert r["accuracy"] == pytest.approx(statistics.mean(r["seeds"]))
            assert r["accuracy_std"] == pytest.approx(statistics.stdev(r["seeds"]))
            assert r["parameters"] > 0 and r["seconds"] > 0 and r["steps"] == 3
            assert r["settings"] == settings.to_dict()        # what pool_seeds compares
        matched = results["ViT + abs. pos. emb., parameter-matched"]
        target = results["Translution"]["parameters"]
        assert abs(matched["parameters"] / target - 1) < 0.05
        assert matched["parameters"] > 3 * results["ViT + abs. pos. emb."]["parameters"]
        assert "Translution" in (out / "report.md").read_text()
        for png in ("accuracy.png", "accuracy_vs_time.png"):
            assert (out / png).stat().st_size > 0

        # every arm's checkpoint reloads through `translution eval` with its own accuracy
        for label, r in results.items():
            code, text = _cli("eval", "--checkpoint", str(out / "runs" / r["run"] / "seed1"
                                                            / "last.pt"))
            assert code == 0
            assert json.loads(text)["top1"] / 100 == pytest.approx(r["seeds"][1], abs=1e-12)

        # running again reloads the finished runs; other settings in the folder are refused
        metrics = (out / "runs" / "translution" / "seed0" / "metrics.jsonl").read_text()
        again = fashion.run(out, settings, log=lambda m: None)
        for label, r in again.items():        # training time may differ by the final bookkeeping
            assert {k: v for k, v in r.items() if not k.startswith("seconds")} == \
                {k: v for k, v in results[label].items() if not k.startswith("seconds")}
            assert r["seconds"] == pytest.approx(results[label]["seconds"], abs=0.5)
        assert (out / "runs" / "translution" / "seed0" / "metrics.jsonl").read_text() == metrics
        with pytest.raises(ValueError, match="other settings"):
            fashion.run(out, replace_settings(settings, ["lr=1e-3"]), log=lambda m: None)
    finally:
        torch.set_num_threads(threads)


def test_ablation_arms_share_the_translution_run():
    s = replace_settings(fashion.QUICK, TINY + ["ablations=true"])
    sections = fashion.arm_sections(s)
    slugs = {label: fashion._slug(s, sec) for label, sec in sections.items()}
    assert slugs["Translution (relative qkv)"] == slugs["Translution"] == "translution"
    assert slugs["Translution (relative q)"] == "translution-relative_q"
    assert slugs["Translution (symmetric)"] == "translution-symmetric_true"
    assert len(set(slugs.values())) == len(slugs) - 1
    faster = fashion._section(s, {"attention": "translution", "save_projections": True,
                                  "backend": "grouped"})
    assert fashion._slug(s, faster) == "translution"        # speed options: the same arm


@pytest.mark.parametrize("change, match", [
    ("models={A: {relative: q}}", "needs 'attention'"),
    ("models={A: {attention: ape, match: B}}", "match must name another arm"),
    ("models={A: {attention: ape, grow: sideways}, B: {attention: rope}}", "grow"),
    ("models={A: {attention: ape, widht: 3}}", "widht"),
    ("models={A: {attention: conv}}", "conv"),
])
def test_invalid_settings(change, match):
    with pytest.raises(ValueError, match=match):
        replace_settings(fashion.QUICK, [change])


def test_deeper_matching():
    s = replace_settings(fashion.QUICK, TINY + [
        "models={T: {attention: translution}, D: {attention: ape, match: T, grow: depth}}"])
    sections = fashion.arm_sections(s)
    counts = {k: common.parameter_count(v) for k, v in sections.items()}
    deeper = [common.parameter_count({**sections["D"], "depth": d})
              for d in (sections["D"]["depth"] - 1, sections["D"]["depth"] + 1)]
    assert sections["D"]["dim"] == 8 and sections["D"]["depth"] > 1
    assert all(abs(counts["D"] - counts["T"]) <= abs(c - counts["T"]) for c in deeper)


def test_random_crop_flip():
    x = torch.randn(64, 2, 6, 5)
    y = torch.arange(64)
    assert RandomCropFlip(0, False)((x, y))[0] is x
    with seeded_rng(3):
        a = RandomCropFlip(2, True, fill=-1.0)((x, y))
    with seeded_rng(3):
        b = RandomCropFlip(2, True, fill=-1.0)((x, y))
    torch.testing.assert_close(a[0], b[0])
    assert a[1] is y
    flipped = RandomCropFlip(0, True)((x, y))[0]
    same = [torch.equal(f, x[i]) for i, f in enumerate(flipped)]
    mirror = [torch.equal(f, x[i].flip(-1)) for i, f in enumerate(flipped)]
    assert all(s or m for s, m in zip(same, mirror)) and any(same) and any(mirror)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    cropped = RandomCropFlip(2, False, fill=-1.0)((x, y))[0]
    offsets = set()
    for i in range(64):
        hits = [(r, c) for r in range(5) for c in range(5)
                if torch.equal(cropped[i], padded[i, :, r:r + 6, c:c + 5])]
        assert hits, i
        offsets.add(hits[0])
    assert len(offsets) > 5
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        RandomCropFlip()((x[0], y))
    with pytest.raises(ValueError, match="padding"):
        RandomCropFlip(-1)


def test_mean_std_and_run_arms():
    assert common.mean_std([2.0]) == (2.0, 0.0)
    mean, std = common.mean_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3) and std == pytest.approx(statistics.stdev([1, 2, 4]))
    with pytest.raises(ValueError, match="at least one"):
        common.mean_std([])
    calls, seen = [], []

    def train(label, seed):
        calls.append((label, seed))
        return {"acc": seed + len(label), "parameters": 1, "seconds": 1.0, "steps": 2}

    records = common.run_arms({"a": "x", "bb": "y", "a2": "x"}, [0, 1], train,
                              lambda r: seen.append({k: len(v) for k, v in r.items()}))
    assert calls == [("a", 0), ("bb", 0), ("a", 1), ("bb", 1)]     # a2 shares a's runs
    assert records["a2"] == records["a"] and seen[-1] == {"a": 2, "bb": 2, "a2": 2}
    summary = common.seed_summary(records["bb"], "acc")
    assert summary["acc"] == 2.5 and summary["seeds"] == [2, 3]
    assert summary["acc_std"] == pytest.approx(statistics.stdev([2, 3]))
    assert common.grow_to_match(lambda n: n * n, 50, 1) == 7
    assert common.grow_to_match(lambda n: n * n, 10, 5) == 5
