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

from translution.train import ClassificationTask, DatasetBatches, fit, load_config, read_metrics

from .helpers import NoisyDataset, TinyClassifier

HERE = Path(__file__).resolve().parent
OVERRIDES = ["train.epochs=2", "train.log_every=3", "train.eval_every=5",
             "train.checkpoint_every=4", "optim.lr=1e-2", "optim.grad_clip=1.0",
             "schedule.name=cosine", "schedule.warmup=2", "train.device=cpu"]

SCRIPT = """
import json, sys
import torch
sys.path.insert(0, {helpers_dir!r})
from helpers import NoisyDataset, TinyClassifier
from translution.train import (ClassificationTask, DatasetBatches, cleanup_distributed, fit,
                               load_config, setup_distributed)

info = setup_distributed()
assert info.world_size == 2 and torch.distributed.get_backend() == "gloo"
torch.manual_seed(0)
model = TinyClassifier(dropout=0.0)
train = DatasetBatches(NoisyDataset(48, noise=0.0), 4, seed=1)      # 4 per rank, 8 in all
val = DatasetBatches(NoisyDataset(21, seed=5, noise=0.0), 4, shuffle=False, even_shards=False)
cfg = load_config(None, {overrides!r})
out = {out!r}
first = fit(model, ClassificationTask(), train, cfg, val, out_dir=out, stop_after_steps=5)
second = fit(model, ClassificationTask(), train, cfg, val, out_dir=out)   # resumes at step 5
weights = torch.cat([p.detach().flatten() for p in model.parameters()])
torch.save(weights, f"{{out}}/weights_rank{{info.rank}}.pt")
with open(f"{{out}}/summary_rank{{info.rank}}.json", "w") as f:
    json.dump({{"first": first["steps"], "second": second, "rank": info.rank}}, f)
cleanup_distributed()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_process_ddp_matches_single_process(tmp_path):
    out = tmp_path / "ddp"
    script = tmp_path / "ddp_script.py"
    script.write_text(SCRIPT.format(helpers_dir=str(HERE), overrides=OVERRIDES, out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # both ranks hold identical weights
    w0, w1 = (torch.load(out / f"weights_rank{r}.pt") for r in range(2))
    assert torch.equal(w0, w1)
    summaries = [json.loads((out / f"summary_rank{r}.json").read_text()) for r in range(2)]
    assert [s["first"] for s in summaries] == [5, 5]
    ddp = summaries[0]["second"]
    assert ddp["world_size"] == 2 and ddp["steps"] == 12 and ddp["resumed_from_step"] == 5
    assert summaries[1]["second"]["eval"] == ddp["eval"]            # all-reduced metrics

    # only rank 0 wrote the run files, once per event
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records if r["event"] == "eval"] == [5, 10, 12]
    assert sorted(p.name for p in out.glob("*.pt") if not p.name.startswith("weights")) == \
        ["best.pt", "last.pt", "prev.pt"]

    # the same global batch (8) in one process, uninterrupted, gives the same result
    torch.manual_seed(0)
    model = TinyClassifier(dropout=0.0)
    train = DatasetBatches(NoisyDataset(48, noise=0.0), 8, seed=1, rank=0, world_size=1)
    val = DatasetBatches(NoisyDataset(21, seed=5, noise=0.0), 4, shuffle=False, rank=0, world_size=1)
    single = fit(model, ClassificationTask(), train, load_config(None, OVERRIDES), val)
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.testing.assert_close(w0, weights, rtol=1e-5, atol=1e-6)
    assert ddp["eval"]["samples"] == single["eval"]["samples"] == 21
    for key in ("loss", "top1", "top5"):
        assert ddp["eval"][key] == pytest.approx(single["eval"][key], rel=1e-5, abs=1e-6)
    assert ddp["train"]["loss"] == pytest.approx(single["train"]["loss"], rel=1e-5)
