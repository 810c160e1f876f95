"""Slot numbering of SPEC §2 (a public contract), resizing, and layout errors."""

import itertools

import pytest
import torch

from translution.layouts import Grid, Sequence


def test_sequence_bidirectional_numbering():
    layout = Sequence(5)
    index = layout.slot_index()
    assert layout.num_slots == 9 and layout.num_tokens == 5
    for i, j in itertools.product(range(5), repeat=2):
        assert index[i, j] == (i - j) + 4
    assert torch.equal(layout.key_slot_index(), index.t())
    assert layout.allowed() is None


def test_sequence_causal_numbering():
    layout = Sequence(6, causal=True)
    assert layout.num_slots == 6
    allowed = layout.allowed()
    index = layout.slot_index()
    for i, j in itertools.product(range(6), repeat=2):
        assert bool(allowed[i, j]) == (j <= i)
        if j <= i:
            assert index[i, j] == i - j
    assert torch.equal(layout.key_slot_index(), index)   # causal banks store k under d


def test_grid_numbering_with_cls():
    h, w = 3, 4
    layout = Grid(h, w, cls_token=True)
    r = (2 * h - 1) * (2 * w - 1)
    assert layout.num_slots == r + 3 and layout.num_tokens == h * w + 1
    index = layout.slot_index()
    for a, b in itertools.product(range(h * w), repeat=2):
        (ra, ca), (rb, cb) = divmod(a, w), divmod(b, w)
        expected = (ra - rb + h - 1) * (2 * w - 1) + (ca - cb + w - 1)
        assert index[a + 1, b + 1] == expected
    assert index[0, 0] == r
    assert (index[0, 1:] == r + 1).all()
    assert (index[1:, 0] == r + 2).all()
    assert torch.equal(layout.key_slot_index(), index.t())


def test_nd_grid_mixed_radix():
    shape = (2, 3, 4)
    layout = Grid(*shape)
    pos = list(itertools.product(*map(range, shape)))
    index = layout.slot_index()
    for a, b in itertools.product(range(len(pos)), repeat=2):
        slot = 0
        for axis, s in enumerate(shape):
            slot = slot * (2 * s - 1) + pos[a][axis] - pos[b][axis] + s - 1
        assert index[a, b] == slot
    assert layout.num_slots == 3 * 5 * 7


def test_clipping_numbering_and_bank_size():
    layout = Grid(5, 6, max_distance=2)
    assert layout.num_slots == 25
    assert Grid(50, 3, max_distance=2).num_slots == 25          # independent of the size
    index = layout.slot_index()
    for a, b in itertools.product(range(30), repeat=2):
        (ra, ca), (rb, cb) = divmod(a, 6), divmod(b, 6)
        dr, dc = max(-2, min(2, ra - rb)), max(-2, min(2, ca - cb))
        assert index[a, b] == (dr + 2) * 5 + (dc + 2)
    causal = Sequence(10, causal=True, max_distance=3)
    assert causal.num_slots == 4
    assert causal.slot_index()[9, 0] == 3


def test_symmetric_maps_opposite_offsets_together():
    layout = Grid(3, 4, symmetric=True)
    full = Grid(3, 4)
    assert layout.num_slots == (full.num_slots + 1) // 2
    index = layout.slot_index()
    assert torch.equal(index, index.t())
    assert (index.diagonal() == 0).all()
    # distinct unordered offsets get distinct slots
    seen = {}
    for a, b in itertools.product(range(12), repeat=2):
        (ra, ca), (rb, cb) = divmod(a, 4), divmod(b, 4)
        key = max((ra - rb, ca - cb), (rb - ra, cb - ca))
        assert seen.setdefault(key, int(index[a, b])) == int(index[a, b])
    assert len(set(seen.values())) == len(seen)
    seq = Sequence(5, symmetric=True).slot_index()
    assert torch.equal(seq, (torch.arange(5)[:, None] - torch.arange(5)).abs())


@pytest.mark.parametrize("layout", [
    Sequence(5), Sequence(5, causal=True), Grid(3, 4), Grid(3, 4, cls_token=True),
    Grid(2, 2, 3, cls_token=True), Grid(4, 5, max_distance=1, symmetric=True, cls_token=True),
    Sequence(1), Grid(1, 1, cls_token=True), Grid(3, 4, circular=True),
    Grid(2, 3, 2, cls_token=True, circular=True), Grid(1, 3, circular=True)])
def test_pair_groups_cover_each_pair_once_with_its_slots(layout):
    n = layout.num_tokens
    seen = torch.zeros(n, n, dtype=torch.long)
    q_slot = torch.full((n, n), -1)
    k_slot = torch.full((n, n), -1)
    start = int(layout.cls_token)
    pos = layout.positions
    for group in layout.pair_groups():
        if group.kind == "grid":
            for a in range(layout.num_positioned):
                for b in range(layout.num_positioned):
                    if tuple((pos[a] - pos[b]).tolist()) == group.offset:
                        pairs = [(a + start, b + start)]
                        seen[pairs[0]] += 1
                        q_slot[pairs[0]], k_slot[pairs[0]] = group.slot_q, group.slot_k
        else:
            rows = {"cls_cls": [0], "cls_query": [0], "cls_key": range(1, n)}[group.kind]
            cols = {"cls_cls": [0], "cls_query": range(1, n), "cls_key": [0]}[group.kind]
            for i, j in itertools.product(rows, cols):
                seen[i, j] += 1
                q_slot[i, j], k_slot[i, j] = group.slot_q, group.slot_k
    allowed = layout.allowed()
    expected = torch.ones(n, n, dtype=torch.long) if allowed is None else allowed.long()
    assert torch.equal(seen, expected)
    mask = expected.bool()
    assert torch.equal(q_slot[mask], layout.slot_index()[mask])
    assert torch.equal(k_slot[mask], layout.key_slot_index()[mask])


def test_with_shape_keeps_numbering():
    big = Grid(5, 5, cls_token=True)
    small = big.with_shape(3, 4)
    assert small.num_slots == big.num_slots and small.num_tokens == 13
    # offsets of the small grid use the big grid's slot numbers
    assert small.slot_index()[1, 2] == big.offset_slots(torch.tensor([[0, -1]]))[0]
    with pytest.raises(ValueError, match="does not fit"):
        big.with_shape(6, 5)
    assert Grid(3, 3, max_distance=1).with_shape(9, 9).num_slots == 9
    with pytest.raises(ValueError, match="axes"):
        big.with_shape(3)


def test_sequence_adapts_to_shorter_inputs_only():
    layout = Sequence(8, causal=True)
    assert layout.for_tokens(5).num_tokens == 5
    assert layout.for_tokens(5).num_slots == 8
    with pytest.raises(ValueError, match="longer than this layout allows"):
        layout.for_tokens(9)
    assert Sequence(max_distance=3, causal=True).for_tokens(100).num_tokens == 100
    with pytest.raises(ValueError, match="holds 13 tokens"):
        Grid(3, 4, cls_token=True).for_tokens(12)


@pytest.mark.parametrize("build, error", [
    (lambda: Grid(0, 3), ValueError), (lambda: Grid(), ValueError),
    (lambda: Grid(2.5, 3), TypeError), (lambda: Sequence(0), ValueError),
    (lambda: Sequence(), ValueError), (lambda: Sequence(4, max_distance=-1), ValueError),
    (lambda: Grid(3, 3, max_distance=-2), ValueError), (lambda: Sequence(True), TypeError)])
def test_invalid_layouts(build, error):
    with pytest.raises(error):
        build()


def test_layouts_are_hashable_values():
    assert Grid(3, 4, cls_token=True) == Grid(3, 4, cls_token=True)
    assert hash(Sequence(4, causal=True)) == hash(Sequence(4, causal=True))
    assert Grid(3, 4) != Grid(4, 3)
    assert repr(Grid(3, 4, cls_token=True)) == "Grid(3, 4, cls_token=True)"


@pytest.mark.parametrize("build, name", [
    (lambda: Sequence(4, causal="yes"), "causal"),
    (lambda: Sequence(4, causal=1), "causal"),
    (lambda: Sequence(4, causal=True, symmetric="no"), "symmetric"),
    (lambda: Grid(2, 2, cls_token="no"), "cls_token"),
    (lambda: Grid(2, 2, cls_token=None), "cls_token"),
    (lambda: Grid(2, 2, symmetric=0), "symmetric"),
    (lambda: Grid(2, 2, circular="False"), "circular")])
def test_flags_must_be_real_booleans(build, name):
    """Truthy strings such as "no" used to switch the option on."""
    with pytest.raises(TypeError, match=f"{name} must be True or False"):
        build()
    assert Grid(2, 2, cls_token=False).num_tokens == 4
    assert not Sequence(4, causal=False).causal
