"""Teacher training: the flow-matching loss falls, caption dropout, the Euler sampler, the export."""
from __future__ import annotations

import copy

import torch
from torch import nn

from selfforcing_core.checkpoint import load_transformer
from selfforcing_core.text_encoder_loading import load_text_encoder
from selfforcing_core.training.data import CaptionTokens
from selfforcing_core.training.model_sizes import TOY
from selfforcing_core.training.sampling import euler_sigmas, sample_flow, shifted_sigma
from selfforcing_core.training.teacher_training import export_teacher, fixed_draw_loss, flow_matching_loss
from training_helpers import toy_teacher

CAPTIONS = ["a red circle moves right on a gray background", "a small blue star bounces on a black background"]


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, CaptionTokens]:
    tokens = CaptionTokens(TOY.text_len)
    ids, mask = tokens(CAPTIONS)
    latents = torch.randn(2, 16, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    return latents, ids, mask, tokens


def _loss(teacher: nn.Module, seed: int, dropout: float, ids=None) -> torch.Tensor:
    latents, batch_ids, mask, tokens = _batch()
    return flow_matching_loss(teacher, latents, batch_ids if ids is None else ids, mask, tokens.empty_ids,
                              tokens.empty_mask, torch.Generator().manual_seed(seed), shift=3.0, text_dropout=dropout)


def test_a_few_teacher_steps_lower_the_loss_and_train_the_text_encoder():
    teacher = toy_teacher()
    optimizer = torch.optim.Adam(teacher.parameters(), lr=5e-3)
    losses = []
    for _ in range(12):
        loss = _loss(teacher, seed=0, dropout=0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]
    assert teacher.text.token_embedding.weight.grad.abs().sum() > 0


def test_caption_dropout_replaces_the_caption_by_the_empty_one():
    teacher = toy_teacher()
    _, ids, _, _ = _batch()
    other = ids.roll(1, dims=0)
    assert torch.equal(_loss(teacher, 1, dropout=1.0), _loss(teacher, 1, dropout=1.0, ids=other))
    assert not torch.equal(_loss(teacher, 1, dropout=0.0), _loss(teacher, 1, dropout=0.0, ids=other))


class _ExactFlow(nn.Module):
    """A stand-in DiT that knows the answer x0: its flow (x_t - x0) / sigma points straight at it."""

    dtype = torch.float32

    def __init__(self, x0: torch.Tensor):
        super().__init__()
        self.x0 = x0

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        sigma = (t[:, None, :, None, None] / 1000.0).to(x.dtype)
        return (x - self.x0.repeat(2, 1, 1, 1, 1)) / sigma


def test_euler_sampler_reaches_the_target_of_an_exact_flow():
    sigmas = euler_sigmas(30, 3.0)
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0 and bool((sigmas.diff() < 0).all())
    assert float(shifted_sigma(torch.tensor(0.5), 3.0)) == 0.75
    x0 = torch.randn(2, 16, 3, 4, 4)
    context = torch.randn(2, 8, 32)
    out = sample_flow(_ExactFlow(x0), context, torch.zeros(1, 8, 32), torch.randn_like(x0), steps=5, guidance=4.0)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-5)


def test_exported_teacher_loads_with_the_core_loaders(tmp_path):
    teacher = toy_teacher().eval()
    dit_path, text_path = str(tmp_path / "dit.safetensors"), str(tmp_path / "text.safetensors")
    export_teacher(teacher, dit_path, text_path, {"resolution": "32x32"}, dtype=torch.float32)
    loaded = load_transformer(dit_path, dtype=torch.float32, attention_backend="math")
    text = load_text_encoder(text_path, dtype=torch.float32, text_len=loaded.config.text_len)
    assert loaded.config == teacher.dit.config and loaded.metadata["resolution"] == "32x32"
    embeddings = text(CAPTIONS).embeddings
    latents, ids, mask, _ = _batch()
    with torch.no_grad():
        torch.testing.assert_close(embeddings, teacher.encode_text(ids, mask), rtol=0, atol=1e-6)
        t = torch.full((2, 3), 400.0)
        torch.testing.assert_close(loaded.model(latents, t, embeddings), teacher(latents, t, ids, mask),
                                   rtol=0, atol=1e-5)


def test_build_teacher_is_deterministic_per_seed():
    a, b, c = toy_teacher(3), toy_teacher(3), toy_teacher(4)
    for (name, x), y, z in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(x, y), name
    assert any(not torch.equal(x, z) for x, z in zip(a.state_dict().values(), c.state_dict().values()))
    assert bool(a.dit.head.head.weight.detach().abs().sum() > 0)


def test_a_copy_of_the_compiled_teacher_computes_with_its_own_weights():
    """`train teacher --compile` compiles the whole teacher; the EMA copy that is exported and evaluated must
    run its own (averaged) weights, not the live ones of the module it was copied from."""
    teacher = toy_teacher()
    eager_loss = _loss(teacher, seed=2, dropout=0.0)
    teacher.compile(backend="eager")
    torch.testing.assert_close(_loss(teacher, seed=2, dropout=0.0), eager_loss, rtol=0, atol=0)
    copy_of = copy.deepcopy(teacher)
    with torch.no_grad():
        for parameter in copy_of.dit.head.parameters():
            parameter.add_(0.1)
    assert not torch.equal(_loss(copy_of, seed=2, dropout=0.0), eager_loss)
    torch.testing.assert_close(_loss(teacher, seed=2, dropout=0.0), eager_loss, rtol=0, atol=0)


def test_fixed_draw_loss_repeats_and_keeps_every_caption():
    teacher = toy_teacher()
    latents, ids, mask, tokens = _batch()
    latents, ids, mask = torch.cat([latents, latents[:1] * 0.5]), torch.cat([ids, ids[:1]]), torch.cat([mask, mask[:1]])
    args = (teacher, latents, ids, mask, tokens.empty_ids, tokens.empty_mask, 3.0)
    value = fixed_draw_loss(*args, batch_size=2, seed=4)
    assert value == fixed_draw_loss(*args, batch_size=2, seed=4)
    assert value != fixed_draw_loss(*args, batch_size=2, seed=5)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        parts = [flow_matching_loss(teacher, latents[part], ids[part], mask[part], tokens.empty_ids,
                                    tokens.empty_mask, generator, shift=3.0, text_dropout=0.0)
                 for part in (slice(0, 2), slice(2, 3))]
    assert abs(value - (2 * float(parts[0]) + float(parts[1])) / 3) < 1e-6
