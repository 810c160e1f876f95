"""Command line: ``translution <command> ...`` (see ``translution --help``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional


def _bench_op(args) -> int:
    from .bench import op as bench
    cases = bench.default_cases(quick=args.quick)
    impls = tuple(args.impl) if args.impl else bench.IMPLS
    report = bench.run_suite(cases, impls=impls, repeats=args.repeats,
                             memory_limit=args.paper_memory_limit * 1e9, models=not args.quick)
    table = bench.markdown(report)
    print(f"\n{table}")
    if args.out:
        from .utils import atomic_write_json, atomic_write_text
        out = Path(args.out)
        atomic_write_json(out.with_suffix(".json"), report)
        atomic_write_text(out.with_suffix(".md"), table + "\n")
        print(f"\nwrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0


def _experiment(args) -> int:
    """Run an experiment with its ``--preset`` (``--full``: ``full``; default ``quick``),
    ``--seeds`` and ``--set`` items."""
    import importlib
    from .train.config import CONFIG_DIR, load_settings
    prefix = args.experiment.replace("-", "_")
    module = importlib.import_module(f".experiments.{prefix}", __package__)
    name = args.preset or ("full" if args.full else "quick")
    path = Path(name) if name.endswith((".yaml", ".yml")) else CONFIG_DIR / f"{prefix}_{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem[len(prefix) + 1:] for p in CONFIG_DIR.glob(f"{prefix}_*.yaml"))
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(names)} (or a YAML file)")
    seeds = [] if args.seeds is None else [f"seeds={args.seeds}"]
    settings = load_settings(type(module.QUICK), path, seeds + (args.set or []))
    extra = {"data_root": args.data} if args.experiment == "dynamic-mnist" else {}
    module.run(Path(args.out), settings, **extra)
    return 0


def _train(args) -> int:
    import torch
    from . import recipes
    from .train import cleanup_distributed, fit, load_config
    cfg = load_config(args.config, args.overrides)
    torch.manual_seed(cfg.train.seed)
    model, task, train_batches, eval_batches = recipes.build(cfg)
    out = cfg.train.out_dir or f"runs/{cfg.model['name']}"
    summary = fit(model, task, train_batches, cfg, eval_batches, out_dir=out,
                  resume=not args.restart, tokenizer=recipes.tokenizer_meta(cfg))
    cleanup_distributed()                     # every rank, after a successful run (torchrun)
    print(json.dumps({k: summary[k] for k in ("steps", "seconds", "parameters", "eval", "best")
                      if k in summary}, indent=1, default=str))
    print(f"checkpoints and metrics in {out}")
    return 0


def _eval(args) -> int:
    import torch
    from . import recipes
    from .train.config import replace_settings
    model, cfg, _ = recipes.model_for_checkpoint(args.checkpoint)
    cfg = replace_settings(cfg, args.overrides)
    task, _, eval_batches = recipes.build_task_and_batches(cfg, model)
    # the model is on the CPU; bf16 autocast as fit evaluated
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16"):
        metrics = task.evaluate(model, eval_batches.batches(0))
    print(json.dumps(metrics, indent=1))
    return 0


def _generate(args) -> int:
    import torch
    from . import recipes
    from .data.tokenizers import tokenizer_from_meta
    from .generation import generate
    model, cfg, obj = recipes.model_for_checkpoint(args.checkpoint)
    tokenizer = tokenizer_from_meta(obj["tokenizer"] or recipes.tokenizer_meta(cfg))
    prompt = torch.tensor([tokenizer.encode(args.prompt)], dtype=torch.long)
    generator = torch.Generator().manual_seed(args.seed)
    out = generate(model, prompt, args.max_new_tokens, temperature=args.temperature,
                   top_k=args.top_k, use_cache=not args.no_cache, generator=generator,
                   sliding_window=not args.strict_context)
    print(tokenizer.decode(out[0].tolist()))
    return 0


def _models(args) -> int:
    from .models import list_models
    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"no registered model matches {args.pattern!r} (try 'vit_*', 'gpt_*')")
    print("\n".join(names))
    return 0


#: ``translution experiment NAME``: help, ``--full`` help, ``--set`` example.
EXPERIMENTS = {
    "dynamic-mnist": ("ViT+APE vs ViT+rel. bias vs Translution vs α-Translution on static and "
                      "shifted digits (SPEC §7); quick by default (~15 min on 2 CPU cores)",
                      "the full protocol: 5 epochs, wider models, training on shifted digits, 3 "
                      "seeds and the border-effect arms (for a GPU; days on a CPU)", "epochs=3"),
    "austen": ("GPT with self-attention (abs. pos. / RoPE), α-Translution and Translution on the "
               "Jane Austen novels: equal CPU time, equal steps over seeds, and evaluation "
               "beyond the trained context", "GPT-tiny sizes, 30 min per model",
               "budget_seconds=60"),
    "fashion": ("Fashion-MNIST on the paper's 4×4 grid: ViT (APE, RoPE, parameter-matched), "
                "α-Translution, Translution, lor_rope; mean ± std over seeds (quick default)",
                "the README protocol with the relative-subset ablations", "data_root=DIR"),
}


def _add_experiments(experiment: argparse.ArgumentParser) -> None:
    """The ``translution experiment ...`` subcommands."""
    exp_sub = experiment.add_subparsers(dest="experiment", required=True)
    for name, (text, full, example) in EXPERIMENTS.items():
        p = exp_sub.add_parser(name, help=text)
        p.add_argument("--out", default=f"runs/{name}", help="run folder (resumes if present)")
        preset = p.add_mutually_exclusive_group()
        preset.add_argument("--preset", metavar="NAME_OR_FILE",
                            help=f"configs/{name.replace('-', '_')}_NAME.yaml (quick, full, ...) "
                                 "or a YAML file (default: quick)")
        preset.add_argument("--full", action="store_true", help=f"--preset full: {full}")
        if name == "dynamic-mnist":
            p.add_argument("--data", help="folder with the MNIST IDX files (else cache, mirrors)")
        p.add_argument("--seeds", type=int, metavar="N",
                       help="seeds per arm (mean ± std in the report); same as --set seeds=N")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help=f"override a setting, e.g. --set {example} (repeatable)")
        p.set_defaults(func=_experiment)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="translution", description=(
        "Translution: relative attention with a weight per offset (arXiv 2510.10060)."))
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True)
    op = bench_sub.add_parser("op", help="time and peak memory of one layer, forward+backward")
    op.add_argument("--quick", action="store_true",
                    help="two small configurations only, no model table")
    op.add_argument("--impl", action="append",
                    choices=["paper", "grouped", "batched", "alpha", "sdpa"],
                    help="implementations to run (repeatable; default all)")
    op.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
    op.add_argument("--paper-memory-limit", type=float, default=14.0,
                    help="skip the paper's algorithm where it needs more GB than this")
    op.add_argument("--out", help="write the table to OUT.md and the raw numbers to OUT.json")
    op.set_defaults(func=_bench_op)
    bench_sub.add_parser("lm", add_help=False,       # run by main() with its own parser
                         help="training and generation tokens/s per attention kind (options: "
                              "translution bench lm --help)")

    train = sub.add_parser("train", help="train a model from a YAML config plus key=value "
                           "overrides (resumes OUT/last.pt when present)")
    train.add_argument("--config", help="YAML file (see configs/); omitted: defaults + overrides")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="dotted overrides, e.g. optim.lr=1e-3 model.depth=2")
    train.add_argument("--restart", action="store_true", help="ignore an existing last.pt")
    train.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="evaluate a checkpoint on its config's evaluation data")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                    help="change the data config, e.g. data.test_placement=pixel")
    ev.set_defaults(func=_eval)

    gen = sub.add_parser("generate", help="sample text from a language-model checkpoint")
    gen.add_argument("--checkpoint", required=True)
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--max-new-tokens", type=int, default=200)
    gen.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    gen.add_argument("--top-k", type=int, default=None)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--no-cache", action="store_true", help="recompute the prefix every token")
    gen.add_argument("--strict-context", action="store_true",
                     help="fail instead of sliding the context window past the model's block_size "
                          "(models with max_distance have no limit)")
    gen.set_defaults(func=_generate)

    models = sub.add_parser("models", help="list registered models")
    models.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'vit_*'")
    models.set_defaults(func=_models)

    _add_experiments(sub.add_parser("experiment", help="the paper's experiments"))
    return parser


#: Errors a user can cause (configuration, data, checkpoints): one line on stderr, exit 2.
USER_ERRORS = (ValueError, TypeError, KeyError, OSError)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; :data:`USER_ERRORS` print one line to stderr and return 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    rest = argv[1:] if argv[:1] == ["--debug"] else argv
    if rest[:2] == ["bench", "lm"]:                 # its own parser (translution bench lm -h)
        from .bench import lm as bench_lm
        return bench_lm.main(rest[2:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        if args.debug:
            raise
        message = str(e.args[0] if isinstance(e, KeyError) and e.args else e)
        print(f"translution: error: {' '.join(message.split())}", file=sys.stderr)
        return 2
