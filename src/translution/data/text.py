"""Token files on disk, nanoGPT-style: a corpus folder holds ``<split>.bin`` (ids concatenated,
little-endian ``uint16`` below 65,536 ids, else ``uint32``) and ``meta.json`` (tokenizer, dtype,
per split tokens, bytes, SHA-256), all written atomically."""
from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np
import torch

from ..utils import PathLike, atomic_write, atomic_write_json, check_int, sha256_file
from .fetch import default_cache_dir as default_cache_root  # noqa: F401 - used by the experiments
from .tokenizers import CharTokenizer, GPT2Tokenizer, Tokenizer, tokenizer_from_meta

IdsLike = Union[Sequence[int], np.ndarray, torch.Tensor]

META_FORMAT = "translution-tokens"
META_VERSION = 1


def token_dtype(vocab_size: int) -> np.dtype:
    """``<u2`` for fewer than 65,536 ids, else ``<u4`` (``vocab_size`` in ``1 .. 2**32``)."""
    vocab_size = check_int("vocab_size", vocab_size, 1)
    if vocab_size > 2**32:
        raise ValueError(f"vocab_size must be in [1, 2**32], got {vocab_size}")
    return np.dtype("<u2") if vocab_size < 2**16 else np.dtype("<u4")


def _verified_cache(path: Path) -> Path:
    """The file remembering that ``path`` passed its digest check."""
    return path.with_name(f".{path.name}.verified.json")


def write_tokens(path: PathLike, vocab_size: int, chunks: Iterable[IdsLike]) -> dict[str, Any]:
    """Write 1-D chunks of ids in ``[0, vocab_size)``, concatenated, into one split file
    (atomically); returns its ``meta.json`` entry (``file``, ``tokens``, ``bytes``, ``sha256``)."""
    path, dtype, digest = Path(path), token_dtype(vocab_size), hashlib.sha256()

    def write(f) -> None:
        for ids in chunks:
            arr = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids)
            if arr.ndim != 1:
                raise ValueError(f"token ids must be 1-D, got shape {tuple(arr.shape)}")
            if arr.size and arr.dtype.kind not in "iu":
                raise ValueError(f"token ids must be integers, got dtype {arr.dtype}")
            if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= vocab_size):
                raise ValueError(f"token ids must be in [0, {vocab_size}), found range "
                                 f"[{int(arr.min())}, {int(arr.max())}]")
            data = arr.astype(dtype, copy=False).tobytes()
            f.write(data)
            digest.update(data)

    atomic_write(path, write)
    _verified_cache(path).unlink(missing_ok=True)
    size = path.stat().st_size
    return {"file": path.name, "tokens": size // dtype.itemsize, "bytes": size,
            "sha256": digest.hexdigest()}


def write_corpus(out_dir: PathLike, tokenizer: Tokenizer,
                 splits: Mapping[str, tuple[int, Iterable[IdsLike]]],
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``{split: (documents, chunks of ids)}`` as ``<split>.bin`` files, then ``meta.json``
    with the ``extra`` top-level fields (removed first: an interrupted run leaves none); returns
    the metadata."""
    meta: dict[str, Any] = {
        "format": META_FORMAT, "version": META_VERSION, "tokenizer": tokenizer.to_meta(),
        "vocab_size": int(tokenizer.vocab_size), "dtype": token_dtype(tokenizer.vocab_size).name,
        "documents": {split: n for split, (n, _) in splits.items()}}
    clash = sorted(set(extra or {}) & {*meta, "splits"})
    if clash:
        raise ValueError(f"extra meta keys {clash} collide with reserved keys")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)
    meta["splits"] = {split: dict(write_tokens(out / f"{split}.bin", tokenizer.vocab_size, chunks),
                                  documents=n) for split, (n, chunks) in splits.items()}
    meta.update(extra or {})
    atomic_write_json(out / "meta.json", meta)
    return meta


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


def prepare_corpus(texts_train: Sequence[str], texts_val: Sequence[str], out_dir: PathLike,
                   tokenizer: Union[str, Tokenizer] = "char", *, char_vocab_from: str = "train",
                   extra_meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Tokenize texts into ``train.bin``, ``val.bin``, ``meta.json`` in ``out_dir``: ``"char"``
    (vocabulary of the training texts, or all with ``char_vocab_from="all"``; documents separated
    by ``"\\n\\n"``), ``"gpt2"`` (end-of-text after each document) or a :class:`Tokenizer`."""
    texts_train = _check_texts("texts_train", texts_train)
    texts_val = _check_texts("texts_val", texts_val)
    if not isinstance(tokenizer, Tokenizer) and tokenizer not in ("char", "gpt2"):
        raise ValueError(f"tokenizer must be 'char' or 'gpt2', got {tokenizer!r}")
    if char_vocab_from not in ("train", "all"):
        raise ValueError(f"char_vocab_from must be 'train' or 'all', got {char_vocab_from!r}")
    tok = tokenizer
    if tokenizer == "char":
        vocab_texts = texts_train + (texts_val if char_vocab_from == "all" else [])
        tok = CharTokenizer.from_texts(vocab_texts + ["\n\n"])
    elif tokenizer == "gpt2":
        tok = GPT2Tokenizer()
    eot = tok.eot_token  # documents end with it, or else are separated by a blank line
    separator = "" if eot is not None else "\n\n"

    def ids(texts: list[str]) -> Iterable[np.ndarray]:
        for i, text in enumerate(texts):
            if i and separator:
                yield tok.encode_array(separator)
            yield tok.encode_array(text)
            if eot is not None:
                yield np.array([eot])

    return write_corpus(out_dir, tok, {
        "train": (len(texts_train), ids(texts_train)), "val": (len(texts_val), ids(texts_val))},
        {"separator": separator, "append_eot": eot is not None, **(extra_meta or {})})


def read_meta(data_dir: PathLike) -> dict[str, Any]:
    """The checked ``meta.json`` of a prepared corpus (``FileNotFoundError`` without one,
    ``ValueError`` when it is not a token-corpus description of this version)."""
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


class TokenDataset:
    """One split of a prepared corpus: ``data``, a read-only ``np.memmap`` ``(num_tokens,)``,
    checked against ``meta.json``: size, (``verify``) SHA-256, remembered by size and mtime in
    ``.<split>.bin.verified.json``, and (``tokenizer``) the tokenizer."""

    def __init__(self, data_dir: PathLike, split: str = "train", *,
                 tokenizer: Tokenizer | None = None, verify: bool = True) -> None:
        self.data_dir, self.split = Path(data_dir), split
        self.meta = meta = read_meta(self.data_dir)
        if split not in meta["splits"]:
            raise ValueError(f"{self.data_dir}: expected split one of {sorted(meta['splits'])}, "
                             f"found {split!r}")
        info = meta["splits"][split]
        self.path = self.data_dir / info.get("file", f"{split}.bin")
        self.dtype = np.dtype(meta["dtype"]).newbyteorder("<")
        self.vocab_size, self.num_tokens = int(meta["vocab_size"]), int(info["tokens"])
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} not found (listed in meta.json)")
        expected, found = self.num_tokens * self.dtype.itemsize, self.path.stat().st_size
        if found != expected:
            raise ValueError(f"{self.path}: expected {expected} bytes ({self.num_tokens} tokens × "
                             f"{self.dtype.itemsize}), found {found}")
        if verify:
            self._verify_digest(info["sha256"])
        if tokenizer is not None and tokenizer.to_meta() != meta["tokenizer"]:
            raise ValueError(f"{self.path}: expected vocab_size {self.vocab_size}, kind "
                             f"{meta['tokenizer'].get('kind')!r} and the vocabulary of meta.json, "
                             f"found {tokenizer.vocab_size}, {tokenizer.kind!r} or a different "
                             "vocabulary for the given tokenizer")
        self.data = (np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.num_tokens,))
                     if self.num_tokens else np.zeros(0, dtype=self.dtype))

    def _verify_digest(self, expected: str) -> None:
        st, cache = self.path.stat(), _verified_cache(self.path)
        key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": expected}
        with contextlib.suppress(OSError, ValueError):
            if json.loads(cache.read_text()) == key:
                return
        found = sha256_file(self.path)
        if found != expected:
            raise ValueError(f"{self.path}: expected sha256 {expected}, found {found}")
        with contextlib.suppress(OSError):  # a read-only corpus folder: re-hash next time
            atomic_write_json(cache, key)

    def __len__(self) -> int:
        return self.num_tokens

    def tokenizer(self) -> Tokenizer:
        """The tokenizer recorded in ``meta.json``."""
        return tokenizer_from_meta(self.meta["tokenizer"])

    def __repr__(self) -> str:
        return (f"TokenDataset({str(self.data_dir)!r}, split={self.split!r}, "
                f"tokens={self.num_tokens}, vocab_size={self.vocab_size}, dtype={self.dtype.name})")
