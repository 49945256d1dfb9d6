"""Sizes of the project's own world models (VAE, text encoder, teacher DiT), and a toy preset for tests.

The world preset is the shipped default: Wan2.1 architectures at reduced width, chosen so that on a
2-core CPU at 128x128 one 3-latent-frame chunk (4 DiT steps + 1 cache pass, then the VAE decode of
its 12 frames) stays under 0.75 s (16 fps), and the three fp16 files stay under 25 MB together.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..config import WanConfig
from ..text_encoder import UMT5Config
from ..tokenizers import ByteTokenizer
from ..wan_vae import WanVAEConfig

# Byte tokens: the longest world caption is about 205 bytes (three objects, gradient, pan) + EOS.
WORLD_TEXT_LEN = 256
_UNIT_STATS = {"latent_mean": (0.0,) * 16, "latent_std": (1.0,) * 16}


@dataclass(frozen=True)
class ModelSizes:
    """The three model shapes that work together: text encoder width = DiT text_dim."""

    vae: WanVAEConfig
    text: UMT5Config
    dit: WanConfig

    def __post_init__(self) -> None:
        if self.text.dim != self.dit.text_dim:
            raise ValueError(f"text encoder dim {self.text.dim} != DiT text_dim {self.dit.text_dim}")
        if self.vae.z_dim != self.dit.in_dim:
            raise ValueError(f"VAE z_dim {self.vae.z_dim} != DiT in_dim {self.dit.in_dim}")

    @property
    def text_len(self) -> int:
        return self.dit.text_len

    def with_layers(self, text: int | None = None, dit: int | None = None) -> "ModelSizes":
        """The same widths with other depths (None keeps the preset's): how a teacher grows deeper."""
        for name, layers in (("text encoder", text), ("DiT", dit)):
            if layers is not None and layers < 1:
                raise ValueError(f"{name} layers must be at least 1, not {layers}")
        return replace(self, text=replace(self.text, num_layers=text or self.text.num_layers),
                       dit=replace(self.dit, num_layers=dit or self.dit.num_layers))


WORLD = ModelSizes(
    vae=WanVAEConfig(dim=16, num_res_blocks=1, **_UNIT_STATS),
    text=UMT5Config(vocab=ByteTokenizer.VOCAB_SIZE, dim=128, dim_attn=128, dim_ffn=384, num_heads=4, num_layers=3),
    dit=WanConfig(dim=256, ffn_dim=1024, num_heads=8, num_layers=6, text_dim=128, text_len=WORLD_TEXT_LEN,
                  freq_dim=256),
)
TOY = ModelSizes(
    vae=WanVAEConfig(dim=4, num_res_blocks=1, **_UNIT_STATS),
    text=UMT5Config(vocab=ByteTokenizer.VOCAB_SIZE, dim=32, dim_attn=32, dim_ffn=64, num_heads=2, num_layers=1),
    dit=WanConfig(dim=32, ffn_dim=64, num_heads=2, num_layers=1, text_dim=32, text_len=WORLD_TEXT_LEN, freq_dim=32),
)
PRESETS: dict[str, ModelSizes] = {"world": WORLD, "toy": TOY}
