"""OpenWebText → GPT-2 BPE token files, as in the reference recipe (nanoGPT's ``prepare.py``).

The recipe: load Hugging Face ``datasets``' ``"openwebtext"`` (8,013,769 documents), split it with
``train_test_split(test_size=0.0005, seed=2357, shuffle=True)`` (the test part becomes ``val``),
encode each document with ``tiktoken``'s GPT-2 ``encode_ordinary`` and append the end-of-text id
50256, and concatenate each split into a ``uint16`` file (``train.bin`` ≈ 9.0 B tokens,
``val.bin`` ≈ 4.4 M tokens).

:func:`prepare_openwebtext` does the same with an injectable document source, so the whole path
runs in tests on a tiny generated corpus: ``documents`` may be any sized sequence of strings
(an iterable without ``len`` is materialised into a list), and ``tokenizer`` any
:class:`~translution.data.tokenizers.GPT2Tokenizer` (tests pass a small ``tiktoken.Encoding``).
The split is computed by :func:`split_indices`, which reproduces ``datasets``'
``train_test_split`` exactly (``n_val = ceil(val_fraction · n)``; ``perm =
np.random.default_rng(seed).permutation(n)``; val = ``perm[:n_val]``, train = ``perm[n_val:]``,
each in permutation order), so with the real corpus the files match nanoGPT's token for token.
The output is byte-compatible with nanoGPT's files and adds ``meta.json`` (see
:mod:`translution.data.text`), so :class:`~translution.data.text.TokenDataset` can open it.

``datasets`` is imported only when the real source is requested (``documents=None``); it is not a
dependency of this package, and the OpenWebText download needs internet (~54 GB of cache).
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
    """Document indices of the train and validation splits (``datasets.train_test_split``).

    Args:
        n_docs: Number of documents ``N``.
        val_fraction: Fraction for validation, in ``(0, 1)``; ``ceil(val_fraction · N)`` docs.
        seed: Seed of ``np.random.default_rng``.

    Returns:
        ``(train_idx, val_idx)``: int64 arrays of shapes ``(N - n_val,)`` and ``(n_val,)``, in
        the order the documents are written.

    Raises:
        TypeError: ``n_docs`` is not an int.
        ValueError: ``val_fraction`` outside ``(0, 1)``, or a split would be empty.
    """
    n_docs = check_int("n_docs", n_docs, 0)
    if not isinstance(val_fraction, float) or not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be a float in (0, 1), got {val_fraction!r}")
    n_val = math.ceil(val_fraction * n_docs)
    n_train = n_docs - n_val
    if n_val < 1 or n_train < 1:
        raise ValueError(f"expected at least 1 train and 1 val document, found {n_train} train "
                         f"and {n_val} val from {n_docs} documents with val_fraction "
                         f"{val_fraction}")
    perm = np.random.default_rng(seed).permutation(int(n_docs)).astype(np.int64)
    return perm[n_val:], perm[:n_val]


def load_openwebtext_documents(name: str = "openwebtext", num_proc: int | None = 8,
                               **load_kwargs: Any):
    """The real corpus: ``datasets.load_dataset(name, num_proc=num_proc)["train"]``.

    Needs the ``datasets`` package and internet (about 54 GB of download/cache). Recent
    ``datasets`` versions may need ``name="Skylion007/openwebtext"`` or extra ``load_kwargs``
    (e.g. ``trust_remote_code=True``); they are passed through.

    Returns:
        A ``datasets.Dataset`` with a ``"text"`` column.

    Raises:
        ImportError: ``datasets`` is not installed (the message says how to install it).
    """
    try:
        import datasets  # noqa: F401
    except ImportError as e:
        raise ImportError("preparing the real OpenWebText needs Hugging Face `datasets` (not a "
                          "dependency of translution): pip install datasets  — or pass "
                          "documents=... to prepare_openwebtext") from e
    from datasets import load_dataset

    ds = load_dataset(name, num_proc=num_proc, **load_kwargs)
    return ds["train"] if hasattr(ds, "keys") and "train" in ds.keys() else ds


def _fetch_texts(source: Any, idx: np.ndarray) -> list[str]:
    """Texts at ``idx`` from a sequence of str or a ``datasets.Dataset`` (``"text"`` column)."""
    if hasattr(source, "select") and hasattr(source, "column_names"):  # datasets.Dataset
        texts = source.select(idx.tolist())["text"]
    else:
        texts = [source[int(i)] for i in idx]
    for j, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"document {int(idx[j])} must be str, got {type(t).__name__}")
    return list(texts)


def tokenize_documents(texts: Sequence[str], tokenizer: GPT2Tokenizer, append_eot: bool = True
                       ) -> np.ndarray:
    """GPT-2 ids of several documents, each followed by the end-of-text id, concatenated.

    Args:
        texts: Documents.
        tokenizer: The BPE tokenizer (``encode_ordinary``, multithreaded).
        append_eot: Append ``tokenizer.eot_token`` after each document (the recipe does).

    Returns:
        int64 array of shape ``(sum of document lengths + len(texts),)``.
    """
    if append_eot and tokenizer.eot_token is None:
        raise ValueError("append_eot=True but the tokenizer has no end-of-text token")
    parts: list[list[int]] = tokenizer.encode_batch(texts)
    for p in parts if append_eot else []:
        p.append(tokenizer.eot_token)
    return np.fromiter((t for p in parts for t in p), dtype=np.int64,
                       count=sum(len(p) for p in parts))


def prepare_openwebtext(out_dir: PathLike, *,
                        documents: Union[Sequence[str], Iterable[str], Callable[[], Any],
                                         None] = None,
                        tokenizer: GPT2Tokenizer | None = None,
                        val_fraction: float = OWT_VAL_FRACTION, seed: int = OWT_SEED,
                        batch_docs: int = 1024, num_proc: int | None = 8, progress: bool = True,
                        dataset_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``train.bin``, ``val.bin`` (uint16 GPT-2 ids, eot after each document), ``meta.json``.

    Args:
        out_dir: Output folder (created). An existing ``meta.json`` is removed first and
            written last.
        documents: The corpus: a sequence of str (or an HF ``Dataset`` with a ``"text"``
            column), an iterable (materialised), or a zero-argument callable returning one.
            ``None`` loads the real OpenWebText with :func:`load_openwebtext_documents`
            (needs ``datasets`` and internet).
        tokenizer: Default: the real GPT-2 encoding (:class:`GPT2Tokenizer`).
        val_fraction: Validation fraction (0.0005 in the recipe).
        seed: Split seed (2357 in the recipe).
        batch_docs: Documents tokenized per batch.
        num_proc: Processes for ``load_dataset`` (real source only); tokenization uses
            ``tokenizer.num_threads`` threads.
        progress: Show tqdm progress bars.
        dataset_kwargs: Extra keyword arguments for :func:`load_openwebtext_documents`.

    Returns:
        The metadata written to ``meta.json`` (token counts per split, digests, ...).

    Raises:
        ImportError: ``documents=None`` and ``datasets`` is missing.
        TypeError: A document is not a str.
        ValueError: The vocabulary does not fit uint16, or a split would be empty.
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

    n_docs = len(documents)
    train_idx, val_idx = split_indices(n_docs, val_fraction, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)
    split_meta: dict[str, dict[str, Any]] = {}
    for split, idx in (("train", train_idx), ("val", val_idx)):
        starts = range(0, len(idx), batch_docs)
        if progress:
            from tqdm.auto import tqdm  # the ``train`` extra; only for the progress bar
            starts = tqdm(starts, desc=f"tokenizing {split}", unit="batch")
        chunks = (tokenize_documents(_fetch_texts(documents, idx[s:s + batch_docs]), tok)
                  for s in starts)
        split_meta[split] = dict(write_tokens(out / f"{split}.bin", tok.vocab_size, chunks),
                                 documents=int(len(idx)))
    extra = {"source": source_name, "val_fraction": val_fraction, "seed": seed,
             "documents": {"train": int(len(train_idx)), "val": int(len(val_idx))},
             "append_eot": True}
    return write_meta(out, tok, split_meta, extra)
