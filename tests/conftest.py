"""Shared fixtures for the operation tests."""

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
