"""Fuzzing the public op and the layers (issue 11): random layouts, shapes, dtypes, sizes, heads
and relative subsets. Every call either returns the right answer (the reference backend in
float64 on the same values) or raises ``ValueError`` / ``TypeError``; any other exception, a
wrong shape or dtype, or a wrong value fails the test."""

import copy

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings, strategies as st

from translution import AlphaTranslution, Translution
from translution import functional as F
from translution.backends import BACKENDS
from translution.layouts import Grid, Sequence

SUBSETS = ["q", "k", "v", "qk", "qv", "kv", "qkv"]
FLOATS = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
DTYPES = FLOATS + [torch.int64]
#: (atol, rtol) against the float64 reference.
TOLERANCE = {torch.float64: (1e-10, 1e-8), torch.float32: (1e-4, 1e-4),
             torch.float16: (2e-2, 2e-2), torch.bfloat16: (1e-1, 5e-2)}
SETTINGS = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
ACCEPTED = (ValueError, TypeError)


def mostly(valid, *invalid):
    """Draw one of ``valid`` about 6 times in 7, else one of ``invalid``."""
    valid = list(valid)
    return st.sampled_from(valid * -(-6 * len(invalid) // len(valid)) + list(invalid))


@st.composite
def layout_builders(draw):
    """A zero-argument function building a layout (sequence, causal sequence, grid or circular
    grid), with parameters that are now and then invalid."""
    size = mostly(range(1, 5), 0)
    flag = mostly([False, True], "yes", 1)
    clip = mostly([None, None, 0, 1, 2], -1)
    kind = draw(st.sampled_from(["sequence", "causal", "grid", "circular"]))
    if kind in ("sequence", "causal"):
        length, sym, k = draw(size), draw(flag), draw(clip)
        causal = True if kind == "causal" else draw(mostly([False], "yes"))
        return lambda: Sequence(length, causal=causal, symmetric=sym, max_distance=k)
    shape = draw(st.lists(size, min_size=1, max_size=3))
    cls = draw(flag)
    if kind == "circular":       # circular refuses max_distance and symmetric
        sym, k = draw(mostly([False], True)), draw(mostly([None], 1))
        return lambda: Grid(*shape, cls_token=cls, symmetric=sym, circular=True, max_distance=k)
    sym, k = draw(flag), draw(clip)
    return lambda: Grid(*shape, cls_token=cls, symmetric=sym, max_distance=k)


def _tensor(shape, dtype, seed):
    t = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return (t * 3).round().to(dtype) if dtype == torch.int64 else (t / 2).to(dtype)


def _check(got, expected, dtype):
    assert got.shape == expected.shape and got.dtype == dtype
    atol, rtol = TOLERANCE[dtype]
    torch.testing.assert_close(got.double(), expected, atol=atol, rtol=rtol)


def _run_op(op, x, ws, extra, layout, heads, scale, backend):
    if op == "translution":
        return F.translution(x, *ws, layout, heads=heads, scale=scale, backend=backend)
    return F.alpha_translution(x, *ws, layout, heads=heads, scale=scale, backend=backend,
                               **extra)


def _op_inputs(op, layout, relative, c, inner, rank, x_dtype, w_dtype, batch, tokens, seed):
    x = _tensor((batch, tokens, c), x_dtype, seed)
    slots = layout.num_slots
    if op == "translution":
        ws = [_tensor((slots, c, inner) if n in relative else (c, inner), w_dtype, seed + i)
              for i, n in enumerate("qkv")]
        return x, ws, {}
    ws = [_tensor((c, inner), w_dtype, seed + i) for i in range(3)]
    extra = {}
    if set(relative) & set("qk"):
        extra.update(uq=_tensor((c, rank), w_dtype, seed + 3),
                     uk=_tensor((c, rank), w_dtype, seed + 4))
    if "v" in relative:
        extra.update(uv=_tensor((c, rank), w_dtype, seed + 5),
                     p=_tensor((rank, inner), w_dtype, seed + 6))
    for i, n in enumerate(relative):
        extra["m" + n] = _tensor((slots, rank, rank), w_dtype, seed + 7 + i)
    return x, ws, extra


@SETTINGS
@given(build=layout_builders(), op=st.sampled_from(["translution", "alpha"]),
       relative=st.sampled_from(SUBSETS), batch=mostly([1, 2, 3], 0),
       extra_tokens=mostly([0, 0], -1, 1), channels=mostly(range(1, 5), 0),
       heads=mostly([1, 2, 3], 0, True, 2.0), dim_head=st.integers(1, 3),
       ragged=mostly([0, 0], 1),
       rank=st.integers(1, 4), x_dtype=mostly(FLOATS, torch.int64), w_same=mostly([True], False),
       w_dtype=st.sampled_from(DTYPES), scale=mostly([None, None, 1.0, 0.3], 0.0, -1.0),
       seed=st.integers(0, 1000))
def test_public_op(build, op, relative, batch, extra_tokens, channels, heads, dim_head, ragged,
                   rank, x_dtype, w_same, w_dtype, scale, seed):
    try:
        layout = build()
    except ACCEPTED as e:
        event(f"layout refused: {type(e).__name__}")
        return
    w_dtype = x_dtype if w_same else w_dtype
    inner = max(int(heads), 1) * dim_head + ragged
    tokens = layout.num_tokens + extra_tokens
    if tokens < 0:
        return
    x, ws, extra = _op_inputs(op, layout, relative, channels, inner, rank, x_dtype, w_dtype,
                              batch, tokens, seed)
    try:
        expected = _run_op(op, x.double(), [w.double() for w in ws],
                           {k: v.double() for k, v in extra.items()}, layout, heads, scale,
                           "reference")
    except ACCEPTED:
        expected = None                  # invalid sizes: the real call must refuse them too
    for backend in [None, *sorted(BACKENDS)]:
        try:
            got = _run_op(op, x, ws, extra, layout, heads, scale, backend)
        except ACCEPTED as e:
            event(f"refused: {type(e).__name__}: {str(e)[:40]}")
            continue
        event(f"checked {backend}")
        assert expected is not None, "accepted inputs that the float64 reference refuses"
        _check(got, expected, x_dtype)


@SETTINGS
@given(build=layout_builders(), kind=st.sampled_from(["translution", "alpha"]),
       relative=st.sampled_from(SUBSETS), dim=mostly(range(1, 5), 0),
       heads=mostly([1, 2, 3], 0), dim_head=mostly([1, 2, 3], 0), rank=mostly([1, 2, 3], 0),
       parameterization=mostly(["independent", "residual"], "shared"),
       init=st.sampled_from(["reference", "tied"]), batch=mostly([1, 2, 3], 0),
       extra_tokens=mostly([0, 0], -1, 1), x_channels=mostly([0], 1),
       layer_dtype=st.sampled_from(FLOATS),
       x_dtype=mostly([None], *DTYPES), seed=st.integers(0, 1000))
def test_layers(build, kind, relative, dim, heads, dim_head, rank, parameterization, init,
                batch, extra_tokens, x_channels, layer_dtype, x_dtype, seed):
    try:
        layout = build()
        torch.manual_seed(seed)
        if kind == "translution":
            layer = Translution(dim, layout, heads, dim_head, relative=relative, init=init,
                                parameterization=parameterization)
        else:
            layer = AlphaTranslution(dim, layout, heads, dim_head, rank=rank, relative=relative,
                                     parameterization=parameterization)
    except ACCEPTED as e:
        event(f"layer refused: {type(e).__name__}: {str(e)[:30]}")
        return
    layer = layer.to(layer_dtype)
    with torch.no_grad():                    # residual banks: make ΔW matter
        for name, p in layer.named_parameters():
            if name.endswith("_delta"):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
    tokens = layout.num_tokens + extra_tokens
    if tokens < 0:
        return
    x = _tensor((batch, tokens, dim + x_channels), x_dtype or layer_dtype, seed)
    try:
        expected = _reference_layer(layer, x)
    except ACCEPTED:
        expected = None
    try:
        got = layer(x)
    except ACCEPTED as e:
        event(f"refused: {type(e).__name__}: {str(e)[:40]}")
        return
    event("checked")
    assert expected is not None, "accepted inputs that the float64 reference refuses"
    _check(got, expected, x.dtype)


def _reference_layer(layer, x):
    ref = copy.deepcopy(layer).double()
    ref.backend = "reference"
    return ref(x.double())


def _known_fault_case(case):
    g = torch.Generator().manual_seed(0)
    layout = Sequence(4, causal=True) if case.startswith("scale") else Grid(2, 2, cls_token=True)
    batch, channels = (0, 3) if case.startswith("empty") else (2, 0 if case == "zero C" else 3)
    x = torch.randn(batch, layout.num_tokens, channels, dtype=torch.float64, generator=g)
    ws = [torch.randn(layout.num_slots, channels, 4, dtype=torch.float64, generator=g)
          for _ in range(3)]
    scale = -1.0 if case.startswith("scale") else None
    if case.endswith("alpha"):
        w2 = [torch.randn(channels, 4, dtype=torch.float64, generator=g) for _ in range(3)]
        extra = {n: torch.randn(channels, 4, dtype=torch.float64, generator=g)
                 for n in ("uq", "uk", "uv")}
        extra.update({n: torch.randn(layout.num_slots, 4, 4, dtype=torch.float64, generator=g)
                      for n in ("mq", "mk", "mv")}, p=ws[0][0].new_ones(4, 4))
        return lambda backend: F.alpha_translution(x, *w2, layout, heads=2, scale=scale,
                                                   backend=backend, **extra)
    if case.endswith("layer"):
        layer = Translution(3, layout, heads=2, dim_head=2).double()
        return lambda backend: setattr(layer, "backend", backend) or layer(x)
    return lambda backend: F.translution(x, *ws, layout, heads=2, scale=scale, backend=backend)


@pytest.mark.parametrize("case", ["empty batch", "empty batch alpha", "empty batch layer",
                                  "zero C", "scale <= 0", "scale <= 0 alpha"])
def test_fixed_grouped_faults(case):
    """issue 11 #7 (empty batch / zero channels) and #4 (causal scale <= 0 gave NaN)."""
    run = _known_fault_case(case)
    torch.testing.assert_close(run("grouped"), run("reference"))
