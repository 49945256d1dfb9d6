"""Two minutes of streaming at the real Wan2.1 size on one GPU: constant memory and constant chunk time.

Work: the 1.3B causal config with random weights (weights change neither speed nor memory), 480x832, bf16,
chunks of 3 latent frames, a local attention window + a sink re-based to just before it, 4 steps + one cache
pass per chunk (but the last), batch 1; every chunk decoded as it finishes by the TAEHV preview decoder (random weights),
the Wan VAE, or not at all (`--decoder none`). A short warm-up video runs first (kernels, allocator,
autotuning, compilation) and is not counted.

Reports: chunk time (wall from one chunk's hand-off to the next, synchronised: denoise + the previous chunk's
cache pass + decode) as medians of the first, middle and last chunks; peak GPU memory at each mark
(torch.cuda.max_memory_allocated, reset when streaming starts and at every mark: the running peak and the
interval's own) with the KV cache's exact bytes; first-chunk latency, total time and fps. Prints a markdown
table and one JSON line (appended to `--json`).

Usage (on the device): python benchmarks/long_video_device.py [--seconds 120] [--window 12] [--sink 3]
    [--decoder taehv|wan|none] [--compile] [--json benchmarks/raw/DATE_long_video.jsonl]
Code path check on the CPU: python benchmarks/long_video_device.py --size tiny --device cpu --seconds 6 --marks 2,4,6
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
from selfforcing_core.pipeline import GenerationRequest, PromptSegment, VideoPipeline  # noqa: E402
from selfforcing_core.preview_decoder import TAEHVDecoder  # noqa: E402
from selfforcing_core.video_geometry import FPS, seconds_to_frames  # noqa: E402
from selfforcing_core.wan_vae import WanVAE  # noqa: E402

from bench_generation import build  # noqa: E402
from stream_probe import CudaPeakMemory, MemoryTimeline, ProcessPeakRSS, run_stream, time_profile  # noqa: E402

SIZES = {**PRESETS, "tiny": WanConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, text_len=8,
                                      freq_dim=16)}
DECODERS = {"none": lambda: None, "taehv": TAEHVDecoder, "wan": WanVAE}
GiB = 2**30


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="wan2.1-t2v-1.3b", choices=sorted(SIZES))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--marks", default="10,60,120", help="seconds of video at which memory is sampled")
    parser.add_argument("--width", type=int, help="default 832 (64 for --size tiny)")
    parser.add_argument("--height", type=int, help="default 480 (64 for --size tiny)")
    parser.add_argument("--window", type=int, default=12, help="local attention window, latent frames")
    parser.add_argument("--sink", type=int, default=3, help="sink frames")
    parser.add_argument("--fixed-sink", action="store_true", help="keep the sink at its first positions")
    parser.add_argument("--decoder", default="taehv", choices=sorted(DECODERS))
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile the fixed-shape block work")
    parser.add_argument("--warmup-seconds", type=float, default=2.0)
    parser.add_argument("--tail", type=int, default=10, help="chunks in each chunk-time median")
    parser.add_argument("--json", help="append the result as a JSON line to this file")
    args = parser.parse_args()
    tiny = args.size == "tiny"
    args.width, args.height = args.width or (64 if tiny else 832), args.height or (64 if tiny else 480)
    args.marks = [float(mark) for mark in args.marks.split(",")]
    return args


def make_pipeline(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> VideoPipeline:
    """The random-weight model (compiled if asked) with a window + sink cache and the chosen decoder."""
    model = build(SIZES[args.size], device, dtype, args.backend)
    if args.compile:
        torch._dynamo.config.cache_size_limit = 64
        model.compile_blocks()
    decoder = DECODERS[args.decoder]()
    if decoder is not None:
        decoder = decoder.to(device, dtype).eval().requires_grad_(False)
    settings = CausalSettings(chunk_frames=3, local_window=args.window, sink_frames=args.sink,
                              rebase_sink=not args.fixed_sink)
    return VideoPipeline(model, settings, decoder)


def measure(args: argparse.Namespace) -> dict:
    """Warm up, then stream `args.seconds` of video measuring chunk times and memory; the result as a dict."""
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    torch.backends.cudnn.benchmark = cuda
    pipeline = make_pipeline(args, device, dtype)
    config = pipeline.sampler.model.config
    text = torch.randn(1, config.text_len, config.text_dim, device=device, dtype=dtype)
    synchronize = torch.cuda.synchronize if cuda else (lambda: None)
    meter = CudaPeakMemory(device) if cuda else ProcessPeakRSS()

    def request(seconds: float) -> GenerationRequest:
        return GenerationRequest([PromptSegment(text)], args.width, args.height, seconds_to_frames(seconds), seed=0)

    def held() -> dict[str, int]:
        return {"kv_cache": pipeline.sampler.cache.memory_bytes()}

    began = time.perf_counter()
    run_stream(pipeline, request(args.warmup_seconds), MemoryTimeline(meter, []), synchronize=synchronize)
    warmup = time.perf_counter() - began
    run = run_stream(pipeline, request(args.seconds), MemoryTimeline(meter, args.marks, held), synchronize=synchronize)
    return {
        "size": args.size, "width": args.width, "height": args.height, "seconds": args.seconds, "frames": run.frames,
        "chunks": len(run.chunk_seconds), "window": args.window, "sink": args.sink, "rebase_sink": not args.fixed_sink,
        "decoder": args.decoder, "compile": args.compile, "backend": args.backend, "dtype": str(dtype),
        "device": torch.cuda.get_device_name(device) if cuda else "cpu", "torch": torch.__version__,
        "memory": meter.name, "warmup_s": round(warmup, 1), "total_s": run.seconds, "fps": run.frames / run.seconds,
        "first_chunk_s": run.chunk_seconds[0], "chunk_s": time_profile(run.chunk_seconds, args.tail),
        "dit_chunk_s": time_profile(run.model_seconds, args.tail),
        "marks": [{"mark_s": m.mark, "at_s": m.second, "peak_gib": m.peak_bytes / GiB,
                   "interval_peak_gib": m.interval_bytes / GiB, "kv_cache_gib": m.held["kv_cache"] / GiB}
                  for m in run.marks],
        "chunk_seconds": [round(s, 4) for s in run.chunk_seconds],
    }


def report(r: dict) -> None:
    """Print a result as text and markdown tables."""
    print(f"{r['size']}, {r['width']}x{r['height']}, {r['frames']} frames ({r['frames'] / FPS:.1f} s) in {r['chunks']} "
          f"chunks, window {r['window']} + sink {r['sink']}, decoder {r['decoder']}, compile {r['compile']}, "
          f"{r['device']}")
    print(f"total {r['total_s']:.1f} s = {r['fps']:.1f} fps; first chunk {r['first_chunk_s']:.3f} s; "
          f"warm-up {r['warmup_s']:.1f} s\n")
    print("| chunk time | first | middle | last | last / first |\n| --- | --- | --- | --- | --- |")
    for name, p in (("wall (denoise + cache pass + decode)", r["chunk_s"]), ("DiT only", r["dit_chunk_s"])):
        print(f"| {name} | {p['first']:.3f} s | {p['middle']:.3f} s | {p['last']:.3f} s | {p['last_over_first']:.2f} |")
    print(f"\nMemory: {r['memory']}")
    print("| mark | at | peak since start | interval peak | KV cache |\n| --- | --- | --- | --- | --- |")
    for m in r["marks"]:
        print(f"| {m['mark_s']:g} s | {m['at_s']:.2f} s | {m['peak_gib']:.3f} GiB | {m['interval_peak_gib']:.3f} GiB "
              f"| {m['kv_cache_gib']:.3f} GiB |")


def main() -> None:
    args = parse_args()
    result = measure(args)
    report(result)
    print(json.dumps(result), flush=True)
    if args.json:
        with open(args.json, "a") as handle:
            handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
