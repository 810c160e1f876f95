"""Under autocast, a bf16 activation meets float32 weights as in nn.Linear (issue 11, e2e)."""

import pytest
import torch

from translution import functional as F
from translution.layouts import Grid


def _inputs(dtype):
    g = torch.Generator().manual_seed(0)
    layout = Grid(2, 3, cls_token=True)
    x = torch.randn(2, layout.num_tokens, 8, generator=g).to(dtype)
    bank = torch.randn(layout.num_slots, 8, 8, generator=g) / 8
    return x, bank, layout


def test_bf16_activation_with_float32_banks_under_autocast_matches_bf16_weights():
    x, bank, layout = _inputs(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = F.translution(x, bank, bank, bank, layout, heads=2)
    expected = F.translution(x, *[bank.bfloat16()] * 3, layout, heads=2)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected)


def test_mismatched_dtypes_without_autocast_are_refused():
    x, bank, layout = _inputs(torch.bfloat16)
    with pytest.raises(TypeError, match="wq has dtype torch.float32 but x has dtype torch.bfloat16"):
        F.translution(x, bank, bank, bank, layout, heads=2)
    with pytest.raises(TypeError, match="dtype"):                # float64 is not autocast
        with torch.autocast("cpu", dtype=torch.bfloat16):
            F.translution(x.double(), bank, bank, bank, layout, heads=2)
