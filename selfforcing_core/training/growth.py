"""Deeper models from shallower trained ones: the trained blocks are copied, the added ones start as identities.

A teacher grown this way computes exactly what its source computed, so a deeper text encoder or DiT
goes on from the source's quality instead of from scratch; the added blocks then learn from there
(only their residual output layers get gradients at the first step; the rest follow once those
leave zero).
"""
from __future__ import annotations

import torch
from torch import nn

from ..text_encoder import EncoderBlock
from ..transformer import DiTBlock
from ..weights_io import count_blocks


def residual_outputs(block: nn.Module) -> list[nn.Linear]:
    """The layers that write a block's branches into the residual stream: zero them and the block is an identity."""
    if isinstance(block, DiTBlock):
        return [block.self_attn.o, block.cross_attn.o, block.ffn[-1]]
    if isinstance(block, EncoderBlock):
        return [block.attn.o, block.ffn.fc2]
    raise TypeError(f"no residual outputs known for {type(block).__name__}")


@torch.no_grad()
def load_grown(model: nn.Module, state: dict[str, torch.Tensor], name: str) -> int:
    """Load `state`, saved from a model like `model` with as many blocks or fewer, into `model.blocks`' first
    blocks and everything else; the blocks beyond become identities. Returns how many were added.

    `name` says which model it is in errors (e.g. "DiT"): a source deeper than `model`, or any other
    difference of names or shapes, is refused rather than loaded in part."""
    blocks: nn.ModuleList = model.blocks
    have, want = count_blocks(state), len(blocks)
    if have > want:
        raise ValueError(f"the {name} to start from has {have} layers, more than the {want} asked for")
    own = model.state_dict()
    added = {key for key in own if key.startswith("blocks.") and int(key.split(".")[1]) >= have}
    missing = set(own) - added - set(state)
    unknown = set(state) - set(own)
    if missing or unknown:
        raise ValueError(f"the {name} to start from differs in its parameters: missing {sorted(missing)[:4]}, "
                         f"unexpected {sorted(unknown)[:4]}")
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise ValueError(f"the {name} to start from has {key} of shape {tuple(value.shape)}, "
                             f"not {tuple(own[key].shape)}: its width differs")
    model.load_state_dict(state, strict=False)
    for block in blocks[have:]:
        for layer in residual_outputs(block):
            layer.weight.zero_()
            if layer.bias is not None:
                layer.bias.zero_()
    return want - have
