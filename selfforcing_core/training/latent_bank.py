"""World clips as VAE latents with their captions and end keyframes: the data of the Training II stages.

Self Forcing itself needs only captions (and a first frame for start-keyframe rollouts); the teacher-
and diffusion-forcing baselines need the clips' latents as context, and end-frame training needs each
clip's last frame encoded as the node pack encodes an end keyframe image (`keyframes.end_keyframe_latent`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..wan_vae import WanVAE
from .data import CaptionTokens, encode_stream
from .world_scene import WorldConfig


@dataclass
class ClipBank:
    """Latents [N, C, F, h, w], end keyframe latents [N, C, 1, h, w], caption ids/mask [N, L], captions."""

    latents: torch.Tensor
    end_latents: torch.Tensor
    ids: torch.Tensor
    mask: torch.Tensor
    captions: list[str]

    def __len__(self) -> int:
        return self.latents.shape[0]

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latents, end keyframe latents, ids and mask of clips `index`, as float32 latents."""
        index = index.to(self.latents.device)
        return (self.latents[index].float(), self.end_latents[index].float(), self.ids[index],
                self.mask[index])

    def save(self, path: str) -> None:
        from safetensors.torch import save_file

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tensors = {"latents": self.latents.half(), "end_latents": self.end_latents.half(), "ids": self.ids,
                   "mask": self.mask}
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, path,
                  metadata={"captions": "\n".join(self.captions)})

    @classmethod
    def load(cls, path: str, device: torch.device | str = "cpu") -> "ClipBank":
        from safetensors import safe_open
        from safetensors.torch import load_file

        tensors = load_file(path, device=str(device))
        with safe_open(path, "pt") as handle:
            captions = handle.metadata()["captions"].split("\n")
        return cls(tensors["latents"], tensors["end_latents"], tensors["ids"], tensors["mask"], captions)


def build_clip_bank(
    vae: WanVAE,
    tokens: CaptionTokens,
    seed: int,
    count: int,
    config: WorldConfig,
    batch_size: int = 64,
    workers: int = 0,
    max_seconds: float | None = None,
) -> ClipBank:
    """Encode clips 0..count-1 of world stream `seed` (stopping early after `max_seconds`)."""
    stream = encode_stream(vae, tokens, seed, count, config, batch_size, torch.float16, workers, max_seconds,
                           end_frames=True)
    return ClipBank(stream.latents, stream.end_latents, stream.ids, stream.mask, stream.captions)
