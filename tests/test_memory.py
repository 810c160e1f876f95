"""Live memory (issue 11, blind spot "Memory"): the bytes held by tensors alive at once during
a forward+backward stay within the grouped algorithm's working set. Unlike the largest single
tensor, this catches per-group temporaries kept alive together."""

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from translution import functional as F
from translution.layouts import Grid, Sequence


class LiveBytes(TorchDispatchMode):
    """Peak bytes of the storages created by ops under this mode and alive at the same time.

    A storage is counted from the op that creates it until its memory is freed (a finalizer on
    the storage, which lives as long as any tensor, view or autograd buffer uses it). Storages
    that existed before the mode (inputs, weights) and views of them are not counted."""

    def __init__(self):
        super().__init__()
        self.live, self.peak, self._seen = 0, 0, set()

    def _freed(self, key, nbytes):
        self._seen.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or key in self._seen:
                continue
            self._seen.add(key)
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._freed, key, nbytes)
        return out


def _peak_bytes(layout, batch, c, inner, heads, relative="qkv", **kw):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, layout.num_tokens, c, generator=g, requires_grad=True)
    ws = [torch.randn(*((layout.num_slots,) if n in relative else ()), c, inner, generator=g)
          .requires_grad_() for n in "qkv"]
    with LiveBytes() as mode:
        y = F.translution(x, *ws, layout, heads=heads, **kw)
        y.square().sum().backward()
        del y
    return mode.peak


def _working_set_bytes(layout, batch, c, inner, heads):
    """What the grouped backend may hold at once (float32): the banks' gradients, a few
    (B, heads, N, N) score-sized tensors, a few (B, N, C) activations and the largest group's
    temporaries (B·n_g ≤ B·N rows)."""
    n, slots = layout.num_tokens, layout.num_slots
    floats = (3 * slots * c * inner + 6 * batch * heads * n * n
              + 16 * batch * n * max(c, inner))
    return 4 * floats


LAYOUTS = [Grid(6, 6, cls_token=True), Sequence(24, causal=True)]
SIZES = dict(batch=4, c=4, inner=16, heads=1)


def test_live_bytes_counts_what_is_alive():
    """The tracker itself: two tensors alive together count twice, one freed before the next
    counts once."""
    with LiveBytes() as mode:
        a = torch.ones(1000)
        b = torch.ones(1000)
        del a, b
    assert mode.peak == 8000
    with LiveBytes() as mode:
        for _ in range(3):
            a = torch.ones(1000)
            del a
    assert mode.peak == 4000


@pytest.mark.parametrize("layout", LAYOUTS, ids=repr)
def test_grouped_live_memory_is_the_working_set(layout):
    """The default (recompute) stays within the working set, and keeping every group's
    projections alive at once (what save_projections does on purpose) breaks that bound: the
    test can tell the two apart."""
    bound = _working_set_bytes(layout, **SIZES)
    assert _peak_bytes(layout, backend="grouped", **SIZES) <= bound
    assert _peak_bytes(layout, backend="grouped", save_projections=True, **SIZES) > bound


def test_reference_backend_breaks_the_bound():
    layout = LAYOUTS[0]
    assert _peak_bytes(layout, backend="reference", **SIZES) > 2 * _working_set_bytes(
        layout, **SIZES)
