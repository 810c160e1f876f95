"""Vision Transformer family: every registered ViT builds, runs, trains; other image sizes."""

import pytest
import torch

from translution import AlphaTranslution, SelfAttention, Translution
from translution.models import (PatchEmbedding, ViTConfig, VisionTransformer, create_model,
                                list_models, resample_position_embedding)

# Tiny overrides: every entry, `large` included, is built small.
SMALL = dict(dim=32, depth=2, heads=2, dim_head=16, mlp_dim=64, image_size=16, patch_size=4,
             in_channels=3, num_classes=7)
VIT_MODELS = list_models("vit_*")
LAYER_TYPES = {"translution": Translution, "alpha": AlphaTranslution}


def small(name, **overrides):
    torch.manual_seed(0)
    return create_model(name, **{**SMALL, **overrides})


def test_every_vit_is_covered():
    assert len(VIT_MODELS) == 42


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


@pytest.mark.parametrize("kind", ["ape", "rope", "bias", "translution", "alpha", "hybrid"])
def test_layers_match_kind(kind):
    model = small(f"vit_micro_{kind}", depth=3)
    attns = [b.attn for b in model.blocks]
    assert (model.pos_embed is not None) == (kind == "ape")
    if kind in LAYER_TYPES:
        assert all(type(a) is LAYER_TYPES[kind] for a in attns)
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


@pytest.mark.parametrize("kind", ["ape", "rope", "bias", "translution", "alpha", "hybrid"])
def test_smaller_and_rectangular_images(kind):
    model = small(f"vit_micro_{kind}")
    for size in [(8, 12), (4, 4), (16, 8)]:
        assert model(torch.randn(2, 3, *size)).shape == (2, 7)


@pytest.mark.parametrize("kind", ["ape", "rope", "bias", "translution", "alpha", "hybrid"])
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


@pytest.mark.parametrize("kind", ["bias", "translution", "alpha"])
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
