"""Token files on disk (the nanoGPT-style text pipeline).

A prepared corpus is a directory holding

* ``train.bin`` and ``val.bin``: the token ids of each split, concatenated, as raw little-endian
  ``np.uint16`` when the vocabulary has fewer than 65,536 entries and ``np.uint32`` otherwise
  (byte-compatible with nanoGPT's ``train.bin`` / ``val.bin``);
* ``meta.json``: the tokenizer (kind, and the vocabulary for the character tokenizer), the dtype,
  the vocabulary size and, per split, the token count, the byte size and the SHA-256 of the file.

:func:`prepare_corpus` writes such a directory from in-memory texts; :func:`write_tokens` streams
token arrays into one split file (used for corpora too big for memory, e.g. OpenWebText).
:class:`TokenDataset` memory-maps a split after checking it against ``meta.json``; training draws
random windows from it with :func:`translution.train.token_windows`. Every file is written
atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np
import torch

from ..utils import atomic_write, atomic_write_json, check_int, sha256_file
from ..utils import atomic_write_bytes  # noqa: F401 - old import path of experiments/austen.py
from .fetch import default_cache_dir as default_cache_root  # noqa: F401 - old import path
from .tokenizers import CharTokenizer, GPT2Tokenizer, Tokenizer, tokenizer_from_meta

PathLike = Union[str, "os.PathLike[str]"]
IdsLike = Union[Sequence[int], np.ndarray, torch.Tensor]

META_FORMAT = "translution-tokens"
META_VERSION = 1
_VERIFY_CACHE_SUFFIX = ".verified.json"


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest on-disk dtype for a vocabulary: ``uint16`` below 65,536 entries, else ``uint32``.

    Args:
        vocab_size: Number of token ids (ids are ``0 .. vocab_size - 1``), in ``1 .. 2**32``.

    Returns:
        ``np.dtype('<u2')`` or ``np.dtype('<u4')`` (little-endian).
    """
    vocab_size = check_int("vocab_size", vocab_size, 1)
    if vocab_size > 2**32:
        raise ValueError(f"vocab_size must be in [1, 2**32], got {vocab_size}")
    return np.dtype("<u2") if vocab_size < 2**16 else np.dtype("<u4")


def _checked_ids(ids: IdsLike, vocab_size: int) -> np.ndarray:
    """``ids`` as a 1-D integer array with every id in ``[0, vocab_size)``."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"token ids must be 1-D, got shape {tuple(arr.shape)}")
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"token ids must be integers, got dtype {arr.dtype}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= vocab_size):
        raise ValueError(f"token ids must be in [0, {vocab_size}), found range "
                         f"[{int(arr.min())}, {int(arr.max())}]")
    return arr


def write_tokens(path: PathLike, vocab_size: int, chunks: Iterable[IdsLike]) -> dict[str, Any]:
    """Write token-id chunks, concatenated, into one split file, atomically.

    The file only appears at ``path`` once every chunk is written (an error leaves no file).

    Args:
        path: Destination ``.bin`` file.
        vocab_size: Fixes the dtype (:func:`token_dtype`) and the id range check.
        chunks: 1-D sequences of token ids, each id in ``[0, vocab_size)``.

    Returns:
        The ``meta.json`` entry of the split: file name, tokens, bytes and sha256.
    """
    path, dtype, digest, count = Path(path), token_dtype(vocab_size), hashlib.sha256(), 0

    def write(f) -> None:
        nonlocal count
        for ids in chunks:
            data = _checked_ids(ids, vocab_size).astype(dtype, copy=False).tobytes()
            f.write(data)
            digest.update(data)
            count += len(data) // dtype.itemsize

    atomic_write(path, write)
    path.with_name(f".{path.name}{_VERIFY_CACHE_SUFFIX}").unlink(missing_ok=True)
    return {"file": path.name, "tokens": count, "bytes": count * dtype.itemsize,
            "sha256": digest.hexdigest()}


def write_meta(out_dir: PathLike, tokenizer: Tokenizer, splits: Mapping[str, Mapping[str, Any]],
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``meta.json`` of a prepared corpus (atomically) and return it.

    Args:
        out_dir: Corpus folder.
        tokenizer: The tokenizer that produced the ids.
        splits: ``{split: write_tokens(...)}`` (plus any extra per-split fields).
        extra: Further top-level fields (e.g. the source and document counts).
    """
    meta: dict[str, Any] = {
        "format": META_FORMAT, "version": META_VERSION, "tokenizer": tokenizer.to_meta(),
        "vocab_size": int(tokenizer.vocab_size), "dtype": token_dtype(tokenizer.vocab_size).name,
        "splits": {k: dict(v) for k, v in splits.items()}}
    clash = sorted(set(extra or {}) & set(meta))
    if clash:
        raise ValueError(f"extra meta keys {clash} collide with reserved keys")
    meta.update(extra or {})
    atomic_write_json(Path(out_dir) / "meta.json", meta)
    return meta


def _resolve_tokenizer(tokenizer: Union[str, Tokenizer], texts_train: Sequence[str],
                       texts_val: Sequence[str], char_vocab_from: str, separator: str
                       ) -> Tokenizer:
    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    if not isinstance(tokenizer, str):
        raise TypeError("tokenizer must be 'char', 'gpt2' or a Tokenizer instance, got "
                        f"{type(tokenizer).__name__}")
    if tokenizer == "char":
        if char_vocab_from not in ("train", "all"):
            raise ValueError(f"char_vocab_from must be 'train' or 'all', got {char_vocab_from!r}")
        extra = list(texts_val) if char_vocab_from == "all" else []
        return CharTokenizer.from_texts(list(texts_train) + extra + [separator])
    if tokenizer == "gpt2":
        return GPT2Tokenizer()
    raise ValueError(f"tokenizer must be 'char' or 'gpt2', got {tokenizer!r}")


def _check_texts(name: str, texts: Any) -> list[str]:
    """``texts`` as a list of str that UTF-8 can store (no lone surrogate)."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{name} must be a list of str, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] must be str, got {type(t).__name__}")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{name}[{i}] has a lone surrogate {t[exc.start]!r} at position "
                             f"{exc.start}; expected text that UTF-8 can encode") from None
    return list(texts)


def _document_ids(tok: Tokenizer, texts: Sequence[str], separator: str, append_eot: bool
                  ) -> Iterable[np.ndarray]:
    """Token ids of ``texts``, with ``separator`` between and end-of-text after documents."""
    for i, text in enumerate(texts):
        if i and separator:
            yield tok.encode_array(separator)
        yield tok.encode_array(text)
        if append_eot:
            yield np.array([tok.eot_token], dtype=np.int64)


def prepare_corpus(texts_train: Sequence[str], texts_val: Sequence[str], out_dir: PathLike,
                   tokenizer: Union[str, Tokenizer] = "char", *, separator: str | None = None,
                   append_eot: bool | None = None, char_vocab_from: str = "train",
                   extra_meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Tokenize texts and write ``train.bin``, ``val.bin`` and ``meta.json`` into ``out_dir``.

    Each split is the concatenation of its documents. With the GPT-2 tokenizer the end-of-text id
    (50256) is appended after every document, as in the OpenWebText recipe. With the character
    tokenizer documents are joined by ``separator`` (default ``"\\n\\n"``; there is no
    end-of-text symbol), and the vocabulary is the sorted set of characters of the training texts
    and of the separator (``char_vocab_from="all"`` adds the validation texts; a validation
    character outside the vocabulary raises ``ValueError``).

    An existing ``meta.json`` is removed first and written last, so an interrupted run never
    leaves a ``meta.json`` that describes other files.

    Args:
        texts_train: Training documents.
        texts_val: Validation documents.
        out_dir: Output folder (created).
        tokenizer: ``"char"``, ``"gpt2"``, or a ready tokenizer instance.
        separator: Text put between documents (default ``"\\n\\n"`` for char, none for gpt2).
        append_eot: Append the end-of-text id after each document (default: True for gpt2;
            an error for char, which has none).
        char_vocab_from: ``"train"`` (default) or ``"all"``.
        extra_meta: Additional top-level fields for ``meta.json``.

    Returns:
        The metadata dictionary written to ``meta.json``.

    Raises:
        TypeError: The texts are not lists of str, or ``tokenizer`` has the wrong type.
        ValueError: Unknown tokenizer name, characters outside the char vocabulary, etc.
    """
    texts_train = _check_texts("texts_train", texts_train)
    texts_val = _check_texts("texts_val", texts_val)
    if separator is None:
        is_char = tokenizer == "char" or isinstance(tokenizer, CharTokenizer)
        separator = "\n\n" if is_char else ""
    if not isinstance(separator, str):
        raise TypeError(f"separator must be str, got {type(separator).__name__}")
    tok = _resolve_tokenizer(tokenizer, texts_train, texts_val, char_vocab_from, separator)
    if append_eot is None:
        append_eot = tok.eot_token is not None
    if append_eot and tok.eot_token is None:
        raise ValueError(f"append_eot=True but the {tok.kind!r} tokenizer has no end-of-text id")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)
    split_meta = {split: write_tokens(out / f"{split}.bin", tok.vocab_size,
                                      _document_ids(tok, texts, separator, append_eot))
                  for split, texts in (("train", texts_train), ("val", texts_val))}
    docs = {"train": len(texts_train), "val": len(texts_val)}
    extra = {"documents": docs, "separator": separator, "append_eot": bool(append_eot)}
    if extra_meta:
        extra.update(extra_meta)
    return write_meta(out, tok, split_meta, extra)


def read_meta(data_dir: PathLike) -> dict[str, Any]:
    """Load and sanity-check ``meta.json`` of a prepared corpus.

    Raises:
        FileNotFoundError: No ``meta.json`` in ``data_dir``.
        ValueError: The file is not a translution token-corpus description.
    """
    path = Path(data_dir) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {data_dir} is not a prepared token corpus "
                                "(run prepare_corpus / prepare_openwebtext first)")
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 at byte {e.start} ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{path}: expected format {META_FORMAT!r}, found {found!r}")
    if meta.get("version") != META_VERSION:
        raise ValueError(f"{path}: expected version {META_VERSION}, found {meta.get('version')!r}")
    missing = [k for k in ("tokenizer", "vocab_size", "dtype", "splits") if k not in meta]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    expected_dtype = token_dtype(int(meta["vocab_size"])).name
    if meta["dtype"] != expected_dtype:
        raise ValueError(f"{path}: expected dtype {expected_dtype} for vocab_size "
                         f"{meta['vocab_size']}, found {meta['dtype']}")
    return meta


def _check_tokenizer_matches(meta: Mapping[str, Any], tokenizer: Tokenizer, where: str) -> None:
    kind = meta["tokenizer"].get("kind")
    if tokenizer.vocab_size != int(meta["vocab_size"]):
        raise ValueError(f"{where}: expected vocab_size {meta['vocab_size']} (from meta.json), "
                         f"found {tokenizer.vocab_size} for the given {tokenizer.kind} tokenizer")
    if tokenizer.kind != kind:
        raise ValueError(f"{where}: expected a {kind!r} tokenizer (from meta.json), found "
                         f"{tokenizer.kind!r}")
    if tokenizer.to_meta() != meta["tokenizer"]:
        raise ValueError(f"{where}: the given {kind} tokenizer differs from the one in meta.json "
                         "(same kind and vocab_size, different vocabulary)")


class TokenDataset:
    """One split of a prepared corpus, memory-mapped after verification.

    Checks, in order: ``meta.json`` exists and is well-formed; the split is listed; the file size
    equals ``tokens × itemsize``; (``verify=True``) the SHA-256 equals the recorded one; (when a
    tokenizer is given) its kind, vocabulary size and vocabulary match ``meta.json``. The digest
    check is remembered in ``.<split>.bin.verified.json`` next to the file, keyed by the file's
    size and mtime, so reopening an unchanged multi-gigabyte file is instant.

    Args:
        data_dir: Corpus folder written by :func:`prepare_corpus` (or OpenWebText preparation).
        split: ``"train"`` or ``"val"`` (any split listed in ``meta.json``).
        tokenizer: Optional tokenizer to check against ``meta.json``.
        verify: Check the SHA-256 of the file (default True).

    Attributes:
        data: Read-only ``np.memmap`` of shape ``(num_tokens,)`` (dtype uint16 or uint32).
        meta: The parsed ``meta.json``.
        vocab_size: Vocabulary size.

    Raises:
        FileNotFoundError: ``meta.json`` or the split file is missing.
        ValueError: Any mismatch; the message names the expected and found values.
    """

    def __init__(self, data_dir: PathLike, split: str = "train", *,
                 tokenizer: Tokenizer | None = None, verify: bool = True) -> None:
        self.data_dir, self.split = Path(data_dir), split
        self.meta = read_meta(self.data_dir)
        splits = self.meta["splits"]
        if split not in splits:
            raise ValueError(f"{self.data_dir}: expected split one of {sorted(splits)}, found "
                             f"{split!r}")
        info = splits[split]
        self.path = self.data_dir / info.get("file", f"{split}.bin")
        self.dtype = np.dtype(self.meta["dtype"]).newbyteorder("<")
        self.vocab_size, self.num_tokens = int(self.meta["vocab_size"]), int(info["tokens"])
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} not found (listed in meta.json)")
        expected, found = self.num_tokens * self.dtype.itemsize, self.path.stat().st_size
        if found != expected:
            raise ValueError(f"{self.path}: expected {expected} bytes ({self.num_tokens} tokens × "
                             f"{self.dtype.itemsize}), found {found}")
        if verify:
            self._verify_digest(info["sha256"])
        if tokenizer is not None:
            _check_tokenizer_matches(self.meta, tokenizer, str(self.path))
        self.data = (np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.num_tokens,))
                     if self.num_tokens else np.zeros(0, dtype=self.dtype))

    def _verify_digest(self, expected: str) -> None:
        cache = self.path.with_name(f".{self.path.name}{_VERIFY_CACHE_SUFFIX}")
        st = self.path.stat()
        key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": expected}
        try:
            if json.loads(cache.read_text()) == key:
                return
        except (OSError, ValueError):
            pass
        found = sha256_file(self.path)
        if found != expected:
            raise ValueError(f"{self.path}: expected sha256 {expected}, found {found}")
        try:
            atomic_write_json(cache, key)
        except OSError:  # read-only corpus folder: just re-hash next time
            pass

    def __len__(self) -> int:
        return self.num_tokens

    def tokenizer(self) -> Tokenizer:
        """The tokenizer recorded in ``meta.json`` (GPT-2 loads tiktoken's encoding)."""
        return tokenizer_from_meta(self.meta["tokenizer"])

    def __repr__(self) -> str:
        return (f"TokenDataset({str(self.data_dir)!r}, split={self.split!r}, "
                f"tokens={self.num_tokens}, vocab_size={self.vocab_size}, dtype={self.dtype.name})")
