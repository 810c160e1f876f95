"""Model registry: names, create_model overrides and errors, configs and checkpoints."""

import dataclasses

import pytest
import torch

from translution.models import (GPT, SIZES, GPTConfig, ViTConfig, VisionTransformer,
                                create_model, get_model_config, is_model, list_models,
                                model_from_config, register_model)
from translution.models import registry

KINDS = ("ape", "rope", "bias", "translution", "alpha", "lor_rope", "hybrid")
VIT_SIZES = ("micro", "mnist", "tiny", "mini", "small", "base", "large")
GPT_SIZES = ("micro", "tiny", "mini", "small", "base", "large")
SMALL = dict(dim=32, depth=2, heads=2, dim_head=16, mlp_dim=64)


def test_every_family_size_and_kind_is_registered():
    expected = {f"vit_{s}_{k}" for s in VIT_SIZES for k in KINDS}
    expected |= {f"gpt_{s}_{k}" for s in GPT_SIZES for k in KINDS}
    assert set(list_models()) == expected
    assert list_models() == sorted(list_models())
    assert all(is_model(n) for n in expected)
    assert not is_model("vit_huge_ape")


def test_list_models_pattern():
    assert list_models("gpt_*_alpha") == [f"gpt_{s}_alpha" for s in sorted(GPT_SIZES)]
    assert list_models("vit_tiny_*") == sorted(f"vit_tiny_{k}" for k in KINDS)
    assert list_models("nothing*") == []
    with pytest.raises(TypeError):
        list_models(3)


@pytest.mark.parametrize("size", ["tiny", "mini", "small", "base", "large"])
def test_paper_sizes(size):
    dims = {"tiny": (192, 6, 3), "mini": (192, 12, 3), "small": (384, 12, 6),
            "base": (768, 12, 12), "large": (1024, 24, 16)}[size]
    for family in ("vit", "gpt"):
        config = get_model_config(f"{family}_{size}_translution")
        assert (config.dim, config.depth, config.heads) == dims
        assert config.dim_head == 64 and config.hidden_dim == 4 * config.dim


def test_mnist_size_matches_spec():
    config = get_model_config("vit_mnist_ape")
    assert (config.dim, config.depth, config.heads, config.dim_head, config.hidden_dim) == \
        (64, 6, 8, 64, 128)
    assert (config.image_size, config.patch_size, config.in_channels, config.num_classes) == \
        (28, 7, 1, 10)
    assert config.grid == (4, 4)


def test_default_vit_is_reference_imagenet_setting():
    config = get_model_config("vit_tiny_translution")
    assert (config.image_size, config.patch_size, config.grid, config.pool) == \
        (224, 56, (4, 4), "cls")


def test_create_model_applies_overrides():
    model = create_model("vit_micro_alpha", rank=4, num_classes=3, image_size=8)
    assert isinstance(model, VisionTransformer)
    assert isinstance(model.config, ViTConfig)
    assert (model.config.rank, model.config.num_classes, model.config.image_size) == (4, 3, 8)
    assert model.blocks[0].attn.rank == 4
    gpt = create_model("gpt_micro_rope", vocab_size=10, block_size=4)
    assert isinstance(gpt, GPT) and isinstance(gpt.config, GPTConfig)
    assert gpt(torch.randint(0, 10, (1, 4))).shape == (1, 4, 10)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match="unknown model 'vit_tiny_translutoin'.*vit_tiny_translution"):
        create_model("vit_tiny_translutoin")
    with pytest.raises(ValueError, match="unknown model"):
        get_model_config("nope")
    with pytest.raises(TypeError):
        create_model(3)


def test_unknown_override_lists_valid_fields():
    with pytest.raises(ValueError, match=r"unknown override\(s\) \['depht'\].*valid fields.*depth"):
        create_model("vit_micro_ape", depht=3)
    with pytest.raises(ValueError, match="block_size"):
        create_model("gpt_micro_ape", image_size=32)       # a ViT field on a GPT


@pytest.mark.parametrize("override, error", [
    (dict(attention="conv"), ValueError), (dict(relative="qq"), ValueError),
    (dict(relative="xyz"), ValueError), (dict(init="zeros"), ValueError),
    (dict(pool="max"), ValueError), (dict(dim=0), ValueError), (dict(dim="8"), TypeError),
    (dict(dim=True), TypeError), (dict(image_size=18), ValueError),
    (dict(hybrid_blocks=1), ValueError), (dict(hybrid_kind="bias"), ValueError),
    (dict(max_distance=-1), ValueError), (dict(mlp_ratio=0), ValueError),
    (dict(image_size=(16, 16, 3)), ValueError),
])
def test_invalid_values(override, error):
    with pytest.raises(error):
        create_model("vit_micro_translution", **override)


def test_hybrid_blocks_bounds():
    with pytest.raises(ValueError, match="hybrid_blocks must be <= depth=2"):
        create_model("gpt_micro_hybrid", hybrid_blocks=3)
    assert get_model_config("gpt_micro_hybrid", hybrid_blocks=0).layer_kinds == ["rope", "rope"]
    assert get_model_config("vit_base_hybrid").layer_kinds == ["translution"] * 6 + ["rope"] * 6
    assert get_model_config("vit_tiny_hybrid", hybrid_kind="alpha",
                            hybrid_blocks=2).layer_kinds == ["alpha"] * 2 + ["rope"] * 4


def test_register_model_decorator_and_duplicates():
    @register_model
    def _test_only_model(**overrides):
        return VisionTransformer(ViTConfig(image_size=8, patch_size=4, **SMALL), **overrides)

    try:
        assert "_test_only_model" in list_models("_test*")
        model = create_model("_test_only_model", num_classes=2)
        assert model.config.num_classes == 2
        with pytest.raises(ValueError, match="already registered"):
            register_model(_test_only_model)
        with pytest.raises(ValueError, match="without a config"):
            get_model_config("_test_only_model")
        with pytest.raises(TypeError):
            register_model(name="_not_callable")(5)
    finally:
        registry._MODELS.pop("_test_only_model", None)
    assert not is_model("_test_only_model")


def test_get_model_config_is_cheap_and_overridable():
    config = get_model_config("gpt_large_translution", block_size=160)
    assert config.block_size == 160 and config.depth == 24
    assert config == dataclasses.replace(get_model_config("gpt_large_translution"),
                                         block_size=160)


@pytest.mark.parametrize("name, overrides", [
    ("vit_micro_hybrid", dict(hybrid_kind="alpha", pool="mean", image_size=(8, 12))),
    ("gpt_micro_alpha", dict(vocab_size=20, block_size=6, relative="kv")),
])
def test_checkpoint_roundtrip_through_config_dict(name, overrides):
    model = create_model(name, **SMALL, **overrides)
    data = model.config.to_dict()
    assert data["family"] == name.split("_")[0]
    restored = model_from_config(data)
    assert restored.config == model.config
    restored.load_state_dict(model.state_dict())          # strict: same parameter names/shapes
    assert model_from_config(model.config).config == model.config
    if isinstance(model, GPT):
        x = torch.randint(0, 20, (2, 6))
    else:
        x = torch.randn(2, 3, 8, 12)
    torch.testing.assert_close(restored(x), model(x))


def test_config_dict_errors():
    data = get_model_config("vit_micro_ape").to_dict()
    with pytest.raises(ValueError, match="family"):
        GPTConfig.from_dict(data)
    with pytest.raises(ValueError, match="unknown field"):
        ViTConfig.from_dict({**data, "colour": 1})
    with pytest.raises(ValueError, match="family"):
        model_from_config({"dim": 8})
    with pytest.raises(TypeError):
        model_from_config(42)
    with pytest.raises(TypeError):
        VisionTransformer(config=42)


def test_num_parameters():
    model = create_model("vit_micro_translution")
    total = sum(p.numel() for p in model.parameters())
    assert model.num_parameters() == total
    model.head.requires_grad_(False)
    assert model.num_parameters(trainable_only=True) == total - sum(
        p.numel() for p in model.head.parameters())


def test_sizes_table():
    assert SIZES["micro"] == dict(dim=32, depth=2, heads=2, dim_head=16)
    assert SIZES["mnist"]["mlp_dim"] == 128


@pytest.mark.parametrize("family", ["vit", "gpt"])
def test_lor_rope_kind_is_value_relative_alpha_with_rope(family):
    """The authors' lor_rope: α-Translution, only v relative, RoPE on q/k; the config's
    ``relative`` does not apply; rank, parameterization and rope_base do."""
    model = create_model(f"{family}_micro_lor_rope", relative="qk", rank=4,
                         parameterization="residual", rope_base=100.0)
    for block in model.blocks:
        attn = block.attn
        assert (attn.relative, attn.position, attn.rank, attn.rope_base) == ("v", "rope", 4, 100.0)
        assert attn.parameterization == "residual" and hasattr(attn, "mv_delta")
    assert model.pos_embed is None
    alpha = create_model(f"{family}_micro_alpha", relative="v", rank=4,
                         parameterization="residual")
    assert model.num_parameters() == alpha.num_parameters()       # RoPE adds no parameter
    hybrid = create_model(f"{family}_micro_hybrid", hybrid_kind="lor_rope", hybrid_blocks=1)
    assert hybrid.config.layer_kinds == ["lor_rope", "rope"]
    assert hybrid.blocks[0].attn.position == "rope" and hybrid.blocks[0].attn.relative == "v"


@pytest.mark.parametrize("kind", ["translution", "alpha", "lor_rope", "hybrid"])
def test_save_projections_reaches_the_relative_layers(kind):
    """``save_projections`` is a model option: every Translution / α layer gets it, the saved
    config keeps it, and the gradients equal the recomputing model's."""
    torch.manual_seed(0)
    models = [create_model(f"vit_micro_{kind}", image_size=8, patch_size=4,
                           save_projections=save) for save in (False, True)]
    models[1].load_state_dict(models[0].state_dict())
    relative = [b.attn for b in models[1].blocks if hasattr(b.attn, "save_projections")]
    assert relative and all(attn.save_projections for attn in relative)
    assert model_from_config(models[1].config.to_dict()).config.save_projections is True
    images = torch.randn(2, 3, 8, 8)
    grads = []
    for model in models:
        model(images).square().sum().backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    with pytest.raises(TypeError, match="save_projections must be a bool"):
        create_model("vit_micro_translution", save_projections="yes")


def test_unknown_backend_is_refused_by_the_model_config():
    with pytest.raises(ValueError, match="unknown backend 'fastest'"):
        create_model("vit_micro_translution", backend="fastest")
    assert create_model("vit_micro_translution", backend="grouped").config.backend == "grouped"
