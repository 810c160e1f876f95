"""End-to-end smoke tests of the command line, the recipes and the Dynamic MNIST experiment on
small generated data (no network)."""

import dataclasses
import json

import pytest

from translution.cli import main


@pytest.fixture(scope="module")
def fake_mnist(tmp_path_factory, write_mnist):
    """A tiny MNIST folder: bright squares whose size encodes the label (learnable)."""
    return write_mnist(tmp_path_factory.mktemp("mnist"), (256, 96), [4 + 2 * k for k in range(10)])


def test_train_then_eval_from_the_command_line(fake_mnist, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--config", "configs/mnist.yaml", "model.name=vit_micro_translution",
            "model.image_size=28", "model.patch_size=7", "model.in_channels=1",
            f"data.root={fake_mnist}", "train.epochs=1", "train.batch_size=32",
            "train.eval_batch_size=48", f"train.out_dir={out}"]
    assert main(args) == 0
    assert (out / "last.pt").exists() and (out / "config.yaml").exists()
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "last.pt"),
                 "data.test_placement=static"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["samples"] == 96 and 0 <= metrics["top1"] <= 100
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "data.test_placment=pixel"]) == 2
    assert "did you mean data.test_placement?" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["train", "model.name=vit_micro_ape", "optim.learning_rate=1"],
     "unknown key optim.learning_rate; valid keys: name, lr,"),
    (["train", "model.name=vit_micro_ape", "data.trian_size=64"],
     "unknown key data.trian_size; did you mean data.train_size?"),
    (["train", "model.name=vit_micro_ape", "data.train_size=-5"],
     "data.train_size must be >= 1, got -5"),
    (["train", "model.name=vit_micro_ape", "data.train_size=abc"],
     "data.train_size: expected int | None, got str 'abc'"),
    (["train", "model.name=gpt_micro_ape", "data.dataset=text"],
     "data.dir is required when data.dataset is 'text'"),
    (["train", "data.dataset=mnist"], "model.name is not set"),
    (["train", "--config", "nope.yaml"], "config file 'nope.yaml' does not exist"),
    (["experiment", "dynamic-mnist", "--set", "epochs=abc"],
     "epochs: expected int, got str 'abc'"),
    (["experiment", "austen", "--set", "models=[ape]"],
     "models: expected a mapping, got list ['ape']"),
    (["experiment", "austen", "--set", "budget_seconds=-1"], "budget_seconds must be > 0"),
    (["experiment", "austen", "--set", "modles={a: ape}"],
     "unknown key modles; did you mean models?"),
    (["eval", "--checkpoint", "missing.pt"], "missing.pt' does not exist"),
    (["models", "vit_zzz*"], "no registered model matches 'vit_zzz*'"),
])
def test_errors_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("translution: error: ") and message in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert not list(tmp_path.iterdir())                 # nothing written before the error
    with pytest.raises((ValueError, TypeError)):
        main(["--debug"] + argv)


def test_experiment_presets(monkeypatch, capsys):
    from translution.experiments import dynamic_mnist as exp
    seen = []
    monkeypatch.setattr(exp, "run", lambda out, settings, data_root: seen.append(settings))
    assert main(["experiment", "dynamic-mnist", "--preset", "border", "--seeds", "2"]) == 0
    assert "translution-circular" in seen[0].models and seen[0].seeds == 2
    assert seen[0].epochs == exp.QUICK.epochs
    assert main(["experiment", "dynamic-mnist", "--preset", "configs/dynamic_mnist_full.yaml"]) == 0
    assert main(["experiment", "dynamic-mnist", "--full"]) == 0
    assert seen[1] == seen[2] == exp.FULL
    assert main(["experiment", "dynamic-mnist", "--preset", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown preset 'nope'; available: border, full, quick" in err


def test_dynamic_mnist_experiment_smoke(fake_mnist, tmp_path):
    from translution.experiments import dynamic_mnist as exp
    settings = dataclasses.replace(exp.QUICK, train_size=128, test_size=40, epochs=1,
                                   batch_size=32, depth=1, heads=2, dim_head=8, mlp_dim=32)
    logs = []
    results = exp.run(tmp_path, settings, data_root=str(fake_mnist), log=logs.append)
    assert set(results) == {arm["label"] for arm in exp.MODELS.values()} | {"sweep"}
    expected = {exp.setting_name(t, p) for t in settings.train_settings
                for p in settings.test_placements}
    for label, row in results.items():
        if label == "sweep":
            continue
        assert set(row) == expected
        assert all(0 <= v["accuracy"] <= 1 and v["parameters"] > 0 for v in row.values())
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    report = (tmp_path / "report.md").read_text()
    assert "| Translution |" in report and "accuracy.png" in report
    for name in ("accuracy.png", "curves.png", "kernels_translution.png", "kernels_alpha.png",
                 "attention.png"):
        assert (tmp_path / name).stat().st_size > 1000
    # re-running resumes every finished run instead of training again
    steps = [json.loads(l)["step"] for l in
             (tmp_path / "runs/static/translution/seed0/metrics.jsonl").read_text().splitlines()]
    exp.run(tmp_path, settings, data_root=str(fake_mnist), log=logs.append)
    again = [json.loads(l)["step"] for l in
             (tmp_path / "runs/static/translution/seed0/metrics.jsonl").read_text().splitlines()]
    assert again == steps


def test_train_and_generate_text_from_the_command_line(tmp_path, capsys, char_corpus):
    corpus, text = char_corpus
    out = tmp_path / "gpt"
    assert main(["train", "model.name=gpt_micro_translution", "model.block_size=16",
                 "model.depth=1", "data.dataset=text", f"data.dir={corpus}",
                 "data.steps_per_epoch=4", "data.eval_iters=2", "train.max_steps=4",
                 "train.batch_size=4", f"train.out_dir={out}"]) == 0
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(out / "last.pt"), "--prompt", "It is",
                 "--max-new-tokens", "20", "--temperature", "0"]) == 0
    sample = capsys.readouterr().out[:-1]           # print() adds one newline
    assert sample.startswith("It is") and len(sample) == len("It is") + 20
    assert main(["eval", "--checkpoint", str(out / "last.pt")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["ppl"] > 1
