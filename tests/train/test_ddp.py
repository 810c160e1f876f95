"""DDP with two CPU processes (gloo) launched by torch.distributed.run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from translution.train import (ClassificationTask, DatasetBatches, fit, load_checkpoint,
                               load_config, read_metrics)

from .helpers import NoisyDataset, TinyClassifier

HERE = Path(__file__).resolve().parent
OVERRIDES = ["train.epochs=2", "train.log_every=3", "train.eval_every=5",
             "train.checkpoint_every=4", "optim.lr=1e-2", "optim.grad_clip=1.0",
             "schedule.name=cosine", "schedule.warmup=2", "train.device=cpu"]

SCRIPT = """
import json, sys
from pathlib import Path
import torch
sys.path.insert(0, {helpers_dir!r})
from helpers import NoisyDataset, TinyClassifier
from translution.train import (ClassificationTask, DatasetBatches, cleanup_distributed, fit,
                               load_config, setup_distributed)

info = setup_distributed()
assert info.world_size == 2 and torch.distributed.get_backend() == "gloo"
cfg = load_config(None, {overrides!r})
out = {out!r}


def run(run_dir, dropout, stop_after=None):
    torch.manual_seed(0)
    model = TinyClassifier(dropout=dropout)
    train = DatasetBatches(NoisyDataset(48, noise=0.0), 4, seed=1)      # 4 per rank, 8 in all
    val = DatasetBatches(NoisyDataset(21, seed=5, noise=0.0), 4, shuffle=False,
                         even_shards=False)
    losses = {{}}
    record = lambda e: losses.__setitem__(e["step"], e["loss"]) if e["event"] == "step" else None
    summary = fit(model, ClassificationTask(), train, cfg, val, out_dir=f"{{out}}/{{run_dir}}",
                  stop_after_steps=stop_after, callbacks=[record])
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    return summary, losses, weights


result = {{"rank": info.rank}}
for name, dropout in (("plain", 0.0), ("dropout", 0.5)):
    first, losses, _ = run(name, dropout, stop_after=5)
    second, more, weights = run(name, dropout)                           # resumes at step 5
    _, ref_losses, ref_weights = run(name + "_ref", dropout)             # uninterrupted
    torch.save({{"resumed": weights, "ref": ref_weights}},
               f"{{out}}/{{name}}/weights_rank{{info.rank}}.pt")
    result[name] = {{"first": first["steps"], "second": second, "losses": losses | more,
                    "ref_losses": ref_losses}}
with open(f"{{out}}/summary_rank{{info.rank}}.json", "w") as f:
    json.dump(result, f)
cleanup_distributed()
tasks = Path("/proc/self/task")                           # Linux: name every live thread
threads = [(t / "comm").read_text().strip() for t in tasks.iterdir()] if tasks.is_dir() else []
(Path(out) / f"threads_rank{{info.rank}}.json").write_text(json.dumps(threads))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path):
    """Run SCRIPT in two gloo processes; return its output folder."""
    out = tmp_path / "ddp"
    script = tmp_path / "ddp_script.py"
    script.write_text(SCRIPT.format(helpers_dir=str(HERE), overrides=OVERRIDES, out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _single_process_run():
    """The same global batch (8) in one process, uninterrupted, without dropout."""
    torch.manual_seed(0)
    model = TinyClassifier(dropout=0.0)
    train = DatasetBatches(NoisyDataset(48, noise=0.0), 8, seed=1, rank=0, world_size=1)
    val = DatasetBatches(NoisyDataset(21, seed=5, noise=0.0), 4, shuffle=False, rank=0,
                         world_size=1)
    single = fit(model, ClassificationTask(), train, load_config(None, OVERRIDES), val)
    return single, torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_process_ddp_resumes_exactly_and_matches_single_process(tmp_path):
    out = _launch(tmp_path)
    summaries = [json.loads((out / f"summary_rank{r}.json").read_text()) for r in range(2)]
    for name in ("plain", "dropout"):
        runs = [s[name] for s in summaries]
        w = [torch.load(out / name / f"weights_rank{r}.pt") for r in range(2)]
        assert torch.equal(w[0]["resumed"], w[1]["resumed"])            # ranks agree
        assert [r["first"] for r in runs] == [5, 5]
        ddp = runs[0]["second"]
        assert ddp["world_size"] == 2 and ddp["steps"] == 12 and ddp["resumed_from_step"] == 5
        assert runs[1]["second"]["eval"] == ddp["eval"]                 # all-reduced metrics
        # each rank continues its own random stream: with dropout, a rank that restored
        # another rank's generator state would draw other masks after step 5
        for r in range(2):
            assert runs[r]["losses"] == runs[r]["ref_losses"], (name, r)  # bit for bit
            assert torch.equal(w[r]["resumed"], w[r]["ref"]), (name, r)
        # only rank 0 wrote the run files, once per event
        records = read_metrics(out / name / "metrics.jsonl")
        assert [r["step"] for r in records if r["event"] == "eval"] == [5, 10, 12]
        assert sorted(p.name for p in (out / name).glob("*.pt")
                      if not p.name.startswith("weights")) == ["best.pt", "last.pt", "prev.pt"]
    # teardown released the process group: no Gloo thread is left for the interpreter's exit
    # (a group still alive there is destroyed in its teardown, which aborted 5 of 36 exits)
    for r in range(2):
        threads = json.loads((out / f"threads_rank{r}.json").read_text())
        assert not [t for t in threads if "gloo" in t], threads
    # the ranks draw different dropout masks (their losses on the same step differ)
    drop = [s["dropout"]["losses"] for s in summaries]
    assert drop[0] != drop[1]
    rng = load_checkpoint(out / "dropout" / "last.pt")["rng"]
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])

    # without dropout, DDP equals one process with the global batch
    ddp = summaries[0]["plain"]["second"]
    single, weights = _single_process_run()
    w0 = torch.load(out / "plain" / "weights_rank0.pt")["resumed"]
    torch.testing.assert_close(w0, weights, rtol=1e-5, atol=1e-6)
    assert ddp["eval"]["samples"] == single["eval"]["samples"] == 21
    for key in ("loss", "top1", "top5"):
        assert ddp["eval"][key] == pytest.approx(single["eval"][key], rel=1e-5, abs=1e-6)
    assert ddp["train"]["loss"] == pytest.approx(single["train"]["loss"], rel=1e-5)
