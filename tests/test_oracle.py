"""Hand-computed oracles, independent of the library's own index maps.

* Slot direction (SPEC §1–§2): 2- and 3-token layouts with known scalar banks, the expected
  output written out pair by pair: ``q_ij = x_i·Wq[slot(i,j)]``, ``k_ij = x_j·Wk[slot(j,i)]``
  (``slot(i,j)`` when causal), ``v_ij = x_j·Wv[slot(i,j)]``. Swapping the query and key slot
  direction in a backend changes these numbers. Every backend of the registry is checked.
* 2-D RoPE: the rotation angle of every channel pair, row axis and column axis apart.
"""

import math

import pytest
import torch

from translution import SelfAttention
from translution import functional as F
from translution.backends import BACKENDS
from translution.layers import rotary_embedding
from translution.layouts import Grid, Sequence

A = [0.3, -0.7, 1.1, 0.5, -0.2, 0.9]          # Wq per slot (1×1 matrices)
B = [-0.4, 0.8, 1.3, -1.0, 0.6, 0.2]          # Wk
V = [1.5, -0.5, 0.25, 2.0, -1.2, 0.7]          # Wv


def _row(scores, values):
    """Σ_j softmax(scores)_j · values_j."""
    e = [math.exp(s) for s in scores]
    return sum(a * v for a, v in zip(e, values)) / sum(e)


def _run(layout, x, backend, scale=1.0):
    n, slots = len(x), layout.num_slots
    wq, wk, wv = (torch.tensor(w[:slots], dtype=torch.float64).view(slots, 1, 1)
                  for w in (A, B, V))
    xt = torch.tensor(x, dtype=torch.float64).view(1, n, 1)
    y = F.translution(xt, wq, wk, wv, layout, heads=1, scale=scale, backend=backend)
    return y.view(n)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_two_token_sequence(backend):
    """Sequence(2): slot = i − j + 1, so slot 0 is δ = −1 (query left of key), slot 2 is δ = +1."""
    x0, x1 = 0.9, -1.3
    y0 = _row([x0 * A[1] * x0 * B[1],            # (0,0): slot 1, key slot 1
               x0 * A[0] * x1 * B[2]],           # (0,1): slot 0, key slot(1,0) = 2
              [x0 * V[1], x1 * V[0]])
    y1 = _row([x1 * A[2] * x0 * B[0],            # (1,0): slot 2, key slot(0,1) = 0
               x1 * A[1] * x1 * B[1]],           # (1,1)
              [x0 * V[2], x1 * V[1]])
    expected = torch.tensor([y0, y1], dtype=torch.float64)
    torch.testing.assert_close(_run(Sequence(2), [x0, x1], backend), expected,
                               atol=1e-12, rtol=0)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_three_token_sequence(backend):
    """Sequence(3): slots 0..4 for δ = −2..2; scale 0.5."""
    x0, x1, x2 = 0.9, -1.3, 0.4
    s = 0.5
    y0 = _row([s * x0 * A[2] * x0 * B[2],        # (0,0): slot 2, key 2
               s * x0 * A[1] * x1 * B[3],        # (0,1): δ −1 → 1, key δ +1 → 3
               s * x0 * A[0] * x2 * B[4]],       # (0,2): δ −2 → 0, key δ +2 → 4
              [x0 * V[2], x1 * V[1], x2 * V[0]])
    y1 = _row([s * x1 * A[3] * x0 * B[1],        # (1,0): δ +1 → 3, key 1
               s * x1 * A[2] * x1 * B[2],
               s * x1 * A[1] * x2 * B[3]],       # (1,2): δ −1 → 1, key 3
              [x0 * V[3], x1 * V[2], x2 * V[1]])
    y2 = _row([s * x2 * A[4] * x0 * B[0],        # (2,0): δ +2 → 4, key 0
               s * x2 * A[3] * x1 * B[1],        # (2,1): δ +1 → 3, key 1
               s * x2 * A[2] * x2 * B[2]],
              [x0 * V[4], x1 * V[3], x2 * V[2]])
    expected = torch.tensor([y0, y1, y2], dtype=torch.float64)
    torch.testing.assert_close(_run(Sequence(3), [x0, x1, x2], backend, scale=s), expected,
                               atol=1e-12, rtol=0)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_three_token_causal_sequence(backend):
    """Sequence(3, causal=True): pair (i, j ≤ i) uses slot d = i − j for q, k and v."""
    x0, x1, x2 = 0.9, -1.3, 0.4
    y0 = x0 * V[0]                                # one key: softmax of a single score is 1
    y1 = _row([x1 * A[1] * x0 * B[1],             # (1,0): d = 1
               x1 * A[0] * x1 * B[0]],            # (1,1): d = 0
              [x0 * V[1], x1 * V[0]])
    y2 = _row([x2 * A[2] * x0 * B[2],             # (2,0): d = 2
               x2 * A[1] * x1 * B[1],
               x2 * A[0] * x2 * B[0]],
              [x0 * V[2], x1 * V[1], x2 * V[0]])
    expected = torch.tensor([y0, y1, y2], dtype=torch.float64)
    torch.testing.assert_close(_run(Sequence(3, causal=True), [x0, x1, x2], backend), expected,
                               atol=1e-12, rtol=0)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_class_token_and_1x2_grid(backend):
    """Grid(1, 2, cls_token=True): token 0 is the class token, 1 = (0,0), 2 = (0,1).
    Grid slots (δr + 0)·3 + (δc + 1): δc −1 → 0, 0 → 1, +1 → 2; class slots 3 (cls,cls),
    4 (cls queries a patch), 5 (a patch queries cls)."""
    c, p0, p1 = 0.9, -1.3, 0.4
    y_cls = _row([c * A[3] * c * B[3],           # (0,0)
                  c * A[4] * p0 * B[5],          # (0,1): q slot 4, key slot(1,0) = 5
                  c * A[4] * p1 * B[5]],         # (0,2)
                 [c * V[3], p0 * V[4], p1 * V[4]])
    y_p0 = _row([p0 * A[5] * c * B[4],           # (1,0): q slot 5, key slot(0,1) = 4
                 p0 * A[1] * p0 * B[1],          # (1,1)
                 p0 * A[0] * p1 * B[2]],         # (1,2): δc −1 → 0, key δc +1 → 2
                [c * V[5], p0 * V[1], p1 * V[0]])
    y_p1 = _row([p1 * A[5] * c * B[4],           # (2,0)
                 p1 * A[2] * p0 * B[0],          # (2,1): δc +1 → 2, key 0
                 p1 * A[1] * p1 * B[1]],
                [c * V[5], p0 * V[2], p1 * V[1]])
    expected = torch.tensor([y_cls, y_p0, y_p1], dtype=torch.float64)
    torch.testing.assert_close(_run(Grid(1, 2, cls_token=True), [c, p0, p1], backend), expected,
                               atol=1e-12, rtol=0)


# Grid(2, 2, cls_token=True), worked out by hand: tokens 0 = cls, 1 = (0,0), 2 = (0,1),
# 3 = (1,0), 4 = (1,1); slot(i, j) = (δr + 1)·3 + (δc + 1) with δ = p(i) − p(j); class slots
# 9 (cls,cls), 10 (cls queries), 11 (cls is the key).
SLOT_2X2 = [[9, 10, 10, 10, 10],
            [11, 4, 3, 1, 0],
            [11, 5, 4, 2, 1],
            [11, 7, 6, 4, 3],
            [11, 8, 7, 5, 4]]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_class_token_and_2x2_grid(backend):
    """Every pair by an explicit loop over the hand table above (key: the transposed entry),
    with 2×2 slot matrices and two heads of width 1."""
    layout = Grid(2, 2, cls_token=True)
    g = torch.Generator().manual_seed(0)
    wq, wk, wv = (torch.randn(12, 2, 2, dtype=torch.float64, generator=g) for _ in range(3))
    x = torch.randn(5, 2, dtype=torch.float64, generator=g)
    expected = torch.empty(5, 2, dtype=torch.float64)
    for i in range(5):
        for h in range(2):
            scores = [float(x[i] @ wq[SLOT_2X2[i][j]][:, h] * (x[j] @ wk[SLOT_2X2[j][i]][:, h]))
                      for j in range(5)]
            values = [float(x[j] @ wv[SLOT_2X2[i][j]][:, h]) for j in range(5)]
            expected[i, h] = _row(scores, values)
    y = F.translution(x[None], wq, wk, wv, layout, heads=2, scale=1.0, backend=backend)
    torch.testing.assert_close(y[0], expected, atol=1e-12, rtol=0)


def _rotate(t, pairs):
    """Rotate channel pairs ``(a, b, angle)`` of the vector ``t`` (a list of floats)."""
    out = list(t)
    for a, b, angle in pairs:
        out[a] = t[a] * math.cos(angle) - t[b] * math.sin(angle)
        out[b] = t[b] * math.cos(angle) + t[a] * math.sin(angle)
    return out


def _rope_pairs(r, c):
    """dim_head 10 on two axes with base 100: 4 channels per axis, frequencies 1 and 100^−½;
    the row rotates pairs (0,2) and (1,3), the column (4,6) and (5,7); 8 and 9 pass through."""
    return [(0, 2, r * 1.0), (1, 3, r * 0.1), (4, 6, c * 1.0), (5, 7, c * 0.1)]


def test_rotary_embedding_angles_2d():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(1, 1, 4, 10, dtype=torch.float64, generator=g)
    positions = torch.tensor([[0, 0], [2, 3], [1, 0], [0, 1]])
    got = rotary_embedding(t, positions[1:], base=100.0, skip=1)
    torch.testing.assert_close(got[0, 0, 0], t[0, 0, 0])         # the skipped token
    for n in range(1, 4):
        r, c = positions[n].tolist()
        expected = _rotate(t[0, 0, n].tolist(), _rope_pairs(r, c))
        torch.testing.assert_close(got[0, 0, n], torch.tensor(expected, dtype=torch.float64),
                                   atol=1e-12, rtol=0)


def test_rope_self_attention_uses_row_and_column():
    """The RoPE layer on Grid(2, 3) with a class token: attention from hand-rotated q and k
    (token n ≥ 1 sits at row (n−1) // 3, column (n−1) % 3)."""
    torch.manual_seed(0)
    layer = SelfAttention(6, Grid(2, 3, cls_token=True), heads=1, dim_head=10, position="rope",
                          rope_base=100.0).double()
    x = torch.randn(1, 7, 6, dtype=torch.float64)
    q, k = (x[0] @ layer.wq).tolist(), (x[0] @ layer.wk).tolist()
    for n in range(1, 7):
        r, c = divmod(n - 1, 3)
        q[n], k[n] = _rotate(q[n], _rope_pairs(r, c)), _rotate(k[n], _rope_pairs(r, c))
    q, k = torch.tensor(q, dtype=torch.float64), torch.tensor(k, dtype=torch.float64)
    expected = (q @ k.t() / math.sqrt(10)).softmax(-1)
    torch.testing.assert_close(layer.attention_weights(x)[0, 0], expected, atol=1e-12, rtol=0)
