"""The bidirectional teacher: the Wan DiT and the small umT5 text encoder, trained together.

Flow matching: x_t = (1 - sigma) x0 + sigma * noise with sigma drawn from the shifted
distribution, the DiT predicts the flow (noise - x0) at timestep 1000 * sigma for every frame, and
a fraction of captions is replaced by the empty caption so that one model serves guided sampling.
"""
from __future__ import annotations

import copy
import json
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import save_transformer
from ..config import WanConfig
from ..text_encoder import UMT5Config, UMT5Encoder
from ..transformer import CausalWanModel
from .caption_binding import BindingHeads, binding_loss, binding_targets
from .data import LatentBank
from .sampling import shifted_sigma


class Teacher(nn.Module):
    """DiT + text encoder as one module (one optimizer, one DDP wrapper, one EMA); with `binding`, also the
    training-only heads of the caption-binding loss (`caption_binding`), which are never exported."""

    def __init__(self, dit_config: WanConfig, text_config: UMT5Config, attention_backend: str = "sdpa",
                 binding: bool = False):
        super().__init__()
        self.dit = CausalWanModel(dit_config, attention_backend=attention_backend)
        self.text = UMT5Encoder(text_config)
        self.binding = BindingHeads(text_config.dim) if binding else None

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Caption embeddings [B, text_len, text_dim], zero past each caption."""
        return self.text(ids, mask)

    def forward(self, latents: torch.Tensor, t: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                binding_at: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Flow prediction for noisy latents [B, C, F, h, w] at per-frame timesteps t [B, F] (bidirectional);
        given the objects' shape-word positions `binding_at` [B, objects], also the binding heads' logits (one
        forward, so that a compiled teacher compiles both)."""
        text = self.encode_text(ids, mask)
        prediction = self.dit(latents, t, text)
        if binding_at is None:
            return prediction
        if self.binding is None:
            raise ValueError("this teacher was built without binding heads")
        return prediction, self.binding(text, binding_at)


BINDING_PREFIX = "binding."  # the training-only heads' parameters in a teacher's state


def save_binding_heads(teacher: Teacher, path: str) -> None:
    """Save the caption-binding heads beside the exported teacher, so that `--init` continues them too."""
    from safetensors.torch import save_file

    save_file({k: v.detach().float().contiguous().cpu() for k, v in teacher.binding.state_dict().items()}, path)


def load_binding_heads(teacher: Teacher, path: str) -> None:
    """Load heads saved by `save_binding_heads` into a teacher built with binding heads."""
    from safetensors.torch import load_file

    teacher.binding.load_state_dict(load_file(path))


class BindingBatch(NamedTuple):
    """The caption-binding targets of one batch (`caption_binding.binding_targets`) and the loss's weight."""

    positions: torch.Tensor
    labels: torch.Tensor
    weight: float


@torch.no_grad()
def init_teacher(teacher: Teacher, seed: int = 0) -> None:
    """Wan's initialisation: Xavier-uniform linear layers with zero biases, small embeddings, zero output head."""
    generator = torch.Generator().manual_seed(seed)
    for module in teacher.modules():
        if isinstance(module, (nn.Linear, nn.Conv3d)):
            weight = module.weight.flatten(1)
            bound = (6.0 / (weight.shape[0] + weight.shape[1])) ** 0.5
            module.weight.copy_((torch.rand(module.weight.shape, generator=generator) * 2 - 1) * bound)
            if module.bias is not None:
                module.bias.zero_()
    for embedding in (teacher.dit.text_embedding, teacher.dit.time_embedding):
        for layer in embedding:
            if isinstance(layer, nn.Linear):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.02)
    teacher.dit.head.head.weight.zero_()


def build_teacher(
    dit_config: WanConfig, text_config: UMT5Config, seed: int = 0, attention_backend: str = "sdpa",
    binding: bool = False,
) -> Teacher:
    """A freshly initialised teacher, the same for the same seed (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        teacher = Teacher(dit_config, text_config, attention_backend, binding)
    init_teacher(teacher, seed)
    return teacher


def flow_matching_loss(
    teacher: nn.Module,
    latents: torch.Tensor,
    ids: torch.Tensor,
    mask: torch.Tensor,
    empty_ids: torch.Tensor,
    empty_mask: torch.Tensor,
    generator: torch.Generator,
    shift: float,
    text_dropout: float,
    binding: BindingBatch | None = None,
) -> torch.Tensor:
    """MSE between the predicted and true flow on one batch, captions dropped with `text_dropout`; plus the
    weighted caption-binding loss on the captions kept, when `binding` is given."""
    batch, frames, device = latents.shape[0], latents.shape[2], latents.device
    sigma = shifted_sigma(torch.rand(batch, generator=generator, device=device), shift)
    noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
    drop = torch.rand(batch, generator=generator, device=device) < text_dropout
    ids = torch.where(drop[:, None], empty_ids.to(device), ids)
    mask = torch.where(drop[:, None], empty_mask.to(device), mask)
    s = sigma.view(batch, 1, 1, 1, 1).to(latents.dtype)
    noisy = (1.0 - s) * latents + s * noise
    t = (sigma * 1000.0)[:, None].expand(batch, frames)
    target = (noise - latents).float()
    if binding is None:
        return F.mse_loss(teacher(noisy, t, ids, mask).float(), target)
    prediction, logits = teacher(noisy, t, ids, mask, binding.positions)
    return F.mse_loss(prediction.float(), target) + binding.weight * binding_loss(logits, binding.positions,
                                                                                   binding.labels, ~drop)


def bank_flow_loss(
    bank: LatentBank, batch: int, empty_ids: torch.Tensor, empty_mask: torch.Tensor, shift: float,
    text_dropout: float, binding_weight: float = 0.0,
) -> Callable[[nn.Module, torch.Generator, int], torch.Tensor]:
    """The teacher's training loss as `Trainer.step` takes it: flow matching on `batch` clips drawn from `bank`
    by the trainer's generator, plus the caption-binding loss with `binding_weight` > 0 (its targets are
    parsed from the bank's captions once, here)."""
    if binding_weight > 0:
        positions, labels = binding_targets(bank.captions, bank.ids.shape[1])
        unparsed = int((positions < 0).all(dim=1).sum())
        if unparsed:
            raise ValueError(f"the caption-binding loss found no object in {unparsed} of {len(bank)} bank captions: "
                             "it needs the world's captions")
        positions, labels = positions.to(bank.latents.device), labels.to(bank.latents.device)

    def loss_fn(model: nn.Module, generator: torch.Generator, step: int) -> torch.Tensor:
        index = torch.randint(len(bank), (batch,), generator=generator, device=generator.device)
        latents, ids, mask = bank.batch(index)
        binding = None
        if binding_weight > 0:
            at = index.to(positions.device)
            binding = BindingBatch(positions[at], labels[at], binding_weight)
        return flow_matching_loss(model, latents, ids, mask, empty_ids, empty_mask, generator, shift, text_dropout,
                                  binding)

    return loss_fn


@torch.no_grad()
def fixed_draw_loss(
    teacher: nn.Module,
    latents: torch.Tensor,
    ids: torch.Tensor,
    mask: torch.Tensor,
    empty_ids: torch.Tensor,
    empty_mask: torch.Tensor,
    shift: float,
    batch_size: int = 64,
    seed: int = 0,
) -> float:
    """The flow-matching loss over all given clips with captions kept and noise and timesteps drawn from
    `seed`: the same draws for the same clips, so the loss on training clips and on held-out clips can be
    compared (a gap means the teacher memorises its bank rather than learning the world)."""
    generator = torch.Generator(latents.device).manual_seed(seed)
    total = 0.0
    for first in range(0, latents.shape[0], batch_size):
        part = slice(first, first + batch_size)
        loss = flow_matching_loss(teacher, latents[part], ids[part], mask[part], empty_ids, empty_mask, generator,
                                  shift, text_dropout=0.0)
        total += float(loss) * latents[part].shape[0]
    return total / latents.shape[0]


def export_teacher(
    teacher: Teacher, dit_path: str, text_path: str, metadata: dict[str, str], dtype: torch.dtype = torch.float16
) -> None:
    """Save the DiT (config + `metadata`, e.g. resolution and shift, loadable by `load_transformer`) and
    the text encoder (original umT5 layout, loadable by `load_text_encoder` with the byte tokenizer)."""
    from safetensors.torch import save_file

    save_transformer(copy.deepcopy(teacher.dit).to(dtype), dit_path, extra_metadata=metadata)
    text = teacher.text
    metadata = {"config": json.dumps(text.config.to_dict()), "tokenizer": "byte",
                "text_len": str(teacher.dit.config.text_len)}
    save_file({k: v.detach().to(dtype).contiguous().cpu() for k, v in text.state_dict().items()}, text_path,
              metadata=metadata)
