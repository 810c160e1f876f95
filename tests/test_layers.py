"""Layers: parameters, initialisation, conversion from self-attention, resizing, errors."""

import copy
import math

import pytest
import torch

from translution import AlphaTranslution, SelfAttention, Translution
from translution.backends import BACKENDS
from translution.layouts import Grid, Sequence


@pytest.mark.parametrize("relative", ["q", "k", "v", "qk", "qv", "kv", "qkv"])
def test_translution_parameter_shapes(relative):
    layout = Grid(4, 4, cls_token=True)
    layer = Translution(32, layout, heads=2, dim_head=8, relative=relative)
    for name in "qkv":
        expected = (layout.num_slots, 32, 16) if name in relative else (32, 16)
        assert getattr(layer, "w" + name).shape == expected
    n_params = sum(p.numel() for p in layer.parameters())
    assert n_params == (len(relative) * layout.num_slots + 3 - len(relative)) * 32 * 16 + 16 * 32 + 32


def test_reference_init_range():
    layer = Translution(32, Sequence(8), heads=2, dim_head=8)
    bound = 1 / math.sqrt(32 * 16)
    assert layer.wq.abs().max() <= bound and layer.wq.abs().max() > 0.9 * bound


def test_tied_init_equals_self_attention():
    layout = Grid(3, 3, cls_token=True)
    torch.manual_seed(0)
    layer = Translution(16, layout, heads=2, dim_head=8, init="tied").double()
    assert torch.equal(layer.wk[0], layer.wk[-1])
    sa = SelfAttention(16, layout, heads=2, dim_head=8).double()
    with torch.no_grad():
        for name in "qkv":
            getattr(sa, "w" + name).copy_(getattr(layer, "w" + name)[0])
        sa.out.load_state_dict(layer.out.state_dict())
    x = torch.randn(2, 10, 16, dtype=torch.float64)
    assert torch.allclose(layer(x), sa(x), atol=1e-12)


@pytest.mark.parametrize("layout", [Grid(3, 4, cls_token=True), Sequence(6, causal=True)],
                         ids=repr)
@pytest.mark.parametrize("relative", ["qkv", "kv"])
def test_from_self_attention_matches_before_training(layout, relative):
    sa = SelfAttention(16, layout, heads=2, dim_head=8).double()
    layer = Translution.from_self_attention(sa, relative=relative)
    assert layer.relative == relative
    x = torch.randn(2, layout.num_tokens, 16, dtype=torch.float64)
    assert torch.allclose(layer(x), sa(x), atol=1e-12)
    with pytest.raises(TypeError, match="SelfAttention"):
        Translution.from_self_attention(torch.nn.Linear(3, 3))


def test_grid_layer_runs_on_other_sizes():
    layer = Translution(8, Grid(5, 5, cls_token=True), heads=2, dim_head=4)
    assert layer(torch.randn(1, 13, 8), shape=(3, 4)).shape == (1, 13, 8)
    clipped = Translution(8, Grid(3, 3, max_distance=2), heads=2, dim_head=4)
    assert clipped(torch.randn(1, 64, 8), shape=(8, 8)).shape == (1, 64, 8)
    with pytest.raises(ValueError, match="does not fit"):
        layer(torch.randn(1, 37, 8), shape=(6, 6))


def test_layer_backend_option_matches():
    layout = Grid(2, 3, cls_token=True)
    torch.manual_seed(1)
    a = Translution(8, layout, heads=2, dim_head=4, backend="reference").double()
    b = Translution(8, layout, heads=2, dim_head=4, backend="grouped").double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    assert torch.allclose(a(x), b(x), atol=1e-12)


@pytest.mark.parametrize("relative", ["q", "k", "v", "qk", "qv", "kv", "qkv"])
def test_alpha_layer_parameters_and_forward(relative):
    layout = Grid(3, 3, cls_token=True)
    layer = AlphaTranslution(16, layout, heads=2, dim_head=8, rank=4, relative=relative)
    names = {n for n, _ in layer.named_parameters()}
    assert {"m" + r for r in relative} <= names
    assert ("p" in names) == ("v" in relative)
    assert ("uq" in names) == bool(set(relative) & {"q", "k"})
    for r in relative:
        assert getattr(layer, "m" + r).shape == (layout.num_slots, 8, 8)
    x = torch.randn(2, 10, 16, requires_grad=True)
    layer(x).sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


def test_self_attention_positions():
    layout = Grid(3, 3, cls_token=True)
    x = torch.randn(2, 10, 16)
    for position in (None, "rope", "bias"):
        layer = SelfAttention(16, layout, heads=2, dim_head=8, position=position)
        assert layer(x).shape == x.shape
    bias = SelfAttention(16, layout, heads=2, dim_head=8, position="bias")
    assert bias.bias_table.shape == (layout.num_slots, 2)
    with pytest.raises(ValueError, match="position"):
        SelfAttention(16, layout, position="alibi")
    with pytest.raises(ValueError, match="needs a layout"):
        SelfAttention(16, None, position="rope")


def test_rope_is_relative():
    """Rotary logits depend only on offsets: shifting all sequence positions changes nothing."""
    from translution.layers import rotary_embedding
    q, k = torch.randn(1, 1, 5, 8, dtype=torch.float64), torch.randn(1, 1, 5, 8, dtype=torch.float64)
    pos = torch.arange(5)[:, None]
    a = rotary_embedding(q, pos) @ rotary_embedding(k, pos).transpose(-1, -2)
    b = rotary_embedding(q, pos + 7) @ rotary_embedding(k, pos + 7).transpose(-1, -2)
    assert torch.allclose(a, b, atol=1e-10)


def test_causal_self_attention_with_bias_is_causal():
    layer = SelfAttention(8, Sequence(6, causal=True), heads=2, dim_head=4, position="bias")
    with torch.no_grad():
        layer.bias_table.normal_()
    x = torch.randn(1, 6, 8)
    x2 = x.clone()
    x2[:, 4:] += 1
    assert torch.allclose(layer(x)[:, :4], layer(x2)[:, :4], atol=1e-6)


@pytest.mark.parametrize("build, error, match", [
    (lambda: Translution(8, Grid(2, 2), relative=""), ValueError, "non-empty subset"),
    (lambda: Translution(8, Grid(2, 2), relative="qx"), ValueError, "subset"),
    (lambda: Translution(8, Grid(2, 2), relative="qq"), ValueError, "repeats"),
    (lambda: Translution(8, Grid(2, 2), init="zeros"), ValueError, "init"),
    (lambda: Translution(0, Grid(2, 2)), ValueError, "dim"),
    (lambda: Translution(8, (2, 2)), TypeError, "Layout"),
    (lambda: AlphaTranslution(8, Grid(2, 2), rank=0), ValueError, "rank"),
    (lambda: AlphaTranslution(8, Grid(2, 2), relative=""), ValueError, "subset"),
    (lambda: Translution(8, Grid(2, 2), backend="fast"), ValueError, "unknown backend 'fast'"),
    (lambda: AlphaTranslution(8, Grid(2, 2), backend="nope"), ValueError, "unknown backend"),
    (lambda: Translution(8, Grid(2, 2), backend=3), TypeError, "backend must be"),
])
def test_layer_construction_errors(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_layer_input_errors():
    layer = Translution(8, Grid(2, 2, cls_token=True), heads=2, dim_head=4)
    with pytest.raises(ValueError, match=r"\(batch, tokens, 8\)"):
        layer(torch.randn(5, 8))
    with pytest.raises(ValueError, match="expected 8 input channels, got 6"):
        layer(torch.randn(1, 5, 6))
    with pytest.raises(ValueError, match="holds 5 tokens, the input has 4"):
        layer(torch.randn(1, 4, 8))
    with pytest.raises(TypeError, match="dtype"):
        layer(torch.randn(1, 5, 8, dtype=torch.float64))


@pytest.mark.parametrize("build", [
    lambda lay: Translution(16, lay, heads=2, dim_head=8),
    lambda lay: AlphaTranslution(16, lay, heads=2, dim_head=8, rank=4),
    lambda lay: SelfAttention(16, lay, heads=2, dim_head=8, position="bias"),
    lambda lay: SelfAttention(16, lay, heads=2, dim_head=8, position="rope")])
@pytest.mark.parametrize("layout", [Grid(2, 3, cls_token=True), Sequence(5, causal=True)],
                         ids=repr)
def test_attention_weights_are_the_layers_attention(build, layout):
    torch.manual_seed(0)
    layer = build(layout).double()
    x = torch.randn(2, layout.num_tokens, 16, dtype=torch.float64)
    attn = layer.attention_weights(x)
    assert attn.shape == (2, 2, layout.num_tokens, layout.num_tokens)
    assert torch.allclose(attn.sum(-1), torch.ones_like(attn.sum(-1)))
    if layout.causal:
        assert attn.triu(1).abs().max() == 0
    # the output is the attention-weighted mix: check through the functional forms
    y, a2 = layer._attend(x, None, True)
    assert torch.allclose(layer.out(y), layer(x), atol=1e-12) and torch.equal(a2, attn)


def _alpha_by_hand(layer, x):
    """α-Translution with every slot of every bank equal to ``m*_shared``, written as plain
    attention: scores = scale/2·(q·k + q̃·k̃), out = (α v + (α ṽ) P) / 2 (SPEC §3)."""
    h, dh = layer.heads, layer.dim_head

    def heads(t):
        return t.unflatten(-1, (h, -1)).transpose(1, 2)                   # (B, h, N, d)

    q, k, v = heads(x @ layer.wq), heads(x @ layer.wk), heads(x @ layer.wv)
    qr, kr = heads(x @ layer.uq @ layer.mq_shared), heads(x @ layer.uk @ layer.mk_shared)
    vr = heads(x @ layer.uv @ layer.mv_shared)
    attn = ((q @ k.transpose(-1, -2) + qr @ kr.transpose(-1, -2)) * dh ** -0.5 / 2).softmax(-1)
    def mix(t):
        return (attn @ t).transpose(1, 2).flatten(-2)

    return layer.out((mix(v) + mix(vr) @ layer.p) / 2)


@pytest.mark.parametrize("layout", [Grid(2, 3, cls_token=True), Sequence(5, causal=True),
                                    Grid(3, 3, circular=True)], ids=repr)
def test_residual_parameterization_starts_as_shared_matrix(layout):
    """Step 0 of ``parameterization="residual"``: ΔW = 0, so Translution equals self-attention
    with the shared W, and α equals its tied form written out by hand."""
    torch.manual_seed(0)
    layer = Translution(16, layout, heads=2, dim_head=8, relative="qv",
                        parameterization="residual").double()
    shapes = {n: tuple(p.shape) for n, p in layer.named_parameters()}
    assert shapes["wq_shared"] == (16, 16) and shapes["wq_delta"] == (layout.num_slots, 16, 16)
    assert shapes["wk"] == (16, 16) and "wq" not in shapes and "wk_delta" not in shapes
    assert layer.wq_delta.abs().max() == 0
    bound = 1 / math.sqrt(16)                                            # like nn.Linear
    assert bound * 0.8 < layer.wv_shared.abs().max() <= bound
    sa = SelfAttention(16, layout, heads=2, dim_head=8).double()
    with torch.no_grad():
        for name in "qkv":
            getattr(sa, "w" + name).copy_(getattr(layer, "w" + name + ("_shared" if name in "qv"
                                                                           else "")))
        sa.out.load_state_dict(layer.out.state_dict())
    x = torch.randn(2, layout.num_tokens, 16, dtype=torch.float64)
    torch.testing.assert_close(layer(x), sa(x), atol=1e-12, rtol=0)

    alpha = AlphaTranslution(16, layout, heads=2, dim_head=8, rank=4,
                             parameterization="residual").double()
    assert {n for n, _ in alpha.named_parameters()} >= {"mq_shared", "mq_delta", "mv_delta"}
    assert alpha.mk_delta.shape == (layout.num_slots, 8, 8) and alpha.mk_delta.abs().max() == 0
    if not layout.causal:
        torch.testing.assert_close(alpha(x), _alpha_by_hand(alpha, x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", ["translution", "alpha"])
def test_residual_gradients_reach_shared_and_delta(kind):
    """The effective bank is W[None] + ΔW: dL/dW is the sum over slots of dL/dΔW, both nonzero,
    and a changed ΔW changes the output (the layer reads it)."""
    layout = Grid(2, 3, cls_token=True)
    torch.manual_seed(1)
    cls = Translution if kind == "translution" else AlphaTranslution
    layer = cls(8, layout, heads=2, dim_head=4, parameterization="residual").double()
    x = torch.randn(3, layout.num_tokens, 8, dtype=torch.float64)
    layer(x).square().sum().backward()
    prefix = "w" if kind == "translution" else "m"
    for name in "qkv":
        shared = getattr(layer, prefix + name + "_shared")
        delta = getattr(layer, prefix + name + "_delta")
        assert delta.grad.abs().amax(dim=(1, 2)).min() > 0, f"{name}: a slot got no gradient"
        torch.testing.assert_close(shared.grad, delta.grad.sum(0), atol=1e-12, rtol=1e-10)
    before = layer(x)
    with torch.no_grad():
        getattr(layer, prefix + "v_delta")[3].normal_()
    assert not torch.allclose(layer(x), before)
    bank = getattr(layer, prefix + "k")
    torch.testing.assert_close(bank, getattr(layer, prefix + "k_shared")[None]
                               + getattr(layer, prefix + "k_delta"))


def test_parameterization_is_validated():
    for cls in (Translution, AlphaTranslution):
        with pytest.raises(ValueError, match=r"one of \('independent', 'residual'\)"):
            cls(8, Grid(2, 2), heads=2, dim_head=4, parameterization="shared")
    default = Translution(8, Grid(2, 2), heads=2, dim_head=4)
    assert default.parameterization == "independent" and default.wq.dim() == 3


# -- α-Translution with RoPE on the standard q/k (position="rope"; the registry's "lor_rope") ---
LOR_LAYOUTS = [Grid(3, 3, cls_token=True), Grid(2, 3), Grid(3, 3, cls_token=True, max_distance=1),
               Sequence(6, causal=True), Sequence(9, causal=True, max_distance=2)]


def _lor_rope(layout, relative="v", backend=None, seed=0):
    """A float64 layer whose relative banks differ per slot (so a wrong slot shows)."""
    torch.manual_seed(seed)
    layer = AlphaTranslution(8, layout, heads=2, dim_head=4, rank=2, relative=relative,
                             position="rope", backend=backend).double()
    with torch.no_grad():
        for name in relative:
            getattr(layer, "m" + name).normal_()
    return layer


def _rotated(t, layout):
    """RoPE of ``t (B, heads, N, dh)`` token by token at explicit coordinates: patch ``t`` of a
    grid sits at ``divmod(t, W)``, sequence token ``t`` at ``t``; the class token is left as is."""
    from translution.layers import rotary_embedding
    skip = int(layout.cls_token)
    rows = [t[..., :skip, :]]
    for index in range(t.shape[-2] - skip):
        coord = divmod(index, layout.shape[1]) if layout.ndim == 2 else (index,)
        rows.append(rotary_embedding(t[..., skip + index:skip + index + 1, :],
                                     torch.tensor([coord])))
    return torch.cat(rows, dim=-2)


@pytest.mark.parametrize("layout", LOR_LAYOUTS, ids=repr)
def test_lor_rope_rotates_tokens_by_position_and_not_the_class_token(layout):
    layer = _lor_rope(layout)
    x = torch.randn(2, layout.num_tokens, 8, dtype=torch.float64)
    q, k = ((x @ w).unflatten(-1, (2, 4)).transpose(1, 2) for w in (layer.wq, layer.wk))
    scores = _rotated(q, layout) @ _rotated(k, layout).transpose(-1, -2) * 4 ** -0.5
    if layout.causal:
        scores = scores.masked_fill(~layout.allowed(), float("-inf"))
    torch.testing.assert_close(layer.attention_weights(x), scores.softmax(-1), rtol=0, atol=1e-12)
    plain = AlphaTranslution(8, layout, heads=2, dim_head=4, rank=2, relative="v").double()
    plain.load_state_dict(layer.state_dict())
    assert not torch.allclose(plain(x), layer(x))               # the rotation matters


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("layout", [Grid(3, 3, cls_token=True), Sequence(6, causal=True)],
                         ids=repr)
def test_lor_rope_with_identity_value_branch_is_rope_attention(layout, backend):
    """SPEC §8.5 for lor_rope: M tied to I, U = W, P = I → RoPE self-attention (the relative
    value branch repeats the standard one), forward and gradients."""
    torch.manual_seed(2)
    rope = SelfAttention(8, layout, heads=2, dim_head=4, position="rope").double()
    lor = AlphaTranslution(8, layout, heads=2, dim_head=4, rank=4, relative="v",
                           position="rope", backend=backend).double()
    eye = torch.eye(8, dtype=torch.float64)
    with torch.no_grad():
        for name in ("wq", "wk", "wv"):
            getattr(lor, name).copy_(getattr(rope, name))
        lor.out.load_state_dict(rope.out.state_dict())
        lor.uv.copy_(rope.wv)
        lor.p.copy_(eye)
        lor.mv.copy_(eye.expand_as(lor.mv))
    x = torch.randn(2, layout.num_tokens, 8, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, layout.num_tokens, 8, dtype=torch.float64)
    y_rope, y_lor = rope(x), lor(x)
    torch.testing.assert_close(y_lor, y_rope, rtol=0, atol=1e-12)
    grads_rope = torch.autograd.grad((y_rope * g).sum(), [x, rope.wq, rope.wk])
    grads_lor = torch.autograd.grad((y_lor * g).sum(), [x, lor.wq, lor.wk])
    torch.testing.assert_close(grads_lor, grads_rope, rtol=0, atol=1e-12)


@pytest.mark.parametrize("relative", ["v", "qkv"])
@pytest.mark.parametrize("layout", LOR_LAYOUTS, ids=repr)
def test_lor_rope_is_exact_on_every_backend(layout, relative):
    """Every backend equals the reference (literal per-pair) backend: output and all gradients."""
    base = _lor_rope(layout, relative)
    x = torch.randn(2, layout.num_tokens, 8, dtype=torch.float64)
    g = torch.randn(2, layout.num_tokens, 8, dtype=torch.float64)
    results = {}
    for name in BACKENDS:
        layer = copy.deepcopy(base)
        layer.backend = name
        xx = x.clone().requires_grad_()
        y = layer(xx)
        results[name] = [y, *torch.autograd.grad((y * g).sum(), [xx, *layer.parameters()])]
    for name, got in results.items():
        torch.testing.assert_close(got, results["reference"], rtol=1e-10, atol=1e-12,
                                   msg=lambda m, name=name: f"backend {name}: {m}")


@pytest.mark.parametrize("max_distance", [None, 2])
@pytest.mark.parametrize("relative", ["v", "qkv"])
def test_lor_rope_decode_equals_forward(relative, max_distance):
    # clipped: offsets >= 2 share slot 2, and the sequence (11) outgrows the layout (5)
    length = 5 if max_distance is None else 11
    layer = _lor_rope(Sequence(5, causal=True, max_distance=max_distance), relative)
    x = torch.randn(2, length, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y, cache = layer.decode(x[:, :2], capacity=3)
    torch.testing.assert_close(y, layer(x[:, :2]), rtol=0, atol=1e-12)
    y, cache = layer.decode(x[:, 2:4], cache)                  # two positions at once
    torch.testing.assert_close(y, layer(x[:, :4])[:, -2:], rtol=0, atol=1e-12)
    for t in range(4, length):
        y, cache = layer.decode(x[:, t:t + 1], cache)
        torch.testing.assert_close(y, layer(x[:, :t + 1])[:, -1:], rtol=0, atol=1e-12)
    assert cache.length == length


def test_lor_rope_options_and_errors():
    from translution import functional
    layer = AlphaTranslution(8, Grid(2, 2, cls_token=True), heads=2, dim_head=4, relative="v",
                             position="rope", rope_base=100.0)
    assert layer.position == "rope" and layer.rope_base == 100.0
    assert "position='rope'" in repr(layer)
    assert AlphaTranslution(8, Grid(2, 2), heads=2, dim_head=4).position is None
    with pytest.raises(ValueError, match="position must be None or 'rope', got 'bias'"):
        AlphaTranslution(8, Grid(2, 2), heads=2, dim_head=4, position="bias")
    with pytest.raises(ValueError, match="needs dim_head >= 4.*got 2"):
        AlphaTranslution(8, Grid(2, 2), heads=2, dim_head=2, position="rope")
    x = torch.randn(1, 4, 8)
    w = torch.randn(8, 8)
    with pytest.raises(TypeError, match="rotary must be None or a callable, got int"):
        functional.alpha_translution(x, w, w, w, Grid(2, 2), heads=2, uv=w, p=w,
                                     mv=torch.randn(9, 8, 8), rotary=3)
