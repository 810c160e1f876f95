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
:func:`translution.train.fit` (``train.time_budget_s``: forward, backward, optimiser step and
batch sampling; evaluation, checkpoints and sampling are not counted). Before training, a few
steps on a throw-away copy measure the step time, which plans the number of steps (the cosine
schedule's length); training stops at the planned step count or when the budget is spent,
whichever comes first. Validation loss is measured by ``fit`` on a named evaluation set
(``"val"``) of evenly spaced validation windows, the same for every model.

Every model is a resumable run in ``OUT/runs/<kind>``: re-running the same command continues
where it stopped, and a finished run is not retrained. Outputs in ``OUT``: ``report.md``,
``results.json`` (``model → {val_loss, val_ppl, parameters, tokens_per_s, seconds, steps,
sample, ...}``), ``curves_train.png``, ``curves_val.png`` and ``val_vs_time.png``.

Example:
    >>> from translution.experiments import austen
    >>> results = austen.run(Path("runs/austen"), austen.QUICK)   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np
import torch

from ..train.config import Section, bounded, load_settings
from ..utils import Stopwatch, atomic_write_json, atomic_write_text, sha256_bytes

__all__ = ["AustenSettings", "QUICK", "FULL", "MODELS", "run", "model_section", "prepare_tokens",
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
    return sha256_bytes(json.dumps([tokenizer, list(train), list(val)]).encode())[:16]


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
def model_section(s: AustenSettings, kind: str, vocab_size: int) -> Dict[str, Any]:
    """The ``model`` config section of kind ``kind``: ``{"name": "gpt_<size>_<kind>", ...}``
    (built by :func:`translution.recipes.build_model`)."""
    over = {k: getattr(s, k) for k in ("dim", "depth", "heads", "dim_head", "mlp_dim")
            if getattr(s, k) is not None}
    over.update(vocab_size=vocab_size, block_size=s.block_size, rank=s.rank)
    over.update(s.model_overrides.get(kind, {}))
    return {"name": f"gpt_{s.size}_{kind}", **over}


def _run_config(s: AustenSettings, model: Dict, plan: Dict, data_dir: Path):
    from ..train import RunConfig
    every = max(1, math.ceil(plan["planned_steps"] / s.eval_points))
    return RunConfig.from_dict({
        "model": model,
        "data": {"dataset": "text", "dir": str(data_dir), "block_size": s.block_size},
        "train": {"max_steps": plan["planned_steps"], "time_budget_s": s.budget_seconds,
                  "batch_size": s.batch_size, "seed": s.seed, "log_every": s.log_every,
                  "eval_every": every, "eval_at_start": True, "checkpoint_every": every,
                  "checkpoint_every_epochs": 0, "save_best": False, "progress": False,
                  "device": s.device},
        "optim": {"name": "adamw", "lr": s.lr, "weight_decay": s.weight_decay,
                  "betas": (0.9, 0.99), "grad_clip": s.grad_clip, "decay_1d": False},
        "schedule": {"name": "cosine", "warmup": plan["warmup"], "min_lr": s.lr * s.min_lr_ratio},
    })


def _step_time(model, task, sample_fn, s: AustenSettings, device) -> float:
    """Seconds per training step of a throw-away copy (two warm-up steps, then the mean)."""
    from ..train import OptimConfig, build_optimizer
    probe = copy.deepcopy(model).to(device).train()
    opt = build_optimizer(probe, OptimConfig(name="adamw", lr=s.lr, decay_1d=False))
    g = torch.Generator().manual_seed(987654321)
    watch = Stopwatch()
    with torch.random.fork_rng(devices=[]):
        for i in range(2 + s.calibration_steps):
            x, y = (t.to(device) for t in sample_fn(g, s.batch_size))
            with watch if i >= 2 else contextlib.nullcontext():
                loss, _ = task.loss(probe, (x, y))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(probe.parameters(), s.grad_clip)
                opt.step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
    return watch.seconds / s.calibration_steps


def _device(s: AustenSettings) -> torch.device:
    if s.device is not None:
        return torch.device(s.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _plan(run_dir: Path, s: AustenSettings, model, section: Dict, data: Dict, log) -> Dict:
    """The run's plan (``plan.json``): calibrated once, then reused; another plan's folder is
    refused. Planned steps = budget / calibrated step time (the cosine schedule's length)."""
    from ..train import LanguageModelTask
    fingerprint = {"format": _RUN_FORMAT, "model": section, "data": data["corpus_id"],
                   **{k: getattr(s, k) for k in ("block_size", "batch_size", "budget_seconds",
                                                 "seed", "lr", "min_lr_ratio", "weight_decay",
                                                 "warmup_fraction", "grad_clip", "val_windows",
                                                 "eval_points", "device")}}
    path = run_dir / "plan.json"
    if path.is_file():
        plan = json.loads(path.read_text())
        if plan.get("fingerprint") != json.loads(json.dumps(fingerprint)):
            raise ValueError(f"{run_dir} holds a run with other settings (model, data, budget or "
                             f"recipe differ); use another output folder or delete {run_dir}")
        return plan
    step_time = _step_time(model, LanguageModelTask(), data["sample_fn"], s, data["device"])
    planned = max(1, int(s.budget_seconds / step_time))
    plan = {"fingerprint": fingerprint, "calibrated_step_time": step_time,
            "planned_steps": planned,
            "warmup": min(int(s.warmup_fraction * planned), max(0, planned - 1))}
    atomic_write_json(path, plan)
    log(f"{section['name']}: {model.num_parameters():,} parameters, {1000 * step_time:.0f} "
        f"ms/step measured → {planned} steps planned for {s.budget_seconds:g} s")
    return plan


def _train_one(run_dir: Path, s: AustenSettings, label: str, kind: str, data: Dict,
               log: Callable[[str], None]) -> Dict:
    """Train (or resume, or just reload) one model; returns its result record."""
    from ..recipes import build_model
    from ..train import LanguageModelTask, WindowBatches, fit
    section = model_section(s, kind, data["vocab_size"])
    torch.manual_seed(s.seed)
    model = build_model(section)
    plan = _plan(run_dir, s, model, section, data, log)

    def progress(event: Dict) -> None:
        if event["event"] == "checkpoint":
            loss = summary_eval.get("loss", float("nan"))
            log(f"  {label}: step {event['step']}/{plan['planned_steps']}, val loss {loss:.4f}")
        elif event["event"] == "eval":
            summary_eval.update(event)

    summary_eval: Dict = {}
    batches = WindowBatches(data["sample_fn"], s.batch_size, _STEPS_PER_EPOCH, seed=s.seed)
    summary = fit(model, LanguageModelTask(), batches, _run_config(s, section, plan, data["dir"]),
                  eval_sets={"val": data["val_batches"]}, out_dir=run_dir, device=data["device"],
                  callbacks=[progress], tokenizer=data["tokenizer"].to_meta())
    steps, seconds, loss = summary["steps"], summary["seconds"], summary["eval"]["loss"]
    tokens = steps * s.batch_size * s.block_size
    samples = _samples(model, data["tokenizer"], s, data["device"])
    return {
        "kind": kind, "model": section["name"], "config": model.config.to_dict(),
        "val_loss": loss, "val_ppl": math.exp(min(loss, 700.0)),
        "val_bits_per_token": loss / math.log(2), "parameters": model.num_parameters(),
        "steps": steps, "planned_steps": plan["planned_steps"], "seconds": round(seconds, 2),
        "tokens": tokens, "tokens_per_s": tokens / seconds if seconds else 0.0,
        "calibrated_step_time": plan["calibrated_step_time"],
        "sample": samples[0] if samples else "", "samples": samples,
    }


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
        ValueError: Invalid corpus, a prompt the tokenizer cannot encode, a split shorter than
            one window, or an output folder holding runs with other settings.
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


def _data(out: Path, s: AustenSettings, corpus, log: Callable[[str], None]) -> Dict:
    """Token folder, tokenizer, training sampler and fixed validation batches."""
    from ..data.text import TokenDataset
    from ..train import token_windows
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
    return {"dir": data_dir, "meta": meta, "tokenizer": tokenizer, "device": device,
            "vocab_size": int(meta["vocab_size"]), "corpus_id": meta["corpus_id"],
            "sample_fn": token_windows(train_ds.data, s.block_size),
            "val_batches": val_batches, "tokens_train": len(train_ds),
            "tokens_val": len(val_ds), "val_windows": sum(len(b[0]) for b in val_batches)}


def _run(out: Path, s: AustenSettings, corpus, log: Callable[[str], None]) -> Dict:
    out.mkdir(parents=True, exist_ok=True)
    data = _data(out, s, corpus, log)
    log(f"{s.tokenizer} tokens: {data['tokens_train']:,} train, {data['tokens_val']:,} "
        f"validation, vocabulary {data['vocab_size']}; {data['val_windows']} fixed validation "
        f"windows")
    results: Dict[str, Dict] = {}
    for label, kind in s.models.items():
        r = results[label] = _train_one(out / "runs" / kind, s, label, kind, data, log)
        log(f"{label}: val loss {r['val_loss']:.4f} (ppl {r['val_ppl']:.2f}) after "
            f"{r['steps']} steps, {r['tokens_per_s']:.0f} tokens/s")
    atomic_write_json(out / "results.json", results)
    figures = _figures(out, s, results)
    info = {k: data[k] for k in ("tokens_train", "tokens_val", "vocab_size", "val_windows")}
    info.update(source=data["meta"].get("source"), threads=torch.get_num_threads(),
                device=str(data["device"]))
    atomic_write_text(out / "report.md", report_markdown(results, s, figures, info))
    log(f"report: {out / 'report.md'}")
    return results


def _curves(out: Path, results: Dict):
    from ..train import read_metrics
    train, val, val_time = {}, {}, {}
    for label, r in results.items():
        path = out / "runs" / r["kind"] / "metrics.jsonl"
        records = read_metrics(path) if path.is_file() else []
        train[label] = [(x["step"], x["loss"]) for x in records if x["event"] == "train"]
        evals = [x for x in records if x["event"] == "eval" and x.get("set") == "val"]
        val[label] = [(x["step"], x["loss"]) for x in evals]
        val_time[label] = [(x["time"], x["loss"]) for x in evals]
    return train, val, val_time


def _figures(out: Path, s: AustenSettings, results: Dict) -> List[str]:
    from .. import plots
    train, val, val_time = _curves(out, results)
    unit = "nats/char" if s.tokenizer == "char" else "nats/token"
    plots.training_curves(train, out / "curves_train.png", ylabel=f"training loss ({unit})",
                          title="training loss (mean over each logging window)")
    plots.training_curves(val, out / "curves_val.png", ylabel=f"validation loss ({unit})",
                          title="validation loss (fixed windows, the same for every model)")
    plots.training_curves(val_time, out / "val_vs_time.png", ylabel=f"validation loss ({unit})",
                          title=f"validation loss against training time (budget "
                                f"{s.budget_seconds:g} s each)", xlabel="training time (s)")
    return ["curves_train.png", "curves_val.png", "val_vs_time.png"]


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
        "other on the same machine. The step count (the cosine schedule's length) is planned "
        f"from a timed calibration of {s.calibration_steps} steps on a copy of the model; "
        "training stops at the planned count or when the budget is spent, whichever comes "
        f"first, with {s.eval_points} evaluations on the way. Timings on a shared machine "
        "include any interference from other processes.", "",
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
