"""The fp8 linear option: close to the original layer, and swapped into every block."""
from __future__ import annotations

import torch
from torch import nn

from selfforcing_core.fp8_linear import FP8Linear, use_fp8_linears

from tiny_models import TINY, tiny_model


def test_fp8_linear_is_close_to_the_original():
    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    x = torch.randn(5, 7, 64)
    exact = linear(x)
    approx = FP8Linear(linear)(x)
    assert approx.shape == exact.shape
    relative = (approx - exact).norm() / exact.norm()
    assert 0 < relative < 0.05


def test_every_block_linear_is_swapped_and_the_model_still_runs():
    model = tiny_model(dtype=torch.float32)
    x = torch.randn(1, 16, 3, 4, 4)
    t = torch.full((1, 3), 500.0)
    context = torch.randn(1, 4, TINY.text_dim)
    before = model(x, t, context)
    assert use_fp8_linears(model) == TINY.num_layers * 10
    after = model(x, t, context)
    assert not any(isinstance(m, nn.Linear) for block in model.blocks for m in block.modules())
    assert ((after - before).norm() / before.norm()) < 0.1
