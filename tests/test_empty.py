"""Empty inputs (issue 11 item 7): a batch of 0 or 0 input channels gives empty or zero outputs
and gradients on every backend, like the reference backend and SelfAttention; a zero output
width is refused."""

import pytest
import torch

from translution import AlphaTranslution, Translution
from translution import functional as F
from translution.layouts import Grid, Sequence
from translution.models import create_model

BACKENDS = ["reference", "grouped"]
LAYOUTS = [Grid(2, 3, cls_token=True), Sequence(4, causal=True), Sequence(3)]


def _outputs_and_grads(fn, x, params):
    y = fn(x, *params)
    grads = torch.autograd.grad(y.square().sum(), [x, *params])
    return [y, *grads]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS, ids=repr)
@pytest.mark.parametrize("batch, channels", [(0, 5), (2, 0), (0, 0)])
def test_translution_empty_inputs(layout, batch, channels, backend):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, layout.num_tokens, channels, dtype=torch.float64, generator=g,
                    requires_grad=True)
    ws = [torch.randn(layout.num_slots, channels, 6, dtype=torch.float64, generator=g)
          .requires_grad_() for _ in range(3)]
    fn = lambda x, *ws: F.translution(x, *ws, layout, heads=2, backend=backend)
    got = _outputs_and_grads(fn, x, ws)
    assert got[0].shape == (batch, layout.num_tokens, 6)
    want = [torch.zeros_like(t) for t in got]
    if batch:                    # no channels: every q, k, v is 0, so the output is 0 too
        want[0] = torch.zeros(batch, layout.num_tokens, 6, dtype=torch.float64)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS, ids=repr)
def test_alpha_translution_empty_batch(layout, backend):
    g = torch.Generator().manual_seed(1)
    mk = lambda *s: torch.randn(*s, dtype=torch.float64, generator=g).requires_grad_()
    names = ["wq", "wk", "wv", "uq", "uk", "uv", "p", "mq", "mk", "mv"]
    shapes = [(5, 6)] * 3 + [(5, 4)] * 3 + [(4, 6)] + [(layout.num_slots, 4, 4)] * 3
    params = [mk(*s) for s in shapes]
    x = mk(0, layout.num_tokens, 5)

    def fn(x, *values):
        kw = dict(zip(names, values))
        return F.alpha_translution(x, kw.pop("wq"), kw.pop("wk"), kw.pop("wv"), layout, heads=2,
                                   backend=backend, **kw)

    got = _outputs_and_grads(fn, x, params)
    assert got[0].shape == (0, layout.num_tokens, 6)
    for t in got[1:]:
        torch.testing.assert_close(t, torch.zeros_like(t))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls", [Translution, AlphaTranslution])
def test_layers_empty_batch(cls, backend):
    torch.manual_seed(0)
    layer = cls(8, Grid(2, 2, cls_token=True), heads=2, dim_head=4, backend=backend)
    x = torch.randn(0, 5, 8, requires_grad=True)
    y = layer(x)
    assert y.shape == (0, 5, 8)
    y.sum().backward()
    assert x.grad.shape == (0, 5, 8)
    for p in layer.parameters():
        torch.testing.assert_close(p.grad, torch.zeros_like(p))


def test_zero_output_width_is_refused():
    layout = Sequence(3)
    x = torch.randn(1, 3, 4)
    w = torch.randn(layout.num_slots, 4, 0)
    with pytest.raises(ValueError, match="output width"):
        F.translution(x, w, w, w, layout, heads=1)


@pytest.mark.parametrize("name", ["vit_micro_translution", "vit_micro_alpha"])
def test_vit_empty_batch(name):
    torch.manual_seed(0)
    model = create_model(name, dim=16, depth=1, heads=2, dim_head=8, mlp_dim=32, image_size=8,
                         patch_size=4, in_channels=3, num_classes=5)
    logits = model(torch.randn(0, 3, 8, 8))
    assert logits.shape == (0, 5)


@pytest.mark.parametrize("name", ["gpt_micro_translution", "gpt_micro_alpha"])
def test_gpt_empty_batch(name):
    torch.manual_seed(0)
    model = create_model(name, dim=16, depth=1, heads=2, dim_head=8, mlp_dim=32, vocab_size=20,
                         block_size=8)
    logits = model(torch.zeros(0, 6, dtype=torch.long))
    assert logits.shape[:2] == (0, 6)
