"""The causal Wan2.1 DiT: streaming with a KV cache, or whole-sequence with a block-causal mask.

Parameter names follow the original Wan2.1 layout, so official weights load without renaming.
Latents are [B, C, F, H, W]; timesteps are per latent frame [B, F].
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attend, kernel_scope, resolve_backend
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


class _Projections(nn.Module):
    """q/k/v/o projections with optional RMS-normed q and k, shared by both attention kinds."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.q = nn.Linear(cfg.dim, cfg.dim)
        self.k = nn.Linear(cfg.dim, cfg.dim)
        self.v = nn.Linear(cfg.dim, cfg.dim)
        self.o = nn.Linear(cfg.dim, cfg.dim)
        self.norm_q = RMSNorm(cfg.dim, cfg.eps) if cfg.qk_norm else nn.Identity()
        self.norm_k = RMSNorm(cfg.dim, cfg.eps) if cfg.qk_norm else nn.Identity()

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, D] -> [B, heads, L, head_dim]."""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def output(self, attended: torch.Tensor) -> torch.Tensor:
        """[B, heads, L, head_dim] -> projected [B, L, D]."""
        return self.o(attended.transpose(1, 2).flatten(2))


class SelfAttention(_Projections):
    """Self-attention projections with 3D RoPE; the attention itself runs in `DiTBlock` (KV cache)."""

    def qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Rotated q and k, v, and k before rotation (kept for sink frames that get new positions)."""
        q = apply_rope(self.heads(self.norm_q(self.q(x))), cos, sin)
        raw_k = self.heads(self.norm_k(self.k(x)))
        return q, apply_rope(raw_k, cos, sin), self.heads(self.v(x)), raw_k


class CrossAttention(_Projections):
    """Attention from video tokens to the (padded) text context; K/V are cached per prompt."""

    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [B, heads, text_len, d] of an embedded text context."""
        return self.heads(self.norm_k(self.k(context))), self.heads(self.v(context))

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], backend: str) -> torch.Tensor:
        q = self.heads(self.norm_q(self.q(x)))
        return self.output(attend(q, kv[0], kv[1], None, backend))


class ForwardContext:
    """What every block of one forward call shares: rotations, mask, cache and frame layout."""

    def __init__(self, cos, sin, mask, cache, start_frame, backend):
        self.cos, self.sin, self.mask = cos, sin, mask
        self.cache: KVCache | None = cache
        self.start_frame, self.backend = start_frame, backend


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Per-frame adaptive norm: x [B, F*T, D], shift/scale [B, F, 1, D]."""
    return (x.unflatten(1, (shift.shape[1], -1)) * (1 + scale) + shift).flatten(1, 2)


def _gate(y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    return (y.unflatten(1, (gate.shape[1], -1)) * gate).flatten(1, 2)


class DiTBlock(nn.Module):
    """Self-attention, cross-attention and FFN with Wan's 6-way per-frame modulation.

    The work around the self-attention (`_attention_inputs`, `_finish`) has fixed shapes within a
    video, so `compile_parts()` compiles just those; the cache write and the attention over a growing
    cache stay eager.
    """

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
        self._compiled: tuple | None = None

    def compile_parts(self, **options) -> None:
        """Compile the fixed-shape parts of the block with torch.compile.

        The plain functions are compiled, not this block's bound methods, so a deep copy of a compiled
        model (an EMA, an export) computes with its own weights.
        """
        self._compiled = (torch.compile(DiTBlock._attention_inputs, **options),
                          torch.compile(DiTBlock._finish, **options))

    def _attention_inputs(self, x, mod, cos, sin):
        shift, scale = mod[:, :, 0:1], mod[:, :, 1:2]
        return self.self_attn.qkv(_modulate(self.norm1(x), shift, scale), cos, sin)

    def _finish(self, x, attended, mod, text_k, text_v, backend: str):
        x = x + _gate(self.self_attn.output(attended), mod[:, :, 2:3])
        x = x + self.cross_attn(self.norm3(x), (text_k, text_v), backend)
        y = self.ffn(_modulate(self.norm2(x), mod[:, :, 3:4], mod[:, :, 4:5]))
        return x + _gate(y, mod[:, :, 5:6])

    def forward(
        self,
        x: torch.Tensor,
        e: torch.Tensor,
        text_kv: tuple[torch.Tensor, torch.Tensor],
        ctx: ForwardContext,
        layer: int,
    ) -> torch.Tensor:
        inputs_fn, finish_fn = self._compiled or (DiTBlock._attention_inputs, DiTBlock._finish)
        mod = self.modulation.unsqueeze(1) + e
        q, k, v, raw_k = inputs_fn(self, x, mod, ctx.cos, ctx.sin)
        if ctx.cache is not None:
            k, v = ctx.cache.write(layer, ctx.start_frame, k, v, raw_k)
        attended = attend(q, k, v, ctx.mask, ctx.backend)
        return finish_fn(self, x, attended, mod, text_kv[0], text_kv[1], ctx.backend)


class Head(nn.Module):
    """Final modulated norm and projection back to patch pixels."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.norm = LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, math.prod(cfg.patch_size) * cfg.out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.modulation.unsqueeze(1) + e).chunk(2, dim=2)
        return self.head(_modulate(self.norm(x), shift, scale))


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

    def compile_blocks(self, **options) -> "CausalWanModel":
        """torch.compile the fixed-shape work of every block (a GPU speed option; outputs unchanged)."""
        for block in self.blocks:
            block.compile_parts(**options)
        return self

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
        rebase_sink: bool = False,
    ) -> KVCache:
        """A KV cache sized for this model, latent size and attention window."""
        cfg = self.config
        return KVCache(
            cfg.num_layers, batch_size, cfg.num_heads, cfg.head_dim,
            self.frame_tokens(latent_height, latent_width), max_frames, local_window, sink_frames,
            self.dtype, self.device, rebase_sink,
        )

    def _rebase_sink(self, cache: KVCache, end_frame: int, h: int, w: int) -> None:
        """Rotate the sink's raw keys to sit just before the window (see `KVCache.sink_target`)."""
        target = cache.sink_target(end_frame)
        if target is None:
            return
        sink = cache.layout.sink_frames
        positions = torch.arange(target, target + sink, device=self.device)
        cos, sin = rope_cos_sin(positions, h, w, self.config.head_dim, _work_dtype(self.dtype))
        for layer in range(self.config.num_layers):
            cache.install_sink(layer, apply_rope(cache.sink_raw_keys[layer], cos, sin))
        cache.sink_position = target

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
        `context` if the cache has none yet); `attn_mask` may then hide cached frames (a key mask over
        the cache's visible slots, e.g. `KVCache.hide_frames_from`). Without a cache, x is the whole
        sequence and `attn_mask` (e.g. `block_causal_mask`) decides who sees whom (None = bidirectional).
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
            self._rebase_sink(cache, start_frame + frames, h, w)
        else:
            if context is None:
                raise ValueError("`context` (text embeddings) is required without a KV cache")
            text = self.embed_text(context)

        cos, sin = self._rope_tables(start_frame, frames, h, w)
        backend = resolve_backend(self.attention_backend, x.device, self.dtype)
        ctx = ForwardContext(cos, sin, attn_mask, cache, start_frame, backend)
        with kernel_scope(backend):
            for layer, block in enumerate(self.blocks):
                text_kv = cache.prompt_kv(layer) if cache is not None else block.cross_attn.context_kv(text)
                tokens = block(tokens, e6, text_kv, ctx, layer)

        out = self.head(tokens, e.unflatten(0, (batch, frames)).unsqueeze(2))
        return self._unpatchify(out, frames, h, w)

    def _unpatchify(self, x: torch.Tensor, frames: int, h: int, w: int) -> torch.Tensor:
        pt, ph, pw = self.config.patch_size
        c = self.config.out_dim
        x = x.view(x.shape[0], frames, h, w, pt, ph, pw, c)
        x = torch.einsum("bfhwpqrc->bcfphqwr", x)
        return x.reshape(x.shape[0], c, frames * pt, h * ph, w * pw)
