"""OpenWebText -> GPT-2 token files, token for token as nanoGPT's ``prepare.py`` makes them: HF
``"openwebtext"`` split by ``train_test_split(test_size=0.0005, seed=2357)``, each document
``encode_ordinary`` plus end-of-text, each split a ``uint16`` file."""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

from ..utils import PathLike, check_int, require
from .text import write_corpus
from .tokenizers import GPT2Tokenizer


OWT_VAL_FRACTION = 0.0005
OWT_SEED = 2357


def split_indices(n_docs: int, val_fraction: float = OWT_VAL_FRACTION, seed: int = OWT_SEED
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)`` as ``datasets.train_test_split`` draws them: val is
    ``default_rng(seed).permutation(N)[:ceil(val_fraction · N)]``, train the rest."""
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


def prepare_openwebtext(out_dir: PathLike, *, documents: Sequence[str] | None = None,
                        tokenizer: GPT2Tokenizer | None = None,
                        val_fraction: float = OWT_VAL_FRACTION, seed: int = OWT_SEED,
                        batch_docs: int = 1024, num_proc: int | None = 8, progress: bool = True
                        ) -> dict[str, Any]:
    """Write ``train.bin``, ``val.bin`` and ``meta.json`` into ``out_dir`` from ``documents``: a
    sequence of str, a HF ``Dataset`` (``"text"`` column) or ``None``: ``datasets.load_dataset(
    "openwebtext", num_proc=num_proc)["train"]`` (internet, ~54 GB of cache; recent ``datasets``
    need ``documents=load_dataset("Skylion007/openwebtext", ...)["train"]``)."""
    source_name = "documents" if documents is not None else "openwebtext (Hugging Face datasets)"
    if documents is None:
        documents = require("datasets").load_dataset("openwebtext", num_proc=num_proc)["train"]
    if isinstance(documents, str) or not hasattr(documents, "__getitem__"):
        raise TypeError(f"documents must be a sequence of str or a datasets.Dataset, got "
                        f"{type(documents).__name__}")
    batch_docs = check_int("batch_docs", batch_docs, 1)
    tok = tokenizer if tokenizer is not None else GPT2Tokenizer()
    if not isinstance(tok, GPT2Tokenizer):
        raise TypeError(f"tokenizer must be a GPT2Tokenizer, got {type(tok).__name__}")
    if tok.vocab_size >= 2**16:
        raise ValueError(f"the recipe stores uint16 ids: expected vocab_size < 65536, found "
                         f"{tok.vocab_size}")
    if tok.eot_token is None:
        raise ValueError("the recipe appends end-of-text ids, but the tokenizer has none")
    splits = dict(zip(("train", "val"), split_indices(len(documents), val_fraction, seed)))

    def chunks(split: str) -> Iterable[np.ndarray]:
        starts = range(0, len(splits[split]), batch_docs)
        if progress:
            from tqdm.auto import tqdm  # the ``train`` extra
            starts = tqdm(starts, desc=f"tokenizing {split}", unit="batch")
        for s in starts:
            yield tokenize_documents(_texts(documents, splits[split][s:s + batch_docs]), tok)

    return write_corpus(out_dir, tok, {k: (len(v), chunks(k)) for k, v in splits.items()}, {
        "source": source_name, "val_fraction": val_fraction, "seed": seed, "append_eot": True})
