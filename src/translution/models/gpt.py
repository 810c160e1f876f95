"""GPT family (SPEC §5): a causal language model :class:`GPT` configured by :class:`GPTConfig`.

Token embedding, pre-norm causal blocks (every attention layer, the self-attention half of a
hybrid included, is built on ``Sequence(block_size, causal=True, max_distance=...)``), a final
LayerNorm and an untied, bias-free LM head. Only ``attention="ape"`` adds a learned absolute
position embedding; ``"rope"`` rotates queries and keys by their 1-D position; Translution models
encode position by their banks alone (``"lor_rope"``: by its value bank and 1-D RoPE on the
standard queries and keys).

Differences from the reference code (on purpose): a single final LayerNorm (the reference GPT
applies two in a row), and the hybrid's self-attention blocks are causal (the reference hybrid
forgot the mask). Embeddings use PyTorch's default ``N(0, 1)`` init, as the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Union

import torch
from torch import nn

from ..generation import generate as _generate
from ..layers import AttentionCache
from ..layouts import Sequence
from ..utils import check_int
from .blocks import (TransformerConfig, TransformerModel, _positive_int, _resolve_config,
                     register_sizes)
from .registry import register_family

__all__ = ["GPTConfig", "GPT", "DecodeCache"]


@dataclass(frozen=True)
class GPTConfig(TransformerConfig):
    """Configuration of a :class:`GPT` (shared fields: see
    :class:`~translution.models.blocks.TransformerConfig`). Defaults: GPT-tiny with Translution,
    GPT-2 vocabulary, context 256.

    Attributes:
        vocab_size: number of token ids.
        block_size: context length ``L`` the layers are built for (Translution banks hold ``L``
            causal slots). Inputs may be shorter; longer only with ``max_distance`` (and not with
            ``attention="ape"``, whose embedding has ``block_size`` rows).
    """

    vocab_size: int = 50257
    block_size: int = 256

    family = "gpt"

    def __post_init__(self):
        super().__post_init__()
        _positive_int("vocab_size", self.vocab_size)
        _positive_int("block_size", self.block_size)


class GPT(TransformerModel):
    """Causal language model with a configurable attention kind (SPEC §5).

    Args:
        config: a :class:`GPTConfig`, a dict from ``config.to_dict()``, or ``None`` (defaults).
        **overrides: replace config fields.

    Shape:
        ``forward(tokens (B, T) integer) -> logits (B, T, vocab_size)``, ``T <= block_size``
        unless :attr:`max_length` is ``None``.

    Example:
        >>> model = GPT(GPTConfig(vocab_size=100, block_size=16, dim=32, depth=2, heads=2,
        ...                       dim_head=16))
        >>> model(torch.randint(0, 100, (3, 16))).shape
        torch.Size([3, 16, 100])
    """

    def __init__(self, config: Union[GPTConfig, dict, None] = None, **overrides):
        super().__init__()
        self.config = c = _resolve_config(GPTConfig, config, overrides)
        self.layout = Sequence(c.block_size, causal=True, max_distance=c.max_distance)
        self.token_embed = nn.Embedding(c.vocab_size, c.dim)
        self.pos_embed = nn.Embedding(c.block_size, c.dim) if c.attention == "ape" else None
        self.blocks = self._build_blocks([self.layout] * c.depth)
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.vocab_size, bias=False)

    def check_length(self, length: int, what: str = "sequence length") -> None:
        """Raise a ``ValueError`` (naming the limit and the fix) when the model cannot read
        ``length`` tokens; ``what`` names the quantity in the message."""
        limit = self.max_length
        if limit is not None and length > limit:
            why = ("its learned absolute position embedding has block_size rows"
                   if self.config.attention == "ape"
                   else "build it with max_distance=K to run on longer inputs")
            raise ValueError(f"{what} {length} exceeds block_size={limit} of this model ({why})")

    @property
    def max_length(self) -> Optional[int]:
        """Longest input the model accepts: ``block_size``, or ``None`` (any length) when
        ``max_distance`` is set and there is no absolute position embedding."""
        c = self.config
        return None if c.max_distance is not None and c.attention != "ape" else c.block_size

    def _check_tokens(self, tokens) -> None:
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
        if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must be an integer tensor of token ids, got {tokens.dtype}")
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape (batch, time), got {tuple(tokens.shape)}")
        if tokens.shape[1] < 1:
            raise ValueError("tokens must hold at least one position, got length 0")
        self.check_length(tokens.shape[1])
        if tokens.device.type == "cpu" and tokens.numel():   # no device sync elsewhere
            lo, hi = int(tokens.min()), int(tokens.max())
            if lo < 0 or hi >= self.config.vocab_size:
                raise ValueError(f"token ids must be in [0, {self.config.vocab_size}), "
                                 f"got values in [{lo}, {hi}]")

    def forward_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hidden states after the final LayerNorm.

        Args:
            tokens: ``(B, T)`` integer token ids.

        Returns:
            ``(B, T, dim)``.
        """
        self._check_tokens(tokens)
        x = self.token_embed(tokens)
        if self.pos_embed is not None:
            x = x + self.pos_embed(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` token ids → ``(B, T, vocab_size)`` next-token logits."""
        return self.head(self.forward_features(tokens))

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, cache: Optional["DecodeCache"] = None,
               capacity: Optional[int] = None):
        """Cached forward for inference (no gradients): read the next positions and return the
        next cache (each block's attention layer advances its own
        :class:`~translution.layers.AttentionCache`).

        Args:
            tokens: ``(B, m)`` ids of the next ``m`` positions (the prompt when ``cache`` is
                ``None``, then typically one token per call).
            cache: the :class:`DecodeCache` of the previous call, or ``None``.
            capacity: positions a new cache preallocates (default: :attr:`max_length`, or
                ``m`` for a model that reads any length), capped at what the model reads at
                once: :attr:`max_length`, or ``block_size`` for a model that reads any length
                (its cache then grows by doubling as it reads).

        Returns:
            ``(logits (B, m, vocab_size), cache)``, equal to ``self(all tokens)[:, -m:]``; the
            cache is advanced in place.

        Raises:
            ValueError: bad ids, a cache of another model or batch, or more tokens in all than
                the model reads (:attr:`max_length`).
        """
        self._check_tokens(tokens)
        b, m = tokens.shape
        if cache is None:
            limit = self.max_length
            rows = (limit or m) if capacity is None else check_int("capacity", capacity, 1)
            capacity = min(max(rows, m), max(m, limit or self.config.block_size))
            caches: List[Optional[AttentionCache]] = [None] * len(self.blocks)
        else:
            if not isinstance(cache, DecodeCache):
                raise TypeError(f"cache must be a DecodeCache from GPT.decode, "
                                f"got {type(cache).__name__}")
            if len(cache.layers) != len(self.blocks) or cache.batch_size != b:
                raise ValueError(f"the cache holds {len(cache.layers)} layers and "
                                 f"{cache.batch_size} sequences, the model has "
                                 f"{len(self.blocks)} blocks and the tokens {b} sequences; use "
                                 f"the model and batch the cache was built with")
            self.check_length(cache.length + m, "decoding would make the sequence length")
            caches = cache.layers
        start = 0 if cache is None else cache.length
        x = self.token_embed(tokens)
        if self.pos_embed is not None:
            x = x + self.pos_embed(torch.arange(start, start + m, device=tokens.device))
        for i, block in enumerate(self.blocks):
            x, caches[i] = block.decode(x, caches[i], capacity)
        logits = self.head(self.norm(x))
        if cache is None:
            return logits, DecodeCache(caches, m, b)
        cache.length += m
        return logits, cache

    @torch.no_grad()
    def generate(self, tokens: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: Optional[int] = None, generator: Optional[torch.Generator] = None,
                 use_cache: bool = True) -> torch.Tensor:
        """Sample ``max_new_tokens`` continuations (the context is cropped to the last
        ``block_size`` tokens when the model has a length limit). Delegates to
        :func:`translution.generation.generate` with ``sliding_window=True``.

        Args:
            tokens: ``(B, T)`` prompt ids.
            max_new_tokens: tokens to append.
            temperature: softmax temperature; ``0`` picks the most likely token (greedy).
            top_k: sample only among the ``k`` most likely tokens.
            generator: random generator for sampling.
            use_cache: incremental decoding with a cache (same result, faster).

        Returns:
            ``(B, T + max_new_tokens)``.
        """
        return _generate(self, tokens, max_new_tokens, temperature=temperature, top_k=top_k,
                         use_cache=use_cache, generator=generator, sliding_window=True)


class DecodeCache:
    """Decoding state of a :class:`GPT`, built and advanced by :meth:`GPT.decode`.

    Attributes:
        layers: one :class:`~translution.layers.AttentionCache` per block.
        length: tokens read so far (the next token sits at this position).
        batch_size: ``B``.
    """

    def __init__(self, layers: List[AttentionCache], length: int, batch_size: int):
        self.layers, self.length, self.batch_size = layers, length, batch_size

    def capacity(self) -> int:
        """Positions the largest buffer holds without growing."""
        return max(layer.capacity() for layer in self.layers)

    def nbytes(self) -> int:
        """Bytes allocated by the cache's tensors (capacity included)."""
        return sum(layer.nbytes() for layer in self.layers)

    def __repr__(self):
        return (f"DecodeCache(layers={len(self.layers)}, length={self.length}, "
                f"batch_size={self.batch_size}, nbytes={self.nbytes():,})")


register_family("gpt", GPTConfig, GPT)

#: Sizes registered for the GPT family, and their extra defaults.
GPT_SIZES = {
    "micro": dict(vocab_size=256, block_size=32),
    "tiny": {}, "mini": {}, "small": {}, "base": {}, "large": {},
}


register_sizes("gpt", "GPT", GPT, GPTConfig, GPT_SIZES)
