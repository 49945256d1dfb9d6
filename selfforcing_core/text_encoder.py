"""The umT5 text encoder as Wan uses it, and `TextEncoder`: prompts in, padded embeddings out.

Parameter names follow the original `models_t5_umt5-xxl-enc-bf16.pth` layout, so that file loads
as is. Numerics follow the reference: T5 RMS norm, no 1/sqrt(d) attention scaling, bucketed
relative position bias (one table per layer in umT5, one shared table in T5), gated tanh-GELU FFN.

Half precision: bfloat16 runs as the reference does. float16 would overflow in the FFN and the
residual stream (T5's known fp16 problem), so in float16 those two are computed in float32; the
attention and the returned embeddings stay float16.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .tokenizers import Tokenizer


@dataclass(frozen=True)
class UMT5Config:
    """Shape of a (um)T5 encoder; `shared_pos=False` is umT5 (a position bias table per layer)."""

    vocab: int = 256384
    dim: int = 4096
    dim_attn: int = 4096
    dim_ffn: int = 10240
    num_heads: int = 64
    num_layers: int = 24
    num_buckets: int = 32
    shared_pos: bool = False
    max_dist: int = 128
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.dim_attn % self.num_heads:
            raise ValueError(f"dim_attn {self.dim_attn} is not divisible by num_heads {self.num_heads}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "UMT5Config":
        return cls(**{name: values[name] for name in cls.__dataclass_fields__ if name in values})


UMT5_XXL = UMT5Config()


class RMSNorm(nn.Module):
    """T5's layer norm: scale by the root mean square (no mean removal, no bias).

    The mean square is taken in float32 whatever the input dtype, as the reference does.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inv_rms = torch.rsqrt(x.float().pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * (x * inv_rms).to(self.weight.dtype)


def relative_position_buckets(
    length: int, num_buckets: int, max_dist: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Bidirectional T5 bucket index [length, length] of key position minus query position.

    Half the buckets per direction; of those, half are exact offsets and the rest grow
    logarithmically up to `max_dist`. The log is taken in float32, the same operations as the
    reference, so every offset lands in the bucket the trained model saw.
    """
    offsets = torch.arange(length, device=device)
    rel = offsets[None, :] - offsets[:, None]
    half = num_buckets // 2
    exact = half // 2
    direction = (rel > 0).long() * half
    distance = rel.abs()
    far = distance.clamp(min=exact).float()
    log_bucket = exact + (
        torch.log(far / exact) / math.log(max_dist / exact) * (half - exact)
    ).long()
    log_bucket = log_bucket.clamp(max=half - 1)
    return direction + torch.where(distance < exact, distance, log_bucket)


class RelativePositionBias(nn.Module):
    """A learned bias per (bucket, head), expanded to [1, heads, L, L] for the attention logits."""

    def __init__(self, num_buckets: int, num_heads: int, max_dist: int = 128):
        super().__init__()
        self.num_buckets = num_buckets
        self.max_dist = max_dist
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def forward(self, length: int) -> torch.Tensor:
        buckets = relative_position_buckets(
            length, self.num_buckets, self.max_dist, self.embedding.weight.device
        )
        return self.embedding(buckets).permute(2, 0, 1).unsqueeze(0)


class Attention(nn.Module):
    """Multi-head self-attention without the 1/sqrt(head_dim) scale (T5 folds it into the weights).

    Written out rather than SDPA so that the softmax is in float32 for every dtype, as in the
    reference (float64 runs then match it to round-off); logits are float32 for float16 inputs.
    """

    def __init__(self, dim: int, dim_attn: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim_attn, bias=False)
        self.k = nn.Linear(dim, dim_attn, bias=False)
        self.v = nn.Linear(dim, dim_attn, bias=False)
        self.o = nn.Linear(dim_attn, dim, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, length, _ = x.shape
        q, k, v = (
            proj(x).view(b, length, self.num_heads, -1).transpose(1, 2)
            for proj in (self.q, self.k, self.v)
        )
        logits = torch.matmul(q.to(bias.dtype), k.to(bias.dtype).transpose(-1, -2)) + bias
        weights = torch.softmax(logits.float(), dim=-1).to(v.dtype)
        return self.o(torch.matmul(weights, v).transpose(1, 2).reshape(b, length, -1))


class FeedForward(nn.Module):
    """Gated-GELU FFN: fc2(fc1(x) * gelu_tanh(gate(x))); in float32 when the input is float16."""

    def __init__(self, dim: int, dim_ffn: int):
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(dim, dim_ffn, bias=False), nn.GELU(approximate="tanh"))
        self.fc1 = nn.Linear(dim, dim_ffn, bias=False)
        self.fc2 = nn.Linear(dim_ffn, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float16:
            return self.fc2(self.fc1(x) * self.gate(x))
        x = x.float()
        gate, fc1, fc2 = (layer.weight.float() for layer in (self.gate[0], self.fc1, self.fc2))
        hidden = F.linear(x, fc1) * F.gelu(F.linear(x, gate), approximate="tanh")
        return F.linear(hidden, fc2)


class EncoderBlock(nn.Module):
    """Pre-norm residual block: attention with position bias, then the gated FFN."""

    def __init__(self, config: UMT5Config):
        super().__init__()
        self.norm1 = RMSNorm(config.dim, config.eps)
        self.attn = Attention(config.dim, config.dim_attn, config.num_heads)
        self.norm2 = RMSNorm(config.dim, config.eps)
        self.ffn = FeedForward(config.dim, config.dim_ffn)
        self.pos_embedding = (
            None
            if config.shared_pos
            else RelativePositionBias(config.num_buckets, config.num_heads, config.max_dist)
        )

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, shared_bias: torch.Tensor | None) -> torch.Tensor:
        pos_bias = shared_bias if self.pos_embedding is None else self.pos_embedding(x.shape[1])
        h = self.norm1(x)
        logit_dtype = torch.float32 if h.dtype == torch.float16 else h.dtype
        x = x + self.attn(h, _masked_bias(pos_bias, key_mask, logit_dtype))
        return x + self.ffn(self.norm2(x))


def _masked_bias(pos_bias: torch.Tensor, key_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, heads, L, L] additive bias: the position bias, replaced by the dtype's minimum at padded keys."""
    bias = pos_bias.to(dtype)
    blocked = ~key_mask[:, None, None, :]
    return bias.masked_fill(blocked, torch.finfo(dtype).min)


class UMT5Encoder(nn.Module):
    """The encoder stack: token embedding, blocks, final norm; padded positions come out as zeros."""

    def __init__(self, config: UMT5Config):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab, config.dim)
        self.pos_embedding = (
            RelativePositionBias(config.num_buckets, config.num_heads, config.max_dist)
            if config.shared_pos
            else None
        )
        self.blocks = nn.ModuleList(EncoderBlock(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.dim, config.eps)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """ids [B, L] (and mask [B, L], nonzero = real token) -> hidden states [B, L, dim]."""
        key_mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
        # The check reads the mask back from the device: checked in eager runs, left out of compiled training.
        if not torch.compiler.is_compiling() and not key_mask.any(dim=1).all():
            raise ValueError("every sequence needs at least one real token (the mask has an empty row)")
        x = self.token_embedding(ids)
        if x.dtype == torch.float16:
            x = x.float()
        shared_bias = self.pos_embedding(ids.shape[1]) if self.pos_embedding is not None else None
        for block in self.blocks:
            x = block(x, key_mask, shared_bias)
        x = self.norm(x)
        return x * key_mask[..., None].to(x.dtype)


@dataclass
class TextEmbeddings:
    """Encoder output for a batch: embeddings [B, text_len, dim] (zero past each prompt), mask, lengths."""

    embeddings: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor


class TextEncoder(nn.Module):
    """Prompts -> `TextEmbeddings`: tokenizes (clean, EOS, pad/truncate to text_len) and encodes."""

    def __init__(self, encoder: UMT5Encoder, tokenizer: Tokenizer):
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer

    @property
    def text_len(self) -> int:
        """Tokens per prompt after padding/truncation (512 for Wan)."""
        return self.tokenizer.text_len

    def forward(self, prompts: str | Sequence[str]) -> TextEmbeddings:
        """Tokenize and encode; warns (PromptWarning) on empty or over-long prompts."""
        batch = self.tokenizer([prompts] if isinstance(prompts, str) else list(prompts))
        return self.encode_ids(batch.ids, batch.mask)

    @torch.no_grad()
    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> TextEmbeddings:
        """Encode already tokenized ids [B, L] with their mask [B, L] (1 = real token)."""
        device = self.encoder.token_embedding.weight.device
        ids, mask = ids.to(device), mask.to(device)
        embeddings = self.encoder(ids, mask)
        return TextEmbeddings(embeddings, mask, mask.gt(0).sum(dim=1))
