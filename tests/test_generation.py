"""Cached decoding (translution.generation): equal to full recomputation for every attention
kind, beyond block_size with clipping, sampling and argument errors."""

import pytest
import torch

from translution.generation import (DecodeCache, decode_step, decode_throughput, generate,
                                    prefill, sample_next, top_k_filter)
from translution.models import create_model

VOCAB = 37
KINDS = ["ape", "rope", "bias", "translution", "alpha", "hybrid"]


def build(kind, block_size=10, max_distance=None, seed=0, **overrides):
    """A float64 micro GPT whose position-dependent parameters are large enough to matter."""
    torch.manual_seed(seed)
    model = create_model(f"gpt_micro_{kind}", vocab_size=VOCAB, block_size=block_size,
                         max_distance=max_distance, mlp_dim=48, **overrides).double().eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias_table":
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
            elif leaf in ("wq", "wk", "wv", "mq", "mk", "mv") and p.dim() == 3:
                # independent slots of Linear-like scale: every distance behaves differently
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) / p.shape[1] ** 0.5)
    return model


def tokens(batch, length, seed=0):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def assert_steps_match(model, seq, prompt_len):
    """prefill + decode_step logits == model(seq[:, :t])[:, -1] at every step."""
    logits, cache = prefill(model, seq[:, :prompt_len])
    torch.testing.assert_close(logits, model(seq[:, :prompt_len])[:, -1], rtol=0, atol=1e-10)
    for t in range(prompt_len, seq.shape[1]):
        logits, cache = decode_step(model, cache, seq[:, t])
        assert cache.length == t + 1
        torch.testing.assert_close(logits, model(seq[:, :t + 1])[:, -1], rtol=0, atol=1e-10)
    return cache


CASES = [(kind, {}) for kind in KINDS] + [
    ("translution", dict(relative="q")),
    ("translution", dict(relative="k")),
    ("translution", dict(relative="v")),
    ("translution", dict(relative="kv")),
    ("translution", dict(relative="qv")),
    ("alpha", dict(relative="q")),
    ("alpha", dict(relative="k")),
    ("alpha", dict(relative="v")),
    ("alpha", dict(relative="kv")),
    ("alpha", dict(relative="qk", rank=4)),
    ("hybrid", dict(hybrid_kind="alpha", hybrid_blocks=1)),
]


@pytest.mark.parametrize("kind,overrides", CASES,
                         ids=[f"{k}-{'-'.join(f'{a}={b}' for a, b in o.items())}"
                              for k, o in CASES])
def test_cached_logits_equal_full_recomputation(kind, overrides):
    model = build(kind, **overrides)
    cache = assert_steps_match(model, tokens(2, 10), prompt_len=1)
    assert isinstance(cache, DecodeCache) and cache.length == 10 and cache.batch_size == 2


@pytest.mark.parametrize("kind,overrides", [
    ("rope", {}), ("bias", {}), ("translution", {}), ("translution", dict(relative="kv")),
    ("translution", dict(relative="q")), ("alpha", {}), ("alpha", dict(relative="v")),
    ("hybrid", {})])
def test_clipped_model_decodes_beyond_block_size(kind, overrides):
    # block_size 6, offsets clipped to 2: the prompt already exceeds the window, and decoding
    # runs to 3× block_size; the full model accepts T > block_size when clipped.
    model = build(kind, block_size=6, max_distance=2, **overrides)
    assert model.max_length is None
    cache = assert_steps_match(model, tokens(2, 18, seed=1), prompt_len=4)
    assert cache.length == 18
    # a prompt longer than block_size prefills too
    assert_steps_match(model, tokens(1, 12, seed=2), prompt_len=9)


def test_clipped_generate_beyond_block_size_matches_uncached():
    model = build("translution", block_size=6, max_distance=2)
    prompt = tokens(2, 3)
    cached = generate(model, prompt, 20, temperature=0)
    assert cached.shape == (2, 23)
    assert torch.equal(cached, generate(model, prompt, 20, temperature=0, use_cache=False))


def test_cache_grows():
    model = build("translution", block_size=6, max_distance=2)
    _, cache = prefill(model, tokens(1, 2), capacity=3)
    before = cache.nbytes()
    for t in range(10):
        _, cache = decode_step(model, cache, torch.tensor([t % VOCAB]))
    assert cache.length == 12 and cache.nbytes() > before
    assert "length=12" in repr(cache)


@pytest.mark.parametrize("kind", KINDS)
def test_generate_with_and_without_cache_agree(kind):
    model = build(kind, block_size=12)
    prompt = tokens(3, 4, seed=3)
    greedy = generate(model, prompt, 8, temperature=0)
    assert greedy.shape == (3, 12) and torch.equal(greedy[:, :4], prompt)
    assert torch.equal(greedy, generate(model, prompt, 8, temperature=0, use_cache=False))
    sampled = [generate(model, prompt, 8, temperature=0.9, top_k=5, use_cache=use,
                        generator=torch.Generator().manual_seed(7)) for use in (True, False)]
    assert torch.equal(*sampled)


def test_sampling_is_deterministic_given_generator():
    model = build("alpha")
    prompt = tokens(2, 3)
    runs = [generate(model, prompt, 6, generator=torch.Generator().manual_seed(s))
            for s in (0, 0, 1)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    # top_k=1 sampling is greedy
    assert torch.equal(generate(model, prompt, 6, top_k=1, generator=torch.Generator()),
                       generate(model, prompt, 6, temperature=0))


def test_top_k_filter_and_sample_next():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [4.0, -1.0, 0.5, 0.0]])
    out = top_k_filter(logits, 2)
    assert torch.equal(torch.isfinite(out), torch.tensor([[False, True, False, True],
                                                          [True, False, True, False]]))
    assert torch.equal(top_k_filter(logits, 10), logits)
    assert torch.equal(top_k_filter(logits, None), logits)
    gen = torch.Generator().manual_seed(0)
    picks = torch.cat([sample_next(logits, 5.0, top_k=2, generator=gen) for _ in range(200)], 1)
    assert set(picks[0].tolist()) == {1, 3} and set(picks[1].tolist()) == {0, 2}
    assert torch.equal(sample_next(logits, 0), torch.tensor([[1], [0]]))


def test_prompt_dtype_is_kept():
    model = build("rope")
    out = generate(model, tokens(1, 2).int(), 3, temperature=0)
    assert out.dtype == torch.int32 and out.shape == (1, 5)
    assert torch.equal(generate(model, tokens(1, 2), 0), tokens(1, 2))


def test_sliding_window_matches_cropped_recomputation():
    model = build("rope", block_size=6)
    prompt = tokens(2, 3)
    expected = prompt
    for _ in range(9):
        nxt = model(expected[:, -6:])[:, -1].argmax(-1, keepdim=True)
        expected = torch.cat([expected, nxt], 1)
    for use_cache in (True, False):
        assert torch.equal(generate(model, prompt, 9, temperature=0, use_cache=use_cache,
                                    sliding_window=True), expected)
        assert torch.equal(model.generate(prompt, 9, temperature=0, use_cache=use_cache),
                           expected)
    # a prompt longer than the window
    long_prompt = tokens(1, 8)
    assert model.generate(long_prompt, 2, temperature=0).shape == (1, 10)


def test_argument_errors():
    model = build("translution", block_size=6)
    prompt = tokens(1, 3)
    with pytest.raises(ValueError, match="top_k"):
        generate(model, prompt, 2, top_k=0)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, prompt, 2, temperature=-0.5)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, prompt, 2, temperature=float("nan"))
    with pytest.raises(ValueError, match="non-empty"):
        generate(model, torch.zeros(1, 0, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="non-empty"):
        generate(model, torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, prompt, -1)
    with pytest.raises(TypeError, match="GPT"):
        generate(torch.nn.Linear(2, 2), prompt, 1)
    with pytest.raises(ValueError, match="top_k"):
        top_k_filter(torch.zeros(1, 3), 0)


def test_length_limit_errors():
    prompt = tokens(1, 3)
    model = build("translution", block_size=6)
    generate(model, prompt, 4)                            # reads 6 tokens: fits
    with pytest.raises(ValueError, match=r"block_size=6.*max_distance"):
        generate(model, prompt, 5)
    with pytest.raises(ValueError, match=r"prompt has 7 tokens.*max_distance"):
        generate(model, tokens(1, 7), 1)
    _, cache = prefill(model, tokens(1, 6))
    with pytest.raises(ValueError, match="max_distance"):
        decode_step(model, cache, torch.tensor([1]))
    ape = build("ape", block_size=6, max_distance=2)      # APE: block_size always
    assert ape.max_length == 6
    with pytest.raises(ValueError, match=r"block_size=6.*absolute position embedding"):
        generate(ape, prompt, 5)


def test_decode_step_errors():
    model = build("alpha")
    _, cache = prefill(model, tokens(2, 3))
    with pytest.raises(ValueError, match=r"\(2,\)"):
        decode_step(model, cache, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"\[0, 37\)"):
        decode_step(model, cache, torch.tensor([1, VOCAB]))
    with pytest.raises(TypeError, match="DecodeCache"):
        decode_step(model, object(), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="layers"):
        decode_step(build("alpha", depth=1), cache, torch.tensor([1, 2]))
    logits, cache = decode_step(model, cache, torch.tensor([[1], [2]]))   # (B, 1) accepted
    assert logits.shape == (2, VOCAB) and cache.length == 4


def test_decode_throughput_runs():
    model = build("translution", block_size=12)
    for use_cache in (True, False):
        rate = decode_throughput(model, prompt_len=4, new_tokens=3, use_cache=use_cache)
        assert rate > 0
