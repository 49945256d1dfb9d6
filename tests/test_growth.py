"""Growing a trained teacher deeper: the grown model computes what its source did, and bad sources are refused."""
from __future__ import annotations

import pytest
import torch

from selfforcing_core.training.growth import load_grown, residual_outputs
from selfforcing_core.weights_io import count_blocks
from selfforcing_core.training.model_sizes import PRESETS
from selfforcing_core.training.teacher_training import build_teacher

TOY = PRESETS["toy"]


def _trained_like(seed: int, text_layers: int, dit_layers: int):
    """A toy teacher whose every weight is random (a fresh one has a zero head, which would hide differences)."""
    teacher = build_teacher(*_configs(text_layers, dit_layers), seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in teacher.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return teacher.eval()


def _configs(text_layers: int, dit_layers: int):
    sizes = TOY.with_layers(text_layers, dit_layers)
    return sizes.dit, sizes.text


def _inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, TOY.dit.in_dim, 2, 4, 4, generator=generator)
    t = torch.tensor([[900.0, 900.0], [300.0, 300.0]])
    ids = torch.randint(3, TOY.text.vocab, (2, TOY.text_len), generator=generator)
    mask = torch.zeros(2, TOY.text_len, dtype=torch.long)
    mask[0, :20], mask[1, :7] = 1, 1
    return latents, t, ids, mask


def test_a_grown_teacher_computes_what_its_source_did():
    source = _trained_like(3, text_layers=1, dit_layers=1)
    grown = build_teacher(*_configs(3, 2), seed=9).eval()
    assert load_grown(grown.dit, source.dit.state_dict(), "DiT") == 1
    assert load_grown(grown.text, source.text.state_dict(), "text encoder") == 2
    latents, t, ids, mask = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(grown.encode_text(ids, mask), source.encode_text(ids, mask), rtol=0, atol=1e-6)
        expected = source(latents, t, ids, mask)
        torch.testing.assert_close(grown(latents, t, ids, mask), expected, rtol=0, atol=1e-5)
    assert expected.abs().mean() > 0.01
    for block in [*grown.dit.blocks[1:], *grown.text.blocks[1:]]:
        assert all(not layer.weight.any() for layer in residual_outputs(block))
    assert torch.equal(grown.dit.blocks[0].ffn[0].weight, source.dit.blocks[0].ffn[0].weight)


def test_the_added_layers_learn():
    """Zero residual outputs still get gradients, so the added blocks leave the identity at the first step."""
    source = _trained_like(4, text_layers=1, dit_layers=1)
    grown = build_teacher(*_configs(2, 2), seed=1)
    load_grown(grown.dit, source.dit.state_dict(), "DiT")
    load_grown(grown.text, source.text.state_dict(), "text encoder")
    latents, t, ids, mask = _inputs(1)
    grown(latents, t, ids, mask).square().mean().backward()
    for block in (grown.dit.blocks[1], grown.text.blocks[1]):
        assert all(layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
                   for layer in residual_outputs(block))


def test_the_same_depth_loads_exactly():
    source = _trained_like(5, text_layers=1, dit_layers=1)
    target = build_teacher(*_configs(1, 1), seed=2)
    assert load_grown(target.dit, source.dit.state_dict(), "DiT") == 0
    assert all(torch.equal(value, source.dit.state_dict()[key]) for key, value in target.dit.state_dict().items())


def test_a_deeper_or_wider_source_is_refused():
    deep = _trained_like(6, text_layers=2, dit_layers=2)
    shallow = build_teacher(*_configs(1, 1), seed=0)
    with pytest.raises(ValueError, match="has 2 layers, more than the 1 asked for"):
        load_grown(shallow.dit, deep.dit.state_dict(), "DiT")
    world = build_teacher(PRESETS["world"].dit, PRESETS["world"].text, seed=0)
    with pytest.raises(ValueError, match="width differs"):
        load_grown(world.text, shallow.text.state_dict(), "text encoder")


def test_block_count_and_depth_checks():
    assert count_blocks({"blocks.0.w": torch.zeros(1), "blocks.11.w": torch.zeros(1), "head.w": torch.zeros(1)}) == 12
    assert count_blocks({"dit.blocks.3.w": torch.zeros(1)}, "dit.blocks.") == 4
    assert count_blocks({"norm.weight": torch.zeros(1)}) == 0
    with pytest.raises(ValueError, match="at least 1"):
        TOY.with_layers(text=0)
