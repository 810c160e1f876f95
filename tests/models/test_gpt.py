"""GPT family: every registered GPT builds, runs, trains and is causal; length limits."""

import pytest
import torch

from translution import AlphaTranslution, SelfAttention, Translution
from translution.layouts import Sequence
from translution.models import GPT, GPTConfig, create_model, list_models

# Tiny overrides: every entry, `large` included, is built small.
SMALL = dict(dim=32, depth=2, heads=2, dim_head=16, mlp_dim=64, vocab_size=50, block_size=8)
GPT_MODELS = list_models("gpt_*")
KINDS = ["ape", "rope", "bias", "translution", "alpha", "lor_rope", "hybrid"]


def small(name, **overrides):
    torch.manual_seed(0)
    return create_model(name, **{**SMALL, **overrides})


def tokens(*shape, seed=0):
    return torch.randint(0, 50, shape, generator=torch.Generator().manual_seed(seed))


def test_every_gpt_is_covered():
    assert len(GPT_MODELS) == 42


@pytest.mark.parametrize("name", GPT_MODELS)
def test_forward_and_backward(name):
    model = small(name)
    logits = model(tokens(2, 8))
    assert logits.shape == (2, 8, 50) and torch.isfinite(logits).all()
    logits.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
    assert model(tokens(3, 5)).shape == (3, 5, 50)              # shorter than block_size


def assert_causal(model, length=8):
    """Logits at t must not change when tokens after t change (and must change at later ones)."""
    x = tokens(2, length)
    ref = model(x)
    for t in range(length - 1):
        y = x.clone()
        y[:, t + 1:] = (y[:, t + 1:] + 1 + torch.arange(length - t - 1)) % 50
        out = model(y)
        torch.testing.assert_close(out[:, :t + 1], ref[:, :t + 1], rtol=0, atol=1e-12)
        assert not torch.allclose(out[:, t + 1:], ref[:, t + 1:])


@pytest.mark.parametrize("kind", KINDS)
def test_causal(kind):
    model = small(f"gpt_micro_{kind}").double()
    assert_causal(model)


@pytest.mark.parametrize("hybrid_kind", ["translution", "alpha", "lor_rope"])
def test_hybrid_self_attention_blocks_are_causal(hybrid_kind):
    """Regression: the reference hybrid GPT built its self-attention blocks without the mask."""
    model = small("gpt_micro_hybrid", depth=3, hybrid_blocks=1, hybrid_kind=hybrid_kind).double()
    attns = [b.attn for b in model.blocks]
    assert type(attns[0]) is {"translution": Translution, "alpha": AlphaTranslution,
                              "lor_rope": AlphaTranslution}[hybrid_kind]
    for attn in attns[1:]:
        assert type(attn) is SelfAttention and attn.position == "rope"
        assert attn.layout.causal
    assert all(a.layout == Sequence(8, causal=True) for a in attns)
    assert_causal(model)
    # the check above would catch an unmasked self-attention block
    attns[2].layout = Sequence(8)
    x = tokens(1, 8)
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % 50
    assert not torch.allclose(model(x)[:, 0], model(y)[:, 0])


@pytest.mark.parametrize("kind", KINDS)
def test_every_layer_is_causal(kind):
    model = small(f"gpt_micro_{kind}", max_distance=3)
    for block in model.blocks:
        assert block.attn.layout.causal and block.attn.layout.max_distance == 3


def test_embeddings_and_head():
    ape, rel = small("gpt_micro_ape"), small("gpt_micro_translution")
    assert ape.pos_embed.weight.shape == (8, 32)
    assert rel.pos_embed is None and small("gpt_micro_rope").pos_embed is None
    assert rel.head.bias is None
    assert rel.head.weight.data_ptr() != rel.token_embed.weight.data_ptr()   # untied
    assert isinstance(rel.norm, torch.nn.LayerNorm)


@pytest.mark.parametrize("kind", KINDS)
def test_length_limit(kind):
    model = small(f"gpt_micro_{kind}")
    assert model.max_length == 8
    with pytest.raises(ValueError, match="sequence length 9 exceeds block_size=8"):
        model(tokens(1, 9))
    clipped = small(f"gpt_micro_{kind}", max_distance=3)
    if kind == "ape":
        assert clipped.max_length == 8
        with pytest.raises(ValueError, match="absolute position embedding"):
            clipped(tokens(1, 9))
    else:
        assert clipped.max_length is None
        assert clipped(tokens(2, 13)).shape == (2, 13, 50)


@pytest.mark.parametrize("kind", ["bias", "translution", "alpha", "lor_rope"])
def test_max_distance_at_full_extent_equals_unclipped(kind):
    model = small(f"gpt_micro_{kind}").double()
    clipped = small(f"gpt_micro_{kind}", max_distance=7).double()
    clipped.load_state_dict(model.state_dict())
    x = tokens(2, 8)
    torch.testing.assert_close(clipped(x), model(x))


def test_token_errors():
    model = small("gpt_micro_translution")
    with pytest.raises(TypeError, match="integer tensor"):
        model(torch.zeros(1, 4))
    with pytest.raises(TypeError, match="integer tensor"):
        model(torch.zeros(1, 4, dtype=torch.bool))
    with pytest.raises(TypeError):
        model([[1, 2]])
    with pytest.raises(ValueError, match=r"\(batch, time\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 50\)"):
        model(torch.tensor([[1, 50]]))
    with pytest.raises(ValueError, match="at least one"):
        model(torch.zeros(1, 0, dtype=torch.long))
    assert model(torch.tensor([[1, 2]], dtype=torch.int32)).shape == (1, 2, 50)


def test_generate():
    model = small("gpt_micro_rope")
    prompt = tokens(2, 3)
    out = model.generate(prompt, 10, temperature=0)
    assert out.shape == (2, 13) and torch.equal(out[:, :3], prompt)
    assert torch.equal(out, model.generate(prompt, 10, temperature=0))
    sampled = model.generate(prompt, 4, top_k=5, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == (2, 7) and int(sampled.max()) < 50


def test_constructor_with_config():
    model = GPT(GPTConfig(vocab_size=11, block_size=4, dim=16, depth=1, heads=1, dim_head=8),
                attention="ape")
    assert model.config.attention == "ape"
    assert model(torch.zeros(2, 4, dtype=torch.long)).shape == (2, 4, 11)


# -- cached decoding (GPT.decode: each block's attention layer owns its cache) ----------------
DECODE_KINDS = sorted(name[len("gpt_micro_"):] for name in list_models("gpt_micro_*"))


def decoder(kind, block_size=6, max_distance=None, **overrides):
    """A float64 micro GPT whose per-slot parameters differ per distance (so a wrong slot shows)."""
    model = small(f"gpt_micro_{kind}", block_size=block_size, max_distance=max_distance,
                  **overrides).double().eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias_table" or (leaf in ("wq", "wk", "wv", "mq", "mk", "mv")
                                        and p.dim() == 3):
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype)
                        / (p.shape[1] ** 0.5 if p.dim() == 3 else 1))
    return model


def assert_decode_matches(model, seq, prompt_len, chunk=3):
    """Prefill, one chunk of `chunk` tokens, then single tokens: logits == model(prefix)."""
    logits, cache = model.decode(seq[:, :prompt_len])
    torch.testing.assert_close(logits, model(seq[:, :prompt_len]), rtol=0, atol=1e-10)
    t = prompt_len
    while t < seq.shape[1]:
        m = chunk if t == prompt_len else 1
        logits, cache = model.decode(seq[:, t:t + m], cache)
        t += m
        assert cache.length == t
        torch.testing.assert_close(logits, model(seq[:, :t])[:, -m:], rtol=0, atol=1e-10)
    return cache


def test_decode_kinds_come_from_the_registry():
    assert DECODE_KINDS == sorted(KINDS)


@pytest.mark.parametrize("kind", DECODE_KINDS)
def test_decode_equals_full_forward(kind):
    model = decoder(kind, block_size=8)
    cache = assert_decode_matches(model, tokens(2, 8, seed=3), prompt_len=2)
    assert len(cache.layers) == 2 and cache.batch_size == 2


@pytest.mark.parametrize("kind", [k for k in DECODE_KINDS if k != "ape"])
def test_clipped_decode_equals_full_forward_past_block_size(kind):
    # offsets >= K = 2 share slot K; the prompt (7) already exceeds block_size (5)
    model = decoder(kind, block_size=5, max_distance=2)
    assert model.max_length is None
    assert_decode_matches(model, tokens(2, 16, seed=4), prompt_len=3)
    assert_decode_matches(model, tokens(1, 11, seed=5), prompt_len=7)


def test_decode_capacity_is_bounded_by_what_the_model_reads():
    """Fault 8 at the model level: a huge capacity hint preallocates at most the context."""
    model = small("gpt_micro_translution", block_size=32, depth=1)
    prompt = tokens(2, 3)
    _, cache = model.decode(prompt, capacity=10**9)
    assert cache.capacity() == 32
    assert cache.nbytes() == 3 * (2 * 32 * 32) * 4    # x, far_k, far_v: (B, 32, 32) float32
    _, default = model.decode(prompt)                 # default: the whole context
    assert default.capacity() == 32 and default.nbytes() == cache.nbytes()
    # a model that reads any length preallocates at most block_size rows, then grows
    clipped = small("gpt_micro_rope", block_size=8, max_distance=2, depth=1)
    _, cache = clipped.decode(prompt, capacity=10**9)
    assert cache.capacity() == 8
    for t in range(20):
        _, cache = clipped.decode(tokens(2, 1, seed=t), cache)
    assert cache.length == 23 and 23 <= cache.capacity() <= 46


def test_decode_errors():
    model = decoder("alpha")
    _, cache = model.decode(tokens(2, 3))
    with pytest.raises(ValueError, match=r"\[0, 50\)"):
        model.decode(torch.tensor([[1], [50]]), cache)
    with pytest.raises(ValueError, match="sequences"):
        model.decode(tokens(3, 1), cache)
    with pytest.raises(TypeError, match="DecodeCache"):
        model.decode(tokens(2, 1), object())
    with pytest.raises(ValueError, match="blocks"):
        decoder("alpha", depth=1).decode(tokens(2, 1), cache)
    with pytest.raises(ValueError, match="capacity"):
        model.decode(tokens(2, 3), capacity=0)
    model.decode(tokens(2, 3), cache)                  # reads 6 = block_size: fits
    assert cache.length == 6
    with pytest.raises(ValueError, match=r"length 7 exceeds block_size=6.*max_distance"):
        model.decode(tokens(2, 1), cache)
    ape = decoder("ape", max_distance=2)
    _, cache = ape.decode(tokens(1, 6))
    with pytest.raises(ValueError, match="absolute position embedding"):
        ape.decode(tokens(1, 1), cache)
    assert "length=6" in repr(cache)
