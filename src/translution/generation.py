"""Autoregressive sampling from a causal language model (:class:`~translution.models.GPT`),
whose ``logits, cache = model.decode(tokens, cache)`` reads the next positions."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from .utils import check_int

__all__ = ["generate", "sample_next", "top_k_filter"]


def _check_sampling(temperature, top_k) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or math.isnan(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None:
        check_int("top_k", top_k, 1)


def top_k_filter(logits: torch.Tensor, k: Optional[int]) -> torch.Tensor:
    """A copy of ``logits`` ``(B, V)`` with every logit below the ``k``-th largest of its row
    set to ``-inf`` (ties kept; ``k=None``: no filter)."""
    _check_sampling(0, k)
    if k is None or k >= logits.shape[-1]:
        return logits.clone()
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The next token ``(B, 1)`` of each row of ``logits`` ``(B, V)``: the argmax for
    ``temperature=0``, else a ``generator`` sample of ``softmax(logits / temperature)`` (top k)."""
    _check_sampling(temperature, top_k)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    probs = torch.softmax(top_k_filter(logits, top_k) / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


@torch.no_grad()
def generate(model: nn.Module, prompt: torch.Tensor, max_new_tokens: int,
             temperature: float = 1.0, top_k: Optional[int] = None, use_cache: bool = True,
             generator: Optional[torch.Generator] = None,
             sliding_window: bool = False) -> torch.Tensor:
    """``prompt`` ``(B, T0)`` and ``max_new_tokens`` tokens of :func:`sample_next`, in its dtype;
    ``use_cache=False`` recomputes the context per token (same result). Past the model's length
    limit, ``sliding_window`` predicts from the last ``block_size`` tokens instead of raising."""
    if not (isinstance(model, nn.Module) and callable(getattr(model, "decode", None))
            and hasattr(model, "max_length")):
        raise TypeError(f"expected a language model with cached decoding (decode() and "
                        f"max_length) such as translution.models.GPT, got {type(model).__name__}")
    _check_sampling(temperature, top_k)
    check_int("max_new_tokens", max_new_tokens, 0)
    if not isinstance(prompt, torch.Tensor):
        raise TypeError(f"prompt must be a torch.Tensor, got {type(prompt).__name__}")
    if prompt.dim() != 2 or prompt.shape[0] < 1 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be a non-empty (batch, time) tensor of token ids, "
                         f"got shape {tuple(prompt.shape)}")
    t0, limit = prompt.shape[1], model.max_length
    reads = t0 + max_new_tokens - 1             # the last generated token is never read
    if limit is not None and not sliding_window:
        try:
            model.check_length(t0, "prompt length")
            model.check_length(reads, f"generating {max_new_tokens} tokens after a prompt of "
                                      f"{t0} needs a sequence length of")
        except ValueError as err:
            raise ValueError(f"{err}; or pass sliding_window=True to predict from the last "
                             f"block_size tokens") from None
    pieces, cache = [prompt], None
    for _ in range(max_new_tokens):
        if limit is not None and t0 + len(pieces) - 1 > limit:   # the window slid: recompute
            cache = None
            logits = model(torch.cat(pieces[-limit:], dim=1)[:, -limit:])
        elif not use_cache:
            logits = model(torch.cat(pieces, dim=1))
        else:                    # the model caps the preallocation at what it reads at once
            logits, cache = model.decode(prompt if cache is None else pieces[-1], cache,
                                         capacity=reads)
        pieces.append(sample_next(logits[:, -1], temperature, top_k, generator).to(prompt.dtype))
    return torch.cat(pieces, dim=1)
