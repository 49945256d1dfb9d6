"""fp8 (e4m3) linear layers for Hopper-class GPUs: half the weight memory, faster matmuls.

Weights are quantised once with a per-output-channel scale; activations per call with one dynamic
per-tensor scale. On devices without fp8 matmuls the weights are dequantised instead, so the
option runs everywhere and only the speed differs. Quality against bf16 is reported by
`benchmarks/bench_generation.py --fp8`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0


def fp8_matmul_supported(device: torch.device) -> bool:
    """True on CUDA devices of compute capability 8.9+ (Ada, Hopper, Blackwell)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


class FP8Linear(nn.Module):
    """A linear layer whose weight is stored in e4m3 with a per-output-channel scale."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / E4M3_MAX
        self.register_buffer("weight_fp8", (weight / scale).to(E4M3))
        self.register_buffer("weight_scale", scale.reshape(1, -1).contiguous())
        self.bias = linear.bias
        self.out_features, self.in_features = weight.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if not fp8_matmul_supported(x.device) or self.in_features % 16 or self.out_features % 16:
            weight = (self.weight_fp8.float() * self.weight_scale.t()).to(x.dtype)
            return F.linear(x, weight, self.bias)
        x_scale = flat.abs().amax().float().clamp(min=1e-12) / E4M3_MAX
        x_fp8 = (flat.float() / x_scale).to(E4M3)
        out = torch._scaled_mm(
            x_fp8, self.weight_fp8.t(), scale_a=x_scale.expand(flat.shape[0], 1).contiguous(),
            scale_b=self.weight_scale, bias=self.bias, out_dtype=x.dtype,
        )
        return out.reshape(*x.shape[:-1], self.out_features)


def use_fp8_linears(model: nn.Module) -> int:
    """Swap every nn.Linear inside `model.blocks` for an FP8Linear; returns how many were swapped."""
    count = 0
    for block in model.blocks:
        for name, child in list(block.named_modules()):
            for attr, layer in list(child.named_children()):
                if isinstance(layer, nn.Linear):
                    setattr(child, attr, FP8Linear(layer))
                    count += 1
    return count
