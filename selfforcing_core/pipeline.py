"""One generation request end to end: prompts and keyframes in, decoded chunks out as they finish.

Data flows one way: text embeddings and keyframe latents -> the streaming sampler -> the streaming
decoder -> the caller (a ComfyUI node pushes frames to the browser; the CLI writes them to disk).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch

from .background import run_ahead
from .config import CausalSettings
from .keyframe_conditioning import EndFrameGuidance
from .keyframe_prefix import GOAL_PREFIX, GUIDANCE, KeyframePrefix, end_mode_for
from .noise import NoiseSource, SeededNoise
from .sampler import ChunkResult, StreamingSampler
from .transformer import CausalWanModel
from .vae_stream import ChunkDecoder, StreamingDecoder, pixels_to_frames
from .video_collector import VideoCollector
from .video_geometry import SPATIAL_FACTOR, check_size, latent_frame_of, latent_frames_for, video_frames_for


@dataclass
class PromptSegment:
    """Text embeddings [1 or B, L, text_dim] that apply from video frame `start_frame` on.

    A segment with `cut` starts a new scene (the cache forgets the window; the sink is kept);
    otherwise the switch is smooth (cached frames are re-encoded under the new prompt).
    """

    embeddings: torch.Tensor
    start_frame: int = 0
    cut: bool = False


@dataclass
class GenerationRequest:
    """What to generate. Sizes are in pixels and video frames (16 fps); keyframe latents are
    normalised VAE latents [1 or B, C, 1, h, w]. `steps` overrides the model's step list.

    `end_mode` says how the end keyframe is used: 'goal_prefix' (a clean goal frame before the video in
    the cache, for models trained so), 'guidance' (`end_strength` pulls the x0 predictions towards it),
    or 'auto' (goal_prefix when the model's file says it was trained with end frames).
    """

    prompts: Sequence[PromptSegment]
    width: int
    height: int
    num_frames: int
    seed: int = 0
    batch_size: int = 1
    steps: tuple[int, ...] | None = None
    start_latent: torch.Tensor | None = None
    end_latent: torch.Tensor | None = None
    end_strength: float = 0.5
    end_mode: str = "auto"
    first_chunk_steps: tuple[int, ...] | None = None
    noise: NoiseSource | None = field(default=None, repr=False)


@dataclass
class StreamedChunk:
    """A finished chunk: its latents, and its frames [B, T, H, W, 3] in [0, 1] when a decoder is set.

    `prompt` indexes the request's prompts ordered by start frame (the start keyframe's chunk: 0).
    The video's first chunk may come as two pieces with the same `index` (its first frame alone, then
    the rest); the second piece has `continues` set and `model_seconds` 0.
    """

    index: int
    num_chunks: int
    start_frame: int
    end_frame: int
    latents: torch.Tensor
    frames: torch.Tensor | None
    model_seconds: float
    decode_seconds: float
    prompt: int = 0
    continues: bool = False


def _batched(tensor: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    if tensor.shape[0] == batch:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(batch, *tensor.shape[1:])
    raise ValueError(f"{what} has batch {tensor.shape[0]}, expected 1 or {batch}")


def _keyframe(latent: torch.Tensor | None, which: str, request: GenerationRequest, channels: int
              ) -> torch.Tensor | None:
    """A keyframe latent batched to the request, refused unless it has the video's channels and size."""
    if latent is None:
        return None
    latent = _batched(latent, request.batch_size, f"{which} keyframe latent")
    h, w = request.height // SPATIAL_FACTOR, request.width // SPATIAL_FACTOR
    if latent.shape[1] != channels or tuple(latent.shape[3:]) != (h, w):
        raise ValueError(
            f"the {which} keyframe latent is {tuple(latent.shape[1:])} but a {request.width}x{request.height} "
            f"video needs ({channels}, T, {h}, {w}); encode the keyframe at the video's size"
        )
    return latent


class VideoPipeline:
    """A causal transformer, its settings and an optional streaming decoder, ready to stream videos."""

    def __init__(self, model: CausalWanModel, settings: CausalSettings, decoder: ChunkDecoder | None = None,
                 decode_frames_per_call: int | None = None, goal_prefix_trained: bool = False,
                 first_frame_early: bool = True):
        """`decode_frames_per_call` bounds the decoder's activation memory (1 for low-VRAM cards);
        `goal_prefix_trained`: the model learnt end keyframes as a goal prefix (`trained_with_goal(metadata)`);
        `first_frame_early`: hand out the video's first frame before the rest of its first chunk is decoded
        (one more, smaller chunk is yielded; the frames are the same)."""
        self.first_frame_early = first_frame_early
        self.sampler = StreamingSampler(model, settings)
        self.goal_prefix_trained = goal_prefix_trained
        self.decoder = StreamingDecoder(decoder) if decoder is not None else None
        self.decode_frames_per_call = decode_frames_per_call
        self._decode_stream = None

    @property
    def settings(self) -> CausalSettings:
        return self.sampler.settings

    def release(self) -> None:
        """Free the KV cache and the decoder's memory between runs."""
        self.sampler.release()
        if self.decoder is not None:
            self.decoder.reset()

    def stream(self, request: GenerationRequest, interrupt: Callable[[], None] | None = None,
               overlap: bool = False) -> Iterator[StreamedChunk]:
        """Generate `request`, yielding every chunk (decoded if a decoder is set) as soon as it is done.

        With `overlap` the sampler runs in a worker thread, so chunk k is decoded on its own CUDA
        stream while chunk k + 1 is denoised. Off by default: on an H100 both are compute-bound and
        the overlapped run measured slower (benchmarks/results.md).
        """
        check_size(request.width, request.height)
        if not request.prompts:
            raise ValueError("at least one prompt is needed")
        batch = request.batch_size
        model = self.sampler.model
        channels = model.config.in_dim
        h, w = request.height // SPATIAL_FACTOR, request.width // SPATIAL_FACTOR
        total = latent_frames_for(request.num_frames)
        start = _keyframe(request.start_latent, "start", request, channels)
        end = _keyframe(request.end_latent, "end", request, channels)
        end_mode = None if end is None else end_mode_for(request.end_mode, self.goal_prefix_trained)
        prefix = KeyframePrefix.of(start, end if end_mode == GOAL_PREFIX else None)
        if total <= prefix.start_frames:
            raise ValueError(f"{request.num_frames} frames leave nothing to generate after the start keyframe")
        prefix.check_kept(total, self.settings)

        segments = sorted(request.prompts, key=lambda s: s.start_frame)
        contexts = [_batched(s.embeddings, batch, "prompt embeddings") for s in segments]
        settings = self.settings if request.steps is None else self.settings.with_(denoising_steps=tuple(request.steps))
        plan = prefix.plan(total, settings, first_chunk_steps=request.first_chunk_steps,
                           prompt_starts=[latent_frame_of(s.start_frame) for s in segments[1:]],
                           prompt_cuts=[s.cut for s in segments[1:]])
        adjust = None
        if end_mode == GUIDANCE:
            adjust = EndFrameGuidance(end, last_frame=total - 1, strength=request.end_strength)
        noise = request.noise or SeededNoise(request.seed, batch)
        if self.decoder is not None:
            self.decoder.reset()
        count = prefix.chunk_count(plan, settings.chunk_frames)

        def chunks(cancelled: Callable[[], None]):
            def check() -> None:
                cancelled()
                if interrupt is not None:
                    interrupt()
            return prefix.video(self.sampler.stream(plan, contexts, noise, (batch, channels, h, w),
                                                    prefix=prefix.latents, interrupt=check, adjust_x0=adjust))

        source = run_ahead(chunks) if overlap else chunks(lambda: None)
        for index, chunk in enumerate(source):
            for decoded in self._decoded_pieces(index, count, chunk):
                decoded.prompt = max(chunk.prompt, 0)
                yield decoded

    def _decoded_pieces(self, index: int, count: int, chunk: ChunkResult) -> Iterator[StreamedChunk]:
        """The chunk decoded; the first chunk of a longer video in two pieces when `first_frame_early` is set.

        The first latent frame decodes to the video's first frame on its own, so showing it first
        costs a ninth of the chunk's decode instead of all of it. The streaming decoder carries its
        causal state across the split, so the frames are those of one whole decode (exactly in float64;
        kernels chosen per shape may round the last bits differently in half precision).
        """
        start, end, latents = chunk.start_frame, chunk.end_frame, chunk.latents
        if index == 0 and count > 1 and self.first_frame_early and self.decoder is not None and end - start > 1:
            yield self._decoded(index, count, start, start + 1, latents[:, :, :1], chunk.seconds)
            rest = self._decoded(index, count, start + 1, end, latents[:, :, 1:], 0.0)
            rest.continues = True
            yield rest
            return
        yield self._decoded(index, count, start, end, latents, chunk.seconds)

    def _decoded(self, index: int, count: int, start: int, end: int, latents: torch.Tensor,
                 model_seconds: float) -> StreamedChunk:
        frames, decode_seconds = None, 0.0
        if self.decoder is not None:
            began = time.perf_counter()
            with self._side_stream(latents):
                pieces = latents.split(self.decode_frames_per_call or latents.shape[2], dim=2)
                pixels = torch.cat([self.decoder.decode_chunk(piece) for piece in pieces], dim=2)
                frames = pixels_to_frames(pixels).cpu()
            decode_seconds = time.perf_counter() - began
        return StreamedChunk(index, count, video_frames_for(start) if start else 0, video_frames_for(end),
                             latents, frames, model_seconds, decode_seconds)

    def _side_stream(self, latents: torch.Tensor):
        """A CUDA stream of the decoder's own, so decoding runs beside the sampler's stream."""
        if latents.device.type != "cuda":
            return contextlib.nullcontext()
        if self._decode_stream is None:
            self._decode_stream = torch.cuda.Stream(latents.device)
        latents.record_stream(self._decode_stream)
        return torch.cuda.stream(self._decode_stream)

    def generate(self, request: GenerationRequest, interrupt: Callable[[], None] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run to the end: all latents [B, C, F, h, w] and, with a decoder, the request's frames [B, T, H, W, 3]."""
        collected = VideoCollector(request.num_frames)
        for chunk in self.stream(request, interrupt):
            collected.add(chunk.latents, chunk.frames)
        return collected.latents(), collected.frames()
