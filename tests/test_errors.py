"""Bad input to the functional ops gets a ValueError/TypeError naming expected and actual."""

import pytest
import torch

from translution import functional as F
from translution.layouts import Grid, Sequence

LAYOUT = Grid(2, 3, cls_token=True)          # 7 tokens, 18 slots


def _w(*shape, **kw):
    return torch.randn(*shape, **kw)


def _call(x=None, wq=None, wk=None, wv=None, layout=LAYOUT, heads=2):
    x = _w(2, 7, 4) if x is None else x
    wq = _w(18, 4, 6) if wq is None else wq
    wk = _w(18, 4, 6) if wk is None else wk
    wv = _w(18, 4, 6) if wv is None else wv
    return F.translution(x, wq, wk, wv, layout, heads=heads)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(x=_w(7, 4)), ValueError, r"\(batch, tokens, channels\), got \(7, 4\)"),
    (dict(x=[[1.0]]), TypeError, "torch.Tensor"),
    (dict(x=torch.ones(2, 7, 4, dtype=torch.long)), TypeError, "floating-point"),
    (dict(x=_w(2, 8, 4)), ValueError, "holds 7 tokens, the input has 8"),
    (dict(x=_w(2, 7, 4), layout=Sequence(5)), ValueError, "longer than this layout allows"),
    (dict(wq=_w(18, 5, 6)), ValueError, r"wq bank must have shape \(18, 4, C'\).*\(18, 5, 6\)"),
    (dict(wk=_w(17, 4, 6)), ValueError, r"wk bank must have shape \(18, 4, C'\)"),
    (dict(wv=_w(5, 6)), ValueError, r"wv must have shape \(4, C'\), got \(5, 6\)"),
    (dict(wv=_w(4)), ValueError, "wv must be a bank"),
    (dict(wv=_w(18, 4, 8)), ValueError, "same output width"),
    (dict(heads=4), ValueError, "not divisible by heads=4"),
    (dict(heads=0), ValueError, "heads must be a positive int"),
    (dict(wq=_w(18, 4, 6, dtype=torch.float64)), TypeError, "wq has dtype torch.float64"),
    (dict(wk=_w(18, 4, 6, device="meta")), ValueError, "wk is on meta but x is on cpu"),
    (dict(wq=_w(4, 6), wk=_w(4, 6), wv=_w(4, 6)), ValueError, "at least one relative"),
    (dict(layout=(2, 3)), TypeError, "Layout"),
])
def test_translution_input_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        _call(**kwargs)


def test_alpha_input_errors():
    layout = Sequence(5, causal=True)
    x = _w(1, 5, 4)
    w = [_w(4, 6) for _ in range(3)]
    with pytest.raises(ValueError, match="at least one relative bank"):
        F.alpha_translution(x, *w, layout, heads=2)
    with pytest.raises(ValueError, match="uk .* is required"):
        F.alpha_translution(x, *w, layout, heads=2, uq=_w(4, 2), mq=_w(5, 2, 2))
    with pytest.raises(ValueError, match="p .* is required"):
        F.alpha_translution(x, *w, layout, heads=2, uv=_w(4, 2), mv=_w(5, 2, 2))
    with pytest.raises(ValueError, match="share the relative width"):
        F.alpha_translution(x, *w, layout, heads=2, uq=_w(4, 2), uk=_w(4, 4), mq=_w(5, 2, 2))
    with pytest.raises(ValueError, match="not divisible by heads"):
        F.alpha_translution(x, *w, layout, heads=2, uq=_w(4, 3), uk=_w(4, 3), mq=_w(5, 3, 3))
    with pytest.raises(ValueError, match=r"mk must be a bank \(5, 2, 2\)"):
        F.alpha_translution(x, *w, layout, heads=2, uq=_w(4, 2), uk=_w(4, 2), mk=_w(5, 2, 3))
    with pytest.raises(ValueError, match=r"p must have shape \(2, 6\)"):
        F.alpha_translution(x, *w, layout, heads=2, uv=_w(4, 2), mv=_w(5, 2, 2), p=_w(2, 5))
