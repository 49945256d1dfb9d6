"""The streaming sampler node: generates chunk by chunk, shows each decoded chunk in its widget at
once, optionally appends it to mp4 files in the output folder, reports progress per chunk, stops on
Cancel between model calls, frees the KV cache after. For long videos its outputs can keep only the
last frame, so that memory does not grow with the length."""
from __future__ import annotations

from typing import Any

from comfy_api.latest import io, ui

from ..selfforcing_core.keyframe_prefix import trained_with_goal
from ..selfforcing_core.keyframes import encode_keyframes
from ..selfforcing_core.latent_format import to_raw
from ..selfforcing_core.pipeline import GenerationRequest, PromptSegment, VideoPipeline
from ..selfforcing_core.video_collector import VideoCollector
from ..selfforcing_core.video_export import BatchVideoWriter
from ..selfforcing_core.video_geometry import FPS, check_size, seconds_to_frames
from . import types
from .comfy_glue import current_prompt_id, interrupt_check, load_on_device, progress_bar
from .conditioning import prompt_segments
from .keyframes import KeyframeImages
from .loaders import SelfForcingModel
from .preview import LivePreview
from .vae_adapter import chunk_decoder, keyframe_encoder
from .video import output_files

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


def check_outputs(filename_prefix: str, keep_frames: bool, has_vae: bool = True) -> None:
    """Refuse a run whose video would be kept nowhere (only its last frame, no file), or a file with no VAE."""
    if not keep_frames and not filename_prefix.strip():
        raise ValueError("keep_frames off keeps only the last frame in the outputs; set filename_prefix so the "
                         "video is written to the output folder while it is made")
    if filename_prefix.strip() and not has_vae:
        raise ValueError("filename_prefix writes decoded frames: connect a VAE to the sampler")


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
                        "decoded and shown in this node while the rest is still being generated, and with a "
                        "filename_prefix appended to an mp4 in the output folder (long videos: keep_frames off).",
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
                io.String.Input("filename_prefix", default="", optional=True,
                                tooltip="If set (e.g. SelfForcing/long), every chunk is also appended to an mp4 in "
                                        "ComfyUI's output folder as soon as it is decoded (one file per video)."),
                io.Boolean.Input("keep_frames", default=True, optional=True,
                                 tooltip="Off for long videos: the outputs hold only the last frame and the video "
                                         "lives in the mp4 (needs filename_prefix), so memory stays flat."),
            ],
            outputs=[io.Latent.Output(display_name="latent"), io.Image.Output(display_name="images")],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
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
            prefix, keep_frames = inputs.get("filename_prefix", ""), inputs.get("keep_frames", True)
            if isinstance(prefix, str) and isinstance(keep_frames, bool):
                check_outputs(prefix, keep_frames)
        except ValueError as exc:
            return str(exc)
        return True

    @classmethod
    def execute(cls, model: SelfForcingModel, positive: Any, seed: int, steps: str, length: float,
                length_unit: str, width: int, height: int, batch_size: int, vae: Any = None,
                keyframes: KeyframeImages | None = None, filename_prefix: str = "",
                keep_frames: bool = True) -> io.NodeOutput:
        check_size(width, height)
        check_outputs(filename_prefix, keep_frames, has_vae=vae is not None)
        num_frames = frame_count(length, length_unit)
        config = model.loaded.config
        segments, texts = prompt_segments(positive, config.text_dim, config.text_len)
        request = GenerationRequest(prompts=segments, width=width, height=height, num_frames=num_frames, seed=seed,
                                    batch_size=batch_size, steps=parse_steps(steps))
        if keyframes is not None:
            continues = keyframes.start is not None and keyframes.start.shape[0] > 1
            encoded = encode_keyframes(keyframe_encoder(keyframes.vae), width, height, keyframes.start, keyframes.end,
                                       continue_video=continues)
            request.start_latent, request.end_latent = encoded.start, encoded.end
            request.end_strength, request.end_mode = keyframes.end_strength, keyframes.end_mode
        decoder = chunk_decoder(vae) if vae is not None else None
        load_on_device(model.loaded.model, model.patcher)
        pipeline = VideoPipeline(model.loaded.model, model.settings, decoder,
                                 goal_prefix_trained=trained_with_goal(model.loaded.metadata))
        preview, files, saved = None, None, []
        if decoder is not None:
            preview = LivePreview(str(cls.hidden.unique_id), current_prompt_id(), width, height, num_frames, FPS)
        if filename_prefix.strip():
            paths, saved = output_files(filename_prefix, width, height, batch_size, "mp4")
            files = BatchVideoWriter(paths, fps=FPS, growing=True)
        collected = VideoCollector(num_frames, keep_frames)
        try:
            cls._run(pipeline, request, collected, preview, files, texts_by_start(segments, texts))
            if files is not None:
                files.close()
        except BaseException:
            if preview is not None:
                preview.abandon()
            if files is not None:
                files.abort()
            raise
        finally:
            pipeline.release()
        latent = {"samples": to_raw(collected.latents()).float()}
        video = collected.frames()
        images = None if video is None else video.reshape(-1, *video.shape[2:])
        shown = preview.finish() if preview is not None else {}
        if saved:
            shown.update(ui.PreviewVideo(saved).as_dict())
        return io.NodeOutput(latent, images, ui=shown or None)

    @classmethod
    def _run(cls, pipeline: VideoPipeline, request: GenerationRequest, collected: VideoCollector,
             preview: LivePreview | None, files: BatchVideoWriter | None, ordered_texts: list[str]) -> None:
        bar = None
        for chunk in pipeline.stream(request, interrupt=interrupt_check()):
            frames = collected.add(chunk.latents.cpu(), chunk.frames)
            if frames is not None and files is not None:
                files.write(frames)
            if frames is not None and preview is not None:
                preview.push(chunk.index, chunk.num_chunks, frames[0], ordered_texts[chunk.prompt])
            if not chunk.continues:  # the first chunk may come in two pieces; it counts once
                bar = bar or progress_bar(chunk.num_chunks, str(cls.hidden.unique_id))
                bar.update_absolute(chunk.index + 1, chunk.num_chunks)


NODES = [SelfForcingSampler]
