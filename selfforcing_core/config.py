"""Model configurations: the Wan2.1 T2V presets and the causal (chunk-wise / frame-wise) settings."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class WanConfig:
    """Shape of a Wan2.1 text-to-video DiT; every size-dependent number lives here."""

    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    in_dim: int = 16
    out_dim: int = 16
    text_dim: int = 4096
    text_len: int = 512
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    qk_norm: bool = True
    cross_attn_norm: bool = True
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for rotary embeddings")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "WanConfig":
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        if "patch_size" in known:
            known["patch_size"] = tuple(known["patch_size"])
        return cls(**known)


WAN_1_3B = WanConfig()
WAN_14B = WanConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)
PRESETS: dict[str, WanConfig] = {"wan2.1-t2v-1.3b": WAN_1_3B, "wan2.1-t2v-14b": WAN_14B}


@dataclass(frozen=True)
class CausalSettings:
    """How a causal checkpoint generates: frames per chunk, attention window and sink, step list.

    `local_window` and `sink_frames` are in latent frames; `local_window=None` means global
    attention over everything generated so far. `rebase_sink` keeps the sink just before the window
    (a trained distance) on long videos; the reference keeps it at its first positions.
    `recache_on_prompt_change` re-encodes the cached frames under a new prompt (smooth switch).
    `global_cache_frames` bounds global attention: the reference's cache holds the 21 latent frames
    the models were trained on and stops there; this one rolls like a window past them (None: unbounded).
    """

    chunk_frames: int = 3
    local_window: int | None = None
    sink_frames: int = 0
    denoising_steps: tuple[int, ...] = (1000, 750, 500, 250)
    timestep_shift: float = 5.0
    warp_steps: bool = True
    context_noise: int = 0
    rebase_sink: bool = False
    recache_on_prompt_change: bool = True
    global_cache_frames: int | None = None

    def __post_init__(self) -> None:
        if self.chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {self.chunk_frames}")
        if self.local_window is not None and self.local_window < self.chunk_frames:
            raise ValueError(
                f"local_window ({self.local_window} latent frames) must hold at least one chunk "
                f"({self.chunk_frames} frames)"
            )
        if self.sink_frames < 0:
            raise ValueError(f"sink_frames must be >= 0, got {self.sink_frames}")
        if self.global_cache_frames is not None and self.global_cache_frames < self.chunk_frames:
            raise ValueError(f"global_cache_frames ({self.global_cache_frames}) must hold at least one chunk "
                             f"({self.chunk_frames} frames)")

    def attention_window(self, total_frames: int) -> int | None:
        """The window a video of `total_frames` latent frames attends over (None: everything before)."""
        if self.local_window is not None:
            return self.local_window
        if self.global_cache_frames is not None and total_frames > self.global_cache_frames:
            return self.global_cache_frames
        return None

    def with_(self, **changes: Any) -> "CausalSettings":
        return replace(self, **changes)


CHUNK_WISE = CausalSettings(chunk_frames=3)
FRAME_WISE = CausalSettings(chunk_frames=1)
