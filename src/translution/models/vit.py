"""Vision Transformer family (SPEC §5): :class:`VisionTransformer` configured by :class:`ViTConfig`.

Patch embedding ``LN(patch pixels) → Linear → LN`` (pixels of a patch flattened in
``(row, column, channel)`` order, as the reference code's ``(p1 p2 c)``), an optional class token,
pre-norm blocks, a final LayerNorm, and a linear head on the class token (``pool="cls"``) or on
the mean of the patch tokens (``pool="mean"``, no class token). Only ``attention="ape"`` adds a
learned absolute position embedding.

Initialisation follows the reference code: class token and position embedding ``N(0, 1)``,
PyTorch defaults elsewhere, Translution banks as configured (``init``).

Other image sizes: a model built for ``image_size`` runs on any image whose sides are multiples
of the patch size when every layer allows it: Translution / α / relative-bias layers need the new
patch grid to fit the one they were built for, unless ``max_distance`` is set; RoPE layers run on
any grid; the absolute position embedding is resampled bicubically (as timm does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..layouts import Grid
from ..utils import check_bool
from .blocks import (RELATIVE_KINDS, TransformerConfig, TransformerModel, _positive_int,
                     _resolve_config, register_sizes)
from .registry import register_family

__all__ = ["ViTConfig", "VisionTransformer", "PatchEmbedding", "resample_position_embedding"]

IntPair = Union[int, Tuple[int, int]]


def _pair(name: str, value) -> Tuple[int, int]:
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a (height, width) pair, got {value!r}")
        for v in value:
            _positive_int(name, v)
        return value
    _positive_int(name, value)
    return (value, value)


@dataclass(frozen=True)
class ViTConfig(TransformerConfig):
    """Configuration of a :class:`VisionTransformer` (the shared fields are documented in
    :class:`~translution.models.blocks.TransformerConfig`). Defaults: ViT-tiny with
    Translution at 224×224, patch 56 (the reference ImageNet setting).

    Attributes:
        image_size: ``H`` or ``(H, W)`` the model is built for.
        patch_size: ``P`` or ``(Ph, Pw)``; must divide the image size.
        in_channels: image channels.
        num_classes: classifier outputs.
        pool: ``"cls"`` (class token, head on it) or ``"mean"`` (no class token, head on the
            mean of the patch tokens).
        symmetric: relative layers (Translution, α, bias) use one slot for δ and −δ.
        circular: relative layers wrap offsets around the patch grid (a torus, SPEC §2): with
            Translution, α or bias attention the logits are then invariant to circular shifts
            of the image by whole patches. Runs only on its own grid; excludes ``max_distance``
            and ``symmetric``. RoPE layers (also those of a hybrid) ignore both options; in
            ``"lor_rope"`` layers they apply to the value bank, not to the rotary q/k.
    """

    image_size: IntPair = 224
    patch_size: IntPair = 56
    in_channels: int = 3
    num_classes: int = 1000
    pool: str = "cls"
    symmetric: bool = False
    circular: bool = False

    family = "vit"

    def __post_init__(self):
        super().__post_init__()
        for name in ("image_size", "patch_size"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        image, patch = _pair("image_size", self.image_size), _pair("patch_size", self.patch_size)
        if image[0] % patch[0] or image[1] % patch[1]:
            raise ValueError(f"image_size {self.image_size} is not divisible by "
                             f"patch_size {self.patch_size}")
        _positive_int("in_channels", self.in_channels)
        _positive_int("num_classes", self.num_classes)
        if self.pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {self.pool!r}")
        check_bool("symmetric", self.symmetric)
        check_bool("circular", self.circular)
        if self.circular and (self.max_distance is not None or self.symmetric):
            raise ValueError("circular=True cannot be combined with max_distance or symmetric "
                             f"(got max_distance={self.max_distance!r}, "
                             f"symmetric={self.symmetric!r})")

    @property
    def image_hw(self) -> Tuple[int, int]:
        """``(H, W)`` of the configured image."""
        return _pair("image_size", self.image_size)

    @property
    def patch_hw(self) -> Tuple[int, int]:
        """``(Ph, Pw)``."""
        return _pair("patch_size", self.patch_size)

    @property
    def grid(self) -> Tuple[int, int]:
        """Patch grid ``(H/Ph, W/Pw)`` of the configured image."""
        (h, w), (ph, pw) = self.image_hw, self.patch_hw
        return h // ph, w // pw

    @property
    def cls_token(self) -> bool:
        """Whether the model prepends a class token (``pool == "cls"``)."""
        return self.pool == "cls"


class PatchEmbedding(nn.Module):
    """Patchify, then ``LN(patch_dim) → Linear(patch_dim, dim) → LN(dim)`` (SPEC §5).

    Shape:
        ``(B, C, H, W) -> (B, (H/Ph)·(W/Pw), dim)``, tokens row-major.
    """

    def __init__(self, patch_size: Tuple[int, int], in_channels: int, dim: int):
        super().__init__()
        self.patch_size = tuple(patch_size)
        patch_dim = in_channels * self.patch_size[0] * self.patch_size[1]
        self.norm_in = nn.LayerNorm(patch_dim)
        self.proj = nn.Linear(patch_dim, dim)
        self.norm_out = nn.LayerNorm(dim)

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, h·w, Ph·Pw·C)`` (``(p1 p2 c)`` order)."""
        b, c, hh, ww = images.shape
        ph, pw = self.patch_size
        x = images.reshape(b, c, hh // ph, ph, ww // pw, pw).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, (hh // ph) * (ww // pw), ph * pw * c)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm_out(self.proj(self.norm_in(self.patchify(images))))


def resample_position_embedding(pos: torch.Tensor, old_grid: Tuple[int, int],
                                new_grid: Tuple[int, int], num_prefix: int = 0) -> torch.Tensor:
    """Resize an absolute position embedding to another patch grid, bicubically (as timm's
    ``resample_abs_pos_embed``: ``align_corners=False``, antialiased when shrinking).

    Args:
        pos: ``(1, num_prefix + Ho·Wo, dim)``.
        old_grid: ``(Ho, Wo)``. new_grid: ``(Hn, Wn)``.
        num_prefix: leading tokens without a grid position (the class token), kept as they are.

    Returns:
        ``(1, num_prefix + Hn·Wn, dim)``.
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos
    prefix, grid = pos[:, :num_prefix], pos[:, num_prefix:]
    dim = grid.shape[-1]
    grid = grid.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=tuple(new_grid), mode="bicubic", align_corners=False,
                         antialias=True).to(pos.dtype)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)
    return torch.cat([prefix, grid], dim=1)


class VisionTransformer(TransformerModel):
    """Vision Transformer with a configurable attention kind (SPEC §5).

    Args:
        config: a :class:`ViTConfig`, a dict from ``config.to_dict()``, or ``None`` (defaults).
        **overrides: replace config fields.

    Shape:
        ``forward(images (B, C, H, W)) -> logits (B, num_classes)``; ``H, W`` multiples of the
        patch size (see the module docstring for sizes other than ``config.image_size``).

    Example:
        >>> model = VisionTransformer(ViTConfig(image_size=28, patch_size=7, in_channels=1,
        ...                                     num_classes=10, dim=64, depth=2, heads=2))
        >>> model(torch.randn(5, 1, 28, 28)).shape
        torch.Size([5, 10])
    """

    def __init__(self, config: Union[ViTConfig, dict, None] = None, **overrides):
        super().__init__()
        self.config = c = _resolve_config(ViTConfig, config, overrides)
        gh, gw = c.grid
        self.patch_embed = PatchEmbedding(c.patch_hw, c.in_channels, c.dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, c.dim)) if c.cls_token else None
        n_tokens = gh * gw + int(c.cls_token)
        self.pos_embed = (nn.Parameter(torch.randn(1, n_tokens, c.dim))
                          if c.attention == "ape" else None)
        layouts = [self._layout_for(kind) for kind in c.layer_kinds]
        self.blocks = self._build_blocks(layouts)
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.num_classes)

    def _layout_for(self, kind: str) -> Optional[Grid]:
        c = self.config
        if kind == "ape":
            return None                     # no position inside the layers, no size limit
        max_distance = c.max_distance
        if kind == "rope" and max_distance is None:
            # RoPE reads only the positions; a clipped layout (equal to the unclipped one on the
            # configured grid) lets it run on any grid size.
            max_distance = max(c.grid) - 1
            return Grid(*c.grid, cls_token=c.cls_token, max_distance=max_distance)
        return Grid(*c.grid, cls_token=c.cls_token, max_distance=max_distance,
                    symmetric=c.symmetric, circular=c.circular)

    # -- checks ---------------------------------------------------------------------------
    def _grid_of(self, images: torch.Tensor) -> Tuple[int, int]:
        c = self.config
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4:
            raise ValueError(f"images must have shape (batch, {c.in_channels}, H, W), "
                             f"got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be a floating-point tensor, got {images.dtype}")
        if images.shape[1] != c.in_channels:
            raise ValueError(f"expected {c.in_channels} image channels, got {images.shape[1]} "
                             f"(images of shape {tuple(images.shape)})")
        (hh, ww), (ph, pw) = images.shape[-2:], c.patch_hw
        if hh % ph or ww % pw:
            raise ValueError(f"image size {hh}x{ww} is not divisible by the patch size {ph}x{pw}")
        grid = (hh // ph, ww // pw)
        if grid != c.grid and c.max_distance is None:
            bound = [k for k in set(c.layer_kinds) if k in RELATIVE_KINDS]
            if bound and c.circular:
                raise ValueError(
                    f"image size {hh}x{ww} gives a {grid[0]}x{grid[1]} patch grid, but this "
                    f"model's circular {'/'.join(sorted(bound))} layers wrap offsets around the "
                    f"{c.grid[0]}x{c.grid[1]} grid it was built for; use images of size "
                    f"{c.image_size}")
            if bound and (grid[0] > c.grid[0] or grid[1] > c.grid[1]):
                raise ValueError(
                    f"image size {hh}x{ww} gives a {grid[0]}x{grid[1]} patch grid, larger than "
                    f"the {c.grid[0]}x{c.grid[1]} grid this model was built for "
                    f"(image_size={c.image_size}, patch_size={c.patch_size}); its "
                    f"{'/'.join(sorted(bound))} layers hold one weight per relative offset of "
                    "that grid. Use images of at most that size, or build the model with "
                    "max_distance=K to run on any size")
        return grid

    # -- forward --------------------------------------------------------------------------
    def position_embedding(self, grid: Tuple[int, int]) -> torch.Tensor:
        """The absolute position embedding for a patch grid ``(h, w)``, ``(1, N, dim)``
        (resampled bicubically when ``grid`` differs from the configured one)."""
        if self.pos_embed is None:
            raise ValueError(f"attention={self.config.attention!r} models have no absolute "
                             "position embedding")
        return resample_position_embedding(self.pos_embed, self.config.grid, grid,
                                           int(self.config.cls_token))

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Token features after the final LayerNorm.

        Args:
            images: ``(B, C, H, W)`` floating point.

        Returns:
            ``(B, N, dim)``, ``N = h·w`` patches (+1 class token first when ``pool="cls"``).
        """
        grid = self._grid_of(images)
        x = self.patch_embed(images)                                   # (B, h·w, dim)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        if self.pos_embed is not None:
            x = x + self.position_embedding(grid).to(x.dtype)
        shape = None if grid == self.config.grid else grid
        for block in self.blocks:
            x = block(x, shape=shape)
        return self.norm(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, num_classes)`` logits."""
        x = self.forward_features(images)
        pooled = x[:, 0] if self.config.cls_token else x.mean(dim=1)
        return self.head(pooled)


register_family("vit", ViTConfig, VisionTransformer)

#: Sizes registered for the ViT family, and their extra defaults.
VIT_SIZES = {
    "micro": dict(image_size=16, patch_size=4, in_channels=3, num_classes=10),
    "mnist": dict(image_size=28, patch_size=7, in_channels=1, num_classes=10),
    "tiny": {}, "mini": {}, "small": {}, "base": {}, "large": {},
}


register_sizes("vit", "ViT", VisionTransformer, ViTConfig, VIT_SIZES)
