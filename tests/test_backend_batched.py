"""The batched backend: exact against the literal definition (float64, forward and every
gradient), a number of ops that does not grow with the slots, and a bounded working set."""

import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from translution import AlphaTranslution, Translution
from translution import functional as F
from translution.backends import BACKENDS, BatchedBackend, select_backend
from translution.backends import batched
from translution.backends.batched import DEFAULT_MEMORY_BUDGET
from translution.bench.op import OpCounter
from translution.layouts import Grid, Sequence

SUBSETS = ["q", "k", "v", "qk", "qv", "kv", "qkv"]
LAYOUTS = [
    Sequence(6), Sequence(6, causal=True), Sequence(1), Sequence(1, causal=True),
    Grid(3, 4), Grid(3, 4, cls_token=True), Grid(4, 3, cls_token=True), Grid(1, 1, cls_token=True),
    Grid(2, 2, 3, cls_token=True), Grid(4, 5, max_distance=1, cls_token=True),
    Sequence(7, causal=True, max_distance=2), Sequence(6, max_distance=2),
    Grid(3, 4, symmetric=True, cls_token=True), Sequence(5, symmetric=True),
]
# the default (one chunk at these sizes), and tiny chunks/tiles: many chunks, padded tiles
VARIANTS = {"default": BatchedBackend(), "tiny": BatchedBackend(memory_budget=2000, tile_rows=3)}


def _run(fn, inputs, backend, seed=0):
    """Output and the gradient of every input that requires one, for ``fn(*inputs, backend)``."""
    y = fn(*inputs, backend=backend)
    g = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(seed))
    wrt = [t for t in inputs if t.requires_grad]
    return [y.detach(), *torch.autograd.grad((y * g).sum(), wrt)]


def _assert_same(expected, actual):
    assert len(expected) == len(actual)
    for e, a in zip(expected, actual):
        if e is None or a is None:      # no gradient (e.g. an empty sum): both agree
            assert e is None and a is None or (a if e is None else e).abs().sum() == 0
            continue
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)


def _weights(layout, relative, c, inner, g):
    return [(torch.randn(*((layout.num_slots,) if n in relative else ()), c, inner,
                         dtype=torch.float64, generator=g) / c ** 0.5).requires_grad_()
            for n in "qkv"]


def _translution(x, wq, wk, wv, *, layout, heads=2, backend):
    return F.translution(x, wq, wk, wv, layout, heads=heads, backend=backend)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", LAYOUTS, ids=repr)
@pytest.mark.parametrize("relative", SUBSETS)
def test_translution_equals_reference(layout, relative, variant):
    g = torch.Generator().manual_seed(0)
    batch = 1 if layout.num_tokens > 10 else 2
    x = torch.randn(batch, layout.num_tokens, 5, dtype=torch.float64, generator=g,
                    requires_grad=True)
    inputs = [x, *_weights(layout, relative, 5, 6, g)]
    fn = lambda *t, backend: _translution(*t, layout=layout, backend=backend)
    _assert_same(_run(fn, inputs, "reference"), _run(fn, inputs, VARIANTS[variant]))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", LAYOUTS[:10], ids=repr)
@pytest.mark.parametrize("relative", SUBSETS)
def test_alpha_translution_equals_reference(layout, relative, variant, alpha_case):
    fn, inputs = alpha_case(layout, relative)
    _assert_same(_run(fn, inputs, "reference"), _run(fn, inputs, VARIANTS[variant]))


@pytest.mark.parametrize("short_head", [0, 1 << 20], ids=["wide-head paths", "short-head paths"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=repr)
@pytest.mark.parametrize("relative", SUBSETS)
def test_both_head_width_paths_equal_reference(layout, relative, short_head, monkeypatch,
                                               alpha_case):
    """Short heads take other paths (feature-major scores, per-head products and sums through
    small GEMMs) than wide ones; the other tests' heads are short. Force each path in turn."""
    monkeypatch.setattr(batched, "_SHORT_HEAD", short_head)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, layout.num_tokens, 5, dtype=torch.float64, generator=g, requires_grad=True)
    inputs = [x, *_weights(layout, relative, 5, 6, g)]
    fn = lambda *t, backend: _translution(*t, layout=layout, backend=backend)
    for backend in VARIANTS.values():
        _assert_same(_run(fn, inputs, "reference"), _run(fn, inputs, backend))
    fn, inputs = alpha_case(layout, relative)
    _assert_same(_run(fn, inputs, "reference"), _run(fn, inputs, VARIANTS["tiny"]))


@pytest.mark.parametrize("layout", [Grid(2, 3, cls_token=True), Sequence(4, causal=True),
                                    Sequence(3, max_distance=1)], ids=repr)
def test_gradcheck(layout):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, layout.num_tokens, 3, dtype=torch.float64, generator=g, requires_grad=True)
    fn = lambda *t: _translution(*t, layout=layout, backend=VARIANTS["tiny"])
    assert torch.autograd.gradcheck(fn, (x, *_weights(layout, "qkv", 3, 4, g)))


@pytest.mark.parametrize("shape", [(0, 5, 4, 6), (2, 5, 4, 0), (2, 5, 0, 6), (0, 5, 0, 0)],
                         ids=["no batch", "no output channels", "no input channels", "nothing"])
def test_empty_inputs_give_empty_results(shape):
    batch, n, c, inner = shape
    layout = Grid(1, n - 1, cls_token=True)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(batch, n, c, dtype=torch.float64, generator=g, requires_grad=True)
    wq, wk, wv = _weights(layout, "qkv", c, inner, g)
    attn = torch.rand(batch, 2, n, n, dtype=torch.float64, generator=g).requires_grad_()

    def fn(x, wq, wk, wv, attn, backend):
        impl = BACKENDS[backend]
        return (impl.pair_scores(x, x, wq, wk, layout, 2, 1.0),
                impl.pair_mix(attn, x, wv, layout, 2))

    results = []
    for backend in ("reference", "batched"):
        scores, mixed = fn(x, wq, wk, wv, attn, backend)
        assert scores.shape == (batch, 2, n, n) and mixed.shape == (batch, n, inner)
        loss = scores.sum() + mixed.sum()
        results.append([scores, mixed, *torch.autograd.grad(loss, [x, wq, wk, wv, attn],
                                                              allow_unused=True)])
    _assert_same(*results)


def test_fp16_autocast_scores_stay_finite_for_large_inputs():
    """The q·k products are formed in float32 even when the projections are low precision."""
    layout = Grid(3, 3, cls_token=True)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, layout.num_tokens, 16, generator=g) * 1e3
    wq, wk = (torch.randn(layout.num_slots, 16, 16, generator=g) / 4 for _ in range(2))
    ref = BACKENDS["reference"].pair_scores(x.double(), x.double(), wq.double(), wk.double(),
                                            layout, 2, 0.25)
    s = BACKENDS["batched"].pair_scores(x.half(), x.half(), wq.half(), wk.half(), layout, 2, 0.25)
    assert s.dtype == torch.float32 and torch.isfinite(s).all()
    torch.testing.assert_close(s.double(), ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item())


def _count(layer, x):
    layer(x).sum().backward()                  # plans are built and cached on the first call
    with OpCounter() as mode:
        layer(x).sum().backward()
    return mode


def test_ops_per_layer_call_do_not_grow_with_slots():
    """One forward+backward of a Translution layer at 14×14+cls (732 slots) in at most 300 ops
    with the GPU budget, as many as at 4×4+cls (52 slots); grouped needs one loop per offset."""
    torch.manual_seed(0)
    gpu_like = BatchedBackend(memory_budget=DEFAULT_MEMORY_BUDGET["cuda"])
    counts = {}
    for side, backend in ((14, gpu_like), (4, gpu_like), (4, "grouped")):
        layout = Grid(side, side, cls_token=True)
        x = torch.randn(2, layout.num_tokens, 32, requires_grad=True)
        layer = Translution(32, layout, heads=2, dim_head=16, backend=backend)
        counts[side, backend] = _count(layer, x).ops
    assert counts[14, gpu_like] <= 300
    assert counts[14, gpu_like] == counts[4, gpu_like]
    assert counts[4, gpu_like] < counts[4, "grouped"] / 4


def test_working_set_is_bounded_by_the_memory_budget():
    """No tensor beyond the banks, the (B, heads, N, N) scores, (B, N, ·) activations and one
    chunk's temporaries (at most the memory budget)."""
    torch.manual_seed(0)
    layout = Grid(6, 6, cls_token=True)
    b, c, heads, inner = 4, 16, 2, 16
    x = torch.randn(b, layout.num_tokens, c, requires_grad=True)
    ws = [torch.randn(layout.num_slots, c, inner, requires_grad=True) for _ in range(3)]
    n = layout.num_tokens
    full = 4 * max(b * heads * (n * n + 1), layout.num_slots * c * inner,
                   b * (n + 1) * max(c, inner))
    budget = 4 << 10
    with OpCounter() as mode:
        F.translution(x, *ws, layout, heads=heads, backend=BatchedBackend(budget)).sum().backward()
    assert mode.largest <= max(full, budget)
    with OpCounter() as loose:
        loose_backend = BatchedBackend(1 << 30)
        F.translution(x, *ws, layout, heads=heads, backend=loose_backend).sum().backward()
    assert loose.largest > max(full, budget)     # the budget is what bounds the chunks


def test_narrow_banks_get_twice_the_default_cpu_budget():
    """α-sized banks (R×R ≤ 32×32 per slot) are planned in chunks of up to twice the CPU budget
    by default (fewer ops); wider banks, and any explicit budget, are not."""
    layout, cpu = Grid(14, 14, cls_token=True), torch.device("cpu")
    budget = DEFAULT_MEMORY_BUDGET["cpu"]

    def chunks(backend, width):
        plan = backend.plan(layout, 8, width, width, 4, cpu)
        return len(plan), max(c.tiles * c.rows * 8 * width * 4 for c in plan)

    explicit = BatchedBackend(memory_budget=budget)
    (n_default, largest), (n_explicit, _) = chunks(BatchedBackend(), 24), chunks(explicit, 24)
    assert budget < largest <= 2 * budget and n_default < n_explicit
    assert chunks(BatchedBackend(), 64) == chunks(explicit, 64)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1M"])
def test_bad_options_are_refused(bad):
    with pytest.raises(ValueError, match="memory_budget"):
        BatchedBackend(memory_budget=bad)
    with pytest.raises(ValueError, match="tile_rows"):
        BatchedBackend(tile_rows=bad)


class _CountBmm(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func.overloadpacket is torch.ops.aten.bmm
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("budget", [None, 256])
def test_save_projections_skips_the_recomputation(budget):
    """Saved projections give the same gradients with one projection ``bmm`` fewer per chunk
    for each of q, k and v in backward; a second backward (``retain_graph``) recomputes."""
    layout = Grid(3, 3, cls_token=True)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, layout.num_tokens, 4, dtype=torch.float64, generator=g,
                    requires_grad=True)
    wq, wk, wv = (w.requires_grad_() for w in _weights(layout, "qkv", 4, 4, g))
    backend = BatchedBackend(memory_budget=budget)
    chunks = len(backend.plan(layout, 2, 4, 4, 8, x.device))
    counts, grads = {}, {}
    for save in (False, True):
        s = backend.pair_scores(x, x, wq, wk, layout, 2, 0.5, save_projections=save)
        y = backend.pair_mix(s.softmax(-1), x, wv, layout, 2, save_projections=save)
        with _CountBmm() as mode:
            grads[save] = torch.autograd.grad(y.square().sum(), (x, wq, wk, wv),
                                              retain_graph=True)
        counts[save] = mode.count
        again = torch.autograd.grad(y.square().sum(), (x, wq, wk, wv))
        for a, b in zip(again, grads[save]):
            torch.testing.assert_close(a, b)
    assert counts[False] - counts[True] == 3 * chunks
    for a, b in zip(grads[True], grads[False]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("width", [24, 64, 192])
def test_default_backend_is_batched(width):
    """``backend=None`` takes ``batched`` for narrow and wide banks alike."""
    layout = Grid(2, 2, cls_token=True)
    x = torch.empty(1, layout.num_tokens, width)
    bank = torch.empty(layout.num_slots, width, width)
    assert select_backend(None, layout, x, [bank, bank, bank]).name == "batched"
    assert select_backend(None, layout, x, [bank, None, bank]).name == "batched"
    assert select_backend("batched", layout, x, [bank, bank, bank]).name == "batched"


@pytest.mark.parametrize("backend", ["grouped", "batched"])
@pytest.mark.parametrize("layer_class", [Translution, AlphaTranslution])
def test_torch_compile_matches_eager(layer_class, backend):
    """A layer under ``torch.compile`` (``aot_eager``: CPU-only test) gives eager's output and
    gradients; dynamo leaves the pair primitives to eager (it does not trace their plans)."""
    torch.manual_seed(0)
    layer = layer_class(16, Grid(3, 3, cls_token=True), heads=2, dim_head=8, backend=backend)
    x = torch.randn(2, 10, 16, requires_grad=True)
    params = [x, *layer.parameters()]
    expected = [layer(x), *torch.autograd.grad(layer(x).sum(), params)]
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="aot_eager")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = compiled(x)
    assert not [w for w in caught if "lru_cache" in str(w.message)]
    actual = [y, *torch.autograd.grad(y.sum(), params)]
    for e, a in zip(expected, actual):
        torch.testing.assert_close(a, e)
