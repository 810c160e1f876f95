"""Tests of the Dynamic MNIST data set (SPEC section 7)."""
import pytest
import torch

from translution.data.dynamic_mnist import DynamicMNIST, placement_offsets, static_offset
from translution.data.mnist import MNIST_MEAN, MNIST_STD

N = 200


@pytest.fixture(scope="module")
def digits():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (N, 28, 28), generator=g, dtype=torch.uint8)  # no zero pixel
    labels = torch.randint(0, 10, (N,), generator=g)
    return images, labels


BG = (0.0 - MNIST_MEAN) / MNIST_STD


def _locate(x):
    """Top-left corner of the non-background block of a (1, C, C) item."""
    fg = (x[0] != BG).nonzero()
    return int(fg[:, 0].min()), int(fg[:, 1].min())


@pytest.mark.parametrize("placement", ["static", "patch", "pixel"])
def test_item_contents(digits, placement):
    images, labels = digits
    ds = DynamicMNIST(images, labels, canvas=42, patch=7, placement=placement, seed=3)
    assert len(ds) == N
    off = ds.offsets()
    assert off.shape == (N, 2) and off.dtype == torch.int64
    for i in range(0, N, 37):
        x, y = ds[i]
        assert x.shape == (1, 42, 42) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and y.dim() == 0 and int(y) == int(labels[i])
        r, c = (int(v) for v in off[i])
        assert _locate(x) == (r, c)
        expected = (images[i].float() / 255 - MNIST_MEAN) / MNIST_STD
        torch.testing.assert_close(x[0, r:r + 28, c:c + 28], expected)
        bg = torch.ones(42, 42, dtype=torch.bool)
        bg[r:r + 28, c:c + 28] = False
        torch.testing.assert_close(x[0][bg], torch.full((int(bg.sum()),), BG))


def test_background_is_normalised_zero(digits):
    images, labels = digits
    x, _ = DynamicMNIST(torch.zeros_like(images), labels)[0]
    torch.testing.assert_close(x, torch.full((1, 42, 42), -0.1307 / 0.3081))


@pytest.mark.parametrize("placement", ["static", "patch", "pixel"])
@pytest.mark.parametrize("canvas, patch", [(42, 7), (56, 7), (28, 7), (64, 16)])
def test_offsets_inside_canvas_and_aligned(digits, placement, canvas, patch):
    images, labels = digits
    ds = DynamicMNIST(images, labels, canvas=canvas, patch=patch, placement=placement, seed=1)
    for epoch in range(3):
        ds.set_epoch(epoch)
        off = ds.offsets()
        assert int(off.min()) >= 0 and int(off.max()) <= canvas - 28
        if placement != "pixel":
            assert bool((off % patch == 0).all())


def test_static_is_constant_and_centred(digits):
    images, labels = digits
    ds = DynamicMNIST(images, labels, canvas=42, patch=7, placement="static", seed=5)
    off = ds.offsets()
    assert bool((off == 7).all())  # centre (42 - 28) / 2 = 7 is patch-aligned
    ds.set_epoch(4)
    assert torch.equal(ds.offsets(), off)
    other = DynamicMNIST(images, labels, canvas=42, patch=7, placement="static", seed=9)
    assert torch.equal(other.offsets(), off)
    # Nearest aligned offset to the centre, ties to the smaller one.
    assert static_offset(42, 28, 7) == 7
    assert static_offset(56, 28, 7) == 14
    assert static_offset(49, 28, 7) == 7  # centre 10.5: 7 and 14 tie
    assert static_offset(64, 28, 16) == 16  # centre 18
    assert static_offset(28, 28, 7) == 0


@pytest.mark.parametrize("placement", ["patch", "pixel"])
def test_determinism_and_set_epoch(digits, placement):
    images, labels = digits
    a = DynamicMNIST(images, labels, placement=placement, seed=11)
    b = DynamicMNIST(images, labels, placement=placement, seed=11)
    assert torch.equal(a.offsets(), b.offsets())
    for i in (0, 5, 199):
        assert torch.equal(a[i][0], b[i][0])
    e0 = a.offsets()
    a.set_epoch(1)
    e1 = a.offsets()
    assert (e0 != e1).any(dim=1).float().mean() > 0.5  # placements change per epoch
    a.set_epoch(0)
    assert torch.equal(a.offsets(), e0)  # ...and are reproducible (resume)
    b.set_epoch(1)
    assert torch.equal(b.offsets(), e1)
    c = DynamicMNIST(images, labels, placement=placement, seed=12)
    assert not torch.equal(c.offsets(), e0)  # the seed matters
    # Offsets of item i do not depend on the data set length.
    short = DynamicMNIST(images[:50], labels[:50], placement=placement, seed=11)
    assert torch.equal(short.offsets(), e0[:50])


def test_random_placements_cover_the_range(digits):
    images, labels = digits
    off = placement_offsets(4000, 42, 28, 7, "pixel", seed=0, epoch=0)
    assert set(off[:, 0].tolist()) == set(range(15))
    assert set(off[:, 1].tolist()) == set(range(15))
    off = placement_offsets(4000, 42, 28, 7, "patch", seed=0, epoch=0)
    assert set(off.flatten().tolist()) == {0, 7, 14}
    counts = torch.bincount(off[:, 0] // 7, minlength=3).float()
    assert (counts / 4000 - 1 / 3).abs().max() < 0.05


def test_get_batch_matches_items(digits):
    images, labels = digits
    ds = DynamicMNIST(images, labels, placement="pixel", seed=2)
    ds.set_epoch(3)
    idx = [4, 0, 199, 57, -1]
    x, y = ds.get_batch(idx)
    assert x.shape == (5, 1, 42, 42) and y.shape == (5,) and y.dtype == torch.int64
    for k, i in enumerate(idx):
        xi, yi = ds[i]
        assert torch.equal(x[k], xi) and int(y[k]) == int(yi)
    with pytest.raises(IndexError):
        ds.get_batch([N])
    with pytest.raises(IndexError):
        ds[N]


def test_works_with_dataloader(digits):
    images, labels = digits
    ds = DynamicMNIST(images, labels, placement="patch")
    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=16)))
    assert xb.shape == (16, 1, 42, 42) and yb.shape == (16,) and yb.dtype == torch.int64


def test_argument_validation(digits):
    images, labels = digits
    with pytest.raises(ValueError, match="canvas must be >= the digit size 28, got canvas=21"):
        DynamicMNIST(images, labels, canvas=21, patch=7)
    with pytest.raises(ValueError, match="canvas=45, patch=7"):
        DynamicMNIST(images, labels, canvas=45, patch=7, placement="patch")
    with pytest.raises(ValueError, match="canvas=45, patch=7"):
        DynamicMNIST(images, labels, canvas=45, patch=7, placement="static")
    ds = DynamicMNIST(images, labels, canvas=45, patch=7, placement="pixel")  # allowed
    assert int(ds.offsets().max()) <= 45 - 28
    with pytest.raises(ValueError, match="placement"):
        DynamicMNIST(images, labels, placement="random")
    with pytest.raises(TypeError, match="uint8"):
        DynamicMNIST(images.float(), labels)
    with pytest.raises(ValueError, match=r"shape \(200,\)"):
        DynamicMNIST(images, labels[:10])
    with pytest.raises(TypeError, match="canvas"):
        DynamicMNIST(images, labels, canvas=42.0)
    with pytest.raises(ValueError, match="patch must be an int >= 1"):
        DynamicMNIST(images, labels, patch=0)
    with pytest.raises(ValueError, match="epoch"):
        DynamicMNIST(images, labels).set_epoch(-1)


def test_roll_is_the_static_image_rolled_by_whole_patches(digits):
    images, labels = digits
    static = DynamicMNIST(images, labels, placement="static")
    rolled = DynamicMNIST(images, labels, placement="roll", seed=4)
    off = rolled.offsets()
    shifts = (off - 7) % 42
    assert bool((shifts % 7 == 0).all())
    assert set(shifts.flatten().tolist()) == set(range(0, 42, 7))  # every roll of the 6x6 grid
    x, _ = rolled.get_batch(torch.arange(N))
    for i in range(0, N, 13):
        expected = static[i][0].roll((int(shifts[i, 0]), int(shifts[i, 1])), dims=(1, 2))
        torch.testing.assert_close(x[i], expected, rtol=0, atol=0)
        torch.testing.assert_close(rolled[i][0], expected, rtol=0, atol=0)


def test_shift_moves_the_static_digit(digits):
    images, labels = digits
    ds = DynamicMNIST(images, labels, placement="static", shift=(-7, 3))
    assert bool((ds.offsets() == torch.tensor([0, 10])).all())
    assert _locate(ds[5][0]) == (0, 10)
    x, _ = ds.get_batch([5])
    torch.testing.assert_close(x[0], ds[5][0], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"must lie in \[-7, 7\]"):
        DynamicMNIST(images, labels, placement="static", shift=(8, 0))
    with pytest.raises(ValueError, match="'static' only"):
        DynamicMNIST(images, labels, placement="pixel", shift=(1, 0))
    with pytest.raises(TypeError, match="pair"):
        DynamicMNIST(images, labels, shift=3)
