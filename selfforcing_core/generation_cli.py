"""`python -m selfforcing_core generate`: stream a video to disk chunk by chunk from the command line.

Defaults to the bundled model in `models/` (no downloads); any supported transformer, VAE and text
encoder file can be given instead.
"""
from __future__ import annotations

import argparse
import os
import time
from collections import deque

import torch

from .checkpoint import load_transformer
from .keyframe_prefix import END_MODES, trained_with_goal
from .keyframes import (CONTINUATION_FRAMES, encode_continuation, encode_end_keyframe, encode_keyframe,
                        prepare_keyframe)
from .pipeline import GenerationRequest, PromptSegment, VideoPipeline
from .text_encoder_loading import load_text_encoder
from .vae_loading import load_video_decoder, load_wan_vae
from .vae_stream import pixels_to_frames
from .wan_vae import WanVAE
from .video_geometry import FPS, seconds_to_frames, video_frames_for

MODELS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
DEFAULT_MODEL = os.path.join(MODELS_DIR, "world_causal.safetensors")
DEFAULT_VAE = os.path.join(MODELS_DIR, "world_vae.safetensors")
DEFAULT_TEXT_ENCODER = os.path.join(MODELS_DIR, "world_text_encoder.safetensors")
DEFAULT_PROMPT = "a large red circle moves right on a navy background"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `generate` command's options."""
    parser.add_argument("--prompt", action="append", help="prompt; repeat with --switch-at for a schedule")
    parser.add_argument("--switch-at", type=float, action="append", default=[],
                        help="second at which the next --prompt takes over (one per extra prompt)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="causal transformer file")
    parser.add_argument("--vae", default=DEFAULT_VAE, help="Wan VAE or TAEHV preview decoder file")
    parser.add_argument("--text-encoder", default=DEFAULT_TEXT_ENCODER, help="umT5 text encoder file")
    parser.add_argument("--seconds", type=float, default=5.0, help="video length at 16 fps")
    parser.add_argument("--width", type=int, help="frame width (multiple of 16); default: the model's own")
    parser.add_argument("--height", type=int, help="frame height (multiple of 16); default: the model's own")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", help="comma-separated denoising steps, e.g. 1000,750,500,250")
    parser.add_argument("--start-image", help="image the video starts from")
    parser.add_argument("--extend", metavar="VIDEO",
                        help="continue this video: it is copied into --out, its last frames become the clean prefix, "
                             "and --seconds / --switch-at count from its end")
    parser.add_argument("--end-image", help="image the video should end on")
    parser.add_argument("--end-strength", type=float, default=0.5, help="guidance's pull towards the end image (0..1)")
    parser.add_argument("--end-mode", choices=END_MODES, default="auto",
                        help="how the end image is used: goal_prefix (models trained with `train end-frame`), guidance "
                             "(training-free pull), or auto (goal_prefix when the model's file says it was trained so)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                        help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks (GPU)")
    parser.add_argument("--out", default="out/video.mp4", help="output .mp4 or .webm")


def _read_image(path: str) -> torch.Tensor:
    import imageio.v3 as iio

    return torch.from_numpy(iio.imread(path))


def _copy_and_encode_tail(path: str, writer, vae: WanVAE, width: int, height: int) -> torch.Tensor:
    """Write the video at `path` (fitted to width x height) into `writer` frame by frame and return the
    latents of its last frames, the prefix a continuation starts from (`encode_continuation`)."""
    from .video_export import iter_frames

    kept: deque[torch.Tensor] = deque(maxlen=CONTINUATION_FRAMES)
    for array in iter_frames(path):
        frame = torch.from_numpy(array.copy())
        writer.write(pixels_to_frames(prepare_keyframe(frame, width, height).unsqueeze(2))[0])
        kept.append(frame)
    if not kept:
        raise SystemExit(f"{path} has no frames to continue from")
    return encode_continuation(vae, torch.stack(list(kept)), width, height)


def _model_size(metadata: dict[str, str]) -> tuple[int, int]:
    width, height = metadata.get("resolution", "832x480").split("x")
    return int(width), int(height)


def run(args: argparse.Namespace) -> str:
    """Generate the video described by `args`, writing each chunk as it finishes; returns the path."""
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    loaded = load_transformer(args.model, dtype=dtype, device=device)
    if args.compile:
        loaded.model.compile_blocks()
    width, height = _model_size(loaded.metadata)
    width, height = args.width or width, args.height or height
    text_encoder = load_text_encoder(args.text_encoder, dtype=dtype, device=device, text_len=loaded.config.text_len)
    decoder = load_video_decoder(args.vae, dtype=dtype, device=device)

    prompts = args.prompt or [DEFAULT_PROMPT]
    if len(args.switch_at) != len(prompts) - 1:
        raise SystemExit(f"{len(prompts)} prompts need {len(prompts) - 1} --switch-at seconds, got {len(args.switch_at)}")
    if args.extend and args.start_image:
        raise SystemExit("--extend continues a video from its own last frames; leave out --start-image")
    embeddings = [text_encoder(p).embeddings for p in prompts]
    switches = [seconds_to_frames(s) if s else 0 for s in args.switch_at]
    needs_encoder = args.start_image or args.end_image or args.extend
    vae = load_wan_vae(args.vae, dtype=dtype, device=device) if needs_encoder else None
    start = encode_keyframe(vae, _read_image(args.start_image), width, height) if args.start_image else None
    end = encode_end_keyframe(vae, _read_image(args.end_image), width, height) if args.end_image else None
    steps = tuple(int(s) for s in args.steps.split(",")) if args.steps else None
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    pipeline = VideoPipeline(loaded.model, loaded.settings, decoder,
                             goal_prefix_trained=trained_with_goal(loaded.metadata))
    from .video_export import VideoWriter  # imageio-ffmpeg: the training commands' parser must not need it

    with VideoWriter(args.out, fps=FPS, growing=True) as writer:
        context = 0  # frames of the continued video that open the request (its clean prefix)
        if args.extend:
            start = _copy_and_encode_tail(args.extend, writer, vae, width, height)
            context = video_frames_for(start.shape[2])
        segments = [PromptSegment(embeddings[0], 0)]
        segments += [PromptSegment(e, context + frame) for e, frame in zip(embeddings[1:], switches)]
        new_frames = seconds_to_frames(args.seconds)
        request = GenerationRequest(segments, width, height, context + new_frames, seed=args.seed, steps=steps,
                                    start_latent=start, end_latent=end, end_strength=args.end_strength,
                                    end_mode=args.end_mode)
        began, first, frames = time.perf_counter(), None, 0
        for chunk in pipeline.stream(request):
            first = first if first is not None else time.perf_counter() - began
            video = chunk.frames[0][max(0, context - chunk.start_frame):][: new_frames - frames]
            if video.shape[0]:
                writer.write(video)
                frames += video.shape[0]
            denoised = "rest of the chunk" if chunk.continues else f"model {chunk.model_seconds:.2f}s"
            print(f"chunk {chunk.index + 1}/{chunk.num_chunks}: frames {chunk.start_frame}-{chunk.end_frame} "
                  f"({denoised}, decode {chunk.decode_seconds:.2f}s)", flush=True)
    total = time.perf_counter() - began
    print(f"wrote {args.out}: {frames} frames {width}x{height} in {total:.2f}s = {frames / total:.1f} fps "
          f"(real time is {FPS}), first frames after {first:.2f}s")
    return args.out
