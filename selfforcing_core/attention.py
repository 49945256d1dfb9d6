"""Attention kernels chosen at run time, and the block-causal masks of whole-sequence mode."""
from __future__ import annotations

from typing import Sequence

import contextlib

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = ("auto", "sdpa", "cudnn", "flash_attn", "math")
_HALF = (torch.float16, torch.bfloat16)
# cuDNN's fused attention is the fastest SDPA kernel on Hopper; PyTorch falls back in this order.
_CUDNN_FIRST = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                SDPBackend.MATH]


def _flash_attn_func():
    """FlashAttention's kernel when the package is importable (optional: never a requirement)."""
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        return None
    return flash_attn_func


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """The kernel to use for `backend` on this device and dtype ('auto' picks the fastest there)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    usable_flash = device.type == "cuda" and dtype in _HALF and _flash_attn_func() is not None
    if backend == "flash_attn" and not usable_flash:
        raise ValueError(
            "attention backend 'flash_attn' needs the flash-attn package, a CUDA device and "
            "fp16/bf16 weights; use 'auto' or 'sdpa'"
        )
    if backend == "auto":
        return "flash_attn" if usable_flash else "sdpa"
    if backend == "cudnn" and not (device.type == "cuda" and dtype in _HALF):
        return "sdpa"
    return backend


def kernel_scope(backend: str) -> contextlib.AbstractContextManager:
    """Context in which SDPA calls use the kernel order of `backend` (entered once per model call)."""
    if backend == "cudnn":
        return sdpa_kernel(_CUDNN_FIRST, set_priority=True)
    return contextlib.nullcontext()


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    backend: str = "sdpa",
) -> torch.Tensor:
    """Softmax attention over [B, heads, L, head_dim] tensors; `mask` is boolean (True = may attend)."""
    if backend == "flash_attn" and mask is None:
        out = _flash_attn_func()(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)
    if backend == "math":
        scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=-1) @ v
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def visible_frames(
    chunk_end: int, total_frames: int, local_window: int | None, sink_frames: int
) -> torch.Tensor:
    """Boolean [total_frames]: which frames a chunk ending at `chunk_end` may attend to.

    Everything before the chunk's end, limited to the last `local_window` frames plus the first
    `sink_frames` frames when a window is set. The KV cache keeps exactly this set.
    """
    frames = torch.arange(total_frames)
    seen = frames < chunk_end
    if local_window is not None:
        seen &= (frames >= chunk_end - local_window) | (frames < sink_frames)
    return seen


def block_causal_mask(
    chunk_sizes: Sequence[int],
    frame_tokens: int,
    local_window: int | None = None,
    sink_frames: int = 0,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Token mask [L, L] for whole-sequence mode: each chunk sees itself and what came before it."""
    total = sum(chunk_sizes)
    rows = []
    end = 0
    for size in chunk_sizes:
        end += size
        rows.append(visible_frames(end, total, local_window, sink_frames).expand(size, total))
    frame_mask = torch.cat(rows, dim=0)
    return frame_mask.repeat_interleave(frame_tokens, 0).repeat_interleave(frame_tokens, 1).to(device)
