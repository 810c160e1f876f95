"""Language modelling on Jane Austen with causal Translution, at an equal training-time budget.

The six novels (:func:`translution.data.austen.austen_corpus`) are tokenized once (character
level by default, GPT-2 BPE with ``tokenizer="gpt2"``) into a cached token folder
(``$TRANSLUTION_DATA/austen-char``); one novel (persuasion) is held out for validation. Four GPTs
are trained on random windows, **each for the same wall-clock training budget**:

* self-attention + learned absolute position embedding (``gpt_*_ape``, the GPT-2 baseline);
* self-attention + RoPE (``gpt_*_rope``);
* α-Translution (``gpt_*_alpha``);
* full Translution (``gpt_*_translution``, by default narrower: it costs ``O(N²·C·C')``).

Fairness. Every model gets ``budget_seconds`` of training time as measured by
:func:`translution.train.fit` (forward, backward, optimiser step and batch sampling; evaluation,
checkpoints and sampling are not counted). Before training, a few steps on a throw-away
copy measure the step time, which plans the number of steps (the cosine schedule's length); the
run then trains in chunks (``stop_after_steps``; the first one short, 5 % of the plan), evaluating
between chunks, and re-plans the remaining steps from the measured rate so far, so the schedule
ends when the budget is spent.
Training also stops as soon as the budget is used. Validation loss is measured on a fixed set of
evenly spaced validation windows, the same for every model.

Every model is a resumable run in ``OUT/runs/<kind>``: re-running the same command continues
where it stopped, and a finished run is not retrained. Outputs in ``OUT``: ``report.md``,
``results.json`` (``model → {val_loss, val_ppl, parameters, tokens_per_s, seconds, steps,
sample, ...}``), ``curves_train.png``, ``curves_val.png`` and ``val_vs_time.png``.

Example:
    >>> from translution.experiments import austen
    >>> results = austen.run(Path("runs/austen"), austen.QUICK)   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np
import torch

from ..train.config import Section, bounded, load_settings

__all__ = ["AustenSettings", "QUICK", "FULL", "MODELS", "run", "build_model", "prepare_tokens",
           "report_markdown"]

#: Report label → attention kind.
MODELS = {
    "Self-attention + abs. pos. emb.": "ape",
    "Self-attention + RoPE": "rope",
    "α-Translution": "alpha",
    "Translution": "translution",
}

_STEPS_PER_EPOCH = 1_000_000   # "epochs" are meaningless for random windows: one long epoch
_RUN_FORMAT = 1


Kind = Literal["ape", "rope", "bias", "translution", "alpha", "hybrid"]


@dataclass
class AustenSettings(Section):
    """Protocol and model sizes; the presets are ``configs/austen_quick.yaml`` (:data:`QUICK`,
    also the defaults) and ``configs/austen_full.yaml`` (:data:`FULL`).

    Attributes:
        tokenizer: ``"char"`` (vocabulary = characters of the training novels) or ``"gpt2"``
            (GPT-2 BPE through tiktoken, 50,257 ids).
        val_novel: Novel held out for validation.
        block_size: Context length ``L`` (the same for every model).
        batch_size: Windows per optimiser step.
        size: Registry size of ``gpt_<size>_<kind>``; ``dim``/``depth``/``heads``/``dim_head``/
            ``mlp_dim`` override its fields when not ``None``.
        rank: α-Translution per-head relative width.
        model_overrides: Extra :class:`~translution.models.GPTConfig` fields per kind (e.g. a
            narrower full Translution, whose cost grows as ``N²·C·C'``).
        models: Report label → attention kind.
        budget_seconds: Training time per model (wall clock, as measured by ``fit``).
        calibration_steps: Timed steps (after two warm-up steps) that plan the step count.
        eval_points: Validation evaluations during training (besides the one at step 0).
        val_windows: Fixed validation windows (evenly spaced over the held-out novel).
        eval_batch_size: Windows per evaluation batch.
        lr, min_lr_ratio, weight_decay, warmup_fraction, grad_clip: AdamW with linear warm-up
            (a fraction of the planned steps) and cosine decay to ``lr·min_lr_ratio``.
        log_every: Steps per training-loss record.
        seed: Seed of weights and training windows (the same for every model).
        prompt: Prompt of the generated samples.
        samples: Samples per model. sample_tokens: tokens per sample.
        temperature: Sampling temperature (0: greedy). top_k: sample among the k likeliest.
        sample_seed: Seed of the sampling generator.
        device: ``"cpu"``, ``"cuda"``, or ``None`` (CUDA when available).
        threads: ``torch.set_num_threads`` for the run (``None``: leave torch's default).
    """

    tokenizer: Literal["char", "gpt2"] = "char"
    val_novel: str = "persuasion"
    block_size: int = bounded(128, ge=1)
    batch_size: int = bounded(16, ge=1)
    size: str = "micro"
    dim: Optional[int] = bounded(128, ge=1)
    depth: Optional[int] = bounded(3, ge=1)
    heads: Optional[int] = bounded(2, ge=1)
    dim_head: Optional[int] = bounded(64, ge=1)
    mlp_dim: Optional[int] = bounded(None, ge=1)
    rank: int = bounded(8, ge=1)
    model_overrides: Dict[Kind, Dict[str, Any]] = field(
        default_factory=lambda: {"translution": {"dim": 64, "dim_head": 32}})
    models: Dict[str, Kind] = field(default_factory=lambda: dict(MODELS))
    budget_seconds: float = bounded(150.0, gt=0)
    calibration_steps: int = bounded(3, ge=1)
    eval_points: int = bounded(6, ge=1)
    val_windows: int = bounded(64, ge=1)
    eval_batch_size: int = bounded(32, ge=1)
    lr: float = bounded(2e-3, gt=0)
    min_lr_ratio: float = bounded(0.1, ge=0, le=1)
    weight_decay: float = bounded(0.1, ge=0)
    warmup_fraction: float = bounded(0.05, ge=0, lt=1)
    grad_clip: float = bounded(1.0, gt=0)
    log_every: int = bounded(10, ge=1)
    seed: int = bounded(0, ge=0)
    prompt: str = "It is a truth"
    samples: int = bounded(2, ge=1)
    sample_tokens: int = bounded(160, ge=0)
    temperature: float = bounded(0.8, ge=0)
    top_k: Optional[int] = bounded(None, ge=1)
    sample_seed: int = bounded(1234, ge=0)
    device: Optional[str] = "cpu"
    threads: Optional[int] = bounded(None, ge=1)

    def check(self) -> None:
        if not self.prompt:
            raise ValueError("prompt must be a non-empty string")
        if not self.models:
            raise ValueError("models must name at least one attention kind (label: kind)")
        kinds = list(self.models.values())
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"each kind may appear once in models (runs live in runs/<kind>), "
                             f"got {kinds}")
        for kind, over in self.model_overrides.items():
            for key in ("block_size", "vocab_size", "attention"):
                if key in over:
                    raise ValueError(f"model_overrides.{kind} may not set {key!r} (the same "
                                     f"for every model / fixed by the kind)")


#: About 12 minutes on 2 CPU cores: context 128, dim 128, depth 3, 2 heads × 64 (full
#: Translution: dim 64, 2 heads × 32), batch 16, 150 s of training per model.
QUICK = load_settings(AustenSettings, "austen_quick")
#: GPT-tiny (dim 192, depth 6, 3 heads × 64; full Translution with heads of 32), context 256,
#: batch 32, 30 minutes per model; meant for an accelerator (``device: null`` picks CUDA).
FULL = load_settings(AustenSettings, "austen_full")


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def _check_corpus(corpus) -> Tuple[List[str], List[str]]:
    if not isinstance(corpus, (tuple, list)) or len(corpus) != 2:
        raise ValueError("corpus must be a pair (train_texts, val_texts) of lists of str, got "
                         f"{type(corpus).__name__}")
    out = []
    for name, texts in zip(("train_texts", "val_texts"), corpus):
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts \
                or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"corpus {name} must be a non-empty list of str")
        out.append(list(texts))
    return out[0], out[1]


def _corpus_id(train: Sequence[str], val: Sequence[str], tokenizer: str) -> str:
    h = hashlib.sha256(f"{tokenizer}\0{len(train)}\0{len(val)}\0".encode())
    for t in list(train) + ["\0val\0"] + list(val):
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def prepare_tokens(settings: AustenSettings, corpus=None, data_dir: Optional[Path] = None,
                   log: Callable[[str], None] = print) -> Tuple[Path, dict]:
    """Tokenize the corpus once into a token folder (``train.bin``, ``val.bin``, ``meta.json``).

    Args:
        settings: Uses ``tokenizer`` and ``val_novel``.
        corpus: ``(train_texts, val_texts)`` instead of the Austen novels.
        data_dir: Token folder; default ``$TRANSLUTION_DATA/austen-<tokenizer>`` (with
            ``-val-<novel>`` for another held-out novel).
        log: Progress messages.

    Returns:
        ``(folder, meta)``; an existing folder made from the same texts is reused.

    Raises:
        ValueError: A malformed ``corpus`` or an unknown novel.
    """
    from ..data.text import TokenDataset, default_cache_root, prepare_corpus, read_meta

    if corpus is None:
        from ..data.austen import austen_corpus
        log(f"reading the Austen novels (validation: {settings.val_novel}) ...")
        train, val = austen_corpus(settings.val_novel)
        source = f"austen (validation: {settings.val_novel})"
        if data_dir is None:
            suffix = "" if settings.val_novel == "persuasion" else f"-val-{settings.val_novel}"
            data_dir = default_cache_root() / f"austen-{settings.tokenizer}{suffix}"
    else:
        train, val = _check_corpus(corpus)
        source = "custom corpus"
        if data_dir is None:
            raise ValueError("prepare_tokens needs data_dir when a custom corpus is given")
    cid = _corpus_id(train, val, settings.tokenizer)
    data_dir = Path(data_dir)
    try:
        meta = read_meta(data_dir)
        if meta.get("corpus_id") == cid:
            for split in ("train", "val"):
                TokenDataset(data_dir, split)        # size + sha256 check (cached)
            return data_dir, meta
    except (FileNotFoundError, ValueError):
        pass
    log(f"tokenizing ({settings.tokenizer}) into {data_dir} ...")
    meta = prepare_corpus(train, val, data_dir, settings.tokenizer,
                          extra_meta={"corpus_id": cid, "source": source})
    return data_dir, meta


def _val_batches(val: np.ndarray, s: AustenSettings, device) -> List[Tuple[torch.Tensor, ...]]:
    """``val_windows`` evenly spaced windows of the validation split, in fixed batches."""
    n = len(val) - s.block_size - 1
    if n < 0:
        raise ValueError(f"the validation split has {len(val)} tokens; block_size "
                         f"{s.block_size} needs at least {s.block_size + 1}")
    starts = np.unique(np.linspace(0, n, s.val_windows).round().astype(np.int64))
    idx = starts[:, None] + np.arange(s.block_size + 1)[None, :]
    w = torch.from_numpy(np.asarray(val[idx]).astype(np.int64))            # (W, L+1)
    return [(w[i:i + s.eval_batch_size, :-1].to(device), w[i:i + s.eval_batch_size, 1:].to(device))
            for i in range(0, len(w), s.eval_batch_size)]


# ----------------------------------------------------------------------------------------------
# models and runs
# ----------------------------------------------------------------------------------------------
def _model_overrides(s: AustenSettings, kind: str, vocab_size: int) -> Dict:
    over = {k: getattr(s, k) for k in ("dim", "depth", "heads", "dim_head", "mlp_dim")
            if getattr(s, k) is not None}
    over.update(vocab_size=vocab_size, block_size=s.block_size, rank=s.rank)
    over.update(s.model_overrides.get(kind, {}))
    return over


def build_model(s: AustenSettings, kind: str, vocab_size: int) -> torch.nn.Module:
    """The GPT ``gpt_<size>_<kind>`` of the experiment (seeded by ``s.seed``).

    Raises:
        ValueError: Unknown size/kind or an invalid override (from the registry).
    """
    from ..models import create_model
    torch.manual_seed(s.seed)
    return create_model(f"gpt_{s.size}_{kind}", **_model_overrides(s, kind, vocab_size))


def _run_config(s: AustenSettings, name: str, planned: int, warmup: int, data_dir: Path):
    from ..train import OptimConfig, RunConfig, ScheduleConfig, TrainConfig
    return RunConfig(
        model={"name": name},
        data={"dataset": "text", "dir": str(data_dir), "block_size": s.block_size},
        train=TrainConfig(max_steps=planned, batch_size=s.batch_size, seed=s.seed,
                          log_every=s.log_every, eval_every=0, checkpoint_every=0,
                          checkpoint_every_epochs=0, save_best=False, progress=False,
                          device=s.device),
        optim=OptimConfig(name="adamw", lr=s.lr, weight_decay=s.weight_decay, betas=(0.9, 0.99),
                          grad_clip=s.grad_clip, decay_1d=False),
        schedule=ScheduleConfig(name="cosine", warmup=warmup, min_lr=s.lr * s.min_lr_ratio))


def _step_time(model, task, sample_fn, s: AustenSettings, device) -> float:
    """Seconds per training step of a throw-away copy (two warm-up steps, then the mean)."""
    from ..train import OptimConfig, build_optimizer
    probe = copy.deepcopy(model).to(device).train()
    opt = build_optimizer(probe, OptimConfig(name="adamw", lr=s.lr, decay_1d=False))
    g = torch.Generator().manual_seed(987654321)
    times = []
    with torch.random.fork_rng(devices=[]):
        for i in range(2 + s.calibration_steps):
            x, y = (t.to(device) for t in sample_fn(g, s.batch_size))
            t0 = time.perf_counter()
            loss, _ = task.loss(probe, (x, y))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(probe.parameters(), s.grad_clip)
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= 2:
                times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


def _device(s: AustenSettings) -> torch.device:
    if s.device is not None:
        return torch.device(s.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _read_jsonl(path: Path) -> List[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_jsonl(path: Path, records: List[dict]) -> None:
    from ..data.text import atomic_write_bytes
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in records).encode())


def _fingerprint(s: AustenSettings, name: str, model, data_id: str) -> Dict:
    return {"format": _RUN_FORMAT, "model": name, "config": model.config.to_dict(),
            "data": data_id, "block_size": s.block_size, "batch_size": s.batch_size,
            "budget_seconds": s.budget_seconds, "seed": s.seed, "lr": s.lr,
            "min_lr_ratio": s.min_lr_ratio, "weight_decay": s.weight_decay,
            "warmup_fraction": s.warmup_fraction, "grad_clip": s.grad_clip,
            "val_windows": s.val_windows, "device": s.device}


def _train_one(run_dir: Path, s: AustenSettings, label: str, kind: str, vocab_size: int,
               data_id: str, data_dir: Path, train_tokens: np.ndarray, val_batches, tokenizer,
               log: Callable[[str], None]) -> Dict:
    """Train (or resume, or just load) one model; returns its result record."""
    from ..data.text import atomic_write_json
    from ..train import LanguageModelTask, WindowBatches, fit, load_checkpoint, token_windows

    device = _device(s)
    model = build_model(s, kind, vocab_size)
    name = f"gpt_{s.size}_{kind}"
    fp = _fingerprint(s, name, model, data_id)
    result_path, plan_path = run_dir / "result.json", run_dir / "plan.json"
    if plan_path.is_file():
        plan = json.loads(plan_path.read_text())
        if plan.get("fingerprint") != fp:
            raise ValueError(f"{run_dir} holds a run with other settings (model, data, budget or "
                             f"recipe differ); use another output folder or delete {run_dir}")
        if result_path.is_file():
            result = json.loads(result_path.read_text())
            log(f"{label}: finished earlier ({result['steps']} steps), not retrained")
            return result
    else:
        plan = None

    task = LanguageModelTask()
    sample_fn = token_windows(train_tokens, s.block_size)
    batches = WindowBatches(sample_fn, s.batch_size, _STEPS_PER_EPOCH, seed=s.seed)
    n_params = model.num_parameters()
    if plan is None:
        step_time = _step_time(model, task, sample_fn, s, device)
        planned = max(1, int(s.budget_seconds / step_time))
        plan = {"fingerprint": fp, "calibrated_step_time": step_time, "initial_steps": planned,
                "planned_steps": planned, "chunk": max(1, math.ceil(planned / s.eval_points)),
                "warmup": min(int(s.warmup_fraction * planned), max(0, planned - 1))}
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(plan_path, plan)
        log(f"{label} ({name}): {n_params:,} parameters, {1000 * step_time:.0f} ms/step "
            f"measured → {planned} steps planned for {s.budget_seconds:g} s")

    step, seconds = 0, 0.0
    model.to(device)
    if (run_dir / "last.pt").is_file():
        ckpt = load_checkpoint(run_dir / "last.pt", model)
        step, seconds = int(ckpt["step"]), float(ckpt["extra"].get("elapsed", 0.0))
        log(f"{label}: resuming at step {step} ({seconds:.1f} s used)")
    val_log = [r for r in _read_jsonl(run_dir / "val.jsonl") if r["step"] <= step]

    def evaluate() -> None:
        metrics = task.evaluate(model, val_batches)
        val_log.append({"step": step, "seconds": round(seconds, 3),
                        "tokens": step * s.batch_size * s.block_size, "loss": metrics["loss"]})
        _write_jsonl(run_dir / "val.jsonl", val_log)

    if not val_log or val_log[-1]["step"] != step:
        evaluate()
    while step < plan["planned_steps"] and seconds < s.budget_seconds:
        # the first chunk is short: it measures the real rate before the budget is committed
        first = max(1, math.ceil(0.05 * plan["initial_steps"]))
        chunk = min(first if step < first else plan["chunk"], plan["planned_steps"] - step)
        config = _run_config(s, name, plan["planned_steps"], plan["warmup"], data_dir)
        summary = fit(model, task, batches, config, out_dir=run_dir, device=device,
                      stop_after_steps=chunk, tokenizer=tokenizer.to_meta())
        step, seconds = summary["steps"], summary["seconds"]
        evaluate()
        # re-plan from the measured rate so the schedule ends when the budget is spent
        if step < plan["planned_steps"] and seconds < s.budget_seconds:
            rate = seconds / step
            plan["planned_steps"] = max(step + 1, plan["warmup"] + 1,
                                        step + int((s.budget_seconds - seconds) / rate))
            atomic_write_json(plan_path, plan)
        log(f"  {label}: step {step}/{plan['planned_steps']}, {seconds:.1f}/"
            f"{s.budget_seconds:g} s, val loss {val_log[-1]['loss']:.4f}")

    samples = _samples(model, tokenizer, s, device)
    final = val_log[-1]
    result = {
        "kind": kind, "model": name, "config": model.config.to_dict(),
        "val_loss": final["loss"], "val_ppl": math.exp(min(final["loss"], 700.0)),
        "val_bits_per_token": final["loss"] / math.log(2),
        "parameters": n_params, "steps": step, "planned_steps": plan["initial_steps"],
        "seconds": round(seconds, 2),
        "tokens": step * s.batch_size * s.block_size,
        "tokens_per_s": step * s.batch_size * s.block_size / seconds if seconds else 0.0,
        "calibrated_step_time": plan["calibrated_step_time"],
        "sample": samples[0] if samples else "", "samples": samples,
    }
    atomic_write_json(result_path, result)
    return result


@torch.no_grad()
def _samples(model, tokenizer, s: AustenSettings, device) -> List[str]:
    from ..generation import generate
    if s.sample_tokens == 0:
        return [s.prompt] * s.samples
    prompt = torch.as_tensor(tokenizer.encode(s.prompt), dtype=torch.long, device=device)
    prompt = prompt[None].expand(s.samples, -1).contiguous()
    g = torch.Generator(device=device).manual_seed(s.sample_seed)
    model.eval()
    out = generate(model, prompt, s.sample_tokens, temperature=s.temperature, top_k=s.top_k,
                   use_cache=True, generator=g, sliding_window=True)
    return [tokenizer.decode(row.tolist()) for row in out.cpu()]


# ----------------------------------------------------------------------------------------------
# the experiment
# ----------------------------------------------------------------------------------------------
def run(out: Path, settings: AustenSettings = QUICK, corpus=None,
        log: Callable[[str], None] = print) -> Dict:
    """Run (or resume) the whole experiment and write the report.

    Args:
        out: Output folder (``runs/<kind>`` per model, ``results.json``, ``report.md``, PNGs).
        settings: :data:`QUICK`, :data:`FULL` or any :class:`AustenSettings`.
        corpus: ``(train_texts, val_texts)`` to use instead of the Austen novels (tests); its
            tokens go to ``out/data``.
        log: Progress messages.

    Returns:
        The ``results.json`` dict: report label → ``{val_loss, val_ppl, parameters,
        tokens_per_s, seconds, steps, sample, ...}``.

    Raises:
        ValueError: Invalid settings or corpus, a prompt the tokenizer cannot encode, a split
            shorter than one window, or an output folder holding runs with other settings.
    """
    if not isinstance(settings, AustenSettings):
        raise TypeError(f"settings must be an AustenSettings, got {type(settings).__name__}")
    threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        return _run(Path(out), settings, corpus, log)
    finally:
        torch.set_num_threads(threads)


def _run(out: Path, s: AustenSettings, corpus, log: Callable[[str], None]) -> Dict:
    from ..data.text import TokenDataset, atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    data_dir, meta = prepare_tokens(s, corpus, None if corpus is None
                                    else out / "data" / s.tokenizer, log)
    train_ds, val_ds = TokenDataset(data_dir, "train"), TokenDataset(data_dir, "val")
    tokenizer = train_ds.tokenizer()
    try:
        tokenizer.encode(s.prompt)
    except ValueError as e:
        raise ValueError(f"the sample prompt {s.prompt!r} cannot be encoded: {e}") from e
    if len(train_ds) <= s.block_size:
        raise ValueError(f"the training split has {len(train_ds)} tokens; block_size "
                         f"{s.block_size} needs more than that")
    device = _device(s)
    val_batches = _val_batches(val_ds.data, s, device)
    vocab = int(meta["vocab_size"])
    log(f"{s.tokenizer} tokens: {len(train_ds):,} train, {len(val_ds):,} validation, "
        f"vocabulary {vocab}; {sum(len(b[0]) for b in val_batches)} fixed validation windows")

    results: Dict[str, Dict] = {}
    for label, kind in s.models.items():
        results[label] = _train_one(out / "runs" / kind, s, label, kind, vocab,
                                    meta["corpus_id"], data_dir, train_ds.data, val_batches, tokenizer,
                                    log)
        r = results[label]
        log(f"{label}: val loss {r['val_loss']:.4f} (ppl {r['val_ppl']:.2f}) after "
            f"{r['steps']} steps, {r['tokens_per_s']:.0f} tokens/s")
    atomic_write_json(out / "results.json", results)
    figures = _figures(out, s, results)
    info = {"tokens_train": len(train_ds), "tokens_val": len(val_ds), "vocab_size": vocab,
            "val_windows": sum(len(b[0]) for b in val_batches), "source": meta.get("source"),
            "threads": torch.get_num_threads(), "device": str(device)}
    (out / "report.md").write_text(report_markdown(results, s, figures, info))
    log(f"report: {out / 'report.md'}")
    return results


def _curves(out: Path, s: AustenSettings, results: Dict):
    from ..train import read_metrics
    train, val, val_time = {}, {}, {}
    for label, r in results.items():
        run_dir = out / "runs" / r["kind"]
        path = run_dir / "metrics.jsonl"
        records = read_metrics(path, "train") if path.is_file() else []
        train[label] = [(rec["step"], rec["loss"]) for rec in records if "loss" in rec]
        log_ = _read_jsonl(run_dir / "val.jsonl")
        val[label] = [(rec["step"], rec["loss"]) for rec in log_]
        val_time[label] = [(rec["seconds"], rec["loss"]) for rec in log_]
    return train, val, val_time


def _figures(out: Path, s: AustenSettings, results: Dict) -> List[str]:
    from .. import plots
    train, val, val_time = _curves(out, s, results)
    unit = "nats/char" if s.tokenizer == "char" else "nats/token"
    plots.training_curves(train, out / "curves_train.png", ylabel=f"training loss ({unit})",
                          title="training loss (mean over each logging window)")
    plots.training_curves(val, out / "curves_val.png", ylabel=f"validation loss ({unit})",
                          title="validation loss (fixed windows, the same for every model)")
    _time_plot(val_time, out / "val_vs_time.png", f"validation loss ({unit})",
               f"validation loss against training time (budget {s.budget_seconds:g} s each)")
    return ["curves_train.png", "curves_val.png", "val_vs_time.png"]


def _time_plot(curves: Dict[str, list], path: Path, ylabel: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label, points in curves.items():
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker=".", label=label, linewidth=1.2)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def report_markdown(results: Dict, s: AustenSettings, figures: List[str],
                    info: Optional[Dict] = None) -> str:
    """The report: setup, fairness rule, results table, samples and figures."""
    info = info or {}
    char = s.tokenizer == "char"
    unit = "character" if char else "BPE token"
    austen = str(info.get("source", "austen")).startswith("austen")
    held = f"held-out novel: {s.val_novel}" if austen else "validation texts given by the caller"
    val_name = s.val_novel if austen else "the validation texts"
    lines = [
        "# Language modelling on Jane Austen: causal Translution vs self-attention", "",
        f"Data: {info.get('source', 'austen')}, {s.tokenizer}-level tokens "
        f"(vocabulary {info.get('vocab_size', '?')}); {info.get('tokens_train', 0):,} training "
        f"and {info.get('tokens_val', 0):,} validation tokens ({held}). "
        f"Context {s.block_size}, batch {s.batch_size} random windows, AdamW lr {s.lr:g} "
        f"(β 0.9/0.99, weight decay {s.weight_decay:g} on matrices), warm-up "
        f"{100 * s.warmup_fraction:g} % of the planned steps, cosine to {s.min_lr_ratio:g}·lr, "
        f"gradient clip {s.grad_clip:g}. Device: {info.get('device', s.device)}, torch threads: "
        f"{info.get('threads', '?')}.", "",
        f"**Equal budget:** every model trains for {s.budget_seconds:g} s of wall-clock "
        "training time (forward, backward, optimiser step and batch sampling, as timed by "
        "`fit`; evaluation, checkpoints and sampling excluded), one model after the "
        "other on the same machine. The step count is planned from a timed calibration of "
        f"{s.calibration_steps} steps on a copy of the model, then re-planned after a short first "
        f"chunk (5 % of the plan) and at each of the {s.eval_points} evaluation points from the "
        "rate measured so far, so the cosine schedule ends when the budget is spent; training "
        "stops once the budget is used (a chunk may overrun it by a little). Timings on a "
        "shared machine include any interference from other processes.", "",
        f"Validation: mean cross-entropy per {unit} on {info.get('val_windows', s.val_windows)} "
        f"fixed, evenly spaced windows of {s.block_size} tokens of {val_name} (the same for "
        "every model; each window scores all its positions, so early positions see short "
        "contexts).", "",
        f"| model | name | dim / depth / heads × dim_head | parameters | steps | tokens seen | "
        f"train s | tokens/s | val loss (nats/{'char' if char else 'token'}) | "
        f"{'bits/char' if char else 'bits/token'} | val ppl |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in results.items():
        c = r["config"]
        lines.append(
            f"| {label} | `{r['model']}` | {c['dim']} / {c['depth']} / {c['heads']} × "
            f"{c['dim_head']} | {r['parameters']:,} | {r['steps']} | {r['tokens']:,} | "
            f"{r['seconds']:.0f} | {r['tokens_per_s']:,.0f} | {r['val_loss']:.4f} | "
            f"{r['val_bits_per_token']:.3f} | {r['val_ppl']:.2f} |")
    notes = []
    for kind, over in s.model_overrides.items():
        if kind in s.models.values() and over:
            why = (" (its cost grows as N²·C·C', so the common width does not fit the budget)."
                   if kind == "translution" else ".")
            notes.append(f"`{kind}` uses " + ", ".join(f"{k}={v}" for k, v in over.items()) + why)
    if "alpha" in s.models.values():
        notes.append(f"α-Translution rank r = {s.rank}.")
    if notes:
        lines += ["", "Notes: " + " ".join(notes)]
    temp = "greedy" if s.temperature == 0 else f"temperature {s.temperature:g}"
    lines += ["", "## Samples", "",
              f"{s.samples} sample(s) of {s.sample_tokens} tokens per model from the prompt "
              f"{s.prompt!r} ({temp}{f', top-k {s.top_k}' if s.top_k else ''}, seed "
              f"{s.sample_seed}, cached decoding; beyond the context the window slides).", ""]
    for label, r in results.items():
        lines += [f"**{label}**", ""]
        for text in r.get("samples", [r.get("sample", "")]):
            lines += ["```text", text.replace("```", "ʼʼʼ"), "```", ""]
    lines += ["## Curves", ""] + [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"
