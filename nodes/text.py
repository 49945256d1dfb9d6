"""Text nodes: encode one prompt, or a prompt schedule (prompts that take over at given times)."""
from __future__ import annotations

from typing import Any

from comfy_api.latest import io

from ..selfforcing_core.prompt_schedule import parse_schedule
from ..selfforcing_core.text_encoder import TextEncoder
from . import types
from .conditioning import START_KEY, TEXT_KEY, make_conditioning


def encode(text: str, text_encoder: TextEncoder | None, clip: Any | None) -> Any:
    """Embeddings [1, L, dim] of `text` from our text encoder or ComfyUI's CLIP (type wan)."""
    if text_encoder is not None:
        return text_encoder(text).embeddings.float().cpu()
    if clip is not None:
        return clip.encode_from_tokens(clip.tokenize(text))
    raise ValueError("connect a text encoder: the Self-Forcing Text Encoder Loader, or a CLIP (CLIPLoader type wan)")


class SelfForcingTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SelfForcingTextEncode",
            display_name="Self-Forcing Text Encode",
            category=types.CATEGORY,
            description="Encodes a prompt with the Self-Forcing (umT5) text encoder into CONDITIONING.",
            inputs=[
                types.TextEncoder.Input("text_encoder"),
                io.String.Input("text", multiline=True, default="",
                                tooltip="The prompt. The bundled world model knows only its world's words, e.g. "
                                        "'a large red circle moves right on a navy background' (README lists them)."),
            ],
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls, text_encoder: TextEncoder, text: str) -> io.NodeOutput:
        return io.NodeOutput(make_conditioning(encode(text, text_encoder, None), 0, text))


class SelfForcingPromptSchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SelfForcingPromptSchedule",
            display_name="Self-Forcing Prompt Schedule",
            category=types.CATEGORY,
            description="Changes the prompt while the video runs: one 'TIME: prompt' per line, TIME in seconds "
                        "(2.5 or 2.5s) or frames (40f) at 16 fps, starting at 0.",
            inputs=[
                io.String.Input("schedule", multiline=True,
                                default="0: a red fox trots through fresh snow\n2.5s: the fox leaps into the air",
                                tooltip="One 'TIME: prompt' per line; blank lines and # comments are skipped."),
                types.TextEncoder.Input("text_encoder", optional=True, tooltip="Our umT5 text encoder."),
                io.Clip.Input("clip", optional=True, tooltip="Or ComfyUI's CLIP (CLIPLoader type wan)."),
            ],
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def validate_inputs(cls, schedule: str = "", **kwargs: Any) -> bool | str:
        if not isinstance(schedule, str):
            return True
        try:
            parse_schedule(schedule)
        except ValueError as exc:
            return str(exc)
        return True

    @classmethod
    def execute(cls, schedule: str, text_encoder: TextEncoder | None = None, clip: Any | None = None) -> io.NodeOutput:
        conditioning = []
        for entry in parse_schedule(schedule):
            embeddings = encode(entry.text, text_encoder, clip)
            conditioning.append([embeddings, {START_KEY: entry.start_frame, TEXT_KEY: entry.text}])
        return io.NodeOutput(conditioning)


NODES = [SelfForcingTextEncode, SelfForcingPromptSchedule]
