"""Model families and the model registry (SPEC §5).

Public API::

    from translution.models import create_model, list_models, register_model
    model = create_model("vit_tiny_translution")              # 224×224, patch 56, 1000 classes
    model = create_model("gpt_small_rope", block_size=160)    # overrides replace config fields
    list_models("gpt_*_alpha")

Registered names are ``vit_{size}_{kind}`` (sizes micro, mnist, tiny, mini, small, base, large)
and ``gpt_{size}_{kind}`` (sizes micro, tiny, mini, small, base, large), kinds ``ape``, ``rope``,
``bias``, ``translution``, ``alpha``, ``lor_rope``, ``hybrid``. Every model has ``.config`` (its
dataclass; ``config.to_dict()`` for checkpoints, :func:`model_from_config` to rebuild) and
``num_parameters()``.
"""

from . import blocks, registry
from .blocks import (ATTENTION_KINDS, SIZES, Block, MLP, TransformerConfig, TransformerModel,
                     block_kinds, make_attention)
from .gpt import GPT, GPTConfig
from .registry import (create_model, get_model_config, is_model, list_models, model_from_config,
                       register_config, register_model)
from .vit import PatchEmbedding, ViTConfig, VisionTransformer, resample_position_embedding

__all__ = [
    "create_model", "list_models", "register_model", "register_config", "get_model_config",
    "is_model", "model_from_config",
    "VisionTransformer", "ViTConfig", "GPT", "GPTConfig", "TransformerConfig", "TransformerModel",
    "Block", "MLP", "PatchEmbedding", "make_attention", "block_kinds",
    "resample_position_embedding", "ATTENTION_KINDS", "SIZES",
]
