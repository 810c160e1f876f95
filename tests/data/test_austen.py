"""Jane Austen reader: the R lazy-load database (via rdata), the text cache, the real package."""
from __future__ import annotations

import gzip
import hashlib
import json
import struct
import zlib

import numpy as np
import pytest

from translution.data import austen as A
from translution.data import fetch
from translution.data.austen import (AUSTEN_NOVELS, austen_corpus, fetch_austen, read_austen,
                                     read_lazyload_db)
from translution.data.fetch import AUSTEN_RDATA_DIR, DataUnavailableError, extract_deb

rdata = pytest.importorskip("rdata")
from rdata.conversion import convert_python_to_r_data  # noqa: E402
from rdata.unparser import unparse_data  # noqa: E402


def _rds(obj) -> bytes:
    return unparse_data(convert_python_to_r_data(obj), file_type="rds")


def _write_lazyload(data_dir, objects):
    """R's lazy-load layout: records of (4-byte length, zlib stream) and a gzipped index."""
    data_dir.mkdir(parents=True, exist_ok=True)
    rdb, variables = b"", {}
    for name, obj in objects.items():
        payload = _rds(obj)
        record = struct.pack(">I", len(payload)) + zlib.compress(payload)
        variables[name] = np.array([len(rdb), len(record)], dtype=np.int32)
        rdb += record
    (data_dir / "Rdata.rdb").write_bytes(rdb)
    index = {"variables": variables, "references": {}, "compressed": True}
    (data_dir / "Rdata.rdx").write_bytes(gzip.compress(_rds(index)))


FAKE = {name: [name.upper(), "", f"Chapter 1 of {name}", "", "The end."] for name in AUSTEN_NOVELS}
FAKE["emma"] = ["EMMA", None, "naïve £5 — “quoted”", ""]
FAKE_TEXTS = {n: "\n".join(line or "" for line in lines) for n, lines in FAKE.items()}


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """An unpacked fake package, whose novel sizes are made the known ones."""
    monkeypatch.setattr(A, "AUSTEN_CHARS", {n: len(t) for n, t in FAKE_TEXTS.items()})
    _write_lazyload(tmp_path / "pkg" / AUSTEN_RDATA_DIR,
                    {n: np.array(v, dtype=object) for n, v in FAKE.items()})
    return tmp_path / "pkg"


def _deb_of(make_deb, path, root):
    files = {f"./{AUSTEN_RDATA_DIR}/{n}": (root / AUSTEN_RDATA_DIR / n).read_bytes()
             for n in ("Rdata.rdx", "Rdata.rdb")}
    return make_deb(path, files)


# ------------------------------------------------------------------- the lazy-load database
def test_read_lazyload_db(tmp_path):
    _write_lazyload(tmp_path, {"x": np.array(["one", None], dtype=object),
                               "y": np.array([4, 5], dtype=np.int32)})
    db = read_lazyload_db(tmp_path)
    assert list(db) == ["x", "y"] and list(db["x"]) == ["one", None] and list(db["y"]) == [4, 5]
    with pytest.raises(FileNotFoundError, match="Rdata.rdx"):
        read_lazyload_db(tmp_path / "missing")
    rdb = (tmp_path / "Rdata.rdb").read_bytes()
    (tmp_path / "Rdata.rdb").write_bytes(rdb[:-3])
    with pytest.raises(ValueError, match="expected .* bytes at offset"):
        read_lazyload_db(tmp_path)
    (tmp_path / "Rdata.rdb").write_bytes(rdb[:4] + b"nope" + rdb[8:])
    with pytest.raises(ValueError, match="Rdata.rdb:x: expected a zlib-compressed record"):
        read_lazyload_db(tmp_path)
    (tmp_path / "Rdata.rdx").write_bytes(b"A\nnot R")
    with pytest.raises(ValueError, match="Rdata.rdx: not a readable R serialization"):
        read_lazyload_db(tmp_path)


# ------------------------------------------------------------------- fetch / read / corpus
def test_fetch_from_extracted_dir_and_cache(tmp_path, fake_package):
    cache = fetch_austen(tmp_path / "cache", extracted_dir=fake_package)
    texts = read_austen(cache)
    assert texts == FAKE_TEXTS and list(texts) == list(AUSTEN_NOVELS)
    assert texts["emma"] == "EMMA\n\nnaïve £5 — “quoted”\n"  # NA line -> "", joined by "\n"
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["novels"]["emma"]["chars"] == len(texts["emma"])
    assert fetch_austen(cache) == cache  # complete: no source needed any more
    # tampering that keeps the size is caught by the digest check: the cache is rebuilt
    (cache / "emma.txt").write_text("EMMA\n\nnaïvE £5 — “quoted”\n", encoding="utf-8")
    with pytest.raises(DataUnavailableError):
        read_austen(cache)  # ... from apt-get, which is missing here
    assert read_austen(cache, extracted_dir=fake_package)["emma"] == texts["emma"]


@pytest.fixture(autouse=True)
def _no_apt(monkeypatch, request):
    if "real_austen" not in request.fixturenames:
        monkeypatch.setattr(fetch.shutil, "which", lambda name: None)


def test_empty_files_matching_the_manifest_are_not_accepted(tmp_path, fake_package):
    """Issue 11: a manifest describing empty files made an empty corpus."""
    cache = tmp_path / "cache"
    cache.mkdir()
    empty = {"chars": 0, "bytes": 0, "sha256": hashlib.sha256(b"").hexdigest()}
    for name in AUSTEN_NOVELS:
        (cache / f"{name}.txt").write_bytes(b"")
    (cache / "manifest.json").write_text(json.dumps(
        {"version": 1, "novels": {n: empty for n in AUSTEN_NOVELS}}))
    assert read_austen(cache, extracted_dir=fake_package) == FAKE_TEXTS


def test_non_utf8_cache_is_a_value_error(tmp_path, fake_package):
    """Issue 11: undecodable bytes gave a raw UnicodeDecodeError."""
    cache = fetch_austen(tmp_path / "cache", extracted_dir=fake_package)
    data = b"\xff" + FAKE_TEXTS["emma"].encode()[1:]
    (cache / "emma.txt").write_bytes(data)
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["novels"]["emma"]["sha256"] = hashlib.sha256(data).hexdigest()
    (cache / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"emma.txt: not UTF-8 at byte 0"):
        read_austen(cache)


def test_package_with_other_sizes_is_refused(tmp_path, fake_package, monkeypatch):
    monkeypatch.setitem(A.AUSTEN_CHARS, "emma", 5)
    with pytest.raises(ValueError, match="expected novels of .* characters, found"):
        fetch_austen(tmp_path / "cache", extracted_dir=fake_package)
    assert not (tmp_path / "cache" / "manifest.json").exists()


def test_austen_corpus_split(tmp_path, fake_package):
    train, val = austen_corpus("persuasion", tmp_path / "cache", extracted_dir=fake_package)
    assert len(train) == 5 and val == [FAKE_TEXTS["persuasion"]]
    train, val = austen_corpus(["emma", "persuasion"], tmp_path / "cache")
    assert len(train) == 4 and len(val) == 2
    with pytest.raises(ValueError, match=r"among .* found \['ulysses'\]"):
        austen_corpus("ulysses", tmp_path / "cache")
    with pytest.raises(ValueError, match="expected 1 to 5 validation novels, found 6"):
        austen_corpus(list(AUSTEN_NOVELS), tmp_path / "cache")


def test_deb_digest_mismatch_reports_found_digest(tmp_path, fake_package, make_deb):
    deb = _deb_of(make_deb, tmp_path / "r-cran-janeaustenr_9_all.deb", fake_package)
    found = hashlib.sha256(deb.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=f"expected sha256 {fetch.AUSTEN_DEB[2]}, found {found}"):
        fetch_austen(tmp_path / "cache", deb_path=deb)
    assert not (tmp_path / "cache" / "manifest.json").exists()


def test_extract_deb(tmp_path, monkeypatch, fake_package, make_deb):
    deb = _deb_of(make_deb, tmp_path / "x.deb", fake_package)
    with pytest.raises(DataUnavailableError, match="dpkg-deb is not on PATH"):
        extract_deb(deb, tmp_path / "out")
    monkeypatch.undo()  # shutil.which is real again
    if fetch.shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb not installed")
    out = extract_deb(deb, tmp_path / "out")
    assert list(read_lazyload_db(out / AUSTEN_RDATA_DIR)["emma"])[0] == "EMMA"
    (tmp_path / "bad.deb").write_bytes(b"not an archive")
    with pytest.raises(DataUnavailableError, match="dpkg-deb -x .* exited with status"):
        extract_deb(tmp_path / "bad.deb", tmp_path / "out2")


def test_missing_novel_in_package(tmp_path):
    _write_lazyload(tmp_path / "pkg", {k: np.array(v, dtype=object)
                                       for k, v in FAKE.items() if k != "emma"})
    with pytest.raises(ValueError, match="expected novels .* found"):
        fetch_austen(tmp_path / "cache", extracted_dir=tmp_path / "pkg")


def test_without_apt_get_data_unavailable(tmp_path):
    with pytest.raises(DataUnavailableError, match="apt-get is not on PATH"):
        fetch_austen(tmp_path / "cache")


# ------------------------------------------------------------------- the real package
@pytest.fixture(scope="module")
def real_austen():
    """The real novels from the default cache, fetched with apt-get when missing."""
    try:
        return read_austen()
    except (DataUnavailableError, OSError) as e:
        pytest.skip(f"cannot fetch {fetch.AUSTEN_DEB[0]}: {e}")


def test_real_austen_sizes(real_austen):
    texts = real_austen
    assert list(texts) == list(AUSTEN_NOVELS)
    assert {k: len(v) for k, v in texts.items()} == A.AUSTEN_CHARS
    # the sizes quoted in DATA.md: per novel, newline-terminated lines ...
    assert len(texts["emma"]) + 1 == 883_028
    assert len(texts["prideprejudice"]) + 1 == 684_768
    # ... and in all, the six novels separated by a blank line
    assert len("\n\n".join(texts.values())) == 4_025_032
    assert sum(len(t) for t in texts.values()) == 4_025_022
    assert texts["emma"].startswith("EMMA\n\nBy Jane Austen\n")
    assert texts["prideprejudice"].startswith("PRIDE AND PREJUDICE\n\nBy Jane Austen\n")
    assert "£" in texts["mansfieldpark"]


def test_real_austen_char_corpus(real_austen, tmp_path):
    from translution.data.text import TokenDataset, prepare_corpus

    train = [t for k, t in real_austen.items() if k != "persuasion"]
    val = [real_austen["persuasion"]]
    # the validation novel uses no character absent from the five training novels
    meta = prepare_corpus(train, val, tmp_path, "char")
    assert meta["splits"]["train"]["tokens"] == len("\n\n".join(train))
    assert meta["splits"]["val"]["tokens"] == len(val[0]) == A.AUSTEN_CHARS["persuasion"]
    assert meta["dtype"] == "uint16" and meta["vocab_size"] < 100
    ds = TokenDataset(tmp_path, "val")
    assert ds.tokenizer().decode(ds.data[:40]) == val[0][:40]
