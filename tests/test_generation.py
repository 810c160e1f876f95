"""Incremental decoding owned by the layers (``layer.decode(x, cache)``) and the sampling loop
(translution.generation): equal to full recomputation for every layer kind and relative subset,
beyond block_size with clipping, a bounded cache, sampling and argument errors."""

import pytest
import torch

from translution import AlphaTranslution, SelfAttention, Translution
from translution.generation import generate, sample_next, top_k_filter
from translution.layers import AttentionCache
from translution.layouts import Grid, Sequence
from translution.models import create_model

VOCAB = 37
KINDS = ["ape", "rope", "bias", "translution", "alpha", "hybrid"]


def build(kind, block_size=10, max_distance=None, seed=0, **overrides):
    """A float64 micro GPT whose position-dependent parameters are large enough to matter."""
    torch.manual_seed(seed)
    model = create_model(f"gpt_micro_{kind}", vocab_size=VOCAB, block_size=block_size,
                         max_distance=max_distance, mlp_dim=48, **overrides).double().eval()
    randomise_slots(model, seed + 1)
    return model


def randomise_slots(module, seed):
    """Independent slots of Linear-like scale (and a random bias table): every distance
    behaves differently, so a wrong slot shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias_table":
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
            elif leaf in ("wq", "wk", "wv", "mq", "mk", "mv") and p.dim() == 3:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) / p.shape[1] ** 0.5)


def tokens(batch, length, seed=0):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


# -- layers ------------------------------------------------------------------------------------
LAYERS = (
    [("self", dict(position=p)) for p in (None, "rope", "bias")]
    + [("translution", dict(relative=r)) for r in ("q", "k", "v", "qk", "qv", "kv", "qkv")]
    + [("alpha", dict(relative=r, rank=2)) for r in ("q", "k", "v", "qk", "qv", "kv", "qkv")])
LAYER_CLASSES = {"self": SelfAttention, "translution": Translution, "alpha": AlphaTranslution}


def layer(kind, layout, **options):
    torch.manual_seed(0)
    module = LAYER_CLASSES[kind](8, layout, heads=2, dim_head=4, **options).double()
    randomise_slots(module, 1)
    return module


@pytest.mark.parametrize("max_distance", [None, 2])
@pytest.mark.parametrize("kind,options", LAYERS,
                         ids=[f"{k}-{'-'.join(map(str, o.values()))}" for k, o in LAYERS])
def test_layer_decode_equals_forward(kind, options, max_distance):
    # clipped: offsets >= 2 share slot 2, and the sequence (11) outgrows the layout (5)
    length = 5 if max_distance is None else 11
    attn = layer(kind, Sequence(5, causal=True, max_distance=max_distance), **options)
    x = torch.randn(2, length, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y, cache = attn.decode(x[:, :2], capacity=3)
    torch.testing.assert_close(y, attn(x[:, :2]), rtol=0, atol=1e-12)
    for t in range(2, length):
        y, cache = attn.decode(x[:, t:t + 1], cache)
        torch.testing.assert_close(y, attn(x[:, :t + 1])[:, -1:], rtol=0, atol=1e-12)
    assert isinstance(cache, AttentionCache) and cache.length == length
    assert cache.capacity() >= length and f"length={length}" in repr(cache)


def test_layer_decode_errors():
    causal = Sequence(4, causal=True)
    attn = layer("translution", causal)
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    _, cache = attn.decode(x)
    with pytest.raises(ValueError, match="layout holds"):
        attn.decode(x[:, :2], cache)                    # 5 positions > Sequence(4)
    with pytest.raises(TypeError, match="AlphaTranslution.*built by Translution"):
        layer("alpha", causal).decode(x[:, :1], cache)
    with pytest.raises(TypeError, match="got a dict"):
        attn.decode(x[:, :1], {})
    with pytest.raises(ValueError, match="sequences"):
        attn.decode(x[:1, :1], cache)
    with pytest.raises(ValueError, match="at least one"):
        attn.decode(x[:, :0])
    with pytest.raises(ValueError, match="causal sequence"):
        layer("translution", Sequence(4)).decode(x)
    with pytest.raises(ValueError, match="causal sequence"):
        layer("self", Grid(2, 2)).decode(x)
    with pytest.raises(ValueError, match="causal sequence"):
        SelfAttention(8, None, heads=2, dim_head=4).decode(x.float())


# -- models ------------------------------------------------------------------------------------
CASES = [(kind, {}) for kind in KINDS] + [
    ("translution", dict(relative="kv")), ("alpha", dict(relative="qk", rank=4)),
    ("hybrid", dict(hybrid_kind="alpha", hybrid_blocks=1))]


@pytest.mark.parametrize("kind,overrides", CASES,
                         ids=[f"{k}-{'-'.join(f'{a}={b}' for a, b in o.items())}"
                              for k, o in CASES])
def test_model_decode_step_by_step_equals_full_recomputation(kind, overrides):
    model = build(kind, **overrides)
    seq = tokens(2, 10)
    logits, cache = model.decode(seq[:, :1])
    for t in range(1, 10):
        torch.testing.assert_close(logits[:, -1], model(seq[:, :t])[:, -1], rtol=0, atol=1e-10)
        logits, cache = model.decode(seq[:, t:t + 1], cache)
    assert cache.length == 10


def test_clipped_generate_beyond_block_size_matches_uncached():
    model = build("translution", block_size=6, max_distance=2)
    prompt = tokens(2, 3)
    cached = generate(model, prompt, 20, temperature=0)
    assert cached.shape == (2, 23)
    assert torch.equal(cached, generate(model, prompt, 20, temperature=0, use_cache=False))


class _Enough(Exception):
    pass


def spy_on_decode(monkeypatch, model, steps):
    """Record (length, capacity, nbytes) of the cache after every ``model.decode`` call and
    stop the generation after ``steps`` calls."""
    seen, decode = [], model.decode

    def spy(tokens, cache=None, capacity=None):
        logits, cache = decode(tokens, cache, capacity)
        seen.append((cache.length, cache.capacity(), cache.nbytes()))
        if len(seen) == steps:
            raise _Enough
        return logits, cache

    monkeypatch.setattr(model, "decode", spy)
    return seen


@pytest.mark.parametrize("sliding_window", [True, False])
def test_huge_max_new_tokens_allocates_a_bounded_cache(monkeypatch, sliding_window):
    """Fault 8: the cache was preallocated for prompt + max_new_tokens positions."""
    model = build("translution", block_size=32, max_distance=None if sliding_window else 4)
    expected = model.decode(tokens(2, 3), capacity=32)[1].nbytes()   # the whole context
    seen = spy_on_decode(monkeypatch, model, steps=5)
    with pytest.raises(_Enough):
        generate(model, tokens(2, 3), 10**9, sliding_window=sliding_window)
    assert [length for length, _, _ in seen] == [3, 4, 5, 6, 7]
    assert all(capacity == 32 for _, capacity, _ in seen)
    assert all(nbytes == expected for _, _, nbytes in seen)


def test_cache_stays_within_the_window_when_it_slides(monkeypatch):
    model = build("rope", block_size=6)
    seen = spy_on_decode(monkeypatch, model, steps=100)
    out = generate(model, tokens(1, 2), 12, sliding_window=True)
    assert out.shape == (1, 14)
    assert [length for length, _, _ in seen] == [2, 3, 4, 5, 6]      # then recomputed windows
    assert all(capacity == 6 for _, capacity, _ in seen)
    short = build("rope", block_size=6)
    seen = spy_on_decode(monkeypatch, short, steps=100)
    generate(short, tokens(1, 2), 2)                                  # reads 3 positions only
    assert [capacity for _, capacity, _ in seen] == [3, 3]


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
    with pytest.raises(TypeError, match="max_new_tokens"):
        generate(model, prompt, 2.0)
    with pytest.raises(TypeError, match="GPT"):
        generate(torch.nn.Linear(2, 2), prompt, 1)
    with pytest.raises(ValueError, match="top_k"):
        top_k_filter(torch.zeros(1, 3), 0)


def test_length_limit_errors():
    prompt = tokens(1, 3)
    model = build("translution", block_size=6)
    generate(model, prompt, 4)                            # reads 6 tokens: fits
    with pytest.raises(ValueError, match=r"length of 7 exceeds block_size=6.*max_distance.*"
                                         r"sliding_window=True"):
        generate(model, prompt, 5)
    with pytest.raises(ValueError, match=r"prompt length 7 exceeds.*max_distance"):
        generate(model, tokens(1, 7), 1)
    ape = build("ape", block_size=6, max_distance=2)      # APE: block_size always
    assert ape.max_length == 6
    with pytest.raises(ValueError, match=r"block_size=6.*absolute position embedding"):
        generate(ape, prompt, 5)

