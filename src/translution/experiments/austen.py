"""Language modelling on Jane Austen (one novel held out): causal Translution against
self-attention at equal training time (``OUT/runs/time/<kind>``, steps planned by a timed
calibration), at equal steps over seeds (``OUT/runs/steps/<kind>/seed<s>``) and beyond the
trained context. ``results.json``: label → the equal-time record (``val_loss``, ``val_ppl``,
``sample``, ...), ``equal_steps`` (``perplexity``, ``perplexity_std``, ``seeds``, ...) and
``length`` (``{L: {perplexity, perplexity_std, seeds}}``, or ``None`` and a ``note``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np
import torch

from ..train.config import bounded, load_settings
from ..utils import atomic_write_json, atomic_write_text, sha256_bytes
from .common import (ExperimentSettings, check_fingerprint, fit_with_bar, markdown_table,
                     mean_std, pm, read_or_train, run_arms, running, seed_stats)

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
_RUN_FORMAT = 2
_RECIPE = ("block_size", "batch_size", "lr", "min_lr_ratio", "weight_decay", "warmup_fraction",
           "grad_clip", "val_chunks", "eval_lengths", "eval_points", "device")

Kind = Literal["ape", "rope", "bias", "translution", "alpha", "hybrid"]


@dataclass
class AustenSettings(ExperimentSettings):
    """Protocols and sizes (presets ``configs/austen_{quick,full}.yaml``, quick = defaults):
    models ``gpt_<size>_<kind>`` (``dim`` … ``mlp_dim``, ``model_overrides`` per kind override
    it); ``prompt``, ``samples`` … ``sample_seed``: equal-time samples (temperature 0: greedy)."""

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
    max_distance: Optional[int] = bounded(None, ge=0)
    model_overrides: Dict[Kind, Dict[str, Any]] = field(
        default_factory=lambda: {"translution": {"dim": 64, "dim_head": 32}})
    models: Dict[str, Kind] = field(default_factory=lambda: dict(MODELS))
    protocols: List[Literal["time", "steps"]] = field(default_factory=lambda: ["time", "steps"])
    budget_seconds: float = bounded(150.0, gt=0)
    calibration_steps: int = bounded(3, ge=1)
    steps: int = bounded(1000, ge=1)
    eval_lengths: List[int] = field(default_factory=lambda: [128, 256, 512, 1024],
                                    metadata={"bounds": {"ge": 1}})
    eval_points: int = bounded(6, ge=1)
    val_chunks: int = bounded(8, ge=1)
    eval_batch_size: int = bounded(32, ge=1)
    min_lr_ratio: float = bounded(0.1, ge=0, le=1)
    weight_decay: float = bounded(0.1, ge=0)
    warmup_fraction: float = bounded(0.05, ge=0, lt=1)
    log_every: int = bounded(10, ge=1)
    prompt: str = "It is a truth"
    samples: int = bounded(2, ge=1)
    sample_tokens: int = bounded(160, ge=0)
    temperature: float = bounded(0.8, ge=0)
    top_k: Optional[int] = bounded(None, ge=1)
    sample_seed: int = bounded(1234, ge=0)

    def check(self) -> None:
        if not self.prompt:
            raise ValueError("prompt must be a non-empty string")
        if not self.models:
            raise ValueError("models must name at least one attention kind (label: kind)")
        if not self.protocols or len(set(self.protocols)) != len(self.protocols):
            raise ValueError(f"protocols must name 'time' and/or 'steps' once each, "
                             f"got {self.protocols}")
        kinds = list(self.models.values())
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"each kind may appear once in models (one run folder per kind), "
                             f"got {kinds}")
        fixed = [f"{kind}.{key}" for kind, over in self.model_overrides.items() for key in over
                 if key in ("block_size", "vocab_size", "attention", "max_distance")]
        if fixed:
            raise ValueError(f"model_overrides may not set {fixed} (the same for every model / "
                             f"fixed by the kind)")

    @property
    def span(self) -> int:
        """Tokens of one validation stretch: the longest evaluation length."""
        return max([self.block_size, *self.eval_lengths])


#: 2 CPU cores: context 128, 150 s per model at equal time, 1000 steps per model and seed.
QUICK = load_settings(AustenSettings, "austen_quick")
#: GPT-tiny, context 256, batch 32; 30 min per model, 5000 steps; for an accelerator.
FULL = load_settings(AustenSettings, "austen_full")


def prepare_tokens(settings: AustenSettings, corpus=None, data_dir: Optional[Path] = None,
                   log: Callable[[str], None] = print) -> Tuple[Path, dict]:
    """Tokenize the novels (``settings.tokenizer``, ``val_novel`` held out), or ``corpus``
    ``(train_texts, val_texts)``, once into ``data_dir`` (default
    ``$TRANSLUTION_DATA/austen-<tokenizer>[-val-<novel>]``); returns ``(folder, meta)``, reusing
    a folder made from the same texts. Raises ValueError for a malformed corpus."""
    from ..data.text import TokenDataset, default_cache_root, prepare_corpus, read_meta
    if corpus is None:
        from ..data.austen import austen_corpus
        log(f"reading the Austen novels (validation: {settings.val_novel}) ...")
        train, val = austen_corpus(settings.val_novel)
        source = f"austen (validation: {settings.val_novel})"
        if data_dir is None:
            suffix = "" if settings.val_novel == "persuasion" else f"-val-{settings.val_novel}"
            data_dir = default_cache_root() / f"austen-{settings.tokenizer}{suffix}"
    elif not (isinstance(corpus, (tuple, list)) and len(corpus) == 2 and all(
            isinstance(t, (tuple, list)) and t and all(isinstance(x, str) for x in t)
            for t in corpus)):
        raise ValueError("corpus must be a pair (train_texts, val_texts) of non-empty lists of "
                         f"str, got {type(corpus).__name__}")
    elif data_dir is None:
        raise ValueError("prepare_tokens needs data_dir when a custom corpus is given")
    else:
        (train, val), source = map(list, corpus), "custom corpus"
    cid = sha256_bytes(json.dumps([settings.tokenizer, train, val]).encode())[:16]
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
    return data_dir, prepare_corpus(train, val, data_dir, settings.tokenizer,
                                    extra_meta={"corpus_id": cid, "source": source})


def _length_batches(val: np.ndarray, s: AustenSettings, device) -> Dict[int, List[Tuple]]:
    """Length ``L`` → batches ``(x, y)`` of ``(W, L)`` windows: ``val_chunks`` evenly spaced
    stretches of :attr:`~AustenSettings.span` tokens, each cut into consecutive windows of
    ``L`` (the same scored tokens at every length that divides the span)."""
    n = len(val) - s.span - 1
    if n < 0:
        raise ValueError(f"the validation split has {len(val)} tokens; evaluation length "
                         f"{s.span} needs at least {s.span + 1}")
    starts = np.unique(np.linspace(0, n, s.val_chunks).round().astype(np.int64))
    out = {}
    for length in sorted({s.block_size, *s.eval_lengths}):
        first = (starts[:, None] + length * np.arange(s.span // length)[None, :]).ravel()
        w = torch.from_numpy(np.asarray(val[first[:, None] + np.arange(length + 1)])
                             .astype(np.int64))                         # (W, L+1)
        per = max(1, s.eval_batch_size * s.block_size // length)
        out[length] = [(b[:, :-1].to(device), b[:, 1:].to(device)) for b in w.split(per)]
    return out


def model_section(s: AustenSettings, kind: str, vocab_size: int) -> Dict[str, Any]:
    """The ``model`` config section of kind ``kind``: ``{"name": "gpt_<size>_<kind>", ...}``
    (built by :func:`translution.recipes.build_model`)."""
    over = {k: getattr(s, k) for k in ("dim", "depth", "heads", "dim_head", "mlp_dim")
            if getattr(s, k) is not None}
    over.update(vocab_size=vocab_size, block_size=s.block_size, rank=s.rank)
    if kind != "ape":
        over["max_distance"] = s.block_size - 1 if s.max_distance is None else s.max_distance
    over.update(s.model_overrides.get(kind, {}))
    return {"name": f"gpt_{s.size}_{kind}", **over}


def _run_config(s: AustenSettings, section: Dict, data: Dict, seed: int, steps: int,
                warmup: int, budget: Optional[float], **train):
    from ..train import RunConfig
    every = max(1, math.ceil(steps / s.eval_points))
    return RunConfig.from_dict({
        "model": section,
        "data": {"dataset": "text", "dir": str(data["dir"]), "block_size": s.block_size},
        "train": {"max_steps": steps, "time_budget_s": budget, "batch_size": s.batch_size,
                  "seed": seed, "log_every": s.log_every, "eval_every": every,
                  "eval_at_start": True, "checkpoint_every": every,
                  "checkpoint_every_epochs": 0, "save_best": False, "progress": False,
                  "device": s.device, **train},
        "optim": {"name": "adamw", "lr": s.lr, "weight_decay": s.weight_decay,
                  "betas": (0.9, 0.99), "grad_clip": s.grad_clip, "decay_1d": False},
        "schedule": {"name": "cosine", "warmup": warmup, "min_lr": s.lr * s.min_lr_ratio},
    })


def _step_time(model, section: Dict, data: Dict, s: AustenSettings) -> float:
    """Seconds per training step (batch sampling included) of a throw-away copy trained by
    ``fit``: two warm-up steps, then the mean of ``calibration_steps`` timed ones."""
    import copy
    from ..train import LanguageModelTask, WindowBatches, fit
    records: List[Dict] = []
    n, seed = 2 + s.calibration_steps, 987654321
    cfg = _run_config(s, section, data, seed, n, 0, None, log_every=1, eval_at_start=False)
    with torch.random.fork_rng(devices=[]):
        fit(copy.deepcopy(model), LanguageModelTask(), WindowBatches(
            data["sample_fn"], s.batch_size, n, seed=seed), cfg, out_dir=None, resume=False,
            device=data["device"], callbacks=[records.append])
    return float(np.mean([r["step_time"] for r in records
                          if r["event"] == "train" and r["step"] > 2]))


def _train_one(run_dir: Path, s: AustenSettings, label: str, kind: str, data: Dict,
               log: Callable[[str], None], seed: int, steps: Optional[int] = None) -> Dict:
    """Train (or resume, or read back) one model for ``steps`` steps (``None``: as many as the
    calibrated step time fits into the time budget, planned once in ``plan.json``); its record
    with ``samples`` (equal time) or ``length`` (``{L: loss or None}``)."""
    from ..recipes import build_model
    from ..train import LanguageModelTask, WindowBatches
    section = model_section(s, kind, data["vocab_size"])
    torch.manual_seed(seed)
    model = build_model(section)

    def make_plan() -> Dict:
        step_time = None if steps else _step_time(model, section, data, s)
        planned = steps or max(1, int(s.budget_seconds / step_time))
        if step_time:
            log(f"{section['name']}: {model.num_parameters():,} parameters, "
                f"{1000 * step_time:.0f} ms/step measured → {planned} steps planned for "
                f"{s.budget_seconds:g} s")
        return {"calibrated_step_time": step_time, "planned_steps": planned,
                "warmup": min(int(s.warmup_fraction * planned), max(0, planned - 1))}
    fingerprint = {"format": _RUN_FORMAT, "model": section, "data": data["corpus_id"],
                   "seed": seed, "steps": steps, **{k: getattr(s, k) for k in _RECIPE},
                   "budget_seconds": s.budget_seconds if steps is None else None}
    plan = check_fingerprint(run_dir, fingerprint, "plan.json", make_plan)
    last: Dict = {}

    def progress(event: Dict) -> None:
        if event["event"] == "checkpoint":
            log(f"  {label}: step {event['step']}/{plan['planned_steps']}, val loss "
                f"{last.get('loss', float('nan')):.4f}")
        last.update(event if event["event"] == "eval" else {})

    def train() -> Dict:
        cfg = _run_config(s, section, data, seed, plan["planned_steps"], plan["warmup"],
                          None if steps else s.budget_seconds)
        out = fit_with_bar(f"{label}, seed {seed}", plan["planned_steps"], model,
                           LanguageModelTask(), WindowBatches(data["sample_fn"], s.batch_size,
                                                              _STEPS_PER_EPOCH, seed=seed),
                           cfg, eval_sets={"val": data["val"][s.block_size]}, out_dir=run_dir,
                           device=data["device"], callbacks=[progress],
                           tokenizer=data["tokenizer"].to_meta())
        tokens, loss = out["steps"] * s.batch_size * s.block_size, out["eval"]["loss"]
        r = {"kind": kind, "model": section["name"], "config": model.config.to_dict(),
             "val_loss": loss, "val_ppl": math.exp(min(loss, 700.0)),
             "parameters": model.num_parameters(), "steps": out["steps"],
             "planned_steps": plan["planned_steps"], "seconds": round(out["seconds"], 2),
             "tokens": tokens, "tokens_per_s": tokens / max(out["seconds"], 1e-9),
             "calibrated_step_time": plan["calibrated_step_time"]}
        if steps is None:
            r["samples"] = _samples(model, data["tokenizer"], s, data["device"])
        else:
            limit = model.max_length
            r["length"] = {str(n): None if limit is not None and n > limit else
                           LanguageModelTask().evaluate(model, data["val"][n])["loss"]
                           for n in s.eval_lengths}
        log(f"{label}, seed {seed}: val ppl {r['val_ppl']:.2f} after {r['steps']} steps, "
            f"{r['tokens_per_s']:.0f} tokens/s")
        return r
    return read_or_train(run_dir, f"{label}, seed {seed}", train, log)


@torch.no_grad()
def _samples(model, tokenizer, s: AustenSettings, device) -> List[str]:
    from ..generation import generate
    if s.sample_tokens == 0:
        return [s.prompt] * s.samples
    prompt = torch.as_tensor(tokenizer.encode(s.prompt), dtype=torch.long, device=device)
    g = torch.Generator(device=device).manual_seed(s.sample_seed)
    out = generate(model.eval(), prompt[None].expand(s.samples, -1).contiguous(),
                   s.sample_tokens, temperature=s.temperature, top_k=s.top_k, use_cache=True,
                   generator=g, sliding_window=True)
    return [tokenizer.decode(row.tolist()) for row in out.cpu()]


def _data(out: Path, s: AustenSettings, corpus, log: Callable[[str], None]) -> Dict:
    """Token folder, tokenizer, training sampler and fixed validation batches per length."""
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
    device = torch.device(s.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    val = _length_batches(val_ds.data, s, device)
    return {"dir": data_dir, "source": meta.get("source"), "tokenizer": tokenizer, "device": device,
            "vocab_size": int(meta["vocab_size"]), "corpus_id": meta["corpus_id"],
            "sample_fn": token_windows(train_ds.data, s.block_size), "val": val,
            "tokens_train": len(train_ds), "tokens_val": len(val_ds),
            "val_tokens": sum(b[0].numel() for b in val[s.block_size])}


def run(out: Path, settings: AustenSettings = QUICK, corpus=None,
        log: Callable[[str], None] = print) -> Dict:
    """Run (or resume) the protocols of ``settings`` into ``out`` (on ``corpus`` ``(train_texts,
    val_texts)`` instead of the novels when given); returns ``results.json``'s dict. Raises
    ValueError for a bad corpus or prompt, a short split, or a folder of other settings."""
    out, s = Path(out), settings
    with running(s, AustenSettings):
        data = _data(out, s, corpus, log)
        log(f"{s.tokenizer} tokens: {data['tokens_train']:,} train, {data['tokens_val']:,} "
            f"validation, vocabulary {data['vocab_size']}; {data['val_tokens']:,} validation "
            f"tokens scored at every length")
        results: Dict[str, Dict] = {label: {} for label in s.models}

        def protocol(name: str, seeds: Sequence[int], summary: Callable[[List[Dict]], Dict]):
            def train(label: str, seed: int) -> Dict:
                run_dir = out / "runs" / name / s.models[label]
                return _train_one(run_dir / f"seed{seed}" if name == "steps" else run_dir, s,
                                  label, s.models[label], data, log, seed,
                                  s.steps if name == "steps" else None)

            def write(records: Dict[str, List[Dict]]) -> None:
                for label, rs in records.items():
                    results[label].update(summary(rs))
                atomic_write_json(out / "results.json", results)
            run_arms(s.models, seeds, train, write)

        if "time" in s.protocols:
            protocol("time", [s.seed], lambda rs: {**rs[0], "sample": rs[0]["samples"][0]})
        if "steps" in s.protocols:
            protocol("steps", range(s.seed, s.seed + s.seeds), lambda rs: _steps_summary(rs, s))
        info = {**data, "threads": torch.get_num_threads(), "device": str(data["device"])}
        atomic_write_text(out / "report.md", report_markdown(results, s, _figures(out, s, results),
                                                             info))
    log(f"report: {out / 'report.md'}")
    return results


def _steps_summary(rs: List[Dict], s: AustenSettings) -> Dict[str, Dict]:
    """``equal_steps`` and ``length`` of one model from its runs, one per seed."""
    length = {}
    for n in rs[0]["length"]:
        losses = [r["length"][n] for r in rs]
        length[n] = ({"perplexity": None, "perplexity_std": None, "seeds": [],
                      "note": f"absolute positions only up to {s.block_size}"} if None in losses
                     else seed_stats([math.exp(min(v, 700.0)) for v in losses], "perplexity", None))
    return {"equal_steps": {**seed_stats([r["val_ppl"] for r in rs], "perplexity", None),
                            **{k: rs[0][k] for k in ("parameters", "steps", "tokens", "model")},
                            "settings": s.to_dict(),
                            "seconds": mean_std([r["seconds"] for r in rs])[0]},
            "length": length}


def _figures(out: Path, s: AustenSettings, results: Dict) -> List[str]:
    """Loss curves of the protocols run and (equal steps) perplexity by evaluation length."""
    from . import plots
    from ..train import read_metrics
    unit = "nats/char" if s.tokenizer == "char" else "nats/token"
    specs = []                                          # file, runs, event, x, title
    if "time" in s.protocols:
        specs += [("curves_train.png", "time/{kind}", "train", "step",
                   "equal time: training loss (mean over each logging window)"),
                  ("curves_val.png", "time/{kind}", "eval", "step", "equal time: validation loss"),
                  ("val_vs_time.png", "time/{kind}", "eval", "time",
                   f"validation loss against training time (budget {s.budget_seconds:g} s)")]
    if "steps" in s.protocols:
        specs.append(("curves_val_steps.png", f"steps/{{kind}}/seed{s.seed}", "eval", "step",
                      f"equal steps: validation loss, seed {s.seed}"))
    for name, where, event, x, title in specs:
        paths = {label: out / "runs" / where.format(kind=kind) / "metrics.jsonl"
                 for label, kind in s.models.items()}
        curves = {label: [(r[x], r["loss"]) for r in (read_metrics(path, event) if path.is_file()
                                                      else []) if r.get("set", "val") == "val"]
                  for label, path in paths.items()}
        plots.lines({"": curves}, out / name, "training time (s)" if x == "time" else "step",
                    f"{'training' if event == 'train' else 'validation'} loss ({unit})", title,
                    ylog=True)
    if "steps" not in s.protocols:
        return [spec[0] for spec in specs]
    plots.lines({"": {label: [(int(n), e["perplexity"], min(e["seeds"]), max(e["seeds"]))
                              for n, e in r["length"].items() if e["seeds"]]
                      for label, r in results.items()}}, out / "length.png",
                "evaluation length (tokens)", "validation perplexity", f"trained with context "
                f"{s.block_size}: perplexity by evaluation length (band: min … max over seeds)",
                xlog=2, xticks=sorted(s.eval_lengths))
    return [spec[0] for spec in specs] + ["length.png"]


def _tables(results: Dict, s: AustenSettings) -> List[str]:
    """The equal-time, equal-steps and length sections of the protocols run."""
    lines = []
    if "time" in s.protocols:
        lines += [
            "## Equal training time", "",
            f"Every model trains for {s.budget_seconds:g} s of training time (forward, backward, "
            "optimiser step and batch sampling, as timed by `fit`), one after the other, seed "
            f"{s.seed}; a timed calibration of {s.calibration_steps} steps plans the step count "
            "(the cosine schedule's length). Timings on a shared machine include interference.",
            ""] + markdown_table(
            ["model", "name", "dim / depth / heads × dim_head", "parameters", "steps",
             "tokens seen", "train s", "tokens/s", "val loss", "val ppl"],
            [[label, f"`{r['model']}`", "{dim} / {depth} / {heads} × {dim_head}".format(
                **r["config"]), f"{r['parameters']:,}", r["steps"], f"{r['tokens']:,}",
              f"{r['seconds']:.0f}", f"{r['tokens_per_s']:,.0f}", f"{r['val_loss']:.4f}",
              f"{r['val_ppl']:.2f}"] for label, r in results.items()]) + [""]
    if "steps" not in s.protocols:
        return lines
    steps = {label: r["equal_steps"] for label, r in results.items()}
    lines += [
        "## Equal steps (the paper's protocol)", "",
        f"Every model trains {s.steps} steps of {s.batch_size} × {s.block_size} tokens "
        f"({s.steps * s.batch_size * s.block_size:,} tokens) per seed (weights and training "
        f"windows). " + s.seeds_note("validation perplexity"), ""] + markdown_table(
        ["model", "parameters", "tokens seen", "train s per seed", "val ppl", "per seed"],
        [[label, f"{e['parameters']:,}", f"{e['tokens']:,}", f"{e['seconds']:.0f}",
          pm(e, "perplexity", 2), ", ".join(f"{p:.2f}" for p in e["seeds"])]
         for label, e in steps.items()])
    k = s.block_size - 1 if s.max_distance is None else s.max_distance
    lines += [
        "", "## Length generalisation", "",
        f"The equal-steps models (trained with context {s.block_size}) read windows of each "
        f"length; every length scores the same {s.val_chunks} stretches of {s.span} validation "
        f"tokens. All but APE run at any length (max_distance K = {k}: offsets beyond K share "
        "a slot; RoPE has no slots); APE has block_size positions. Perplexity, mean ± std over "
        "the seeds.", ""] + markdown_table(
        ["model"] + [f"L = {n}" for n in s.eval_lengths],
        [[label] + [f"n/a: {e['note']}" if e["perplexity"] is None else pm(e, "perplexity", 2)
                    for e in (r["length"][str(n)] for n in s.eval_lengths)]
         for label, r in results.items()])
    return lines + [""]


def report_markdown(results: Dict, s: AustenSettings, figures: List[str],
                    info: Optional[Dict] = None) -> str:
    """The report: setup, the tables of the protocols run, samples and figures."""
    info = info or {}
    austen = str(info.get("source", "austen")).startswith("austen")
    held = f"held-out novel: {s.val_novel}" if austen else "validation texts given by the caller"
    lines = [
        "# Language modelling on Jane Austen: causal Translution vs self-attention", "",
        f"Data: {info.get('source', 'austen')}, {s.tokenizer}-level tokens "
        f"(vocabulary {info.get('vocab_size', '?')}); {info.get('tokens_train', 0):,} training "
        f"and {info.get('tokens_val', 0):,} validation tokens ({held}). "
        f"Context {s.block_size}, batch {s.batch_size} random windows, AdamW lr {s.lr:g} "
        f"(β 0.9/0.99, weight decay {s.weight_decay:g} on matrices), warm-up "
        f"{100 * s.warmup_fraction:g} % of the steps, cosine to {s.min_lr_ratio:g}·lr, "
        f"gradient clip {s.grad_clip:g}, {s.eval_points} evaluations. Device: "
        f"{info.get('device', s.device)}, torch threads: {info.get('threads', '?')}.", "",
        f"Validation: mean cross-entropy (nats per "
        f"{'character' if s.tokenizer == 'char' else 'BPE token'}) on "
        f"{info.get('val_tokens', 0):,} tokens: {s.val_chunks} evenly spaced stretches cut into "
        f"windows of {s.block_size}; a window scores all its positions, the early ones with "
        "short contexts.", ""] + _tables(results, s)
    notes = [f"`{kind}` uses " + ", ".join(f"{k}={v}" for k, v in over.items()) + "."
             for kind, over in s.model_overrides.items() if kind in s.models.values() and over]
    notes += [f"α-Translution rank r = {s.rank}."] if "alpha" in s.models.values() else []
    lines += ["Notes: " + " ".join(notes), ""] if notes else []
    if "time" in s.protocols:
        temp = "greedy" if s.temperature == 0 else f"temperature {s.temperature:g}"
        lines += ["## Samples (equal-time models)", "",
                  f"{s.samples} sample(s) of {s.sample_tokens} tokens per model from the prompt "
                  f"{s.prompt!r} ({temp}{f', top-k {s.top_k}' if s.top_k else ''}, seed "
                  f"{s.sample_seed}, cached decoding; APE slides its window beyond the context).",
                  ""]
        for label, r in results.items():
            lines += [f"**{label}**", ""]
            for text in r["samples"]:
                lines += ["```text", text.replace("```", "ʼʼʼ"), "```", ""]
    return "\n".join(lines + ["## Figures", ""] + [f"![{f}]({f})" for f in figures]) + "\n"
