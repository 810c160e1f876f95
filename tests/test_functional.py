"""The fast grouped backend equals the literal per-pair definition (SPEC §8.6), forward and every
gradient, in float64, over every layout kind, relative subset and odd size."""

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from translution import functional as F
from translution.backends import BACKENDS
from translution.backends.batched import BatchedBackend
from translution.layouts import Grid, Sequence

SUBSETS = ["q", "k", "v", "qk", "qv", "kv", "qkv"]
FAST = sorted(name for name in BACKENDS if name != "reference")
#: The fast backends, plus batched with a 1-byte budget (several far blocks at N = 75).
FAR_BACKENDS = FAST + [pytest.param(BatchedBackend(memory_budget=1), id="batched-1B")]
LAYOUTS = [
    Sequence(6), Sequence(6, causal=True), Sequence(1), Sequence(1, causal=True),
    Grid(3, 4), Grid(3, 4, cls_token=True), Grid(4, 3, cls_token=True), Grid(1, 1, cls_token=True),
    Grid(2, 3, 2), Grid(2, 2, 3, cls_token=True),
    Grid(4, 5, max_distance=1, cls_token=True), Sequence(7, causal=True, max_distance=2),
    Sequence(6, max_distance=2), Grid(3, 4, symmetric=True, cls_token=True),
    Sequence(5, symmetric=True),
]


def _close(a_list, b_list, tol=1e-10):
    for a, b in zip(a_list, b_list):
        if a is None or b is None:
            assert a is None and b is None
            continue
        assert torch.allclose(a, b, atol=tol, rtol=tol), (a - b).abs().max()


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("layout", LAYOUTS, ids=repr)
@pytest.mark.parametrize("relative", SUBSETS)
def test_translution_fast_equals_reference(layout, relative, backend, make_weights, run_backends):
    g = torch.Generator().manual_seed(0)
    batch = 1 if layout.num_tokens > 10 else 2
    x = torch.randn(batch, layout.num_tokens, 5, dtype=torch.float64, generator=g,
                    requires_grad=True)
    ws = make_weights(layout, relative, 5, 6, generator=g)
    fn = lambda x, wq, wk, wv, backend: F.translution(x, wq, wk, wv, layout, heads=2,
                                                      backend=backend)
    ref, fast = run_backends(fn, [x, *ws], ("reference", backend))
    _close(ref, fast)


@pytest.mark.parametrize("layout", [
    Sequence(23, causal=True, max_distance=3), Sequence(23, max_distance=3),
    Sequence(23, causal=True, max_distance=0), Sequence(23, max_distance=0),
    Sequence(23, max_distance=3, symmetric=True), Grid(23, cls_token=True, max_distance=2),
    Sequence(75, causal=True, max_distance=4), Sequence(75, max_distance=4)], ids=repr)
@pytest.mark.parametrize("relative", ["qkv", "q", "kv"])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("save", [False, True])
@pytest.mark.parametrize("backend", FAR_BACKENDS)
def test_far_slot_equals_reference(layout, relative, batch, save, backend, make_weights,
                                   run_backends):
    """Clipped 1-D layouts: the far slot's pairs (projected once per token, scored and mixed by
    matmuls over query blocks, several blocks at N = 75) equal the per-pair definition."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, layout.num_tokens, 5, dtype=torch.float64, generator=g,
                    requires_grad=True)
    ws = make_weights(layout, relative, 5, 6, generator=g)
    fn = lambda x, wq, wk, wv, backend: F.translution(x, wq, wk, wv, layout, heads=2,
                                                      backend=backend, save_projections=save)
    ref, fast = run_backends(fn, [x, *ws], ("reference", backend))
    _close(ref, fast)


@pytest.mark.parametrize("backend", FAR_BACKENDS)
@pytest.mark.parametrize("layout", [Sequence(40, causal=True, max_distance=3),
                                    Grid(40, max_distance=1, cls_token=True)], ids=repr)
@pytest.mark.parametrize("relative", ["qkv", "v"])
def test_alpha_far_slot_equals_reference(layout, relative, backend, run_backends, alpha_case):
    """α-Translution's narrow banks on clipped 1-D layouts: the far slot as in the reference."""
    fn, inputs = alpha_case(layout, relative)
    ref, fast = run_backends(fn, inputs, ("reference", backend))
    _close(ref, fast)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("layout", LAYOUTS[:10], ids=repr)
@pytest.mark.parametrize("relative", SUBSETS)
def test_alpha_translution_fast_equals_reference(layout, relative, backend, run_backends,
                                                 alpha_case):
    fn, inputs = alpha_case(layout, relative)
    ref, fast = run_backends(fn, inputs, ("reference", backend))
    _close(ref, fast)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("layout", [Sequence(4, causal=True), Grid(2, 3, cls_token=True),
                                    Sequence(3, max_distance=1)], ids=repr)
def test_gradcheck_fast(layout, backend, make_weights):
    x = torch.randn(1, layout.num_tokens, 3, dtype=torch.float64, requires_grad=True)
    ws = make_weights(layout, "qkv", 3, 4)
    fn = lambda *t: F.translution(*t, layout, heads=2, backend=backend)
    assert torch.autograd.gradcheck(fn, (x, *ws))


def test_gradcheck_alpha_grouped(make_alpha_params):
    layout = Grid(2, 2, cls_token=True)
    x = torch.randn(1, 5, 3, dtype=torch.float64, requires_grad=True)
    params = make_alpha_params(layout, "qkv", c=3, inner=4, rank=2)
    names = list(params)

    def fn(x, *values):
        kw = dict(zip(names, values))
        return F.alpha_translution(x, kw.pop("wq"), kw.pop("wk"), kw.pop("wv"), layout, heads=2,
                                   backend="grouped", **kw)

    assert torch.autograd.gradcheck(fn, (x, *params.values()))


def test_clipping_with_large_k_equals_unclipped(make_weights):
    """K ≥ extent: the clipped bank holds the same matrices at the same offsets."""
    plain, clipped = Grid(3, 4, cls_token=True), Grid(3, 4, cls_token=True, max_distance=5)
    g = torch.Generator().manual_seed(2)
    ws = make_weights(plain, "qkv", 4, 4, generator=g, requires_grad=False)
    # move every unclipped slot to the clipped slot of the same offset
    deltas = torch.stack(torch.meshgrid(torch.arange(-2, 3), torch.arange(-3, 4), indexing="ij"),
                         -1).reshape(-1, 2)
    src = plain.offset_slots(deltas)
    dst = clipped.offset_slots(deltas)
    banks = []
    for w in ws:
        bank = torch.zeros(clipped.num_slots, 4, 4, dtype=w.dtype)
        bank[dst] = w[src]
        bank[-3:] = w[-3:]
        banks.append(bank)
    x = torch.randn(2, 13, 4, dtype=torch.float64, generator=g)
    y1 = F.translution(x, *ws, plain, heads=2)
    y2 = F.translution(x, *banks, clipped, heads=2)
    assert torch.allclose(y1, y2, atol=1e-12)


def test_shorter_sequence_uses_bank_prefix(make_weights):
    layout = Sequence(8, causal=True)
    ws = make_weights(layout, "qkv", 4, 4, requires_grad=False)
    x = torch.randn(2, 8, 4, dtype=torch.float64)
    full = F.translution(x, *ws, layout, heads=2)
    short = F.translution(x[:, :5], *ws, layout, heads=2)
    assert torch.allclose(full[:, :5], short, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(["seq", "causal", "grid", "grid_cls", "grid3"]),
       sizes=st.lists(st.integers(1, 4), min_size=3, max_size=3),
       batch=st.integers(1, 3), heads=st.integers(1, 3), dim_head=st.integers(1, 3),
       channels=st.integers(1, 4), relative=st.sampled_from(SUBSETS),
       clip=st.one_of(st.none(), st.integers(0, 3)), seed=st.integers(0, 2**16),
       backend=st.sampled_from(FAST))
def test_hypothesis_shapes(kind, sizes, batch, heads, dim_head, channels, relative, clip, seed,
                           backend):
    layout = {
        "seq": lambda: Sequence(sizes[0] + 1, max_distance=clip),
        "causal": lambda: Sequence(sizes[0] + 2, causal=True, max_distance=clip),
        "grid": lambda: Grid(sizes[0], sizes[1], max_distance=clip),
        "grid_cls": lambda: Grid(sizes[0], sizes[1], cls_token=True, max_distance=clip),
        "grid3": lambda: Grid(*sizes, cls_token=seed % 2 == 0),
    }[kind]()
    g = torch.Generator().manual_seed(seed)
    inner = heads * dim_head
    x = torch.randn(batch, layout.num_tokens, channels, dtype=torch.float64, generator=g,
                    requires_grad=True)
    ws = [(torch.randn(*((layout.num_slots,) if n in relative else ()), channels, inner,
                       dtype=torch.float64, generator=g)).requires_grad_() for n in "qkv"]
    results = []
    for name in ("reference", backend):
        y = F.translution(x, *ws, layout, heads=heads, backend=name)
        grads = torch.autograd.grad(y.pow(2).sum(), [x, *ws])
        results.append([y, *grads])
    _close(*results)


def test_bf16_autocast_close_to_fp32(make_weights):
    layout = Grid(4, 4, cls_token=True)
    ws = make_weights(layout, "qkv", 16, 16, dtype=torch.float32)
    x = torch.randn(2, 17, 16, requires_grad=True)
    ref = F.translution(x, *ws, layout, heads=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = F.translution(x, *ws, layout, heads=2)
    assert y.dtype == torch.bfloat16
    assert (y.float() - ref).abs().max() < 0.05 * ref.abs().max()
    y.float().sum().backward()
    assert all(w.grad is not None and w.grad.dtype == torch.float32 for w in ws)
    assert torch.isfinite(x.grad).all()


def test_fp16_weights_run_without_autocast(make_weights):
    layout = Sequence(5, causal=True)
    ws = make_weights(layout, "kv", 8, 8, dtype=torch.float16, requires_grad=False)
    x = torch.randn(1, 5, 8, dtype=torch.float16)
    y = F.translution(x, *ws, layout, heads=2)
    ref = F.translution(x.double(), *[w.double() for w in ws], layout, heads=2)
    assert y.dtype == torch.float16
    assert (y.double() - ref).abs().max() < 2e-2


def test_backend_selection_and_refusal(make_weights):
    layout = Grid(3, 3, cls_token=True)
    ws = make_weights(layout, "qkv", 4, 4, requires_grad=False)
    x = torch.randn(1, 10, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        F.translution(x, *ws, layout, heads=2, backend="nope")
    from translution.backends import ReferenceBackend
    tiny = ReferenceBackend(max_gathered_bytes=1000)
    with pytest.raises(ValueError, match="cannot run these inputs.*GiB"):
        F.translution(x, *ws, layout, heads=2, backend=tiny)
    with pytest.raises(TypeError, match="backend must be"):
        F.translution(x, *ws, layout, heads=2, backend=3)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("scale", [0.0, -0.7])
@pytest.mark.parametrize("layout", [Sequence(4, causal=True), Grid(2, 3, cls_token=True)],
                         ids=repr)
def test_nonpositive_scale_equals_reference(layout, scale, backend, make_weights, run_backends):
    """A scale <= 0 must not turn the causal -inf fill into NaN or +inf (issue 11 item 4)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, layout.num_tokens, 4, dtype=torch.float64, generator=g, requires_grad=True)
    ws = make_weights(layout, "qkv", 4, 4, generator=g)
    fn = lambda x, wq, wk, wv, backend: F.translution(x, wq, wk, wv, layout, heads=2,
                                                      scale=scale, backend=backend)
    ref, fast = run_backends(fn, [x, *ws], ("reference", backend))
    assert all(torch.isfinite(t).all() for t in ref)
    for a, b in zip(ref, fast):
        torch.testing.assert_close(b, a)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("scale", [0.0, -0.7])
def test_alpha_nonpositive_scale_equals_reference(scale, backend, run_backends,
                                                 make_alpha_params):
    layout = Sequence(4, causal=True)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    params = make_alpha_params(layout, "qkv", generator=g)
    names = list(params)

    def fn(x, *values, backend):
        kw = dict(zip(names, values))
        return F.alpha_translution(x, kw.pop("wq"), kw.pop("wk"), kw.pop("wv"), layout, heads=2,
                                   scale=scale, backend=backend, **kw)

    ref, fast = run_backends(fn, [x, *params.values()], ("reference", backend))
    assert all(torch.isfinite(t).all() for t in ref)
    for a, b in zip(ref, fast):
        torch.testing.assert_close(b, a)


@pytest.mark.parametrize("backend", FAST + ["reference"])
@pytest.mark.parametrize("layout", [Sequence(5, causal=True), Grid(3, 4, cls_token=True),
                                    Sequence(6, max_distance=2)], ids=repr)
@pytest.mark.parametrize("relative", ["q", "kv", "qkv"])
def test_save_projections_equals_reference(layout, relative, backend, make_weights, run_backends):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, layout.num_tokens, 5, dtype=torch.float64, generator=g, requires_grad=True)
    ws = make_weights(layout, relative, 5, 6, generator=g)
    fn = lambda x, wq, wk, wv, backend: F.translution(
        x, wq, wk, wv, layout, heads=2, backend=backend, save_projections=backend != "reference")
    ref, fast = run_backends(fn, [x, *ws], ("reference", backend))
    _close(ref, fast)


@pytest.mark.parametrize("backend", FAST)
def test_alpha_save_projections_equals_reference(backend, run_backends, make_alpha_params):
    layout = Grid(2, 3, cls_token=True)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, layout.num_tokens, 5, dtype=torch.float64, generator=g, requires_grad=True)
    params = make_alpha_params(layout, "qkv", generator=g)
    names = list(params)

    def fn(x, *values, backend):
        kw = dict(zip(names, values))
        return F.alpha_translution(x, kw.pop("wq"), kw.pop("wk"), kw.pop("wv"), layout, heads=2,
                                   backend=backend, save_projections=backend != "reference",
                                   **kw)

    ref, fast = run_backends(fn, [x, *params.values()], ("reference", backend))
    _close(ref, fast)


class _CountMatmuls(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm_,
                                   torch.ops.aten.addmm, torch.ops.aten.bmm):
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_grouped_save_projections_skips_the_recomputation(make_weights):
    """Saved projections: backward runs no projection GEMM, one per group fewer for each of
    q, k and v (3 groups per class-token layout plus one per offset)."""
    layout = Grid(2, 2, cls_token=True)
    ws = make_weights(layout, "qkv", 4, 4)
    x = torch.randn(1, layout.num_tokens, 4, dtype=torch.float64, requires_grad=True)
    counts = {}
    for save in (False, True):
        y = F.translution(x, *ws, layout, heads=2, backend="grouped", save_projections=save)
        with _CountMatmuls() as mode:
            y.sum().backward()
        counts[save] = mode.count
    groups = 3 * 3 + 3
    assert counts[False] - counts[True] == 3 * groups


def test_save_projections_must_be_bool(make_weights):
    layout = Sequence(3)
    ws = make_weights(layout, "qkv", 4, 4, requires_grad=False)
    with pytest.raises(TypeError, match="save_projections must be a bool"):
        F.translution(torch.randn(1, 3, 4, dtype=torch.float64), *ws, layout, heads=2,
                      save_projections="yes")


@pytest.mark.parametrize("name", ["Translution", "AlphaTranslution"])
def test_layers_pass_save_projections_through(name):
    import translution
    torch.manual_seed(0)
    cls = getattr(translution, name)
    layers = [cls(8, Grid(2, 2, cls_token=True), heads=2, dim_head=4, backend="grouped",
                  save_projections=save) for save in (False, True)]   # grouped implements it
    layers[1].load_state_dict(layers[0].state_dict())
    assert [layer.save_projections for layer in layers] == [False, True]
    x = torch.randn(2, 5, 8)
    results, counts = [], []
    for layer in layers:
        y = layer(x)
        with _CountMatmuls() as mode:
            y.square().sum().backward()
        counts.append(mode.count)
        results.append([y, *(p.grad for p in layer.parameters())])
    assert counts[1] < counts[0]
    for a, b in zip(*results):
        torch.testing.assert_close(b, a)


def _large_input_case(relative, device):
    layout = Sequence(6, causal=True)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 6, 16, dtype=torch.float64, generator=g) * 1e3
    ws = [torch.randn(*((layout.num_slots,) if n in relative else ()), 16, 16,
                      dtype=torch.float64, generator=g) / 4 for n in "qkv"]
    ref = F.translution(x, *ws, layout, heads=2, backend="reference")
    return layout, x.float().to(device), [w.float().to(device) for w in ws], ref


def _assert_close_to_fp64(y, ref):
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.double().cpu(), ref, atol=2e-3 * ref.abs().max().item(), rtol=0)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("relative", ["qkv", "v"])
def test_fp16_scores_are_formed_in_fp32(relative, backend):
    """|x| ~ 1e3: q·k overflows fp16 (issue 7 item 5), so the scores must be formed in fp32."""
    layout, x, ws, ref = _large_input_case(relative, "cpu")
    with torch.autocast("cpu", dtype=torch.float16):
        y = F.translution(x, *ws, layout, heads=2, backend=backend)
    assert y.dtype == torch.float16
    _assert_close_to_fp64(y, ref)
    y = F.translution(x.half(), *[w.half() for w in ws], layout, heads=2, backend=backend)
    _assert_close_to_fp64(y, ref)


@pytest.mark.parametrize("backend", FAST)
def test_alpha_fp16_scores_are_formed_in_fp32(backend, make_alpha_params):
    layout = Sequence(6, causal=True)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 6, 16, dtype=torch.float64, generator=g) * 1e3
    params = make_alpha_params(layout, "qkv", c=16, inner=16, rank=8, generator=g)
    params = {k: v.detach() for k, v in params.items()}
    call = lambda x, ps, be: F.alpha_translution(
        x, ps["wq"], ps["wk"], ps["wv"], layout, heads=2, backend=be,
        **{k: v for k, v in ps.items() if k not in ("wq", "wk", "wv")})
    ref = call(x, params, "reference")
    y = call(x.half(), {k: v.half() for k, v in params.items()}, backend)
    _assert_close_to_fp64(y, ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("relative", ["qkv", "v"])
def test_fp16_autocast_scores_in_fp32_on_cuda(relative):
    layout, x, ws, ref = _large_input_case(relative, "cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        y = F.translution(x, *ws, layout, heads=2)
    _assert_close_to_fp64(y, ref)
