"""The IDX format of MNIST files (``00 00 08 ndim``, ``ndim`` big-endian uint32 sizes, uint8 data):
a header and size check before torchvision reads one (its readers only assert), and a writer."""
from __future__ import annotations

import gzip
import math
import os
import struct
from pathlib import Path
from typing import Optional, Tuple

import torch

from ..utils import PathLike, atomic_write_bytes



def check_idx(path: PathLike, ndim: Optional[int] = None) -> Tuple[int, ...]:
    """The shape a plain uint8 IDX file declares (``ndim`` dimensions, if given); ``ValueError``
    naming the file for a bad header or a size other than the header's."""
    path = Path(path)
    with open(path, "rb") as f:
        head, size = f.read(4), os.fstat(f.fileno()).st_size
        if len(head) < 4:
            raise ValueError(f"{path}: file too short for an IDX header: expected at least 4 "
                             f"bytes, got {len(head)}")
        dims = f.read(4 * head[3])
    if head[:2] != b"\0\0":
        raise ValueError(f"{path}: bad IDX magic: expected 0x00 0x00, got {head[:2].hex(' ')}")
    if head[2] != 0x08:
        raise ValueError(f"{path}: unsupported IDX dtype: expected 0x08 (uint8), got "
                         f"0x{head[2]:02x}")
    if head[3] == 0 or (ndim is not None and head[3] != ndim):
        raise ValueError(f"{path}: expected an IDX file with {ndim or 'at least 1'} dimensions, "
                         f"header declares {head[3]}")
    if len(dims) < 4 * head[3]:
        raise ValueError(f"{path}: truncated IDX header: expected {4 + 4 * head[3]} bytes for "
                         f"{head[3]} dimensions, file has {size} bytes")
    shape = struct.unpack(f">{head[3]}I", dims)
    expected = 4 + len(dims) + math.prod(shape)  # Python ints: no overflow
    if size != expected:
        what = "truncated" if size < expected else "trailing data in"
        raise ValueError(f"{path}: {what} IDX file: header declares shape {shape}, so expected "
                         f"{expected} bytes, got {size} bytes")
    return shape


def write_idx(path: PathLike, tensor: torch.Tensor) -> Path:
    """Write a uint8 tensor (images ``(N, 28, 28)``, labels ``(N,)``) as an IDX file, atomically;
    gzip-compressed when the name ends with ``.gz``."""
    if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.uint8:
        got = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise TypeError(f"expected a torch.uint8 tensor, got {got}")
    if not 1 <= tensor.dim() <= 255 or max(tensor.shape) >= 2**32:
        raise ValueError(f"IDX holds 1 to 255 dimensions of size < 2**32, got shape "
                         f"{tuple(tensor.shape)}")
    data = (bytes([0, 0, 0x08, tensor.dim()]) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
            + tensor.detach().cpu().contiguous().numpy().tobytes())
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    return atomic_write_bytes(path, data)
