"""Attention kernels at the shapes of a streamed 1.3B video, each kernel forced on its own, and the bf16 matmul peak.

The DiT's self-attention takes the queries of one chunk (3 latent frames x 1560 tokens = 4680 at 480x832)
against every cached key (4680 for the first chunk, 32760 for the last of 21 latent frames); the
cross-attention takes the same queries against 512 text tokens. Queries arrive as a transposed view of
[B, L, heads, head_dim] and keys/values as a slice of the preallocated cache [B, heads, capacity, head_dim],
exactly as the model hands them over; a contiguous copy of the queries is timed too.

FLOPs of one call: 4 * B * heads * q * k * head_dim (QK^T and AV). Prints one JSON line per measurement
(and appends them to `--json`): which kernel the SDPA dispatcher would pick can only be seen by timing, so
the 'auto' row is SDPA with no kernel forced.

Usage (on the device): python benchmarks/bench_attention.py [--json benchmarks/raw/DATE_attention.jsonl]
"""
from __future__ import annotations

import argparse
import json
from typing import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

KERNELS = {"auto": None, "flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
           "efficient": SDPBackend.EFFICIENT_ATTENTION}


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of `fn()` over `repeats` CUDA-event-timed runs, after two warm-up runs."""
    fn(), fn()
    times = []
    for _ in range(repeats):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(begin.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def matmul_peak(size: int = 8192, repeats: int = 20) -> float:
    """Achieved bf16 TFLOP/s of one large square matmul (the device's practical peak)."""
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    return 2 * size**3 / timed(lambda: a @ b, repeats) / 1e12


def attention_rows(heads: int, head_dim: int, queries: int, keys: list[int], repeats: int) -> list[dict]:
    """Time every kernel on (queries x k) for each k, with the model's own tensor layouts."""
    capacity = max(keys)
    cache_k = torch.randn(1, heads, capacity, head_dim, device="cuda", dtype=torch.bfloat16)
    cache_v = torch.randn_like(cache_k)
    q_view = torch.randn(1, queries, heads, head_dim, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
    rows = []
    for k in keys:
        key, value = cache_k[:, :, :k], cache_v[:, :, :k]
        flops = 4 * heads * queries * k * head_dim
        for layout, q in (("view", q_view), ("contiguous", q_view.contiguous())):
            for name, kernel in KERNELS.items():
                def call(q=q, key=key, value=value, kernel=kernel):
                    if kernel is None:
                        return F.scaled_dot_product_attention(q, key, value)
                    with sdpa_kernel([kernel]):
                        return F.scaled_dot_product_attention(q, key, value)
                try:
                    seconds = timed(call, repeats)
                except RuntimeError as error:  # the kernel refuses these inputs on this device
                    rows.append({"keys": k, "q_layout": layout, "kernel": name, "error": str(error).splitlines()[0]})
                    continue
                rows.append({"keys": k, "q_layout": layout, "kernel": name, "ms": seconds * 1e3,
                             "tflops_per_s": flops / seconds / 1e12})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=4680)
    parser.add_argument("--keys", default="512,4680,18720,32760")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json")
    args = parser.parse_args()
    device = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    results = [{"matmul_bf16_tflops_per_s": matmul_peak(), **device}]
    keys = [int(k) for k in args.keys.split(",")]
    results += [{**row, "queries": args.queries, "heads": args.heads, "head_dim": args.head_dim}
                for row in attention_rows(args.heads, args.head_dim, args.queries, keys, args.repeats)]
    for result in results:
        print(json.dumps(result), flush=True)
    if args.json:
        with open(args.json, "a") as handle:
            handle.writelines(json.dumps(result) + "\n" for result in results)


if __name__ == "__main__":
    main()
