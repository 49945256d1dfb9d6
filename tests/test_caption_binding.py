"""The caption-binding loss: targets parsed back from world captions, and a loss that teaches the text encoder."""
from __future__ import annotations

import pytest
import torch

from selfforcing_core.training.caption_binding import (ATTRIBUTES, BindingHeads, binding_accuracy, binding_loss,
                                                       binding_targets)
from selfforcing_core.training.data import CaptionTokens
from selfforcing_core.training.model_sizes import PRESETS, WORLD_TEXT_LEN
from selfforcing_core.training.teacher_training import BindingBatch, build_teacher, flow_matching_loss
from selfforcing_core.training.world import sample_scenes
from selfforcing_core.training.world_scene import MOST_OBJECTS, WorldConfig

TOY = PRESETS["toy"]


def test_targets_are_the_scene_parameters():
    scenes = sample_scenes(11, range(400), WorldConfig())
    positions, labels = binding_targets([scene.caption for scene in scenes], WORLD_TEXT_LEN)
    assert positions.shape == (400, MOST_OBJECTS) and labels.shape == (400, MOST_OBJECTS, len(ATTRIBUTES))
    assert {len(scene.objects) for scene in scenes} == {1, 2, 3}
    for scene, where, values in zip(scenes, positions, labels):
        assert (where >= 0).sum() == len(scene.objects)
        for obj, at, row in zip(scene.objects, where, values):
            assert scene.caption[: at + 1].endswith(f"{obj.colour} {obj.shape}")
            expected = [ATTRIBUTES[name].index(getattr(obj, name)) for name in ATTRIBUTES]
            assert row.tolist() == expected


def test_a_caption_cut_by_the_token_limit_keeps_only_whole_shape_words():
    """"a red circle" ends at index 11: it needs 12 tokens plus the EOS."""
    caption = "a red circle moves right and a large blue star bounces on a navy background"
    assert binding_targets([caption], text_len=13)[0].tolist() == [[11, -1, -1]]
    assert binding_targets([caption], text_len=12)[0].tolist() == [[-1, -1, -1]]
    assert binding_targets([caption], text_len=256)[0].tolist() == [[11, 45, -1]]


def test_captions_it_cannot_read_are_refused():
    with pytest.raises(ValueError, match="non-ASCII"):
        binding_targets(["a red circle moves right on a café background"], 256)


def test_the_loss_counts_only_present_objects_of_kept_captions():
    positions = torch.tensor([[3, -1, -1], [5, 7, -1]])
    labels = torch.zeros(2, MOST_OBJECTS, len(ATTRIBUTES), dtype=torch.long)
    logits = {name: torch.zeros(2, MOST_OBJECTS, len(values)) for name, values in ATTRIBUTES.items()}
    for name in ATTRIBUTES:
        logits[name][1, :2, 0] = 50.0  # caption 1 is certain and right
        logits[name][0, 1:, 0] = -50.0  # absent objects are wrong, and must not count
    keep = torch.tensor([True, True])
    uniform = torch.tensor([float(torch.log(torch.tensor(float(len(v))))) for v in ATTRIBUTES.values()]).mean()
    torch.testing.assert_close(binding_loss(logits, positions, labels, keep), uniform / 3)
    assert binding_loss(logits, positions, labels, torch.tensor([False, True])) < 1e-6


def test_training_on_it_makes_the_text_encoder_bind():
    """A toy text encoder and heads trained on the loss alone come to read each object's colour at its shape
    word (on the captions they trained on: a toy this small does not generalise in 20 steps; the world-size
    measure on held-out captions is `benchmarks/probe_text_binding.py`)."""
    scenes = sample_scenes(12, range(64), WorldConfig())
    tokens = CaptionTokens(WORLD_TEXT_LEN)
    ids, mask = tokens([scene.caption for scene in scenes])
    positions, labels = binding_targets([scene.caption for scene in scenes], WORLD_TEXT_LEN)
    teacher = build_teacher(TOY.dit, TOY.text, seed=0, binding=True)
    optimizer = torch.optim.Adam([*teacher.text.parameters(), *teacher.binding.parameters()], lr=5e-3)
    keep = torch.ones(len(scenes), dtype=torch.bool)
    captions = [scene.caption for scene in scenes]
    before = binding_accuracy(teacher.encode_text, teacher.binding, ids, mask, captions)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = binding_loss(teacher.binding(teacher.encode_text(ids, mask), positions), positions, labels, keep)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
    after = binding_accuracy(teacher.encode_text, teacher.binding, ids, mask, captions)
    assert after["binding_accuracy/colour"] > before["binding_accuracy/colour"] + 0.2, (before, after)


def test_the_flow_loss_adds_the_weighted_binding_loss():
    teacher = build_teacher(TOY.dit, TOY.text, seed=0, binding=True)
    torch.nn.init.normal_(teacher.dit.head.head.weight, std=0.1)
    scenes = sample_scenes(13, range(2), WorldConfig())
    tokens = CaptionTokens(WORLD_TEXT_LEN)
    ids, mask = tokens([scene.caption for scene in scenes])
    positions, labels = binding_targets([scene.caption for scene in scenes], WORLD_TEXT_LEN)
    latents = torch.randn(2, TOY.dit.in_dim, 2, 4, 4, generator=torch.Generator().manual_seed(0))

    def loss(weight: float | None) -> torch.Tensor:
        binding = None if weight is None else BindingBatch(positions, labels, weight)
        return flow_matching_loss(teacher, latents, ids, mask, tokens.empty_ids, tokens.empty_mask,
                                  torch.Generator().manual_seed(1), 3.0, 0.0, binding)

    with torch.no_grad():
        flow, with_zero, with_one = loss(None), loss(0.0), loss(1.0)
        heads = binding_loss(teacher(latents, torch.zeros(2, 2), ids, mask, positions)[1], positions, labels,
                             torch.ones(2, dtype=torch.bool))
    torch.testing.assert_close(with_zero, flow)
    torch.testing.assert_close(with_one, flow + heads)
    assert heads > 0.5


def test_heads_read_the_shape_word():
    heads = BindingHeads(4)
    text = torch.zeros(1, 10, 4)
    text[0, 6] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    out = heads(text, torch.tensor([[6, -1, -1]]))
    torch.testing.assert_close(out["colour"][0, 0], heads.heads["colour"](text[0, 6]))
    torch.testing.assert_close(out["colour"][0, 1], heads.heads["colour"](text[0, 0]))
