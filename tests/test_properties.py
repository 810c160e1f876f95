"""The properties of SPEC §8 (test oracles), on both backends."""

import pytest
import torch
import torch.nn.functional as torch_f
from torch.utils._python_dispatch import TorchDispatchMode

from translution import functional as F
from translution.backends import BACKENDS
from translution.layouts import Grid, Sequence

BACKEND_NAMES = sorted(BACKENDS)


def _sdpa(x, wq, wk, wv, heads, causal):
    q, k, v = ((x @ w).unflatten(-1, (heads, -1)).transpose(1, 2) for w in (wq, wk, wv))
    return torch_f.scaled_dot_product_attention(q, k, v, is_causal=causal).transpose(1, 2).flatten(-2)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("layout", [Sequence(7, causal=True), Sequence(5),
                                    Grid(3, 4, cls_token=True), Grid(2, 2, 2)], ids=repr)
@pytest.mark.parametrize("relative", ["q", "kv", "qkv"])
def test_tied_banks_equal_standard_attention(layout, relative, backend):
    """§8.1: every slot of every bank equal → standard multi-head attention."""
    g = torch.Generator().manual_seed(0)
    mats = [torch.randn(6, 8, dtype=torch.float64, generator=g) for _ in range(3)]
    ws = [m.expand(layout.num_slots, 6, 8) if n in relative else m for n, m in zip("qkv", mats)]
    x = torch.randn(2, layout.num_tokens, 6, dtype=torch.float64, generator=g)
    y = F.translution(x, *ws, layout, heads=2, backend=backend)
    assert torch.allclose(y, _sdpa(x, *mats, 2, layout.causal), atol=1e-12)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_window_attention_is_convolution(backend):
    """§8.2: α = 1 inside a 3×3 window, 0 outside → conv2d with taps Wv[slot(δ)]."""
    h, w, c, out = 5, 6, 3, 4
    layout = Grid(h, w)
    g = torch.Generator().manual_seed(1)
    wv = torch.randn(layout.num_slots, c, out, dtype=torch.float64, generator=g)
    x = torch.randn(2, h * w, c, dtype=torch.float64, generator=g)
    pos = layout.positions
    delta = pos[:, None, :] - pos[None, :, :]
    window = (delta.abs() <= 1).all(-1).to(torch.float64)               # (N, N)
    attn = window.expand(2, 2, -1, -1)                                   # (B, heads, N, N)
    y = BACKENDS[backend].pair_mix(attn, x, wv, layout, 2)              # (B, N, out)
    kernel = torch.empty(out, c, 3, 3, dtype=torch.float64)
    for a in range(3):
        for b in range(3):
            slot = layout.offset_slots(torch.tensor([[1 - a, 1 - b]]))[0]
            kernel[:, :, a, b] = wv[slot].t()
    image = x.transpose(1, 2).reshape(2, c, h, w)
    conv = torch_f.conv2d(image, kernel, padding=1).flatten(2).transpose(1, 2)
    assert torch.allclose(y, conv, atol=1e-12)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("cls_token", [False, True])
def test_translation_equivariance(backend, cls_token):
    """§8.3: shifting the content on a zero background shifts the outputs; the border effect is
    exactly the positions whose pre-image lies outside the grid."""
    h, w, c, shift = 6, 7, 4, (1, 2)
    layout = Grid(h, w, cls_token=cls_token)
    g = torch.Generator().manual_seed(2)
    ws = [torch.randn(layout.num_slots, c, 6, dtype=torch.float64, generator=g) for _ in range(3)]
    grid = torch.zeros(1, h, w, c, dtype=torch.float64)
    grid[:, 1:4, 0:3] = torch.randn(1, 3, 3, c, dtype=torch.float64, generator=g)
    moved = torch.roll(grid, shift, dims=(1, 2))             # nothing crosses the border
    cls = torch.randn(1, 1, c, dtype=torch.float64, generator=g)

    def run(image):
        tokens = image.reshape(1, h * w, c)
        if cls_token:
            tokens = torch.cat([cls, tokens], 1)
        y = F.translution(tokens, *ws, layout, heads=3, backend=backend)
        return y[:, 1:] if cls_token else y, y[:, :1]

    (y0, c0), (y1, c1) = run(grid), run(moved)
    y0, y1 = y0.reshape(h, w, -1), y1.reshape(h, w, -1)
    assert torch.allclose(y1[shift[0]:, shift[1]:], y0[:h - shift[0], :w - shift[1]], atol=1e-12)
    if cls_token:
        assert torch.allclose(c0, c1, atol=1e-12)
    # the border rows/columns differ (so the comparison above is not vacuous)
    assert not torch.allclose(y1[:shift[0]], y0[h - shift[0]:])


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_causal_outputs_ignore_future_tokens(backend):
    """§8.4: output i does not depend on tokens j > i (values and gradients)."""
    layout = Sequence(8, causal=True)
    g = torch.Generator().manual_seed(3)
    ws = [torch.randn(8, 4, 4, dtype=torch.float64, generator=g) for _ in range(3)]
    x = torch.randn(1, 8, 4, dtype=torch.float64, generator=g, requires_grad=True)
    y = F.translution(x, *ws, layout, heads=2, backend=backend)
    (grad,) = torch.autograd.grad(y[0, 4].sum(), x)
    assert grad[0, 5:].abs().max() == 0 and grad[0, :5].abs().max() > 0
    x2 = x.detach().clone()
    x2[:, 5:] += 1.0
    y2 = F.translution(x2, *ws, layout, heads=2, backend=backend)
    assert torch.allclose(y[:, :5], y2[:, :5], atol=1e-13)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("layout", [Grid(3, 3, cls_token=True), Sequence(6, causal=True)],
                         ids=repr)
def test_alpha_with_tied_identity_branch_is_standard_attention(backend, layout):
    """§8.5: M banks tied to I, U = W, P = I → the relative branch repeats the standard one."""
    g = torch.Generator().manual_seed(4)
    c, heads, dim_head = 6, 2, 4
    inner = heads * dim_head
    wq, wk, wv = (torch.randn(c, inner, dtype=torch.float64, generator=g) for _ in range(3))
    eye = torch.eye(inner, dtype=torch.float64)
    bank = eye.expand(layout.num_slots, inner, inner)
    x = torch.randn(2, layout.num_tokens, c, dtype=torch.float64, generator=g)
    y = F.alpha_translution(x, wq, wk, wv, layout, heads=heads, uq=wq, uk=wk, uv=wv,
                            mq=bank, mk=bank, mv=bank, p=eye, backend=backend)
    assert torch.allclose(y, _sdpa(x, wq, wk, wv, heads, layout.causal), atol=1e-12)


class _LargestAllocation(TorchDispatchMode):
    """Records the largest tensor any op produces (views included)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def _largest_tensor(backend, b=2, c=8, inner=8, heads=2):
    layout = Grid(6, 6, cls_token=True)
    x = torch.randn(b, layout.num_tokens, c, requires_grad=True)
    ws = [torch.randn(layout.num_slots, c, inner, requires_grad=True) for _ in range(3)]
    with _LargestAllocation() as mode:
        y = F.translution(x, *ws, layout, heads=heads, backend=backend)
        y.sum().backward()
    n = layout.num_tokens
    bound = max(b * heads * n * n, layout.num_slots * c * inner, b * n * max(c, inner))
    return mode.largest, bound


def test_grouped_backend_never_builds_pair_tensors():
    """Memory is the feature: no tensor beyond the banks, one (B, heads, N, N) score tensor and
    (B, N, C') activations. The reference backend (allowed to) breaks the same bound."""
    largest, bound = _largest_tensor("grouped")
    assert largest <= bound
    largest_ref, bound = _largest_tensor("reference")
    assert largest_ref > 4 * bound
