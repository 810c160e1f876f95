"""Jane Austen's six novels from the Debian package ``r-cran-janeaustenr`` (no R needed): its R
lazy-load database, read once by ``rdata`` into a cache of UTF-8 ``<novel>.txt`` files (lines
joined by ``"\\n"``, NA lines empty) with a ``manifest.json``; a mismatching cache is rebuilt."""
from __future__ import annotations

import json
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..utils import (PathLike, atomic_write_bytes, atomic_write_json, require, sha256_bytes,
                     sha256_file)
from .fetch import AUSTEN_DEB, AUSTEN_RDATA_DIR, default_cache_dir, unpacked_deb


#: Novel names, in the order of the package's index.
AUSTEN_NOVELS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice",
                 "sensesensibility")
#: Characters (code points) per novel: lines joined with "\n", no trailing newline.
AUSTEN_CHARS = {"emma": 883_027, "mansfieldpark": 883_278, "northangerabbey": 433_410,
                "persuasion": 466_853, "prideprejudice": 684_767, "sensesensibility": 673_687}
_MANIFEST_VERSION = 2


def _parse_r(data: bytes, where: str) -> Any:
    """An R serialization (plain or gzip) as Python objects, by ``rdata``."""
    rdata = require("rdata", "text")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Unknown file type: assumed RDS"
            return rdata.conversion.convert(rdata.parser.parse_data(data))
    except Exception as exc:  # noqa: BLE001 - any parser failure is a bad file
        raise ValueError(f"{where}: not a readable R serialization ({type(exc).__name__}: "
                         f"{exc})") from exc


def read_lazyload_db(data_dir: PathLike, name: str = "Rdata") -> Dict[str, Any]:
    """Every object of the R lazy-load database ``<data_dir>/<name>.{rdx,rdb}``, in index order
    (``ValueError`` for a malformed index or record)."""
    rdx, rdb = Path(data_dir) / f"{name}.rdx", Path(data_dir) / f"{name}.rdb"
    index = _parse_r(rdx.read_bytes(), str(rdx))
    variables = index.get("variables") if isinstance(index, dict) else None
    if not isinstance(variables, dict):
        raise ValueError(f"{rdx}: expected a list with a 'variables' entry")
    blob, out = rdb.read_bytes(), {}
    for obj, (offset, length) in variables.items():
        record, where = blob[int(offset):int(offset) + int(length)], f"{rdb}:{obj}"
        if len(record) != length or len(record) < 5:
            raise ValueError(f"{where}: expected {length} bytes at offset {offset}, found "
                             f"{len(record)}")
        try:
            data = zlib.decompress(record[4:])
        except zlib.error as exc:
            raise ValueError(f"{where}: expected a zlib-compressed record: {exc}") from exc
        if len(data) != int.from_bytes(record[:4], "big"):
            raise ValueError(f"{where}: expected {int.from_bytes(record[:4], 'big')} "
                             f"decompressed bytes, found {len(data)}")
        out[str(obj)] = _parse_r(data, where)
    return out


def _novels_from(data_dir: Path) -> Dict[str, str]:
    """The six texts of an unpacked package's data folder, checked against the known sizes."""
    objects = read_lazyload_db(data_dir)
    if any(n not in objects for n in AUSTEN_NOVELS):
        raise ValueError(f"{data_dir}: expected novels {list(AUSTEN_NOVELS)}, found "
                         f"{list(objects)}")
    texts = {n: "\n".join("" if line is None else str(line) for line in objects[n])
             for n in AUSTEN_NOVELS}
    sizes = {n: len(t) for n, t in texts.items()}
    if sizes != AUSTEN_CHARS:
        raise ValueError(f"{data_dir}: expected novels of {AUSTEN_CHARS} characters, found {sizes}")
    return texts


def _cache_ok(cache: Path) -> bool:
    """Whether the cache matches its manifest (sizes and digests) and the known sizes."""
    try:
        novels = json.loads((cache / "manifest.json").read_text(encoding="utf-8"))["novels"]
        return all(novels[n]["chars"] == AUSTEN_CHARS[n]
                   and (cache / f"{n}.txt").stat().st_size == novels[n]["bytes"]
                   and sha256_file(cache / f"{n}.txt") == novels[n]["sha256"]
                   for n in AUSTEN_NOVELS)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def fetch_austen(cache_dir: Optional[PathLike] = None, *, deb_path: Optional[PathLike] = None,
                 extracted_dir: Optional[PathLike] = None) -> Path:
    """The cache folder of the novels' text files (default ``<cache>/austen``), (re)built when
    wrong from ``extracted_dir`` (an unpacked package or its ``…/janeaustenr/data``),
    ``deb_path`` (the pinned ``.deb``), else ``apt-get download``."""
    cache = Path(cache_dir).expanduser().resolve() if cache_dir else default_cache_dir() / "austen"
    if _cache_ok(cache):
        return cache
    with tempfile.TemporaryDirectory(prefix="translution-austen-") as tmp:
        root = (Path(extracted_dir) if extracted_dir is not None
                else unpacked_deb(AUSTEN_DEB, tmp, deb_path))
        texts = _novels_from(root if (root / "Rdata.rdx").is_file() else root / AUSTEN_RDATA_DIR)
    manifest = {}
    for name, text in texts.items():
        data = text.encode("utf-8")
        atomic_write_bytes(cache / f"{name}.txt", data)
        manifest[name] = {"chars": len(text), "bytes": len(data), "sha256": sha256_bytes(data)}
    atomic_write_json(cache / "manifest.json", {
        "version": _MANIFEST_VERSION, "source": f"{AUSTEN_DEB[0]} {AUSTEN_DEB[1]} (Debian)",
        "novels": manifest})
    return cache


def read_austen(cache_dir: Optional[PathLike] = None, **fetch_kwargs: Any) -> Dict[str, str]:
    """``{novel: text}`` in :data:`AUSTEN_NOVELS` order, from the cache of :func:`fetch_austen`
    (given ``fetch_kwargs``)."""
    cache, out = fetch_austen(cache_dir, **fetch_kwargs), {}
    for name in AUSTEN_NOVELS:
        path = cache / f"{name}.txt"
        try:
            out[name] = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not UTF-8 at byte {exc.start} ({exc.reason}); delete the "
                             f"cache folder {cache} to rebuild it") from None
    return out


def austen_corpus(val_novel: Union[str, Sequence[str]] = "persuasion",
                  cache_dir: Optional[PathLike] = None, **fetch_kwargs: Any
                  ) -> Tuple[List[str], List[str]]:
    """``(train_texts, val_texts)``: the novels with ``val_novel`` (one or several) held out,
    in :data:`AUSTEN_NOVELS` order, for :func:`~translution.data.text.prepare_corpus`."""
    held = [val_novel] if isinstance(val_novel, str) else list(val_novel)
    unknown = [n for n in held if n not in AUSTEN_NOVELS]
    if unknown:
        raise ValueError(f"val_novel must be among {list(AUSTEN_NOVELS)}, found {unknown}")
    if not held or len(set(held)) == len(AUSTEN_NOVELS):
        raise ValueError(f"expected 1 to {len(AUSTEN_NOVELS) - 1} validation novels, found "
                         f"{len(set(held))}")
    texts = read_austen(cache_dir, **fetch_kwargs)
    return ([t for n, t in texts.items() if n not in held],
            [t for n, t in texts.items() if n in held])
