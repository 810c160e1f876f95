"""Reader and writer for the IDX file format used by MNIST and Fashion-MNIST.

The IDX layout is: two zero bytes, a dtype byte, a byte giving the number of dimensions ``ndim``,
``ndim`` big-endian unsigned 32-bit sizes, then the data in C order. Only the unsigned-byte dtype
(``0x08``), the one used by every MNIST-style file, is supported; every other dtype code is rejected
with a :class:`ValueError`.

Files may be plain or gzip-compressed (detected from the gzip magic bytes, not from the name).
Every read validates the header and that the payload length matches the header exactly, so a
truncated or padded file is reported instead of being reshaped into garbage.
"""
from __future__ import annotations

import gzip
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

__all__ = [
    "IDX_UBYTE",
    "parse_idx",
    "read_idx",
    "read_maybe_gzip",
    "encode_idx",
    "write_idx",
    "atomic_write_bytes",
]

PathLike = Union[str, os.PathLike]

#: IDX dtype code of unsigned bytes, the only dtype this module reads and writes.
IDX_UBYTE = 0x08
_KNOWN_DTYPES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32",
                 0x0E: "float64"}
_GZIP_MAGIC = b"\x1f\x8b"


def read_maybe_gzip(path: PathLike) -> bytes:
    """Read a whole file, transparently decompressing it when it is gzip-compressed.

    Args:
        path: File to read. Compression is detected from the gzip magic bytes.

    Returns:
        The (decompressed) file contents.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file looks gzip-compressed but the stream is corrupt or truncated.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(
            f"{path}: corrupt or truncated gzip stream ({len(raw)} compressed bytes): {exc}"
        ) from exc


def parse_idx(data: bytes, name: str = "<bytes>", expected_ndim: Optional[int] = None
              ) -> torch.Tensor:
    """Decode an uncompressed IDX byte string into a uint8 tensor.

    Args:
        data: The full, uncompressed IDX file contents.
        name: Name of the source (a file name), used in error messages.
        expected_ndim: If given, the number of dimensions the header must declare.

    Returns:
        A ``torch.uint8`` tensor whose shape is the one declared in the header (e.g. ``(N, 28, 28)``
        for an image file, ``(N,)`` for a label file). The tensor owns its memory.

    Raises:
        TypeError: If ``data`` is not bytes-like.
        ValueError: If the magic bytes, dtype or dimensions are invalid, or if the payload length
            does not equal the product of the declared sizes (message names the file and gives the
            expected and actual sizes in bytes).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 4:
        raise ValueError(f"{name}: file too short for an IDX header: expected at least 4 bytes, "
                         f"got {len(data)}")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(f"{name}: bad IDX magic: expected first two bytes 0x00 0x00, got "
                         f"0x{data[0]:02x} 0x{data[1]:02x}")
    dtype, ndim = data[2], data[3]
    if dtype != IDX_UBYTE:
        kind = _KNOWN_DTYPES.get(dtype, "unknown")
        raise ValueError(f"{name}: unsupported IDX dtype: expected 0x{IDX_UBYTE:02x} (uint8), got "
                         f"0x{dtype:02x} ({kind})")
    if ndim == 0:
        raise ValueError(f"{name}: IDX header declares 0 dimensions, expected at least 1")
    if expected_ndim is not None and ndim != expected_ndim:
        raise ValueError(f"{name}: expected an IDX file with {expected_ndim} dimensions, header "
                         f"declares {ndim}")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise ValueError(f"{name}: truncated IDX header: expected {header_len} bytes for "
                         f"{ndim} dimensions, file has {len(data)} bytes")
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    payload = int(np.prod(shape, dtype=np.int64))
    expected = header_len + payload
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "trailing data in"
        raise ValueError(f"{name}: {what} IDX file: header declares shape {tuple(shape)}, so "
                         f"expected {expected} bytes, got {len(data)} bytes")
    arr = np.frombuffer(data, dtype=np.uint8, count=payload, offset=header_len)
    return torch.from_numpy(arr.copy()).reshape(shape)


def read_idx(path: PathLike, expected_ndim: Optional[int] = None) -> torch.Tensor:
    """Read an IDX file (plain or gzip-compressed) into a uint8 tensor.

    Args:
        path: The file. Gzip compression is detected from its content.
        expected_ndim: If given, the number of dimensions the header must declare.

    Returns:
        A ``torch.uint8`` tensor with the shape declared in the header.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is corrupt, truncated, or not a uint8 IDX file.
    """
    path = Path(path)
    return parse_idx(read_maybe_gzip(path), name=str(path), expected_ndim=expected_ndim)


def encode_idx(tensor: torch.Tensor) -> bytes:
    """Encode a uint8 tensor as an (uncompressed) IDX byte string.

    Args:
        tensor: A ``torch.uint8`` tensor with 1 to 255 dimensions (e.g. ``(N, 28, 28)``).

    Returns:
        The IDX bytes (header followed by the C-order data).

    Raises:
        TypeError: If ``tensor`` is not a uint8 tensor.
        ValueError: If it has 0 or more than 255 dimensions or a size above 2**32 - 1.
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype != torch.uint8:
        raise TypeError(f"expected a torch.uint8 tensor, got dtype {tensor.dtype}")
    if not 1 <= tensor.dim() <= 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {tensor.dim()}")
    if any(s > 0xFFFFFFFF for s in tensor.shape):
        raise ValueError(f"IDX sizes must fit in 32 bits, got shape {tuple(tensor.shape)}")
    header = bytes([0, 0, IDX_UBYTE, tensor.dim()]) + struct.pack(f">{tensor.dim()}I",
                                                                  *tensor.shape)
    return header + tensor.detach().cpu().contiguous().numpy().tobytes()


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder + ``os.replace``).

    Readers never observe a partially written file: they see either the old file or the new one.

    Args:
        path: Destination. Parent folders are created.
        data: Bytes to write.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; cached data is meant to be shared
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_idx(path: PathLike, tensor: torch.Tensor, compress: Optional[bool] = None) -> Path:
    """Write a uint8 tensor as an IDX file, atomically.

    Args:
        path: Destination file.
        tensor: A ``torch.uint8`` tensor, e.g. images ``(N, 28, 28)`` or labels ``(N,)``.
        compress: Gzip the file. ``None`` (default) compresses iff the name ends with ``.gz``.

    Returns:
        The destination path.

    Raises:
        TypeError: If ``tensor`` is not a uint8 tensor.
        ValueError: If its shape cannot be stored in IDX.
    """
    path = Path(path)
    data = encode_idx(tensor)
    if compress is None:
        compress = path.name.endswith(".gz")
    if compress:
        data = gzip.compress(data, compresslevel=6, mtime=0)
    return atomic_write_bytes(path, data)
