"""Vision Transformer family: every registered ViT builds, runs, trains; other image sizes."""

import pytest
import torch

from translution import AlphaTranslution, SelfAttention, Translution
from translution.layouts import Grid
from translution.models import (PatchEmbedding, ViTConfig, VisionTransformer, create_model,
                                list_models, model_from_config, resample_position_embedding)

# Tiny overrides: every entry, `large` included, is built small.
SMALL = dict(dim=32, depth=2, heads=2, dim_head=16, mlp_dim=64, image_size=16, patch_size=4,
             in_channels=3, num_classes=7)
VIT_MODELS = list_models("vit_*")
KINDS = ["ape", "rope", "bias", "translution", "alpha", "lor_rope", "hybrid"]
LAYER_TYPES = {"translution": Translution, "alpha": AlphaTranslution}


def small(name, **overrides):
    torch.manual_seed(0)
    return create_model(name, **{**SMALL, **overrides})


def test_every_vit_is_covered():
    assert len(VIT_MODELS) == 49


@pytest.mark.parametrize("name", VIT_MODELS)
def test_forward_and_backward(name):
    model = small(name)
    images = torch.randn(2, 3, 16, 16)
    logits = model(images)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    logits.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"


@pytest.mark.parametrize("kind", KINDS)
def test_layers_match_kind(kind):
    model = small(f"vit_micro_{kind}", depth=3)
    attns = [b.attn for b in model.blocks]
    assert (model.pos_embed is not None) == (kind == "ape")
    if kind in LAYER_TYPES:
        assert all(type(a) is LAYER_TYPES[kind] for a in attns)
    elif kind == "lor_rope":
        assert all(type(a) is AlphaTranslution and a.relative == "v" and a.position == "rope"
                   for a in attns)
    elif kind == "hybrid":
        assert type(attns[0]) is Translution
        assert all(type(a) is SelfAttention and a.position == "rope" for a in attns[1:])
    else:
        assert all(type(a) is SelfAttention for a in attns)
        assert {a.position for a in attns} == {None if kind == "ape" else kind}
    for a in attns:
        if a.layout is not None:
            assert a.layout.shape == (4, 4) and a.layout.cls_token


def test_translution_options_reach_layers():
    model = small("vit_micro_translution", relative="kv", init="tied")
    attn = model.blocks[0].attn
    assert attn.relative == "kv" and attn.wq.dim() == 2 and attn.wk.dim() == 3
    assert torch.equal(attn.wv[0], attn.wv[-1])                 # tied: every slot equal
    alpha = small("vit_micro_hybrid", hybrid_kind="alpha", rank=4).blocks[0].attn
    assert type(alpha) is AlphaTranslution and alpha.rank == 4


@pytest.mark.parametrize("kind", KINDS)
def test_smaller_and_rectangular_images(kind):
    model = small(f"vit_micro_{kind}")
    for size in [(8, 12), (4, 4), (16, 8)]:
        assert model(torch.randn(2, 3, *size)).shape == (2, 7)


@pytest.mark.parametrize("kind", KINDS)
def test_larger_images(kind):
    model = small(f"vit_micro_{kind}")
    images = torch.randn(2, 3, 24, 20)
    if kind in ("ape", "rope"):
        assert model(images).shape == (2, 7)
    else:
        with pytest.raises(ValueError, match="6x5 patch grid.*4x4.*max_distance"):
            model(images)
    clipped = small(f"vit_micro_{kind}", max_distance=2)
    assert clipped(images).shape == (2, 7)


@pytest.mark.parametrize("kind", ["bias", "translution", "alpha", "lor_rope"])
def test_max_distance_at_full_extent_equals_unclipped(kind):
    torch.manual_seed(1)
    model = small(f"vit_micro_{kind}").double()
    clipped = small(f"vit_micro_{kind}", max_distance=3).double()
    clipped.load_state_dict(model.state_dict())
    images = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(clipped(images), model(images))


def test_position_embedding_resampling():
    model = small("vit_micro_ape")
    assert model.pos_embed.shape == (1, 17, 32)
    assert model.position_embedding((4, 4)) is model.pos_embed
    resized = model.position_embedding((6, 3))
    assert resized.shape == (1, 1 + 18, 32)
    torch.testing.assert_close(resized[:, :1], model.pos_embed[:, :1])      # cls row kept
    const = torch.ones(1, 1 + 16, 5) * torch.arange(5.0)
    out = resample_position_embedding(const, (4, 4), (7, 2), num_prefix=1)
    torch.testing.assert_close(out, torch.ones(1, 15, 5) * torch.arange(5.0))
    with pytest.raises(ValueError, match="no absolute position embedding"):
        small("vit_micro_rope").position_embedding((4, 4))


def test_mean_pool_has_no_class_token():
    for kind in ["ape", "translution", "rope"]:
        model = small(f"vit_micro_{kind}", pool="mean")
        assert model.cls_token is None
        assert model.forward_features(torch.randn(2, 3, 16, 16)).shape == (2, 16, 32)
        for block in model.blocks:
            assert block.attn.layout is None or not block.attn.layout.cls_token
        if kind == "ape":
            assert model.pos_embed.shape == (1, 16, 32)
        assert model(torch.randn(1, 3, 8, 8)).shape == (1, 7)
    cls_model = small("vit_micro_translution")
    assert cls_model.forward_features(torch.randn(2, 3, 16, 16)).shape == (2, 17, 32)


def test_head_reads_the_class_token():
    model = small("vit_micro_translution")
    images = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(model(images), model.head(model.forward_features(images)[:, 0]))


def test_patch_embedding_order_and_shape():
    embed = PatchEmbedding((2, 3), in_channels=2, dim=8)
    images = torch.arange(2 * 2 * 4 * 6, dtype=torch.float32).reshape(2, 2, 4, 6)
    patches = embed.patchify(images)
    assert patches.shape == (2, 4, 12)
    # patch (row 1, column 0), pixel (p1=1, p2=2), channel 1, in (p1 p2 c) order
    assert patches[0, 2, (1 * 3 + 2) * 2 + 1] == images[0, 1, 2 + 1, 0 + 2]
    assert embed(images).shape == (2, 4, 8)


def test_rectangular_config_and_channels():
    model = small("vit_micro_translution", image_size=(8, 16), patch_size=(4, 8), in_channels=1)
    assert model.config.grid == (2, 2)
    assert model(torch.randn(3, 1, 8, 16)).shape == (3, 7)


def test_input_errors():
    model = small("vit_micro_ape")
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        model(torch.randn(1, 3, 16, 18))
    with pytest.raises(ValueError, match="expected 3 image channels, got 1"):
        model(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match="shape"):
        model(torch.randn(3, 16, 16))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(TypeError):
        model([[1.0]])
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        ViTConfig(image_size=30, patch_size=7)


def test_constructor_with_config_and_overrides():
    model = VisionTransformer(ViTConfig(image_size=8, patch_size=4, dim=16, depth=1, heads=1,
                                        dim_head=8), attention="bias")
    assert model.config.attention == "bias" and model.config.depth == 1
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 1000)


@pytest.mark.parametrize("kind", ["translution", "alpha"])
def test_circular_residual_options_reach_layers_and_checkpoints(kind):
    torch.manual_seed(0)
    model = create_model(f"vit_mnist_{kind}", image_size=42, circular=True,
                         parameterization="residual", depth=2, dim=16, heads=2, dim_head=8,
                         mlp_dim=32)
    prefix = "w" if kind == "translution" else "m"
    for block in model.blocks:
        attn = block.attn
        assert attn.layout == Grid(6, 6, cls_token=True, circular=True)
        assert attn.parameterization == "residual"
        assert getattr(attn, prefix + "q_delta").shape[0] == 6 * 6 + 3
    saved = model.config.to_dict()
    assert saved["circular"] is True and saved["parameterization"] == "residual"
    rebuilt = model_from_config(saved)
    rebuilt.load_state_dict(model.state_dict())
    images = torch.randn(2, 1, 42, 42)
    torch.testing.assert_close(rebuilt(images), model(images))


@pytest.mark.parametrize("kind", ["translution", "alpha", "bias"])
@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_circular_vit_is_invariant_to_whole_patch_rolls(kind, pool):
    """Patch embedding, circular attention, MLP and pooling: rolling the image by whole patches
    leaves the logits unchanged (float64); the default layout does not have this property."""
    images = torch.randn(2, 3, 16, 12, dtype=torch.float64)
    for circular in (True, False):
        model = small(f"vit_micro_{kind}", image_size=(16, 12), pool=pool,
                      circular=circular).double()
        if kind == "bias":
            for block in model.blocks:
                torch.nn.init.normal_(block.attn.bias_table)
        logits = model(images)
        rolled = model(torch.roll(images, (4, -8), dims=(2, 3)))
        if circular:
            torch.testing.assert_close(rolled, logits, atol=1e-10, rtol=0)
        else:
            assert not torch.allclose(rolled, logits, atol=1e-6)


def test_symmetric_reaches_relative_layers_only():
    model = small("vit_micro_hybrid", symmetric=True, depth=2, hybrid_blocks=1)
    assert model.blocks[0].attn.layout.symmetric
    assert not model.blocks[1].attn.layout.symmetric            # RoPE ignores it
    assert model.blocks[0].attn.wq.shape[0] == Grid(4, 4, cls_token=True,
                                                    symmetric=True).num_slots
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 7)
    assert not small("vit_micro_translution").config.symmetric


@pytest.mark.parametrize("overrides, error, match", [
    (dict(circular=True, max_distance=2), ValueError, "circular=True cannot"),
    (dict(circular=True, symmetric=True), ValueError, "circular=True cannot"),
    (dict(circular="yes"), TypeError, "circular must be True or False"),
    (dict(symmetric=1), TypeError, "symmetric must be True or False"),
    (dict(parameterization="shared"), ValueError, "parameterization must be one of"),
])
def test_layout_option_errors(overrides, error, match):
    with pytest.raises(error, match=match):
        small("vit_micro_translution", **overrides)


def test_circular_model_refuses_other_grids():
    model = small("vit_micro_translution", circular=True)
    with pytest.raises(ValueError, match="wrap offsets around the 4x4 grid"):
        model(torch.randn(1, 3, 12, 16))
