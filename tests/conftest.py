"""Shared fixtures: operation inputs, fake MNIST folders, a tiny text corpus."""

import gzip
import struct

import pytest
import torch


def _weights(layout, relative, c, inner, dtype=torch.float64, generator=None, requires_grad=True):
    """wq, wk, wv: a bank for each relative projection, a plain matrix otherwise."""
    out = []
    for name in "qkv":
        shape = (layout.num_slots, c, inner) if name in relative else (c, inner)
        w = torch.randn(*shape, dtype=dtype, generator=generator) / c ** 0.5
        out.append(w.requires_grad_(requires_grad))
    return out


@pytest.fixture
def make_weights():
    return _weights


def _alpha_params(layout, relative, c=5, inner=6, rank=4, generator=None):
    mk = lambda *s: (torch.randn(*s, dtype=torch.float64, generator=generator) / s[-2] ** 0.5
                     ).requires_grad_()
    params = {"wq": mk(c, inner), "wk": mk(c, inner), "wv": mk(c, inner)}
    if "q" in relative or "k" in relative:
        params.update(uq=mk(c, rank), uk=mk(c, rank))
    if "v" in relative:
        params.update(uv=mk(c, rank), p=mk(rank, inner))
    for name in relative:
        params["m" + name] = mk(layout.num_slots, rank, rank)
    return params


@pytest.fixture
def make_alpha_params():
    """α-Translution parameters (float64, requiring grad) for a relative subset."""
    return _alpha_params


def _alpha_case(layout, relative):
    """``(fn, inputs)``: ``fn(*inputs, backend=...)`` runs α-Translution (2 heads, float64)."""
    from translution import functional as F
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, layout.num_tokens, 5, dtype=torch.float64, generator=g, requires_grad=True)
    params = _alpha_params(layout, relative, generator=g)
    names = list(params)

    def fn(x, *values, backend):
        kw = dict(zip(names, values))
        return F.alpha_translution(x, kw.pop("wq"), kw.pop("wk"), kw.pop("wv"), layout, heads=2,
                                   backend=backend, **kw)
    return fn, [x, *params.values()]


@pytest.fixture
def alpha_case():
    return _alpha_case


def _grads_match(fn, inputs, backends=("reference", "grouped"), seed=0):
    """Run fn(*inputs, backend=b) for each backend; return outputs and gradients per backend."""
    results = []
    for backend in backends:
        y = fn(*inputs, backend=backend)
        g = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(seed))
        wrt = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
        grads = torch.autograd.grad((y * g).sum(), wrt, allow_unused=True)
        results.append([y.detach(), *grads])
    return results


@pytest.fixture
def run_backends():
    return _grads_match


def write_idx(path, tensor):
    """Write a uint8 tensor as an IDX file (gzip-compressed when the name ends with ``.gz``)."""
    data = (bytes([0, 0, 8, tensor.dim()]) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
            + tensor.contiguous().numpy().tobytes())
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


@pytest.fixture(scope="session")
def idx_writer():
    """:func:`write_idx` for test modules (conftest functions cannot be imported)."""
    return write_idx


def _write_mnist(root, sizes=(64, 24), sides=None):
    """An MNIST IDX folder with ``sizes`` (train, test) images: random pixels and labels, or
    (``sides``) one bright square at a random place whose side ``sides[label]`` is learnable."""
    root.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for split, n in zip(("train", "t10k"), sizes):
        if sides is None:
            images = torch.randint(0, 256, (n, 28, 28), generator=g).to(torch.uint8)
            labels = torch.randint(0, 10, (n,), generator=g)
        else:
            labels = torch.randint(0, len(sides), (n,), generator=g)
            images = torch.zeros(n, 28, 28, dtype=torch.uint8)
            for i, label in enumerate(labels.tolist()):
                side = sides[label]
                top, left = torch.randint(0, 28 - side + 1, (2,), generator=g).tolist()
                images[i, top:top + side, left:left + side] = 255
        write_idx(root / f"{split}-images-idx3-ubyte", images)
        write_idx(root / f"{split}-labels-idx1-ubyte", labels.to(torch.uint8))
    return root


@pytest.fixture(scope="session")
def write_mnist():
    return _write_mnist


@pytest.fixture
def char_corpus(tmp_path):
    """A character-level token folder of one repeated sentence; returns ``(folder, text)``."""
    from translution.data.text import prepare_corpus
    text = "It is a truth universally acknowledged, that a single man in possession. " * 40
    prepare_corpus([text], [text[:600]], tmp_path / "corpus", tokenizer="char")
    return tmp_path / "corpus", text
