"""Streaming generation speed at the real Wan2.1 size (random weights: weights do not change speed).

Default work: 1.3B causal config, 480x832, 81 frames (21 latent frames, 7 chunks of 3), 4 steps +
one cache pass per chunk but the last (`--cache-last-chunk`: that one too, as the reference), batch 1,
bf16, streaming decode of every chunk as it finishes.

Prints: latency to the first decoded frames, end-to-end fps, DiT-only fps, per-chunk times, peak
GPU memory, achieved TFLOP/s and the bf16-vs-float32 difference of the latents.

FLOP count of one model call on q query tokens with k visible self-attention keys, per block:
  linear layers 2*q*(4*d^2 [self q,k,v,o] + 2*d^2 [cross q,o] + 2*d*ffn)
  attention     4*q*d*(k + text_len)           (QK^T and AV, self and cross)
plus 2*q*d*(6*d) for the modulation-free head is ignored (<0.1%). Cross-attention K/V of the
prompt are computed once per video and not counted. Summed over all calls of the video.

Usage (on the device): python benchmarks/bench_generation.py [--frame-wise] [--decoders none,wan,taehv]
    [--backend auto|sdpa|cudnn] [--compile] [--overlap] [--channels-last] [--low-vram] [--size wan2.1-t2v-14b]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from selfforcing_core.config import PRESETS, CausalSettings, WanConfig  # noqa: E402
from selfforcing_core.fp8_linear import use_fp8_linears  # noqa: E402
from selfforcing_core.offload import BlockStreamer  # noqa: E402
from selfforcing_core.pipeline import GenerationRequest, PromptSegment, VideoPipeline  # noqa: E402
from selfforcing_core.preview_decoder import TAEHVDecoder  # noqa: E402
from selfforcing_core.sampler import plan_chunks  # noqa: E402
from selfforcing_core.transformer import CausalWanModel  # noqa: E402
from selfforcing_core.video_geometry import latent_frames_for  # noqa: E402
from selfforcing_core.wan_vae import WanVAE  # noqa: E402


def flops_of_video(cfg: WanConfig, frame_tokens: int, plan, steps_per_chunk: int, cache_last_chunk: bool) -> float:
    """Matmul FLOPs of every model call of the video (formula in the module docstring): the steps of each
    chunk and its cache pass, which the last chunk has only with `cache_last_chunk` (as the reference)."""
    d, total = cfg.dim, 0.0
    for chunk in plan:
        q = chunk.num_frames * frame_tokens
        k = (chunk.start_frame + chunk.num_frames) * frame_tokens
        per_block = 2 * q * (6 * d * d + 2 * d * cfg.ffn_dim) + 4 * q * d * (k + cfg.text_len)
        calls = steps_per_chunk + (1 if chunk is not plan[-1] or cache_last_chunk else 0)
        total += per_block * cfg.num_layers * calls
    return total


def channels_last(module: torch.nn.Module) -> None:
    """Store every conv weight channels-last (cuDNN's fast layout on tensor cores)."""
    for layer in module.modules():
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.Conv3d)):
            fmt = torch.channels_last if layer.weight.dim() == 4 else torch.channels_last_3d
            layer.weight.data = layer.weight.data.contiguous(memory_format=fmt)


def build(config: WanConfig, device: str, dtype: torch.dtype, backend: str) -> CausalWanModel:
    """A random-weight model made directly in `dtype` (a float32 14B would not fit beside its copy)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = CausalWanModel(config, attention_backend=backend)
    finally:
        torch.set_default_dtype(default)
    return model.eval().requires_grad_(False)


def run_once(pipeline: VideoPipeline, request: GenerationRequest, overlap: bool = False) -> dict:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    first, chunk_times, frames = None, [], 0
    for chunk in pipeline.stream(request, overlap=overlap):
        torch.cuda.synchronize()
        now = time.perf_counter()
        if first is None:
            first = now - began
        if not chunk.continues:  # the first chunk's second piece adds no model time
            chunk_times.append(round(chunk.model_seconds, 4))
        frames += chunk.end_frame - chunk.start_frame
    torch.cuda.synchronize()
    total = time.perf_counter() - began
    return {"seconds": total, "first_frames_s": first, "fps": frames / total, "frames": frames,
            "chunk_model_s": chunk_times, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="wan2.1-t2v-1.3b", choices=sorted(PRESETS))
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frame-wise", action="store_true")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--decoders", default="none,wan,taehv", help="comma list of none/wan/taehv")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile the fixed-shape block work")
    parser.add_argument("--overlap", action="store_true", help="decode each chunk beside the next one's denoising")
    parser.add_argument("--channels-last", action="store_true", help="decoder convolutions in channels-last layout")
    parser.add_argument("--fp8", action="store_true", help="fp8 (e4m3) linear layers in the blocks (Hopper)")
    parser.add_argument("--low-vram", action="store_true",
                        help="stream blocks from CPU memory and decode one latent frame per call")
    parser.add_argument("--check-fp32", action="store_true", help="compare bf16 latents with the float32 path")
    parser.add_argument("--cache-last-chunk", action="store_true",
                        help="run the last chunk's cache pass as the reference does (its work, for comparison)")
    parser.add_argument("--json", help="append the results as JSON lines to this file")
    args = parser.parse_args()

    device, dtype = "cuda", torch.bfloat16
    torch.backends.cudnn.benchmark = True
    settings = CausalSettings(chunk_frames=1 if args.frame_wise else 3)
    model = build(PRESETS[args.size], "cpu" if args.low_vram else device, dtype, args.backend)
    if args.low_vram:
        BlockStreamer(model, device)
    if args.fp8:
        use_fp8_linears(model)
    if args.compile:
        torch._dynamo.config.cache_size_limit = 64
        model.compile_blocks()
    text = torch.randn(1, 512, model.config.text_dim, device=device, dtype=dtype)
    request = GenerationRequest([PromptSegment(text)], args.width, args.height, args.frames, seed=0)
    plan = plan_chunks(latent_frames_for(args.frames), settings)
    tokens = model.frame_tokens(args.height // 8, args.width // 8)
    flops = flops_of_video(model.config, tokens, plan, len(settings.denoising_steps), args.cache_last_chunk)
    decoders = {"none": lambda: None, "wan": WanVAE, "taehv": TAEHVDecoder}
    for name in args.decoders.split(","):
        decoder = decoders[name]()
        if decoder is not None:
            decoder = decoder.to(device, dtype).eval()
            if args.channels_last:
                channels_last(decoder)
        pipeline = VideoPipeline(model, settings, decoder, decode_frames_per_call=1 if args.low_vram else None)
        pipeline.sampler.cache_last_chunk = args.cache_last_chunk
        overlap = args.overlap
        began = time.perf_counter()
        run_once(pipeline, request, overlap)  # warm-up: kernels, allocator, autotuning, compilation
        warmup = time.perf_counter() - began
        best = min((run_once(pipeline, request, overlap) for _ in range(args.repeats)), key=lambda r: r["seconds"])
        result = {"size": args.size, "mode": "frame-wise" if args.frame_wise else "chunk-wise", "decoder": name,
                  "backend": args.backend, "compile": args.compile, "overlap": args.overlap,
                  "channels_last": args.channels_last, "low_vram": args.low_vram, "fp8": args.fp8, "warmup_s": round(warmup, 1),
                  "device": torch.cuda.get_device_name(), "torch": torch.__version__, **best,
                  "video_tflop": flops / 1e12}
        if name == "none":
            result["dit_tflops_per_s"] = flops / best["seconds"] / 1e12
        print(json.dumps(result), flush=True)
        if args.json:
            with open(args.json, "a") as handle:
                handle.write(json.dumps(result) + "\n")
        pipeline.release()
        del pipeline, decoder
        torch.cuda.empty_cache()
    if args.check_fp32:
        del model
        torch.cuda.empty_cache()
        print(json.dumps({"bf16_vs_fp32": compare_precision(args, settings)}), flush=True)


def compare_precision(args, settings: CausalSettings) -> dict:
    """First-chunk latents of bf16 and bf16 + fp8 linears against the float32 path (same weights)."""
    text = torch.randn(1, 512, PRESETS[args.size].text_dim, generator=torch.Generator().manual_seed(1))
    outputs = {}
    for name in ("float32", "bfloat16", "fp8"):
        torch.manual_seed(0)
        model = build(PRESETS[args.size], "cuda", torch.float32, "auto")
        if name != "float32":
            model = model.to(torch.bfloat16)
        if name == "fp8":
            use_fp8_linears(model)
        request = GenerationRequest([PromptSegment(text.cuda())], args.width, args.height, 9, seed=0)
        outputs[name] = VideoPipeline(model, settings).generate(request)[0].float()
        del model
        torch.cuda.empty_cache()
    exact = outputs.pop("float32")
    report = {"fp32_std": exact.std().item()}
    for name, latents in outputs.items():
        diff = (latents - exact).abs()
        report[name] = {"max_abs": diff.max().item(), "mean_abs": diff.mean().item()}
    return report


if __name__ == "__main__":
    main()
