"""From a :class:`~translution.train.RunConfig` to a model, a task and batch sources.

``config.model`` is ``{"name": <registered model>, **overrides}`` (see
:func:`translution.models.list_models`). ``config.data["dataset"]`` is one of:

* ``"mnist"`` / ``"fashion-mnist"`` — 28×28 digits / clothes (``root``: optional local folder);
* ``"dynamic-mnist"`` — digits on a larger canvas (``canvas``, ``patch``, ``placement`` for
  training, ``test_placement``; SPEC §7);
* ``"imagefolder"`` — ``root/train`` and ``root/val`` class folders with the reference ImageNet
  augmentations (``img_size``, ``resize``, ``randaugment``, ``mixup``, ``cutmix``; SPEC §6);
* ``"text"`` — a token folder written by :func:`translution.data.text.prepare_corpus` or the
  OpenWebText preparation (``dir``; ``block_size`` defaults to the model's context;
  ``steps_per_epoch``, ``eval_iters``);
* ``"austen"`` — the Jane Austen novels (``tokenizer``: ``char`` or ``gpt2``; persuasion held
  out), prepared into a cached token folder, then as ``"text"``.

Common keys: ``train_size`` / ``test_size`` (subsets, images only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from torch import nn

from .train import ClassificationTask, DatasetBatches, LanguageModelTask, RunConfig, \
    WindowBatches, token_windows

IMAGE_DATASETS = ("mnist", "fashion-mnist", "dynamic-mnist", "imagefolder")
TEXT_DATASETS = ("text", "austen")


def build_model(model_cfg: Dict[str, Any]) -> nn.Module:
    """``{"name": ..., **overrides}`` → the registered model."""
    from .models import create_model
    if not isinstance(model_cfg, dict) or "name" not in model_cfg:
        raise ValueError(f"config.model must be a mapping with a 'name' (a registered model, "
                         f"see `translution models`), got {model_cfg!r}")
    overrides = {k: v for k, v in model_cfg.items() if k != "name"}
    return create_model(model_cfg["name"], **overrides)


def build(cfg: RunConfig) -> Tuple[nn.Module, Any, Any, Any]:
    """``(model, task, train_batches, eval_batches)``; for text data the model's ``vocab_size``
    defaults to the corpus vocabulary."""
    model_cfg = dict(cfg.model)
    if _dataset_kind(cfg) in TEXT_DATASETS and "vocab_size" not in model_cfg:
        from .data.text import read_meta
        model_cfg["vocab_size"] = int(read_meta(text_dir(cfg))["vocab_size"])
    model = build_model(model_cfg)
    return (model, *build_task_and_batches(cfg, model))


def _dataset_kind(cfg: RunConfig) -> str:
    if cfg.data.dataset is None:
        raise ValueError(f"data.dataset is not set; expected one of "
                         f"{IMAGE_DATASETS + TEXT_DATASETS}")
    return cfg.data.dataset


def _subset(pair, size):
    return pair if size is None else (pair[0][:size], pair[1][:size])


def _digits(cfg: RunConfig, kind: str):
    from .data.dynamic_mnist import DynamicMNIST
    from .data.mnist import load_fashion_mnist, load_mnist
    data = cfg.data
    load = load_fashion_mnist if kind == "fashion-mnist" else load_mnist
    train = _subset(load("train", root=data.root), data.train_size)
    test = _subset(load("test", root=data.root), data.test_size)
    canvas = data.canvas or (42 if kind == "dynamic-mnist" else 28)
    train_set = DynamicMNIST(*train, canvas=canvas, patch=data.patch, placement=data.placement,
                             seed=cfg.train.seed)
    test_set = DynamicMNIST(*test, canvas=canvas, patch=data.patch,
                            placement=data.test_placement or data.placement, seed=data.test_seed)
    return train_set, test_set


def _image_folder(cfg: RunConfig):
    from .data.imagefolder import MixUpCutMix, image_folder
    data = cfg.data
    root = Path(data.root)
    train_set = image_folder(root / "train", True, data.img_size, data.resize, data.randaugment)
    test_set = image_folder(root / "val", False, data.img_size, data.resize, data.randaugment)
    mix = None
    if data.mixup or data.cutmix:
        mix = MixUpCutMix(len(train_set.classes), data.mixup, data.cutmix)
    return train_set, test_set, mix


def text_dir(cfg: RunConfig) -> Path:
    """The token folder of a ``text`` or ``austen`` config (preparing Austen if needed)."""
    data = cfg.data
    if data.dataset == "text":
        return Path(data.dir)
    from .data.austen import austen_corpus
    from .data.text import default_cache_root, prepare_corpus, read_meta
    out = Path(data.dir or default_cache_root() / f"austen-{data.tokenizer}")
    try:
        read_meta(out)
    except (FileNotFoundError, ValueError):
        train_texts, val_texts = austen_corpus(data.val_novel)
        prepare_corpus(train_texts, val_texts, out, tokenizer=data.tokenizer)
    return out


def build_task_and_batches(cfg: RunConfig, model: Optional[nn.Module] = None
                           ) -> Tuple[Any, Any, Any]:
    """``(task, train_batches, eval_batches)`` for ``cfg`` (see the module docstring)."""
    kind = _dataset_kind(cfg)
    tc, data = cfg.train, cfg.data
    eval_batch = tc.eval_batch_size or tc.batch_size
    if kind in TEXT_DATASETS:
        from .data.text import TokenDataset
        folder = text_dir(cfg)
        train, val = TokenDataset(folder, "train"), TokenDataset(folder, "val")
        block = data.block_size or getattr(getattr(model, "config", None), "block_size", 256)
        vocab = getattr(getattr(model, "config", None), "vocab_size", None)
        if vocab is not None and train.vocab_size > vocab:
            raise ValueError(f"the corpus in {folder} has {train.vocab_size} token ids but the "
                             f"model's vocab_size is {vocab}; set model.vocab_size="
                             f"{train.vocab_size}")
        train_batches = WindowBatches(token_windows(train.data, block), tc.batch_size,
                                      data.steps_per_epoch, seed=tc.seed)
        eval_batches = WindowBatches(token_windows(val.data, block), eval_batch,
                                     data.eval_iters, seed=tc.seed + 10_000)
        return LanguageModelTask(), train_batches, eval_batches
    mix = None
    if kind == "imagefolder":
        train_set, test_set, mix = _image_folder(cfg)
    else:
        train_set, test_set = _digits(cfg, kind)
    train_batches = DatasetBatches(train_set, tc.batch_size, shuffle=True, seed=tc.seed,
                                   drop_last=True, num_workers=tc.num_workers,
                                   batch_transform=mix)
    eval_batches = DatasetBatches(test_set, eval_batch, shuffle=False, even_shards=False,
                                  num_workers=tc.num_workers)
    return ClassificationTask(), train_batches, eval_batches


def tokenizer_meta(cfg: RunConfig) -> Optional[dict]:
    """The tokenizer meta of a text config (stored in its checkpoints), else ``None``."""
    if _dataset_kind(cfg) not in TEXT_DATASETS:
        return None
    from .data.text import read_meta
    return read_meta(text_dir(cfg))["tokenizer"]


def model_for_checkpoint(path, map_location="cpu") -> Tuple[nn.Module, RunConfig, dict]:
    """Rebuild the model of a checkpoint from its ``model_config`` and load its weights.

    Checkpoints written before ``model_config`` existed fall back to the run config's ``model``
    section (and, for text without ``model.vocab_size``, to the corpus' vocabulary).

    Returns:
        ``(model in eval mode, run config, checkpoint dict)``.

    Raises:
        ValueError: The file is no valid checkpoint, or it describes no model.
    """
    from .models import model_from_config
    from .train import load_checkpoint
    obj = load_checkpoint(path, map_location=map_location)
    cfg = RunConfig.from_dict(obj["config"]) if obj.get("config") else RunConfig()
    if obj["model_config"] is not None:
        model = model_from_config(obj["model_config"])
    elif cfg.model:
        model_cfg = dict(cfg.model)
        if "vocab_size" not in model_cfg and cfg.data.dataset in TEXT_DATASETS:
            from .data.text import read_meta
            model_cfg["vocab_size"] = int(read_meta(text_dir(cfg))["vocab_size"])
        model = build_model(model_cfg)
    else:
        raise ValueError(f"{path}: the checkpoint holds neither a model_config nor a run config "
                         f"naming its model; expected one written by `translution train`, an "
                         f"experiment or save_checkpoint")
    try:
        model.load_state_dict(obj["model"])
    except RuntimeError as e:
        raise ValueError(f"{path}: the weights do not fit the model the checkpoint "
                         f"describes: {e}") from e
    return model.eval(), cfg, obj
