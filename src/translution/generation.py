"""Autoregressive sampling from a causal language model (:class:`~translution.models.GPT`).

Only the sampling loop lives here. Incremental decoding belongs to the model: ``logits, cache =
model.decode(tokens, cache)`` reads the next positions, and every attention layer advances its own
:class:`~translution.layers.AttentionCache` (see :meth:`SelfAttention.decode
<translution.SelfAttention.decode>`).

Context: a model with a length limit (:attr:`GPT.max_length <translution.models.GPT.max_length>`,
``block_size`` unless the model is clipped by ``max_distance`` and has no absolute position
embedding) reads at most ``block_size`` tokens. Past it, :func:`generate` raises, unless
``sliding_window=True``: every further token is then predicted from the last ``block_size``
tokens, recomputed without cache (hidden states depend on the window's start, so no cache can be
reused). The cache never holds more positions than the model reads at once.

Public API::

    out = generate(model, prompt, 50, temperature=0.8, top_k=40,
                   generator=torch.Generator().manual_seed(0))
    tokens_per_s = decode_throughput(model, prompt_len=64, new_tokens=64, use_cache=True)
"""

from __future__ import annotations

import math
import time
from typing import List, Optional

import torch
from torch import nn

from .utils import check_int

__all__ = ["generate", "sample_next", "top_k_filter", "decode_throughput"]


def _check_model(model) -> None:
    if not (isinstance(model, nn.Module) and callable(getattr(model, "decode", None))
            and hasattr(model, "max_length")):
        raise TypeError(f"expected a language model with cached decoding (decode() and "
                        f"max_length) such as translution.models.GPT, got {type(model).__name__}")


def _check_sampling(temperature, top_k) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or math.isnan(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                              or top_k < 1):
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")


def top_k_filter(logits: torch.Tensor, k: Optional[int]) -> torch.Tensor:
    """Set every logit below the ``k``-th largest of its row to ``-inf`` (ties with the k-th
    are kept).

    Args:
        logits: ``(B, V)``. k: ``None`` (no filter) or ``>= 1``; clamped to ``V``.

    Returns:
        ``(B, V)`` filtered copy.
    """
    _check_sampling(0, k)
    if k is None or k >= logits.shape[-1]:
        return logits.clone()
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Pick the next token of every row.

    Args:
        logits: ``(B, V)`` next-token logits.
        temperature: ``0``: argmax (greedy); otherwise sample from ``softmax(logits / T)``.
        top_k: keep only the ``k`` most likely tokens before sampling.
        generator: random generator (sampling is deterministic given its state).

    Returns:
        ``(B, 1)`` long token ids.
    """
    _check_sampling(temperature, top_k)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = top_k_filter(logits, top_k)
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


def _check_fits(model, length: int, what: str) -> None:
    try:
        model.check_length(length, what)
    except ValueError as err:
        raise ValueError(f"{err}; or pass sliding_window=True to predict from the last "
                         f"block_size tokens") from None


def _last(pieces: List[torch.Tensor], n: int) -> torch.Tensor:
    """The last ``n`` columns of ``torch.cat(pieces, 1)``, concatenating at most ``n`` pieces."""
    return torch.cat(pieces[-n:], dim=1)[:, -n:]


@torch.no_grad()
def generate(model: nn.Module, prompt: torch.Tensor, max_new_tokens: int,
             temperature: float = 1.0, top_k: Optional[int] = None, use_cache: bool = True,
             generator: Optional[torch.Generator] = None,
             sliding_window: bool = False) -> torch.Tensor:
    """Autoregressive sampling.

    Args:
        model: a :class:`~translution.models.GPT` (any module with ``decode``, ``max_length``
            and ``check_length``).
        prompt: ``(B, T0)`` integer ids, ``T0 >= 1``.
        max_new_tokens: tokens to append (``>= 0``).
        temperature: softmax temperature; ``0`` is greedy (argmax).
        top_k: sample among the ``k`` most likely tokens only (``None``: all).
        use_cache: decode incrementally with the model's cache (``False``: recompute the whole
            context for every token — same result, for checking and benchmarks).
        generator: ``torch.Generator`` for sampling; given its state, the output is
            deterministic.
        sliding_window: when the model has a length limit and the sequence outgrows it,
            predict from the last ``block_size`` tokens (recomputed, no cache) instead of
            raising.

    Returns:
        ``(B, T0 + max_new_tokens)`` (the prompt's dtype): the prompt followed by the new
        tokens.

    Raises:
        ValueError: bad arguments (empty prompt, ``temperature < 0``, ``top_k < 1``,
            ``max_new_tokens < 0``) or, without ``sliding_window``, a sequence longer than the
            model reads (the message names the limit and the fixes).
    """
    _check_model(model)
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
        _check_fits(model, t0, "prompt length")
        _check_fits(model, reads, f"generating {max_new_tokens} tokens after a prompt of {t0} "
                                  f"needs a sequence length of")
    pieces, cache = [prompt], None
    for _ in range(max_new_tokens):
        length = t0 + len(pieces) - 1
        if limit is not None and length > limit:             # the window slid: recompute it
            cache = None
            logits = model(_last(pieces, limit))
        elif not use_cache:
            logits = model(torch.cat(pieces, dim=1))
        else:                    # the model caps the preallocation at what it reads at once
            logits, cache = model.decode(prompt if cache is None else pieces[-1], cache,
                                         capacity=reads)
        pieces.append(sample_next(logits[:, -1], temperature, top_k, generator)
                      .to(prompt.dtype))
    return torch.cat(pieces, dim=1)


@torch.no_grad()
def decode_throughput(model: nn.Module, prompt_len: int, new_tokens: int, use_cache: bool,
                      batch_size: int = 1, repeats: int = 1, seed: int = 0) -> float:
    """Generated tokens per second of greedy :func:`generate` (prefill included).

    Args:
        model: a GPT (on the device to measure; its parameters' dtype is used).
        prompt_len: random prompt length ``T0``. new_tokens: tokens generated per sequence.
        use_cache: cached decoding or full recomputation per token.
        batch_size: sequences generated together.
        repeats: timed runs (the best is reported) after one short warm-up.
        seed: prompt seed.

    Returns:
        ``batch_size · new_tokens / seconds`` of the fastest run.
    """
    _check_model(model)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, model.config.vocab_size, (batch_size, prompt_len),
                           generator=gen).to(device)
    generate(model, prompt, min(2, new_tokens), temperature=0, use_cache=use_cache)  # warm-up
    best = math.inf
    for _ in range(max(1, repeats)):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        generate(model, prompt, new_tokens, temperature=0, use_cache=use_cache)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return batch_size * new_tokens / best
