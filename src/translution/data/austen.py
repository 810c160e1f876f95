"""Jane Austen's six novels from the Debian package ``r-cran-janeaustenr`` (no R needed).

The package (``r-cran-janeaustenr_1.0.0-1_all.deb``, SHA-256 :data:`AUSTEN_DEB_SHA256`) stores the
novels in an R lazy-load database, ``usr/lib/R/site-library/janeaustenr/data/Rdata.{rdx,rdb}``:

* ``Rdata.rdx`` is a gzip-compressed R serialization (XDR, format ``"X\\n"``) of a list whose
  ``variables`` entry maps each object name to an ``(offset, length)`` integer pair into ``.rdb``;
* each ``.rdb`` record is a 4-byte big-endian uncompressed length followed by a zlib stream that
  holds the serialized object; for the novels, a character vector with one element per line of
  the book (blank lines are ``""``; ``NA`` would be read as ``""`` too).

:func:`unserialize` is a standard-library reader for the subset of R's serialization format that
data objects use (vectors, pair lists, attributes, symbols, references, environments).

Text convention: a novel's text is its lines joined with ``"\\n"`` (no trailing newline; NA lines
would be empty) and "characters" are Unicode code points (``len(text)``). Measured on
1.0.0-1 (:data:`AUSTEN_CHARS`, :data:`AUSTEN_LINES`): emma 883,027, prideprejudice 684,767,
all six 4,025,022 characters in 73,422 lines. The sizes quoted in the project's DATA.md use two
other conventions, both reproduced exactly by the tests: per novel they count every line with its
newline terminator (``len(text) + 1``: emma 883,028, prideprejudice 684,768) and the total is the
six texts joined by a blank line (``len("\\n\\n".join(texts))`` = 4,025,032; this is also what
:func:`~translution.data.text.prepare_corpus` writes for the character tokenizer, whose default
document separator is ``"\\n\\n"``).

:func:`fetch_austen` downloads (``apt-get download``), checks, extracts (``dpkg -x``, or a pure
Python ``ar``/``tar`` fallback) and parses the package once, caching one UTF-8 ``<novel>.txt`` per
novel plus ``manifest.json`` (sizes and SHA-256) under ``<default_cache_root()>/austen``;
:func:`read_austen` returns the texts and :func:`austen_corpus` a train/validation split by novel.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import bz2
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

from .text import atomic_write_bytes, atomic_write_json, default_cache_root

__all__ = [
    "AUSTEN_CHARS",
    "AUSTEN_DEB_SHA256",
    "AUSTEN_DEB_VERSION",
    "AUSTEN_LINES",
    "AUSTEN_NOVELS",
    "AUSTEN_PACKAGE",
    "RNull",
    "RObject",
    "RVector",
    "R_NULL",
    "austen_corpus",
    "default_austen_dir",
    "extract_deb",
    "fetch_austen",
    "read_austen",
    "read_lazyload_db",
    "unserialize",
]

PathLike = Union[str, "os.PathLike[str]"]

AUSTEN_PACKAGE = "r-cran-janeaustenr"
AUSTEN_DEB_VERSION = "1.0.0-1"
AUSTEN_DEB_SHA256 = "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95"
#: Novel names, in the order of the package's lazy-load index.
AUSTEN_NOVELS = (
    "emma",
    "mansfieldpark",
    "northangerabbey",
    "persuasion",
    "prideprejudice",
    "sensesensibility",
)
#: Characters (code points) per novel, lines joined with "\n", no trailing newline (1.0.0-1).
AUSTEN_CHARS = {
    "emma": 883_027,
    "mansfieldpark": 883_278,
    "northangerabbey": 433_410,
    "persuasion": 466_853,
    "prideprejudice": 684_767,
    "sensesensibility": 673_687,
}
#: Lines (character-vector elements) per novel (1.0.0-1).
AUSTEN_LINES = {
    "emma": 16_235,
    "mansfieldpark": 15_349,
    "northangerabbey": 7_856,
    "persuasion": 8_328,
    "prideprejudice": 13_030,
    "sensesensibility": 12_624,
}
_RDATA_SUBDIR = "usr/lib/R/site-library/janeaustenr/data"
_MANIFEST_VERSION = 1


# ----------------------------------------------------------------------------------------------
# R serialization (XDR) reader
# ----------------------------------------------------------------------------------------------
class RNull:
    """R's ``NULL``."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NULL"


R_NULL = RNull()


class RObject:
    """An R object without a direct Python equivalent (symbol, environment, language, ...).

    Attributes:
        type: R ``SEXPTYPE`` name (``"symbol"``, ``"environment"``, ...).
        value: The payload (a name for symbols, a dict for environments, a list otherwise).
        attributes: Its attributes (dict), if any.
    """

    def __init__(self, type: str, value: Any = None, attributes: dict | None = None) -> None:
        self.type = type
        self.value = value
        self.attributes = attributes or {}

    def __repr__(self) -> str:
        return f"RObject({self.type!r}, {self.value!r})"


class RVector(list):
    """A Python list carrying R attributes (``names``, ``class``, ...) in ``.attributes``."""

    attributes: dict

    def __init__(self, items: Iterable = (), attributes: dict | None = None) -> None:
        super().__init__(items)
        self.attributes = attributes or {}

    def named(self) -> dict:
        """``{name: element}`` using the ``names`` attribute.

        Raises:
            ValueError: The vector has no names or their count differs from its length.
        """
        names = self.attributes.get("names")
        if names is None or len(names) != len(self):
            found = None if names is None else len(names)
            raise ValueError(f"expected {len(self)} names on the R vector, found {found}")
        return dict(zip(names, self))


# SEXPTYPEs
_NILSXP, _SYMSXP, _LISTSXP, _CLOSXP, _ENVSXP, _PROMSXP, _LANGSXP = 0, 1, 2, 3, 4, 5, 6
_SPECIALSXP, _BUILTINSXP, _CHARSXP, _LGLSXP = 7, 8, 9, 10
_INTSXP, _REALSXP, _CPLXSXP, _STRSXP, _DOTSXP = 13, 14, 15, 16, 17
_VECSXP, _EXPRSXP, _BCODESXP, _EXTPTRSXP, _WEAKREFSXP, _RAWSXP, _S4SXP = 19, 20, 21, 22, 23, 24, 25
# pseudo-SEXPTYPEs of the serialization format
_REFSXP, _NILVALUE_SXP, _GLOBALENV_SXP, _UNBOUNDVALUE_SXP = 255, 254, 253, 252
_MISSINGARG_SXP, _BASENAMESPACE_SXP, _NAMESPACESXP, _PACKAGESXP = 251, 250, 249, 248
_PERSISTSXP, _EMPTYENV_SXP, _BASEENV_SXP, _ALTREP_SXP = 247, 242, 241, 238
_ATTRLANGSXP, _ATTRLISTSXP = 240, 239
_IS_OBJECT, _HAS_ATTR, _HAS_TAG = 1 << 8, 1 << 9, 1 << 10
_NA_INTEGER = -(2**31)
_PAIRLIST_TYPES = {_LISTSXP: "pairlist", _LANGSXP: "language", _CLOSXP: "closure",
                   _PROMSXP: "promise", _DOTSXP: "dots", _ATTRLANGSXP: "language",
                   _ATTRLISTSXP: "pairlist"}
_SPECIAL_VALUES = {_GLOBALENV_SXP: "globalenv", _UNBOUNDVALUE_SXP: "unbound",
                   _MISSINGARG_SXP: "missingarg", _BASENAMESPACE_SXP: "basenamespace",
                   _EMPTYENV_SXP: "emptyenv", _BASEENV_SXP: "baseenv"}


class _XDRReader:
    def __init__(self, data: bytes) -> None:
        self.buf = memoryview(data)
        self.pos = 0
        self.refs: list[Any] = []

    def _take(self, n: int) -> memoryview:
        if self.pos + n > len(self.buf):
            raise ValueError(
                f"truncated R serialization: expected {n} more bytes at offset {self.pos}, "
                f"found {len(self.buf) - self.pos}"
            )
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        return struct.unpack(">i", self._take(4))[0]

    def length(self) -> int:
        n = self.int()
        if n == -1:  # long vector: two more ints
            hi, lo = struct.unpack(">II", self._take(8))
            return (hi << 32) | lo
        return n

    def ints(self, n: int) -> list:
        vals = struct.unpack(f">{n}i", self._take(4 * n))
        return [None if v == _NA_INTEGER else v for v in vals]

    def doubles(self, n: int) -> list:
        return list(struct.unpack(f">{n}d", self._take(8 * n)))

    def header(self) -> None:
        fmt = bytes(self._take(2))
        if fmt != b"X\n":
            raise ValueError(f"expected R XDR serialization (b'X\\n'), found {fmt!r}")
        version = self.int()
        self.int()  # writer R version
        self.int()  # minimal reader R version
        if version == 3:
            self._take(self.int())  # native encoding name
        elif version != 2:
            raise ValueError(f"expected R serialization version 2 or 3, found {version}")

    def charsxp(self, flags: int) -> str | None:
        n = self.int()
        if n == -1:
            return None  # NA_character_
        raw = bytes(self._take(n))
        levels = flags >> 12
        if levels & (1 << 2):  # LATIN1
            return raw.decode("latin-1")
        if levels & (1 << 1):  # BYTES
            return raw.decode("utf-8", errors="surrogateescape")
        return raw.decode("utf-8")

    def attributes(self, flags: int) -> dict:
        if not flags & _HAS_ATTR:
            return {}
        attr = self.item()
        return _pairlist_to_dict(attr)

    def item(self) -> Any:
        flags = self.int()
        t = flags & 0xFF
        if t == _NILVALUE_SXP:
            return R_NULL
        if t == _REFSXP:
            idx = flags >> 8
            if idx == 0:
                idx = self.int()
            if not 1 <= idx <= len(self.refs):
                raise ValueError(f"R reference {idx} out of range [1, {len(self.refs)}]")
            return self.refs[idx - 1]
        if t in _SPECIAL_VALUES:
            return RObject(_SPECIAL_VALUES[t])
        if t == _SYMSXP:
            name = self.item()  # a CHARSXP
            sym = RObject("symbol", name)
            self.refs.append(sym)
            return sym
        if t in (_PACKAGESXP, _NAMESPACESXP, _PERSISTSXP):
            self.int()  # 0
            info = [self.item() for _ in range(self.int())]
            obj = RObject({_PACKAGESXP: "package", _NAMESPACESXP: "namespace",
                           _PERSISTSXP: "persist"}[t], info)
            self.refs.append(obj)
            return obj
        if t == _ENVSXP:
            self.int()  # locked
            env = RObject("environment", {})
            self.refs.append(env)
            enclos = self.item()
            frame = self.item()
            hashtab = self.item()
            attrib = self.item()
            env.value = _pairlist_to_dict(frame)
            if isinstance(hashtab, list):
                for bucket in hashtab:
                    env.value.update(_pairlist_to_dict(bucket))
            env.attributes = _pairlist_to_dict(attrib)
            env.enclos = enclos  # type: ignore[attr-defined]
            return env
        if t in _PAIRLIST_TYPES:
            return self.pairlist(flags)
        if t == _CHARSXP:
            return self.charsxp(flags)
        if t in (_LGLSXP, _INTSXP):
            vals = self.ints(self.length())
            if t == _LGLSXP:
                vals = [None if v is None else bool(v) for v in vals]
            return RVector(vals, self.attributes(flags))
        if t == _REALSXP:
            return RVector(self.doubles(self.length()), self.attributes(flags))
        if t == _CPLXSXP:
            d = self.doubles(2 * self.length())
            return RVector([complex(a, b) for a, b in zip(d[::2], d[1::2])],
                           self.attributes(flags))
        if t == _STRSXP:
            n = self.length()
            out = []
            for _ in range(n):
                cflags = self.int()
                if cflags & 0xFF != _CHARSXP:
                    raise ValueError(
                        f"expected CHARSXP (9) inside a character vector, found {cflags & 0xFF}"
                    )
                out.append(self.charsxp(cflags))
            return RVector(out, self.attributes(flags))
        if t in (_VECSXP, _EXPRSXP):
            n = self.length()
            return RVector([self.item() for _ in range(n)], self.attributes(flags))
        if t == _RAWSXP:
            return RVector([bytes(self._take(self.length()))], self.attributes(flags))
        if t == _S4SXP:
            return RObject("S4", None, self.attributes(flags))
        if t == _ALTREP_SXP:
            info = self.item()
            state = self.item()
            attr = self.item()
            return RObject("altrep", (info, state), _pairlist_to_dict(attr))
        raise ValueError(f"unsupported R SEXPTYPE {t} (flags {flags:#x}) at offset {self.pos - 4}")

    def pairlist(self, flags: int) -> RObject:
        # iterate along the CDR chain instead of recursing (long pair lists)
        t = flags & 0xFF
        items: list[tuple[Any, Any]] = []
        attributes = self.attributes(flags)
        while True:
            tag = self.item() if flags & _HAS_TAG else None
            car = self.item()
            items.append((tag.value if isinstance(tag, RObject) else tag, car))
            flags = self.int()
            nt = flags & 0xFF
            if nt == _NILVALUE_SXP:
                break
            if nt != t:
                self.pos -= 4
                items.append((None, self.item()))  # improper tail
                break
            if flags & _HAS_ATTR:
                self.attributes(flags)  # attributes on inner cells: ignored
        return RObject(_PAIRLIST_TYPES[t], items, attributes)


def _pairlist_to_dict(obj: Any) -> dict:
    if isinstance(obj, RObject) and obj.type == "pairlist":
        return {k: v for k, v in obj.value}
    return {}


def unserialize(data: bytes) -> Any:
    """Decode an uncompressed R serialization in XDR format (``b"X\\n"`` header, version 2/3).

    Vectors become :class:`RVector` (a list with ``.attributes``; ``NA`` → ``None``), ``NULL``
    becomes :data:`R_NULL`, and everything else an :class:`RObject`.

    Args:
        data: The serialized bytes (gunzip ``.rds``/``.rdx`` files first).

    Returns:
        The decoded object.

    Raises:
        ValueError: Not XDR, truncated, or an unsupported construct.
    """
    r = _XDRReader(data)
    r.header()
    return r.item()


def _decompress_record(record: bytes, where: str) -> bytes:
    if len(record) < 5:
        raise ValueError(f"{where}: expected a compressed record, found {len(record)} bytes")
    expected_len = struct.unpack(">I", record[:4])[0]
    body = record[4:]
    if body[:1] in (b"x",):  # zlib (R's default "compress = TRUE")
        out = zlib.decompress(body)
    elif body[:1] == b"Z":  # xz
        out = lzma.decompress(body[1:])
    elif body[:1] == b"2":  # bzip2
        out = bz2.decompress(body[1:])
    elif body[:1] == b"1":  # zlib with type byte
        out = zlib.decompress(body[1:])
    elif body[:1] == b"0":  # stored
        out = body[1:]
    else:
        raise ValueError(f"{where}: unknown compression marker {body[:1]!r}")
    if len(out) != expected_len:
        raise ValueError(
            f"{where}: expected {expected_len} decompressed bytes, found {len(out)}"
        )
    return out


def read_lazyload_db(data_dir: PathLike, name: str = "Rdata") -> dict[str, Any]:
    """Read every object of an R lazy-load database ``<data_dir>/<name>.{rdx,rdb}``.

    Args:
        data_dir: Folder with the ``.rdx`` and ``.rdb`` files.
        name: Base name of the database (``"Rdata"`` for package data).

    Returns:
        ``{object name: decoded object}`` in index order.

    Raises:
        FileNotFoundError: A file is missing.
        ValueError: Malformed index or record.
    """
    data_dir = Path(data_dir)
    rdx_path, rdb_path = data_dir / f"{name}.rdx", data_dir / f"{name}.rdb"
    for p in (rdx_path, rdb_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found")
    raw = rdx_path.read_bytes()
    raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else _decompress_record(raw, str(rdx_path))
    index = unserialize(raw)
    if not isinstance(index, RVector):
        raise ValueError(f"{rdx_path}: expected a list, found {type(index).__name__}")
    variables = index.named().get("variables")
    if not isinstance(variables, RVector):
        raise ValueError(f"{rdx_path}: expected a 'variables' list in the index")
    out: dict[str, Any] = {}
    with open(rdb_path, "rb") as f:
        for obj_name, pos in variables.named().items():
            if not isinstance(pos, RVector) or len(pos) != 2:
                raise ValueError(
                    f"{rdx_path}: expected an (offset, length) pair for {obj_name!r}, found {pos!r}"
                )
            offset, length = int(pos[0]), int(pos[1])
            f.seek(offset)
            record = f.read(length)
            if len(record) != length:
                raise ValueError(
                    f"{rdb_path}: expected {length} bytes at offset {offset} for {obj_name!r}, "
                    f"found {len(record)}"
                )
            out[obj_name] = unserialize(_decompress_record(record, f"{rdb_path}:{obj_name}"))
    return out


# ----------------------------------------------------------------------------------------------
# the Debian package
# ----------------------------------------------------------------------------------------------
def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _apt_download(dest: Path, timeout: float) -> Path:
    from .mnist import DataUnavailableError

    apt = shutil.which("apt-get")
    if apt is None:
        raise DataUnavailableError(
            "apt-get is not on PATH; download r-cran-janeaustenr_1.0.0-1_all.deb yourself and "
            "pass deb_path=..."
        )
    errors = []
    for spec in (f"{AUSTEN_PACKAGE}={AUSTEN_DEB_VERSION}", AUSTEN_PACKAGE):
        proc = subprocess.run([apt, "download", spec], cwd=dest, capture_output=True, text=True,
                              timeout=timeout)
        debs = sorted(dest.glob(f"{AUSTEN_PACKAGE}_*.deb"))
        if proc.returncode == 0 and debs:
            return debs[-1]
        errors.append(f"`apt-get download {spec}` (exit {proc.returncode}): "
                      f"{proc.stderr.strip()[-300:]}")
    raise DataUnavailableError(
        "could not download the Jane Austen package:\n  " + "\n  ".join(errors)
    )


def extract_deb(deb_path: PathLike, dest: PathLike) -> Path:
    """Extract a ``.deb``'s files into ``dest``: ``dpkg -x``, or pure Python when dpkg is missing.

    The fallback reads the ``ar`` archive and its ``data.tar.{xz,gz,bz2}`` member (``.zst`` needs
    dpkg).

    Returns:
        ``dest``.
    """
    deb_path, dest = Path(deb_path), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dpkg = shutil.which("dpkg")
    if dpkg is not None:
        proc = subprocess.run([dpkg, "-x", str(deb_path), str(dest)], capture_output=True,
                              text=True)
        if proc.returncode == 0:
            return dest
    data = deb_path.read_bytes()
    if data[:8] != b"!<arch>\n":
        raise ValueError(f"{deb_path}: expected an ar archive (b'!<arch>\\n'), found {data[:8]!r}")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)
        if name.startswith("data.tar"):
            mode = {"data.tar.xz": "r:xz", "data.tar.gz": "r:gz", "data.tar.bz2": "r:bz2",
                    "data.tar": "r:"}.get(name)
            if mode is None:
                raise ValueError(f"{deb_path}: {name} needs dpkg to extract")
            import io

            with tarfile.open(fileobj=io.BytesIO(body), mode=mode) as tf:
                try:
                    tf.extractall(dest, filter="data")
                except TypeError:  # Python without extraction filters
                    tf.extractall(dest)
            return dest
    raise ValueError(f"{deb_path}: no data.tar member found")


def default_austen_dir() -> Path:
    """``<default_cache_root()>/austen`` (the text cache of :func:`fetch_austen`)."""
    return default_cache_root() / "austen"


def _load_manifest(cache_dir: Path) -> dict | None:
    try:
        manifest = json.loads((cache_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("version") != _MANIFEST_VERSION:
        return None
    for name, info in manifest.get("novels", {}).items():
        p = cache_dir / f"{name}.txt"
        if not p.is_file() or p.stat().st_size != info.get("bytes"):
            return None
    if set(manifest.get("novels", {})) != set(AUSTEN_NOVELS):
        return None
    return manifest


def fetch_austen(
    cache_dir: PathLike | None = None,
    *,
    deb_path: PathLike | None = None,
    extracted_dir: PathLike | None = None,
    expected_sha256: str | None = AUSTEN_DEB_SHA256,
    force: bool = False,
    timeout: float = 300.0,
) -> Path:
    """Make sure the six novels are cached as text files; return the cache folder.

    Source, in order: ``extracted_dir`` (a folder where the package was unpacked, or its
    ``.../janeaustenr/data`` folder), ``deb_path`` (the ``.deb``), else ``apt-get download``
    into a temporary folder. A ``.deb`` must have SHA-256 ``expected_sha256`` (pass ``None`` to
    accept another version; the error message prints the found digest). Nothing is fetched when
    the cache is already complete (unless ``force``).

    Cache layout: ``<cache_dir>/<novel>.txt`` (UTF-8, lines joined with ``"\\n"``) and
    ``manifest.json`` (per novel: lines, characters, bytes, sha256; plus the .deb digest).

    Args:
        cache_dir: Cache folder (default :func:`default_austen_dir`).
        deb_path: A local ``r-cran-janeaustenr_*.deb``.
        extracted_dir: A local extraction of the package.
        expected_sha256: Required SHA-256 of the ``.deb``, or ``None`` to skip the check.
        force: Rebuild the cache even if complete.
        timeout: Seconds allowed for ``apt-get download``.

    Returns:
        The cache folder.

    Raises:
        DataUnavailableError: apt-get is missing or fails (a ``RuntimeError``).
        ValueError: Digest mismatch (expected vs found), or unexpected database contents.
    """
    cache = Path(cache_dir).expanduser().resolve() if cache_dir else default_austen_dir()
    if not force and _load_manifest(cache) is not None:
        return cache

    deb_digest = None
    with tempfile.TemporaryDirectory(prefix="translution-austen-") as tmp:
        tmp = Path(tmp)
        if extracted_dir is not None:
            root = Path(extracted_dir)
            data_dir = root if (root / "Rdata.rdx").is_file() else root / _RDATA_SUBDIR
        else:
            deb = Path(deb_path) if deb_path is not None else _apt_download(tmp, timeout)
            deb_digest = _sha256_file(deb)
            if expected_sha256 is not None and deb_digest != expected_sha256:
                raise ValueError(
                    f"{deb.name}: expected sha256 {expected_sha256} "
                    f"({AUSTEN_PACKAGE} {AUSTEN_DEB_VERSION}), found {deb_digest}; "
                    "if this other version is acceptable, pass expected_sha256=None or "
                    f"expected_sha256='{deb_digest}'"
                )
            data_dir = extract_deb(deb, tmp / "root") / _RDATA_SUBDIR
        objects = read_lazyload_db(data_dir)

    texts: dict[str, str] = {}
    novels: dict[str, dict[str, Any]] = {}
    missing = [n for n in AUSTEN_NOVELS if n not in objects]
    if missing:
        raise ValueError(
            f"expected novels {list(AUSTEN_NOVELS)} in the package data, found {list(objects)}"
        )
    for name in AUSTEN_NOVELS:
        lines = objects[name]
        if not isinstance(lines, RVector) or not all(x is None or isinstance(x, str)
                                                      for x in lines):
            raise ValueError(f"{name}: expected a character vector, found {type(lines).__name__}")
        text = "\n".join("" if line is None else line for line in lines)
        data = text.encode("utf-8")
        texts[name] = text
        novels[name] = {
            "lines": len(lines),
            "na_lines": sum(1 for x in lines if x is None),
            "chars": len(text),
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    for name, text in texts.items():
        atomic_write_bytes(cache / f"{name}.txt", text.encode("utf-8"))
    atomic_write_json(cache / "manifest.json", {
        "version": _MANIFEST_VERSION,
        "source": f"{AUSTEN_PACKAGE} {AUSTEN_DEB_VERSION} (Debian)",
        "deb_sha256": deb_digest,
        "convention": "lines joined with '\\n', NA lines empty, no trailing newline; "
                      "chars = Unicode code points",
        "total_chars": sum(v["chars"] for v in novels.values()),
        "novels": novels,
    })
    return cache


def read_austen(
    cache_dir: PathLike | None = None,
    *,
    novels: Sequence[str] | None = None,
    verify: bool = True,
    **fetch_kwargs: Any,
) -> dict[str, str]:
    """The novels' texts, fetching and caching the package on first use.

    Args:
        cache_dir: Cache folder (default :func:`default_austen_dir`).
        novels: Subset of :data:`AUSTEN_NOVELS` (default all six, in that order).
        verify: Check each cached file's SHA-256 against ``manifest.json``.
        **fetch_kwargs: ``deb_path``, ``extracted_dir``, ``expected_sha256``, ``force``,
            ``timeout`` for :func:`fetch_austen`.

    Returns:
        ``{novel name: text}``; a text is its lines joined with ``"\\n"`` (NA lines empty).

    Raises:
        ValueError: Unknown novel name, or a cached file whose digest differs.
    """
    names = list(AUSTEN_NOVELS) if novels is None else list(novels)
    unknown = [n for n in names if n not in AUSTEN_NOVELS]
    if unknown:
        raise ValueError(f"expected novels from {list(AUSTEN_NOVELS)}, found {unknown}")
    cache = fetch_austen(cache_dir, **fetch_kwargs)
    manifest = _load_manifest(cache)
    if manifest is None:  # pragma: no cover - fetch_austen just wrote it
        raise ValueError(f"{cache}/manifest.json is missing or incomplete")
    out = {}
    for name in names:
        data = (cache / f"{name}.txt").read_bytes()
        if verify:
            found = hashlib.sha256(data).hexdigest()
            expected = manifest["novels"][name]["sha256"]
            if found != expected:
                raise ValueError(
                    f"{cache / (name + '.txt')}: expected sha256 {expected}, found {found} "
                    "(delete the cache folder or call fetch_austen(force=True))"
                )
        out[name] = data.decode("utf-8")
    return out


def austen_corpus(
    val_novel: Union[str, Sequence[str]] = "persuasion",
    cache_dir: PathLike | None = None,
    **fetch_kwargs: Any,
) -> tuple[list[str], list[str]]:
    """Train/validation split by novel: hold out ``val_novel`` (one name or several).

    Args:
        val_novel: Novel(s) for validation (default ``"persuasion"``).
        cache_dir: Cache folder (default :func:`default_austen_dir`).
        **fetch_kwargs: Passed to :func:`fetch_austen`.

    Returns:
        ``(train_texts, val_texts)``: lists of novel texts in :data:`AUSTEN_NOVELS` order, ready
        for :func:`translution.data.text.prepare_corpus`.

    Raises:
        ValueError: Unknown novel, or every novel held out.
    """
    held = [val_novel] if isinstance(val_novel, str) else list(val_novel)
    unknown = [n for n in held if n not in AUSTEN_NOVELS]
    if unknown:
        raise ValueError(f"val_novel must be among {list(AUSTEN_NOVELS)}, found {unknown}")
    if not held or len(set(held)) == len(AUSTEN_NOVELS):
        raise ValueError(
            f"expected 1 to {len(AUSTEN_NOVELS) - 1} validation novels, found {len(set(held))}"
        )
    texts = read_austen(cache_dir, **fetch_kwargs)
    train = [t for n, t in texts.items() if n not in held]
    val = [t for n, t in texts.items() if n in held]
    return train, val
