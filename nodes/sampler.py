"""The streaming sampler node: generates chunk by chunk, shows each decoded chunk in its widget at
once, reports progress per chunk, stops on Cancel between model calls, frees the KV cache after."""
from __future__ import annotations

from typing import Any

import torch
from comfy_api.latest import io

from ..selfforcing_core.keyframes import encode_keyframes
from ..selfforcing_core.latent_format import to_raw
from ..selfforcing_core.pipeline import GenerationRequest, PromptSegment, StreamedChunk, VideoPipeline
from ..selfforcing_core.video_geometry import FPS, check_size, seconds_to_frames
from . import types
from .comfy_glue import current_prompt_id, interrupt_check, load_on_device, progress_bar
from .conditioning import prompt_segments
from .keyframes import KeyframeImages
from .loaders import SelfForcingModel
from .preview import LivePreview
from .vae_adapter import chunk_decoder, keyframe_encoder

DEFAULT_STEPS = "1000,750,500,250"


def parse_steps(text: str) -> tuple[int, ...]:
    """'1000,750,500,250' -> (1000, 750, 500, 250): decreasing timesteps in 1..1000."""
    try:
        steps = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise ValueError(f"steps {text!r} must be comma-separated whole timesteps, e.g. {DEFAULT_STEPS}") from None
    if not steps or any(not 0 < s <= 1000 for s in steps) or list(steps) != sorted(set(steps), reverse=True):
        raise ValueError(f"steps {text!r} must be decreasing timesteps between 1 and 1000, e.g. {DEFAULT_STEPS}")
    return steps


def frame_count(length: float, unit: str) -> int:
    """Video frames (16 fps) for a length given in frames or seconds."""
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    if unit == "seconds":
        return seconds_to_frames(length)
    if not float(length).is_integer():
        raise ValueError(f"length {length} frames is not a whole number of frames")
    return int(length)


def texts_by_start(segments: list[PromptSegment], texts: list[str]) -> list[str]:
    """Prompt texts in the order the pipeline numbers prompts (by start frame, ties kept in order)."""
    return [text for _, text in sorted(zip(segments, texts), key=lambda pair: pair[0].start_frame)]


class SelfForcingSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SelfForcingSampler",
            display_name="Self-Forcing Streaming Sampler",
            category=types.CATEGORY,
            description="Generates a video chunk by chunk with a KV cache; with a VAE connected, every chunk is "
                        "decoded and shown in this node while the rest is still being generated.",
            inputs=[
                types.Model.Input("model"),
                io.Conditioning.Input("positive", tooltip="CLIPTextEncode (CLIP type wan) or a Self-Forcing text node."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
                io.String.Input("steps", default=DEFAULT_STEPS,
                                tooltip="Denoising timesteps per chunk, decreasing, e.g. 1000,750,500,250."),
                io.Float.Input("length", default=81, min=1, max=100000, step=1,
                               tooltip="Video length, in frames or seconds (see length_unit), at 16 fps."),
                io.Combo.Input("length_unit", options=["frames", "seconds"], default="frames"),
                io.Int.Input("width", default=832, min=16, max=4096, step=16, tooltip="A multiple of 16."),
                io.Int.Input("height", default=480, min=16, max=4096, step=16, tooltip="A multiple of 16."),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Videos generated together."),
                io.MultiType.Input("vae", types=[io.Vae, types.Vae], optional=True,
                                   tooltip="Decodes each chunk as it finishes (IMAGE output and live preview)."),
                types.Keyframes.Input("keyframes", optional=True, tooltip="Start and/or end image."),
            ],
            outputs=[io.Latent.Output(display_name="latent"), io.Image.Output(display_name="images")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, **inputs: Any) -> bool | str:
        try:
            if isinstance(inputs.get("width"), int) and isinstance(inputs.get("height"), int):
                check_size(inputs["width"], inputs["height"])
            if isinstance(inputs.get("steps"), str):
                parse_steps(inputs["steps"])
            if isinstance(inputs.get("length"), (int, float)) and isinstance(inputs.get("length_unit"), str):
                frame_count(inputs["length"], inputs["length_unit"])
        except ValueError as exc:
            return str(exc)
        return True

    @classmethod
    def execute(cls, model: SelfForcingModel, positive: Any, seed: int, steps: str, length: float,
                length_unit: str, width: int, height: int, batch_size: int, vae: Any = None,
                keyframes: KeyframeImages | None = None) -> io.NodeOutput:
        check_size(width, height)
        num_frames = frame_count(length, length_unit)
        config = model.loaded.config
        segments, texts = prompt_segments(positive, config.text_dim, config.text_len)
        request = GenerationRequest(prompts=segments, width=width, height=height, num_frames=num_frames, seed=seed,
                                    batch_size=batch_size, steps=parse_steps(steps))
        if keyframes is not None:
            encoded = encode_keyframes(keyframe_encoder(keyframes.vae), width, height, keyframes.start, keyframes.end)
            request.start_latent, request.end_latent = encoded.start, encoded.end
            request.end_strength = keyframes.end_strength
        decoder = chunk_decoder(vae) if vae is not None else None
        load_on_device(model.loaded.model, model.patcher)
        pipeline = VideoPipeline(model.loaded.model, model.settings, decoder)
        preview = None
        if decoder is not None:
            preview = LivePreview(str(cls.hidden.unique_id), current_prompt_id(), width, height, num_frames, FPS)
        try:
            chunks = cls._run(pipeline, request, preview, segments, texts)
        except BaseException:
            if preview is not None:
                preview.abandon()
            raise
        finally:
            pipeline.release()
        latent = {"samples": to_raw(torch.cat([c.latents for c in chunks], dim=2)).float()}
        images = None
        if decoder is not None:
            video = torch.cat([c.frames for c in chunks], dim=1)[:, :num_frames]
            images = video.reshape(-1, *video.shape[2:])
        return io.NodeOutput(latent, images, ui=preview.finish() if preview is not None else None)

    @classmethod
    def _run(cls, pipeline: VideoPipeline, request: GenerationRequest, preview: LivePreview | None,
             segments: list[PromptSegment], texts: list[str]) -> list[StreamedChunk]:
        bar = None
        chunks = []
        ordered_texts = texts_by_start(segments, texts)
        for chunk in pipeline.stream(request, interrupt=interrupt_check()):
            chunk.latents = chunk.latents.cpu()
            if preview is not None and chunk.frames is not None:
                preview.push(chunk.index, chunk.num_chunks, chunk.frames[0],
                             ordered_texts[chunk.prompt])
            bar = bar or progress_bar(chunk.num_chunks, str(cls.hidden.unique_id))
            bar.update_absolute(chunk.index + 1, chunk.num_chunks)
            chunks.append(chunk)
        return chunks


NODES = [SelfForcingSampler]
