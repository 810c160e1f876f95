"""OpenWebText preparation on a tiny generated corpus (no network, no `datasets`)."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import tiktoken
from tiktoken_ext import openai_public

from translution.data.openwebtext import (
    OWT_SEED,
    OWT_VAL_FRACTION,
    prepare_openwebtext,
    split_indices,
    tokenize_documents,
)
from translution.data.text import TokenDataset
from translution.data.fetch import prime_tiktoken_cache
from translution.data.tokenizers import GPT2Tokenizer


@pytest.fixture
def tok(tiny_encoding):
    return GPT2Tokenizer(tiny_encoding)


def make_docs(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = ["the", "then", "in", "an", "other", "web", "text", "Ünïcode", "42", "\n"]
    return [f"doc {i}: " + " ".join(rng.choice(words, size=rng.integers(0, 12)))
            for i in range(n)]


def test_split_indices_matches_datasets_train_test_split():
    n = 3001
    train, val = split_indices(n)
    n_val = math.ceil(OWT_VAL_FRACTION * n)
    assert n_val == 2 and len(val) == 2 and len(train) == n - 2
    perm = np.random.default_rng(OWT_SEED).permutation(n)  # what datasets does
    assert val.tolist() == perm[:n_val].tolist() and train.tolist() == perm[n_val:].tolist()
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(n))
    t2, v2 = split_indices(n)
    assert np.array_equal(train, t2) and np.array_equal(val, v2)
    assert not np.array_equal(split_indices(n, seed=1)[1], val)
    # at full scale: 8,013,769 documents -> 4,007 for validation, as in nanoGPT
    assert math.ceil(OWT_VAL_FRACTION * 8_013_769) == 4007


def test_split_indices_errors():
    with pytest.raises(ValueError, match="found 0 train and 1 val from 1 documents"):
        split_indices(1)
    with pytest.raises(ValueError, match=r"\(0, 1\), got 1.5"):
        split_indices(10, 1.5)
    with pytest.raises(TypeError, match="n_docs must be an int, got 10.0"):
        split_indices(10.0)


def test_tokenize_documents_appends_eot(tok):
    ids = tokenize_documents(["the", "", " then"], tok)
    assert ids.tolist() == [258, 264, 264, 260, 110, 264]
    assert tokenize_documents([], tok).shape == (0,)


def test_prepare_tiny_corpus(tmp_path, tok):
    docs = make_docs(3001)
    meta = prepare_openwebtext(tmp_path, documents=docs, tokenizer=tok, batch_docs=64,
                               progress=False)
    train_idx, val_idx = split_indices(len(docs))
    for split, idx in (("train", train_idx), ("val", val_idx)):
        expected = []
        for i in idx:
            expected += tok.encode(docs[i]) + [tok.eot_token]
        raw = np.fromfile(tmp_path / f"{split}.bin", dtype=np.uint16)
        assert raw.tolist() == expected
        assert meta["splits"][split]["tokens"] == len(expected)
        assert meta["splits"][split]["documents"] == len(idx)
        assert int((raw == tok.eot_token).sum()) == len(idx)
    assert meta["dtype"] == "uint16" and meta["documents"] == {"train": 2999, "val": 2}
    assert meta["val_fraction"] == 0.0005 and meta["seed"] == 2357
    ds = TokenDataset(tmp_path, "val", tokenizer=tok)
    assert tok.decode(ds.data).split("<|endoftext|>")[:2] == [docs[i] for i in val_idx]
    assert len(TokenDataset(tmp_path, "train")) == meta["splits"]["train"]["tokens"]


def test_prepare_accepts_hf_like_datasets(tmp_path, tok):
    docs = make_docs(2100, seed=3)
    ref = prepare_openwebtext(tmp_path / "list", documents=docs, tokenizer=tok, progress=False)

    class FakeHFDataset:  # the two members the real path uses
        column_names = ["text"]

        def __init__(self, texts):
            self.texts = texts

        def __len__(self):
            return len(self.texts)

        def __getitem__(self, key):
            raise AssertionError("rows are fetched with select()")

        def select(self, indices):
            return {"text": [self.texts[i] for i in indices]}

    hf = prepare_openwebtext(tmp_path / "hf", documents=FakeHFDataset(docs), tokenizer=tok,
                             batch_docs=100, progress=False)
    assert hf["splits"] == ref["splits"]  # identical files (same sha256)


def test_prepare_errors(tmp_path, monkeypatch, tok):
    with pytest.raises(TypeError, match="document .* must be str, got int"):
        prepare_openwebtext(tmp_path, documents=["a", 5, "b"] * 10, tokenizer=tok,
                            progress=False)
    assert not (tmp_path / "meta.json").exists()
    for bad in ("abc", (d for d in "abc")):
        with pytest.raises(TypeError, match="sequence of str or a datasets.Dataset, got"):
            prepare_openwebtext(tmp_path, documents=bad, tokenizer=tok)
    with pytest.raises(TypeError, match="GPT2Tokenizer, got str"):
        prepare_openwebtext(tmp_path, documents=["a", "b"], tokenizer="gpt2")
    monkeypatch.setitem(sys.modules, "datasets", None)  # behave as if not installed
    with pytest.raises(ImportError, match="pip install datasets"):
        prepare_openwebtext(tmp_path, tokenizer=tok)


def test_prepare_rejects_vocab_beyond_uint16(tmp_path):
    ranks = {bytes([i]): i for i in range(256)}
    for a in range(256):
        for b in range(256):
            ranks[bytes([a, b])] = len(ranks)
    enc = tiktoken.Encoding(name="big", pat_str=openai_public.r50k_pat_str,
                            mergeable_ranks=ranks, special_tokens={"<|endoftext|>": len(ranks)})
    with pytest.raises(ValueError, match="expected vocab_size < 65536, found 65793"):
        prepare_openwebtext(tmp_path, documents=["a", "b"], tokenizer=GPT2Tokenizer(enc))


def test_prepare_with_real_gpt2(tmp_path):
    try:
        cache = prime_tiktoken_cache()
        tok = GPT2Tokenizer(cache_dir=cache, fetch=False)
    except (RuntimeError, OSError, ValueError) as e:
        pytest.skip(f"GPT-2 vocabulary unavailable offline: {e}")
    docs = ["Hello world!", "An OpenWebText-like document.", "Third."] * 700
    meta = prepare_openwebtext(tmp_path, documents=docs, tokenizer=tok, progress=False)
    assert meta["tokenizer"] == {"kind": "gpt2", "encoding": "gpt2", "vocab_size": 50257,
                                 "eot_token": 50256}
    val = TokenDataset(tmp_path, "val", tokenizer=tok)
    assert val.data.dtype == np.uint16 and int((val.data == 50256).sum()) == 2
    train = np.fromfile(tmp_path / "train.bin", dtype=np.uint16)
    assert "15496,995,0,50256" in ",".join(map(str, train[:400].tolist()))
