"""The causal Wan2.1 DiT: streaming with a KV cache, or whole-sequence with a block-causal mask.

Parameter names follow the original Wan2.1 layout, so official weights load without renaming.
Latents are [B, C, F, H, W]; timesteps are per latent frame [B, F].
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attend, resolve_backend
from .config import WanConfig
from .kv_cache import KVCache
from .rope import apply_rope, rope_cos_sin


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Precision for norms and rotations: at least float32, float64 when the model is float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain, computed in at least float32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(_work_dtype(x.dtype))
        h = h * torch.rsqrt(h.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return h.to(x.dtype) * self.weight


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in at least float32 and returned in the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        work = _work_dtype(x.dtype)
        weight = self.weight.to(work) if self.weight is not None else None
        bias = self.bias.to(work) if self.bias is not None else None
        return F.layer_norm(x.to(work), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


def sinusoidal_embedding(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """[N, dim] cos|sin embedding of (possibly fractional) timesteps, in float64."""
    half = dim // 2
    positions = positions.to(torch.float64)
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=positions.device) / half)
    angles = torch.outer(positions, freqs)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class SelfAttention(nn.Module):
    """Multi-head self-attention with RMS-normed q/k and 3D RoPE; reads/writes the KV cache."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.q = nn.Linear(cfg.dim, cfg.dim)
        self.k = nn.Linear(cfg.dim, cfg.dim)
        self.v = nn.Linear(cfg.dim, cfg.dim)
        self.o = nn.Linear(cfg.dim, cfg.dim)
        self.norm_q = RMSNorm(cfg.dim, cfg.eps) if cfg.qk_norm else nn.Identity()
        self.norm_k = RMSNorm(cfg.dim, cfg.eps) if cfg.qk_norm else nn.Identity()

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, x: torch.Tensor, ctx: "ForwardContext", layer: int) -> torch.Tensor:
        q = apply_rope(self._heads(self.norm_q(self.q(x))), ctx.cos, ctx.sin)
        k = apply_rope(self._heads(self.norm_k(self.k(x))), ctx.cos, ctx.sin)
        v = self._heads(self.v(x))
        if ctx.cache is not None:
            k, v = ctx.cache.write(layer, ctx.start_frame, k, v)
        out = attend(q, k, v, ctx.mask, ctx.backend)
        return self.o(out.transpose(1, 2).flatten(2))


class CrossAttention(nn.Module):
    """Attention from video tokens to the (padded) text context; K/V are cached per prompt."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.q = nn.Linear(cfg.dim, cfg.dim)
        self.k = nn.Linear(cfg.dim, cfg.dim)
        self.v = nn.Linear(cfg.dim, cfg.dim)
        self.o = nn.Linear(cfg.dim, cfg.dim)
        self.norm_q = RMSNorm(cfg.dim, cfg.eps) if cfg.qk_norm else nn.Identity()
        self.norm_k = RMSNorm(cfg.dim, cfg.eps) if cfg.qk_norm else nn.Identity()

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [B, heads, text_len, d] of an embedded text context."""
        return self._heads(self.norm_k(self.k(context))), self._heads(self.v(context))

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], backend: str) -> torch.Tensor:
        q = self._heads(self.norm_q(self.q(x)))
        out = attend(q, kv[0], kv[1], None, backend)
        return self.o(out.transpose(1, 2).flatten(2))


class ForwardContext:
    """What every block of one forward call shares: rotations, mask, cache and frame layout."""

    def __init__(self, cos, sin, mask, cache, start_frame, frames, backend):
        self.cos, self.sin, self.mask = cos, sin, mask
        self.cache: KVCache | None = cache
        self.start_frame, self.frames, self.backend = start_frame, frames, backend


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, frames: int) -> torch.Tensor:
    """Per-frame adaptive norm: x [B, F*T, D], shift/scale [B, F, 1, D]."""
    return (x.unflatten(1, (frames, -1)) * (1 + scale) + shift).flatten(1, 2)


def _gate(y: torch.Tensor, gate: torch.Tensor, frames: int) -> torch.Tensor:
    return (y.unflatten(1, (frames, -1)) * gate).flatten(1, 2)


class DiTBlock(nn.Module):
    """Self-attention, cross-attention and FFN with Wan's 6-way per-frame modulation."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.norm1 = LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(cfg)
        self.norm3 = (
            LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=True) if cfg.cross_attn_norm else nn.Identity()
        )
        self.cross_attn = CrossAttention(cfg)
        self.norm2 = LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, cfg.dim)
        )
        self.modulation = nn.Parameter(torch.randn(1, 6, cfg.dim) / cfg.dim**0.5)

    def forward(
        self,
        x: torch.Tensor,
        e: torch.Tensor,
        text_kv: tuple[torch.Tensor, torch.Tensor],
        ctx: ForwardContext,
        layer: int,
    ) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation.unsqueeze(1) + e).chunk(6, dim=2)
        n = ctx.frames
        y = self.self_attn(_modulate(self.norm1(x), shift1, scale1, n), ctx, layer)
        x = x + _gate(y, gate1, n)
        x = x + self.cross_attn(self.norm3(x), text_kv, ctx.backend)
        y = self.ffn(_modulate(self.norm2(x), shift2, scale2, n))
        return x + _gate(y, gate2, n)


class Head(nn.Module):
    """Final modulated norm and projection back to patch pixels."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.norm = LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, math.prod(cfg.patch_size) * cfg.out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor, frames: int) -> torch.Tensor:
        shift, scale = (self.modulation.unsqueeze(1) + e).chunk(2, dim=2)
        return self.head(_modulate(self.norm(x), shift, scale, frames))


class CausalWanModel(nn.Module):
    """Wan2.1 T2V DiT run causally: chunk by chunk with a KV cache, or all at once with a mask."""

    def __init__(self, config: WanConfig, attention_backend: str = "auto"):
        super().__init__()
        if config.patch_size[0] != 1:
            raise ValueError("only temporal patch size 1 is supported (as in every Wan2.1 model)")
        self.config = config
        self.attention_backend = attention_backend
        cfg = config
        self.patch_embedding = nn.Conv3d(cfg.in_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(
            nn.Linear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.dim, cfg.dim)
        )
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, cfg.dim * 6))
        self.blocks = nn.ModuleList([DiTBlock(cfg) for _ in range(cfg.num_layers)])
        self.head = Head(cfg)
        self._rope_key: tuple | None = None
        self._rope: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.patch_embedding.weight.device

    def frame_tokens(self, height: int, width: int) -> int:
        """Tokens per latent frame of a latent of this height and width."""
        _, ph, pw = self.config.patch_size
        if height % ph or width % pw:
            raise ValueError(f"latent size {height}x{width} is not divisible by the patch size {ph}x{pw}")
        return (height // ph) * (width // pw)

    def new_cache(
        self,
        batch_size: int,
        latent_height: int,
        latent_width: int,
        max_frames: int | None = None,
        local_window: int | None = None,
        sink_frames: int = 0,
    ) -> KVCache:
        """A KV cache sized for this model, latent size and attention window."""
        cfg = self.config
        return KVCache(
            cfg.num_layers, batch_size, cfg.num_heads, cfg.head_dim,
            self.frame_tokens(latent_height, latent_width), max_frames, local_window, sink_frames,
            self.dtype, self.device,
        )

    def embed_text(self, context: torch.Tensor) -> torch.Tensor:
        """Pad text embeddings [B, L, text_dim] with zeros to text_len and project them."""
        length = context.shape[1]
        if length > self.config.text_len:
            raise ValueError(f"text context has {length} tokens; this model takes at most {self.config.text_len}")
        padded = F.pad(context.to(self.dtype), (0, 0, 0, self.config.text_len - length))
        return self.text_embedding(padded)

    def set_prompt(self, cache: KVCache, context: torch.Tensor) -> None:
        """Compute the cross-attention K/V of a prompt once and keep them in the cache."""
        text = self.embed_text(context)
        for layer, block in enumerate(self.blocks):
            cache.set_prompt_kv(layer, *block.cross_attn.context_kv(text))

    def _rope_tables(self, start_frame: int, frames: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (start_frame, frames, h, w, self.device, self.dtype)
        if key != self._rope_key:
            positions = torch.arange(start_frame, start_frame + frames, device=self.device)
            self._rope = rope_cos_sin(positions, h, w, self.config.head_dim, _work_dtype(self.dtype))
            self._rope_key = key
        return self._rope

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
        start_frame: int = 0,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Flow prediction for latents x [B, C, F, H, W] at per-frame timesteps t [B, F].

        With `cache`, x is the chunk starting at `start_frame`: its K/V are written into the cache
        and it attends to everything the cache holds; the prompt comes from the cache (set from
        `context` if the cache has none yet). Without a cache, x is the whole sequence and
        `attn_mask` (e.g. `block_causal_mask`) decides who sees whom (None = bidirectional).
        """
        batch, _, frames, height, width = x.shape
        if t.shape != (batch, frames):
            raise ValueError(f"timesteps must be per frame [B, F] = {[batch, frames]}, got {list(t.shape)}")
        cfg = self.config
        tokens = self.patch_embedding(x.to(self.dtype))
        h, w = tokens.shape[-2:]
        tokens = tokens.flatten(2).transpose(1, 2)

        e = self.time_embedding(sinusoidal_embedding(cfg.freq_dim, t.flatten()).to(self.dtype))
        e6 = self.time_projection(e).unflatten(1, (6, cfg.dim)).unflatten(0, (batch, frames))

        if cache is not None:
            if not cache.has_prompt():
                if context is None:
                    raise ValueError("the KV cache holds no prompt; pass `context`")
                self.set_prompt(cache, context)
            cache.check_write(start_frame, frames)
            text_kv = None
        else:
            if context is None:
                raise ValueError("`context` (text embeddings) is required without a KV cache")
            text = self.embed_text(context)

        cos, sin = self._rope_tables(start_frame, frames, h, w)
        ctx = ForwardContext(cos, sin, attn_mask, cache, start_frame, frames,
                             resolve_backend(self.attention_backend, x.device, self.dtype))
        for layer, block in enumerate(self.blocks):
            text_kv = cache.prompt_kv(layer) if cache is not None else block.cross_attn.context_kv(text)
            tokens = block(tokens, e6, text_kv, ctx, layer)

        out = self.head(tokens, e.unflatten(0, (batch, frames)).unsqueeze(2), frames)
        return self._unpatchify(out, frames, h, w)

    def _unpatchify(self, x: torch.Tensor, frames: int, h: int, w: int) -> torch.Tensor:
        pt, ph, pw = self.config.patch_size
        c = self.config.out_dim
        x = x.view(x.shape[0], frames, h, w, pt, ph, pw, c)
        x = torch.einsum("bfhwpqrc->bcfphqwr", x)
        return x.reshape(x.shape[0], c, frames * pt, h * ph, w * pw)
