"""Shared helpers of the data tests."""
import io
import tarfile

import pytest


def _tar_xz(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _make_deb(path, files):
    """Write a minimal .deb (an ar archive) holding ``files`` ({"./path": bytes}); returns it."""
    control = _tar_xz({"./control": b"Package: fake\nVersion: 0\nArchitecture: all\n"
                                    b"Maintainer: x <x@y>\nDescription: test\n"})
    out = b"!<arch>\n"
    for name, data in {"debian-binary": b"2.0\n", "control.tar.xz": control,
                       "data.tar.xz": _tar_xz(files)}.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    path.write_bytes(out)
    return path


@pytest.fixture
def make_deb():
    return _make_deb


@pytest.fixture
def tiny_encoding():
    """A 265-id byte-level BPE encoding with a few merges and an end-of-text id (264)."""
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken_ext import openai_public
    ranks = {bytes([i]): i for i in range(256)}
    for m in (b"th", b"he", b"the", b" t", b" the", b"in", b"an", b"er"):
        ranks[m] = len(ranks)
    return tiktoken.Encoding(name="tiny", pat_str=openai_public.r50k_pat_str,
                             mergeable_ranks=ranks, special_tokens={"<|endoftext|>": len(ranks)})
