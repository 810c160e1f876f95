"""OpenWebText → GPT-2 token files, as nanoGPT's ``prepare.py`` makes them.

The recipe: Hugging Face ``datasets``' ``"openwebtext"`` (8,013,769 documents), split by
``train_test_split(test_size=0.0005, seed=2357, shuffle=True)`` (the test part is ``val``), each
document encoded with GPT-2's ``encode_ordinary`` plus the end-of-text id 50256, each split
concatenated into a ``uint16`` file. :func:`split_indices` reproduces that split exactly, so the
files match nanoGPT's token for token, plus a ``meta.json`` (:mod:`translution.data.text`).
Documents and tokenizer can be injected, so tests run the whole path on a tiny corpus;
``datasets`` (not a dependency) is imported only for the real corpus.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import numpy as np

from ..utils import check_int
from .text import write_meta, write_tokens
from .tokenizers import GPT2Tokenizer

PathLike = Union[str, "os.PathLike[str]"]

OWT_VAL_FRACTION = 0.0005
OWT_SEED = 2357


def split_indices(n_docs: int, val_fraction: float = OWT_VAL_FRACTION, seed: int = OWT_SEED
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)`` as ``datasets.train_test_split`` draws them: ``n_val =
    ceil(val_fraction · N)``, ``perm = default_rng(seed).permutation(N)``, val = ``perm[:n_val]``.

    Raises:
        TypeError: ``n_docs`` is not an int.
        ValueError: ``val_fraction`` outside ``(0, 1)``, or an empty split.
    """
    n_docs = check_int("n_docs", n_docs, 0)
    if not isinstance(val_fraction, float) or not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be a float in (0, 1), got {val_fraction!r}")
    n_val = math.ceil(val_fraction * n_docs)
    if n_val < 1 or n_docs - n_val < 1:
        raise ValueError(f"expected at least 1 train and 1 val document, found {n_docs - n_val} "
                         f"train and {n_val} val from {n_docs} documents with val_fraction "
                         f"{val_fraction}")
    perm = np.random.default_rng(seed).permutation(n_docs).astype(np.int64)
    return perm[n_val:], perm[:n_val]


def load_openwebtext_documents(name: str = "openwebtext", num_proc: int | None = 8,
                               **load_kwargs: Any):
    """``datasets.load_dataset(name, num_proc=num_proc, **load_kwargs)["train"]`` (internet,
    ~54 GB of cache; recent ``datasets`` may need ``name="Skylion007/openwebtext"``)."""
    try:
        from datasets import load_dataset
    except ImportError as e:
        raise ImportError("preparing the real OpenWebText needs Hugging Face `datasets` (not a "
                          "dependency of translution): pip install datasets  — or pass "
                          "documents=... to prepare_openwebtext") from e
    ds = load_dataset(name, num_proc=num_proc, **load_kwargs)
    return ds["train"] if hasattr(ds, "keys") and "train" in ds.keys() else ds


def tokenize_documents(texts: Sequence[str], tokenizer: GPT2Tokenizer) -> np.ndarray:
    """GPT-2 ids of ``texts``, each followed by the end-of-text id, int64 ``(total,)``."""
    parts = tokenizer.encode_batch(texts)
    return np.array([t for p in parts for t in (*p, tokenizer.eot_token)], dtype=np.int64)


def _texts(source: Any, idx: np.ndarray) -> list[str]:
    """Texts at ``idx`` of a sequence of str or a ``datasets.Dataset`` (``"text"`` column)."""
    if hasattr(source, "select") and hasattr(source, "column_names"):
        texts = source.select(idx.tolist())["text"]
    else:
        texts = [source[int(i)] for i in idx]
    for i, t in zip(idx, texts):
        if not isinstance(t, str):
            raise TypeError(f"document {int(i)} must be str, got {type(t).__name__}")
    return list(texts)


def prepare_openwebtext(out_dir: PathLike, *,
                        documents: Union[Sequence[str], Iterable[str], Callable[[], Any],
                                         None] = None,
                        tokenizer: GPT2Tokenizer | None = None,
                        val_fraction: float = OWT_VAL_FRACTION, seed: int = OWT_SEED,
                        batch_docs: int = 1024, num_proc: int | None = 8, progress: bool = True,
                        dataset_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``train.bin``, ``val.bin`` (uint16 GPT-2 ids, end-of-text after each document) and
    ``meta.json`` (removed first, written last) into ``out_dir``.

    Args:
        documents: A sequence of str or an HF ``Dataset`` with a ``"text"`` column, an iterable
            (materialised), or a callable returning one; ``None`` loads the real corpus
            (:func:`load_openwebtext_documents` with ``num_proc`` and ``dataset_kwargs``).
        tokenizer: Default GPT-2's.
        val_fraction, seed: The split (0.0005 and 2357 in the recipe).
        batch_docs: Documents tokenized per batch.
        progress: tqdm progress bars.

    Returns:
        The metadata written to ``meta.json``.

    Raises:
        ImportError: ``documents=None`` without ``datasets``.
        TypeError: A document is not a str, or the tokenizer is not a :class:`GPT2Tokenizer`.
        ValueError: A vocabulary beyond uint16, or an empty split.
    """
    source_name = "documents"
    if documents is None:
        documents = load_openwebtext_documents(num_proc=num_proc, **dict(dataset_kwargs or {}))
        source_name = "openwebtext (Hugging Face datasets)"
    elif callable(documents) and not hasattr(documents, "__len__"):
        documents = documents()
    if isinstance(documents, str):
        raise TypeError("documents must be a sequence of str, got a single str")
    if not hasattr(documents, "__len__") or not hasattr(documents, "__getitem__"):
        documents = list(documents)
    batch_docs = check_int("batch_docs", batch_docs, 1)
    tok = tokenizer if tokenizer is not None else GPT2Tokenizer()
    if not isinstance(tok, GPT2Tokenizer):
        raise TypeError(f"tokenizer must be a GPT2Tokenizer, got {type(tok).__name__}")
    if tok.vocab_size >= 2**16:
        raise ValueError(f"the recipe stores uint16 ids: expected vocab_size < 65536, found "
                         f"{tok.vocab_size}")
    if tok.eot_token is None:
        raise ValueError("the recipe appends end-of-text ids, but the tokenizer has none")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)
    splits = dict(zip(("train", "val"), split_indices(len(documents), val_fraction, seed)))
    meta: dict[str, Any] = {}
    for split, idx in splits.items():
        starts = range(0, len(idx), batch_docs)
        if progress:
            from tqdm.auto import tqdm  # the ``train`` extra
            starts = tqdm(starts, desc=f"tokenizing {split}", unit="batch")
        chunks = (tokenize_documents(_texts(documents, idx[s:s + batch_docs]), tok)
                  for s in starts)
        meta[split] = dict(write_tokens(out / f"{split}.bin", tok.vocab_size, chunks),
                           documents=len(idx))
    return write_meta(out, tok, meta, {
        "source": source_name, "val_fraction": val_fraction, "seed": seed,
        "documents": {k: len(v) for k, v in splits.items()}, "append_eot": True})
