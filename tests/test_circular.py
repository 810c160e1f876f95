"""Circular grids (SPEC §2, "Circular grid"): slot numbering, exact equivariance to circular
shifts on every registered backend, and fast backends equal to the reference one."""

import itertools

import pytest
import torch

from translution import AlphaTranslution, Translution
from translution.backends import BACKENDS
from translution.layouts import Grid

SUBSETS = ["q", "k", "v", "qk", "qv", "kv", "qkv"]
FAST = sorted(name for name in BACKENDS if name != "reference")


def test_slot_numbering_by_hand():
    """Grid(2, 3) with a class token. Patches 1..6 sit at (0,0) (0,1) (0,2) (1,0) (1,1) (1,2);
    slot(i, j) = ((r_i − r_j) mod 2)·3 + ((c_i − c_j) mod 3); class slots 6, 7, 8."""
    layout = Grid(2, 3, cls_token=True, circular=True)
    expected = torch.tensor([
        [6, 7, 7, 7, 7, 7, 7],
        [8, 0, 2, 1, 3, 5, 4],
        [8, 1, 0, 2, 4, 3, 5],
        [8, 2, 1, 0, 5, 4, 3],
        [8, 3, 5, 4, 0, 2, 1],
        [8, 4, 3, 5, 1, 0, 2],
        [8, 5, 4, 3, 2, 1, 0]])
    assert layout.num_slots == 2 * 3 + 3
    assert torch.equal(layout.slot_index(), expected)
    assert torch.equal(layout.key_slot_index(), expected.t())
    assert layout.allowed() is None


def test_nd_numbering_is_mixed_radix_of_wrapped_offsets():
    shape = (2, 3, 4)
    layout = Grid(*shape, circular=True)
    pos = list(itertools.product(*map(range, shape)))
    index = layout.slot_index()
    for a, b in itertools.product(range(len(pos)), repeat=2):
        slot = 0
        for axis, size in enumerate(shape):
            slot = slot * size + (pos[a][axis] - pos[b][axis]) % size
        assert index[a, b] == slot
    assert layout.num_slots == 24


def test_circular_options_and_errors():
    layout = Grid(3, 4, cls_token=True, circular=True)
    assert repr(layout) == "Grid(3, 4, cls_token=True, circular=True)"
    assert layout != Grid(3, 4, cls_token=True) and layout == Grid(3, 4, cls_token=True,
                                                                   circular=True)
    assert layout.with_shape(3, 4) == layout
    with pytest.raises(ValueError, match="circular layout wraps"):
        layout.with_shape(2, 4)
    with pytest.raises(ValueError, match="max_distance or symmetric"):
        Grid(3, 4, circular=True, max_distance=1)
    with pytest.raises(ValueError, match="max_distance or symmetric"):
        Grid(3, 4, circular=True, symmetric=True)
    with pytest.raises(TypeError, match="circular must be True or False"):
        Grid(3, 4, circular=1)


def _layer(op, layout, relative, backend, seed=0):
    torch.manual_seed(seed)
    if op == "translution":
        layer = Translution(6, layout, heads=2, dim_head=3, relative=relative, backend=backend)
    else:
        layer = AlphaTranslution(6, layout, heads=2, dim_head=3, rank=2, relative=relative,
                                 backend=backend)
    return layer.double()


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("op", ["translution", "alpha"])
@pytest.mark.parametrize("cls_token", [False, True])
@pytest.mark.parametrize("relative", ["qkv", "v", "qk"])
def test_equivariant_to_circular_shifts(backend, op, cls_token, relative):
    """Rolling the patch grid rolls the patch outputs exactly; the class output is unchanged."""
    h, w, c = 3, 4, 6
    g = torch.Generator().manual_seed(1)
    grid = torch.randn(2, h, w, c, dtype=torch.float64, generator=g)
    cls = torch.randn(2, 1, c, dtype=torch.float64, generator=g)

    def run(layer, image):
        tokens = image.reshape(2, h * w, c)
        if cls_token:
            tokens = torch.cat([cls, tokens], 1)
        y = layer(tokens)
        return y[:, int(cls_token):].reshape(2, h, w, c), y[:, :1]

    layer = _layer(op, Grid(h, w, cls_token=cls_token, circular=True), relative, backend)
    y0, c0 = run(layer, grid)
    for shift in [(1, 0), (0, 1), (2, 3), (1, -1)]:
        y1, c1 = run(layer, torch.roll(grid, shift, dims=(1, 2)))
        torch.testing.assert_close(y1, torch.roll(y0, shift, dims=(1, 2)), atol=1e-12, rtol=0)
        if cls_token:
            torch.testing.assert_close(c1, c0, atol=1e-12, rtol=0)
    # the same check fails on the ordinary (non-circular) layout, so it has teeth
    plain = _layer(op, Grid(h, w, cls_token=cls_token), relative, backend)
    p0, _ = run(plain, grid)
    p1, _ = run(plain, torch.roll(grid, (1, 1), dims=(1, 2)))
    assert not torch.allclose(p1, torch.roll(p0, (1, 1), dims=(1, 2)), atol=1e-6)


def _outputs_and_grads(layer, x, backend):
    layer.backend = backend
    x = x.detach().requires_grad_(True)
    y = layer(x)
    g = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(5))
    params = [p for _, p in sorted(layer.named_parameters())]
    grads = torch.autograd.grad((y * g).sum(), [x, *params])
    return [y.detach(), *grads]


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("op", ["translution", "alpha"])
@pytest.mark.parametrize("layout", [Grid(3, 4, circular=True),
                                    Grid(3, 2, cls_token=True, circular=True),
                                    Grid(2, 2, 3, cls_token=True, circular=True),
                                    Grid(5, circular=True)], ids=repr)
@pytest.mark.parametrize("relative", SUBSETS)
def test_fast_backends_match_reference(backend, op, layout, relative):
    layer = _layer(op, layout, relative, None)
    x = torch.randn(2, layout.num_tokens, 6, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(2))
    expected = _outputs_and_grads(layer, x, "reference")
    got = _outputs_and_grads(layer, x, backend)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
