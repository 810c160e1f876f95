"""Jane Austen reader: R XDR unserializer, lazy-load database, .deb handling, real package."""
from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import struct
import subprocess
import tarfile
import zlib

import pytest

from translution.data import austen as A
from translution.data.austen import (
    AUSTEN_NOVELS,
    R_NULL,
    RVector,
    austen_corpus,
    extract_deb,
    fetch_austen,
    read_austen,
    read_lazyload_db,
    unserialize,
)

RDATA = "usr/lib/R/site-library/janeaustenr/data"


# ------------------------------------------------------------------- a tiny R XDR serializer
def _i(v: int) -> bytes:
    return struct.pack(">i", v)


def _charsxp(s):
    if s is None:
        return _i(9) + _i(-1)
    b = s.encode("utf-8")
    return _i((8 << 12) | 9) + _i(len(b)) + b  # UTF8 level


def _attrs_names(names, sym_ref=None):
    sym = _i((sym_ref << 8) | 255) if sym_ref else _i(1) + _charsxp("names")
    return _i(0x402) + sym + _strsxp(names) + _i(254)  # LISTSXP with tag, then NILVALUE


def _strsxp(items, names=None):
    flags = 16 | (0x200 if names else 0)
    out = _i(flags) + _i(len(items)) + b"".join(_charsxp(s) for s in items)
    return out + (_attrs_names(names) if names else b"")


def _intsxp(vals):
    return _i(13) + _i(len(vals)) + b"".join(_i(v) for v in vals)


def _vecsxp(items, names=None, sym_ref=None):
    flags = 19 | (0x200 if names else 0)
    out = _i(flags) + _i(len(items)) + b"".join(items)
    return out + (_attrs_names(names, sym_ref) if names else b"")


def _serialize(body: bytes, version: int = 3) -> bytes:
    head = b"X\n" + _i(version) + _i(0x040201) + _i(0x030500)
    if version == 3:
        head += _i(5) + b"UTF-8"
    return head + body


def _write_lazyload(data_dir, objects: dict[str, bytes]):
    data_dir.mkdir(parents=True, exist_ok=True)
    rdb = b""
    pairs = []
    for payload in objects.values():
        rec = struct.pack(">I", len(payload)) + zlib.compress(payload)
        pairs.append(_intsxp([len(rdb), len(rec)]))
        rdb += rec
    index = _vecsxp(
        [_vecsxp(pairs, names=list(objects)), _vecsxp([]), _i(10) + _i(1) + _i(1)],
        names=["variables", "references", "compressed"],
    )
    (data_dir / "Rdata.rdb").write_bytes(rdb)
    (data_dir / "Rdata.rdx").write_bytes(gzip.compress(_serialize(index)))


FAKE = {name: [f"{name.upper()}", "", f"Chapter 1 of {name}", "", "The end."]
        for name in AUSTEN_NOVELS}
FAKE["emma"] = ["EMMA", None, "naïve £5 — “quoted”", ""]


def _fake_package(root):
    _write_lazyload(root / RDATA, {k: _serialize(_strsxp(v)) for k, v in FAKE.items()})
    return root


def _ar(members: dict[str, bytes]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members.items():
        header = (f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}").encode() + b"`\n"
        out += header + data + (b"\n" if len(data) % 2 else b"")
    return out


def _fake_deb(path, root):
    def txz(files):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:xz") as tf:
            for arc, data in files:
                info = tarfile.TarInfo(arc)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    data_files = [(f"./{RDATA}/{n}", (root / RDATA / n).read_bytes())
                  for n in ("Rdata.rdx", "Rdata.rdb")]
    control = txz([("./control", b"Package: r-cran-janeaustenr\nVersion: 0\n"
                   b"Architecture: all\nMaintainer: x <x@y>\nDescription: test\n")])
    path.write_bytes(_ar({"debian-binary": b"2.0\n", "control.tar.xz": control,
                          "data.tar.xz": txz(data_files)}))
    return path


# ------------------------------------------------------------------- unserialize
def test_unserialize_vectors_names_na_and_refs():
    body = _vecsxp(
        [_strsxp(["a", None, "ü"]), _intsxp([1, -(2**31), 3]),
         _vecsxp([_intsxp([7])], names=["inner"])],
        names=["s", "i", "l"], sym_ref=1,  # attributes follow the items: inner names come first
    )
    obj = unserialize(_serialize(body))
    assert isinstance(obj, RVector)
    d = obj.named()
    assert d["s"] == ["a", None, "ü"]
    assert d["i"] == [1, None, 3]
    assert d["l"].named() == {"inner": [7]}  # outer 'names' symbol is a back-reference
    assert unserialize(_serialize(_i(254))) is R_NULL
    assert unserialize(_serialize(_strsxp(["x"]), version=2)) == ["x"]


def test_unserialize_errors():
    with pytest.raises(ValueError, match=r"expected R XDR serialization .* found b'A\\n'"):
        unserialize(b"A\n" + _i(3))
    with pytest.raises(ValueError, match="truncated R serialization: expected 4 more bytes"):
        unserialize(_serialize(_strsxp(["abc"]))[:-5])
    with pytest.raises(ValueError, match="version 2 or 3, found 7"):
        unserialize(b"X\n" + _i(7) + _i(0) + _i(0))
    with pytest.raises(ValueError, match="unsupported R SEXPTYPE 99"):
        unserialize(_serialize(_i(99)))
    with pytest.raises(ValueError, match="expected 2 names on the R vector, found None"):
        RVector([1, 2]).named()


def test_read_lazyload_db(tmp_path):
    objs = {"x": _serialize(_strsxp(["one", "two"])), "y": _serialize(_intsxp([4, 5]))}
    _write_lazyload(tmp_path, objs)
    db = read_lazyload_db(tmp_path)
    assert list(db) == ["x", "y"] and db["x"] == ["one", "two"] and db["y"] == [4, 5]
    with pytest.raises(FileNotFoundError, match="Rdata.rdx not found"):
        read_lazyload_db(tmp_path / "missing")
    rdb = (tmp_path / "Rdata.rdb").read_bytes()
    (tmp_path / "Rdata.rdb").write_bytes(rdb[:-3])
    with pytest.raises(ValueError, match="expected .* bytes at offset"):
        read_lazyload_db(tmp_path)


# ------------------------------------------------------------------- fetch / read / corpus
def test_fetch_from_extracted_dir_and_cache(tmp_path):
    root = _fake_package(tmp_path / "pkg")
    cache = fetch_austen(tmp_path / "cache", extracted_dir=root)
    texts = read_austen(cache)
    assert list(texts) == list(AUSTEN_NOVELS)
    assert texts["emma"] == "EMMA\n\nnaïve £5 — “quoted”\n"  # NA line -> "", joined with "\n"
    assert texts["persuasion"] == "PERSUASION\n\nChapter 1 of persuasion\n\nThe end."
    manifest = __import__("json").loads((cache / "manifest.json").read_text())
    assert manifest["novels"]["emma"]["na_lines"] == 1
    assert manifest["novels"]["emma"]["chars"] == len(texts["emma"])
    # the cache is used as is: no source needed any more
    assert fetch_austen(cache) == cache
    assert read_austen(cache, novels=["emma"]) == {"emma": texts["emma"]}
    # tampering that keeps the size is caught by the digest check ...
    (cache / "emma.txt").write_text("EMMA\n\nnaïvE £5 — “quoted”\n", encoding="utf-8")
    with pytest.raises(ValueError, match="emma.txt: expected sha256 .* found"):
        read_austen(cache)
    # ... a size change makes the cache incomplete, so it is rebuilt from the source
    (cache / "emma.txt").write_text("short", encoding="utf-8")
    assert read_austen(cache, extracted_dir=root)["emma"] == texts["emma"]
    with pytest.raises(ValueError, match=r"expected novels from .* found \['ulysses'\]"):
        read_austen(cache, novels=["ulysses"])


def test_austen_corpus_split(tmp_path):
    root = _fake_package(tmp_path / "pkg")
    train, val = austen_corpus("persuasion", tmp_path / "cache", extracted_dir=root)
    assert len(train) == 5 and len(val) == 1 and val[0].startswith("PERSUASION")
    train, val = austen_corpus(["emma", "persuasion"], tmp_path / "cache")
    assert len(train) == 4 and len(val) == 2
    with pytest.raises(ValueError, match=r"among .* found \['ulysses'\]"):
        austen_corpus("ulysses", tmp_path / "cache")
    with pytest.raises(ValueError, match="expected 1 to 5 validation novels, found 6"):
        austen_corpus(list(AUSTEN_NOVELS), tmp_path / "cache")


def test_deb_digest_mismatch_reports_found_digest(tmp_path):
    deb = _fake_deb(tmp_path / "r-cran-janeaustenr_9_all.deb", _fake_package(tmp_path / "pkg"))
    found = hashlib.sha256(deb.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=f"expected sha256 {A.AUSTEN_DEB_SHA256} .* found {found}"):
        fetch_austen(tmp_path / "cache", deb_path=deb)
    assert not (tmp_path / "cache" / "manifest.json").exists()
    cache = fetch_austen(tmp_path / "cache", deb_path=deb, expected_sha256=found)
    assert read_austen(cache)["emma"].startswith("EMMA")


@pytest.mark.parametrize("use_dpkg", [False, True])
def test_extract_deb(tmp_path, monkeypatch, use_dpkg):
    deb = _fake_deb(tmp_path / "x.deb", _fake_package(tmp_path / "pkg"))
    if use_dpkg:
        if A.shutil.which("dpkg") is None:
            pytest.skip("dpkg not installed")
    else:
        monkeypatch.setattr(A.shutil, "which", lambda name: None)
    out = extract_deb(deb, tmp_path / "out")
    assert read_lazyload_db(out / RDATA)["emma"][0] == "EMMA"
    with pytest.raises(ValueError, match="expected an ar archive"):
        monkeypatch.setattr(A.shutil, "which", lambda name: None)
        (tmp_path / "bad.deb").write_bytes(b"not an archive")
        extract_deb(tmp_path / "bad.deb", tmp_path / "out2")


def test_missing_novel_in_package(tmp_path):
    objs = {k: _serialize(_strsxp(v)) for k, v in FAKE.items() if k != "emma"}
    _write_lazyload(tmp_path / "pkg" / RDATA, objs)
    with pytest.raises(ValueError, match="expected novels .* found"):
        fetch_austen(tmp_path / "cache", extracted_dir=tmp_path / "pkg")


# ------------------------------------------------------------------- the real package
@pytest.fixture(scope="module")
def real_austen(request):
    """Fetch the real package once into pytest's cache; skip when apt-get cannot fetch it."""
    cache = request.config.cache.mkdir("translution-austen")
    try:
        return read_austen(cache)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot fetch {A.AUSTEN_PACKAGE}: {e}")
    except ValueError as e:  # another package version than the pinned one
        pytest.skip(f"{A.AUSTEN_PACKAGE} differs from the pinned version: {e}")


def test_real_austen_sizes(real_austen):
    texts = real_austen
    assert list(texts) == list(AUSTEN_NOVELS)
    assert {k: len(v) for k, v in texts.items()} == A.AUSTEN_CHARS
    assert {k: v.count("\n") + 1 for k, v in texts.items()} == A.AUSTEN_LINES
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


def test_without_apt_get_data_unavailable(tmp_path, monkeypatch):
    from translution.data.mnist import DataUnavailableError

    monkeypatch.setattr(A.shutil, "which", lambda name: None)
    with pytest.raises(DataUnavailableError, match="apt-get is not on PATH.*deb_path"):
        fetch_austen(tmp_path / "cache")
