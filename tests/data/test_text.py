"""Token files: prepare_corpus, write_tokens, TokenDataset."""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import torch

from translution.data import text as text_mod
from translution.data.text import (
    TokenDataset,
    prepare_corpus,
    read_meta,
    token_dtype,
    write_tokens,
)
from translution.data.tokenizers import CharTokenizer, GPT2Tokenizer

TRAIN = ["It is a truth universally acknowledged,", "that a single man in possession"]
VAL = ["of a good fortune, must be in want of a wife."]


@pytest.fixture
def char_corpus(tmp_path):
    meta = prepare_corpus(TRAIN, VAL, tmp_path / "c", "char", char_vocab_from="all")
    return tmp_path / "c", meta


def test_token_dtype():
    assert token_dtype(2) == np.uint16 and token_dtype(65535) == np.uint16
    assert token_dtype(65536) == np.uint32 and token_dtype(50257) == np.uint16
    with pytest.raises(ValueError, match="got 0"):
        token_dtype(0)
    with pytest.raises(TypeError, match="float"):
        token_dtype(3.0)


def test_prepare_char_files_and_meta(char_corpus):
    out, meta = char_corpus
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.bin", "val.bin"]
    on_disk = json.loads((out / "meta.json").read_text())
    assert on_disk == meta
    tok = CharTokenizer.from_texts(TRAIN + VAL + ["\n"])
    assert meta["tokenizer"] == tok.to_meta() and meta["tokenizer"]["kind"] == "char"
    assert meta["vocab_size"] == tok.vocab_size and meta["dtype"] == "uint16"
    assert meta["documents"] == {"train": 2, "val": 1} and meta["separator"] == "\n\n"
    for split, texts in (("train", TRAIN), ("val", VAL)):
        info = meta["splits"][split]
        raw = (out / f"{split}.bin").read_bytes()
        assert info["sha256"] == hashlib.sha256(raw).hexdigest()
        assert info["bytes"] == len(raw) == 2 * info["tokens"]
        ids = np.frombuffer(raw, dtype="<u2")
        assert tok.decode(ids) == "\n\n".join(texts)
    assert read_meta(out) == meta


def test_char_vocab_from_train_rejects_unseen_val_chars(tmp_path):
    with pytest.raises(ValueError, match=r"not in the .*-character vocabulary: '\.bf' \(first at position 1\)"):
        prepare_corpus(TRAIN, VAL, tmp_path / "c", "char")
    # nothing half-written is left that looks like a corpus
    assert not (tmp_path / "c" / "meta.json").exists()
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(ValueError, match="'train' or 'all', got 'val'"):
        prepare_corpus(TRAIN, VAL, tmp_path / "c", "char", char_vocab_from="val")


def test_prepare_argument_errors(tmp_path):
    with pytest.raises(TypeError, match="texts_train must be a list of str, got str"):
        prepare_corpus("abc", VAL, tmp_path)
    with pytest.raises(TypeError, match=r"texts_val\[0\] must be str, got int"):
        prepare_corpus(TRAIN, [1], tmp_path)
    with pytest.raises(ValueError, match="'char' or 'gpt2', got 'words'"):
        prepare_corpus(TRAIN, VAL, tmp_path, "words")


def test_prepare_bpe_appends_eot_per_document(tmp_path, tiny_encoding):
    tok = GPT2Tokenizer(tiny_encoding)
    meta = prepare_corpus(TRAIN, VAL, tmp_path, tok)
    ids = np.fromfile(tmp_path / "train.bin", dtype="<u2")
    expected = []
    for t in TRAIN:
        expected += tok.encode(t) + [tok.eot_token]
    assert ids.tolist() == expected
    assert meta["tokenizer"]["kind"] == "gpt2" and meta["append_eot"] is True
    ds = TokenDataset(tmp_path, "val", tokenizer=tok)
    assert ds.data.tolist() == tok.encode(VAL[0]) + [tok.eot_token]
    assert ds.meta["tokenizer"] == tok.to_meta()


def test_uint32_for_large_vocab(tmp_path):
    chars = [chr(c) for c in range(0x10000, 0x10000 + 70000)]
    text = "".join(chars[::-1])
    meta = prepare_corpus([text], [chars[5] * 3], tmp_path, "char")
    # vocabulary: "\n" (the separator, id 0) + 70,000 astral characters
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == 70001
    ds = TokenDataset(tmp_path, "train")
    assert ds.data.dtype == np.uint32 and len(ds) == 70000
    assert ds.data[0] == 70000 and ds.data[-1] == 1
    assert TokenDataset(tmp_path, "val").data.tolist() == [6, 6, 6]


def test_token_dataset_memmap_and_repr(char_corpus):
    out, meta = char_corpus
    ds = TokenDataset(out, "train")
    assert isinstance(ds.data, np.memmap) and not ds.data.flags.writeable
    assert len(ds) == meta["splits"]["train"]["tokens"] == len("\n\n".join(TRAIN))
    assert ds.vocab_size == meta["vocab_size"]
    assert "split='train'" in repr(ds)
    assert ds.tokenizer().decode(ds.data) == "\n\n".join(TRAIN)


def test_token_dataset_errors(char_corpus, tmp_path):
    out, meta = char_corpus
    with pytest.raises(FileNotFoundError, match="meta.json not found"):
        TokenDataset(tmp_path / "nothing", "train")
    with pytest.raises(ValueError, match=r"expected split one of \['train', 'val'\], found 'test'"):
        TokenDataset(out, "test")
    # wrong tokenizer: vocab size, kind, vocabulary
    with pytest.raises(ValueError, match=f"expected vocab_size {meta['vocab_size']}.*found 3"):
        TokenDataset(out, "train", tokenizer=CharTokenizer.from_texts("abc"))
    other = CharTokenizer([chr(0x3000 + i) for i in range(meta["vocab_size"])])
    with pytest.raises(ValueError, match="different vocabulary"):
        TokenDataset(out, "train", tokenizer=other)
    # truncated file
    path = out / "val.bin"
    raw = path.read_bytes()
    path.write_bytes(raw[:-2])
    n = meta["splits"]["val"]["tokens"]
    with pytest.raises(ValueError, match=rf"expected {2 * n} bytes \({n} tokens × 2\), found {2 * n - 2}"):
        TokenDataset(out, "val")
    # same size, different content
    path.write_bytes(bytes([raw[0] ^ 1]) + raw[1:])
    with pytest.raises(ValueError, match=f"expected sha256 {meta['splits']['val']['sha256']}, found"):
        TokenDataset(out, "val")
    assert len(TokenDataset(out, "val", verify=False)) == n
    # malformed meta
    m = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps(dict(m, version=99)))
    with pytest.raises(ValueError, match="expected version 1, found 99"):
        TokenDataset(out, "train")
    (out / "meta.json").write_text(json.dumps(dict(m, dtype="uint32")))
    with pytest.raises(ValueError, match="expected dtype uint16 .* found uint32"):
        TokenDataset(out, "train")


def test_digest_check_is_cached_by_size_and_mtime(char_corpus, monkeypatch):
    out, _ = char_corpus
    TokenDataset(out, "train")
    assert (out / ".train.bin.verified.json").is_file()

    def boom(path):
        raise AssertionError("re-hashed an unchanged file")

    monkeypatch.setattr(text_mod, "sha256_file", boom)
    TokenDataset(out, "train")  # cached: no hashing
    monkeypatch.undo()
    path = out / "train.bin"
    raw = bytearray(path.read_bytes())
    raw[0] ^= 1
    path.write_bytes(bytes(raw))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(ValueError, match="expected sha256"):
        TokenDataset(out, "train")


def test_write_tokens_checks_and_leaves_nothing_on_error(tmp_path):
    with pytest.raises(ValueError, match=r"\[0, 10\), found range \[0, 10\]"):
        write_tokens(tmp_path / "x.bin", 10, [[1, 2, 3], np.array([0, 10])])
    with pytest.raises(ValueError, match=r"1-D, got shape \(1, 2\)"):
        write_tokens(tmp_path / "x.bin", 10, [[[1, 2]]])
    assert list(tmp_path.iterdir()) == []  # no file, no temporary
    info = write_tokens(tmp_path / "x.bin", 10, [torch.tensor([1, 2]), []])
    assert info["tokens"] == 2 and info["bytes"] == 4 and info["file"] == "x.bin"
    assert info["sha256"] == hashlib.sha256((tmp_path / "x.bin").read_bytes()).hexdigest()
    assert np.fromfile(tmp_path / "x.bin", dtype="<u2").tolist() == [1, 2]


def test_text_errors_are_value_errors(tmp_path, char_corpus, tiny_encoding):
    """Issue 11: a lone surrogate and non-UTF-8 bytes reached the user as Unicode*Error."""
    with pytest.raises(ValueError, match=r"texts_train\[1\] has a lone surrogate .* position 2"):
        prepare_corpus(["ok", "ab\ud800c"], VAL, tmp_path / "c", "char")
    with pytest.raises(ValueError, match="lone surrogate"):
        prepare_corpus(TRAIN, ["\udc00"], tmp_path / "c", GPT2Tokenizer(tiny_encoding))
    out, _ = char_corpus
    meta = (out / "meta.json").read_bytes()
    (out / "meta.json").write_bytes(meta[:10] + b"\xfe" + meta[10:])
    with pytest.raises(ValueError, match="meta.json: not UTF-8 at byte 10"):
        read_meta(out)


def test_written_files_follow_umask(char_corpus):
    out, _ = char_corpus
    mask = os.umask(0)
    os.umask(mask)
    for name in ("train.bin", "val.bin", "meta.json"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~mask
