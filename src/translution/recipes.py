"""From a :class:`~translution.train.RunConfig` to a model, a task and batch sources."""

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
        raise ValueError(f"model.name is not set; expected a registered model (see `translution "
                         f"models`), e.g. model.name=vit_mnist_translution; got {model_cfg!r}")
    return create_model(model_cfg["name"], **{k: v for k, v in model_cfg.items() if k != "name"})


def _model_section(cfg: RunConfig) -> Dict[str, Any]:
    """``cfg.model``, whose ``vocab_size`` defaults to the corpus' for text data."""
    model_cfg = dict(cfg.model)
    if cfg.data.dataset in TEXT_DATASETS and "name" in model_cfg and "vocab_size" not in model_cfg:
        from .data.text import read_meta
        model_cfg["vocab_size"] = int(read_meta(text_dir(cfg))["vocab_size"])
    return model_cfg


def build(cfg: RunConfig) -> Tuple[nn.Module, Any, Any, Any]:
    """``(model, task, train_batches, eval_batches)``."""
    model = build_model(_model_section(cfg))
    return (model, *build_task_and_batches(cfg, model))


def _image_sets(cfg: RunConfig, kind: str) -> Tuple[Any, Any, Any]:
    """``(train_set, test_set, batch_transform)`` of an image data set."""
    data = cfg.data
    if kind == "imagefolder":
        from .data.imagefolder import MixUpCutMix, image_folder
        root = Path(data.root)
        train_set, test_set = (image_folder(root / split, split == "train", data.img_size,
                                            data.resize, data.randaugment)
                               for split in ("train", "val"))
        mix = (MixUpCutMix(len(train_set.classes), data.mixup, data.cutmix)
               if data.mixup or data.cutmix else None)
        return train_set, test_set, mix
    from .data.dynamic_mnist import DynamicMNIST
    from .data.mnist import load_fashion_mnist, load_mnist
    load = load_fashion_mnist if kind == "fashion-mnist" else load_mnist
    canvas = data.canvas or (42 if kind == "dynamic-mnist" else 28)
    sets = []
    for split, size, placement, seed in (
            ("train", data.train_size, data.placement, cfg.train.seed),
            ("test", data.test_size, data.test_placement or data.placement, data.test_seed)):
        images, labels = load(split, root=data.root)
        sets.append(DynamicMNIST(images[:size], labels[:size], canvas=canvas, patch=data.patch,
                                 placement=placement, seed=seed))
    return sets[0], sets[1], None


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
        prepare_corpus(*austen_corpus(data.val_novel), out, tokenizer=data.tokenizer)
    return out


def build_task_and_batches(cfg: RunConfig, model: Optional[nn.Module] = None
                           ) -> Tuple[Any, Any, Any]:
    """``(task, train_batches, eval_batches)`` for ``cfg``."""
    kind, tc, data = cfg.data.dataset, cfg.train, cfg.data
    if kind is None:
        raise ValueError(f"data.dataset is not set; expected one of "
                         f"{IMAGE_DATASETS + TEXT_DATASETS}")
    eval_batch = tc.eval_batch_size or tc.batch_size
    if kind in IMAGE_DATASETS:
        train_set, test_set, mix = _image_sets(cfg, kind)
        train = DatasetBatches(train_set, tc.batch_size, shuffle=True, seed=tc.seed,
                               drop_last=True, num_workers=tc.num_workers, batch_transform=mix)
        test = DatasetBatches(test_set, eval_batch, shuffle=False, even_shards=False,
                              num_workers=tc.num_workers)
        return ClassificationTask(), train, test
    from .data.text import TokenDataset
    folder = text_dir(cfg)
    train, val = TokenDataset(folder, "train"), TokenDataset(folder, "val")
    model_cfg = getattr(model, "config", None)
    block = data.block_size or getattr(model_cfg, "block_size", 256)
    vocab = getattr(model_cfg, "vocab_size", None)
    if vocab is not None and train.vocab_size > vocab:
        raise ValueError(f"the corpus in {folder} has {train.vocab_size} token ids but the "
                         f"model's vocab_size is {vocab}; set model.vocab_size="
                         f"{train.vocab_size}")
    return (LanguageModelTask(),
            WindowBatches(token_windows(train.data, block), tc.batch_size, data.steps_per_epoch,
                          seed=tc.seed),
            WindowBatches(token_windows(val.data, block), eval_batch, data.eval_iters,
                          seed=tc.seed + 10_000))


def tokenizer_meta(cfg: RunConfig) -> Optional[dict]:
    """The tokenizer meta of a text config (stored in its checkpoints), else ``None``."""
    if cfg.data.dataset not in TEXT_DATASETS:
        return None
    from .data.text import read_meta
    return read_meta(text_dir(cfg))["tokenizer"]


def model_for_checkpoint(path) -> Tuple[nn.Module, RunConfig, dict]:
    """``(model in eval mode, run config, checkpoint dict)``: the model rebuilt from the
    checkpoint's ``model_config`` (older files: the run config's ``model``) with its weights."""
    from .models import model_from_config
    from .train import load_checkpoint
    obj = load_checkpoint(path)
    cfg = RunConfig.from_dict(obj["config"])                  # None: the defaults
    if obj["model_config"] is not None:
        model = model_from_config(obj["model_config"])
    elif cfg.model:
        model = build_model(_model_section(cfg))
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
