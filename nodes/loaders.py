"""Loader nodes: the causal transformer, the VAE / preview decoder, and the umT5 text encoder."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from comfy_api.latest import io

from ..selfforcing_core.attention import BACKENDS
from ..selfforcing_core.checkpoint import LoadedTransformer, load_transformer
from ..selfforcing_core.config import CausalSettings
from ..selfforcing_core.text_encoder import TextEncoder
from ..selfforcing_core.text_encoder_loading import load_text_encoder
from ..selfforcing_core.vae_loading import load_video_decoder
from . import paths, types
from .comfy_glue import managed, offload_device, torch_device
from .model_cache import cached, file_identity

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def check_name(folders: tuple[str, ...], name: Any, what: str) -> bool | str:
    """validate_inputs helper: True if `name` resolves inside `folders`, else the reason it does not."""
    if not isinstance(name, str):
        return True
    try:
        paths.resolve(folders, name, what)
    except (ValueError, FileNotFoundError) as exc:
        return str(exc)
    return True


def pick_dtype(name: str) -> torch.dtype:
    """`auto` is bfloat16 on a GPU and float32 on the CPU."""
    if name == "auto":
        return torch.bfloat16 if torch_device().type == "cuda" else torch.float32
    return DTYPES[name]


@dataclass
class SelfForcingModel:
    """What flows through a SELFFORCING_MODEL socket: the loaded transformer and its settings."""

    loaded: LoadedTransformer
    settings: CausalSettings
    patcher: Any


SINK_PLACEMENTS = ("default", "rebased", "fixed")


def causal_settings(base: CausalSettings, chunk_frames: int, local_window: int, sink_frames: int,
                    sink_placement: str = "default") -> CausalSettings:
    """The family's settings with the loader's overrides (0 / -1 / "default" keep the family's value)."""
    changes: dict[str, Any] = {}
    if sink_placement != "default":
        changes["rebase_sink"] = sink_placement == "rebased"
    if chunk_frames > 0:
        changes["chunk_frames"] = chunk_frames
    if local_window >= 0:
        changes["local_window"] = local_window or None
    if local_window == 0:
        changes["global_cache_frames"] = None
    if sink_frames >= 0:
        changes["sink_frames"] = sink_frames
    return base.with_(**changes)


class SelfForcingModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SelfForcingModelLoader",
            display_name="Self-Forcing Model Loader",
            category=types.CATEGORY,
            description="Loads a causal Wan2.1 transformer (Self Forcing, Causal Forcing, CausVid, LongLive, ...) "
                        "and picks its family's chunk size, window and sink.",
            inputs=[
                io.Combo.Input("model_name", options=paths.list_files(paths.MODEL_FOLDERS),
                               tooltip="A file in models/self_forcing or models/diffusion_models "
                                       "(self_forcing_dmd.pt, ComfyUI Wan safetensors, fp8 scaled ...)."),
                io.Combo.Input("dtype", options=["auto", *DTYPES], default="auto",
                               tooltip="Compute precision; auto = bfloat16 on GPU, float32 on CPU."),
                io.Combo.Input("attention", options=list(BACKENDS), default="auto",
                               tooltip="Attention kernel; auto picks the fastest available one."),
                io.Int.Input("chunk_frames", default=0, min=0, max=21,
                             tooltip="Latent frames per chunk (3 = 12 video frames); 0 = the model family's default."),
                io.Int.Input("local_window", default=-1, min=-1, max=1024,
                             tooltip="Attention window in latent frames; -1 = family default (Self Forcing: all "
                                     "of its 21 trained frames, then a rolling window of 21), 0 = everything."),
                io.Int.Input("sink_frames", default=-1, min=-1, max=63,
                             tooltip="Latent frames kept as an attention sink when the window rolls; -1 = family default."),
                io.Combo.Input("sink_placement", options=list(SINK_PLACEMENTS), default="default", optional=True,
                               tooltip="Long videos: 'rebased' moves the sink to just before the window (the distance "
                                       "it was trained at), 'fixed' keeps it at the video's first frames (the "
                                       "reference); default = what the model file or family says."),
            ],
            outputs=[types.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model_name: str, dtype: str, attention: str, chunk_frames: int, local_window: int,
                sink_frames: int, sink_placement: str = "default") -> io.NodeOutput:
        path = paths.resolve(paths.MODEL_FOLDERS, model_name, "model")
        precision = pick_dtype(dtype)

        def load() -> tuple[LoadedTransformer, Any]:
            loaded = load_transformer(path, dtype=precision, device=offload_device(), attention_backend=attention)
            return loaded, managed(loaded.model)

        loaded, patcher = cached("model", (file_identity(path), precision, attention), load)
        settings = causal_settings(loaded.settings, chunk_frames, local_window, sink_frames, sink_placement)
        return io.NodeOutput(SelfForcingModel(loaded, settings, patcher))

    @classmethod
    def validate_inputs(cls, model_name: Any = None, **kwargs: Any) -> bool | str:
        return check_name(paths.MODEL_FOLDERS, model_name, "model")

    @classmethod
    def fingerprint_inputs(cls, model_name: str, **kwargs: Any) -> Any:
        try:
            return file_identity(paths.resolve(paths.MODEL_FOLDERS, model_name, "model"))
        except (ValueError, OSError):
            return model_name


class SelfForcingVAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SelfForcingVAELoader",
            display_name="Self-Forcing VAE / Preview Decoder Loader",
            category=types.CATEGORY,
            description="Loads the Wan2.1 VAE (full quality, also encodes keyframes), a pruned variant, or a "
                        "TAEHV preview decoder (taew2_1: fast, decode only). All stream chunk by chunk.",
            inputs=[
                io.Combo.Input("vae_name", options=paths.list_files(paths.DECODER_FOLDERS),
                               tooltip="A file in models/vae or models/vae_approx."),
                io.Combo.Input("dtype", options=["auto", *DTYPES], default="auto",
                               tooltip="Compute precision; auto = bfloat16 on GPU, float32 on CPU."),
            ],
            outputs=[types.Vae.Output(display_name="vae")],
        )

    @classmethod
    def validate_inputs(cls, vae_name: Any = None, **kwargs: Any) -> bool | str:
        return check_name(paths.DECODER_FOLDERS, vae_name, "VAE")

    @classmethod
    def execute(cls, vae_name: str, dtype: str) -> io.NodeOutput:
        path = paths.resolve(paths.DECODER_FOLDERS, vae_name, "VAE")
        precision = pick_dtype(dtype)
        decoder = cached("vae", (file_identity(path), precision),
                         lambda: load_video_decoder(path, dtype=precision, device=torch_device()))
        return io.NodeOutput(decoder)


class SelfForcingTextEncoderLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SelfForcingTextEncoderLoader",
            display_name="Self-Forcing Text Encoder Loader",
            category=types.CATEGORY,
            description="Loads a umT5 text encoder (umt5_xxl fp16 / fp8 scaled, or the original .pth) with its "
                        "tokenizer. ComfyUI's own CLIPLoader (type wan) + CLIPTextEncode works as well.",
            inputs=[
                io.Combo.Input("text_encoder_name", options=paths.list_files(paths.TEXT_ENCODER_FOLDERS),
                               tooltip="A file in models/text_encoders."),
                io.Combo.Input("dtype", options=["auto", *DTYPES], default="auto",
                               tooltip="Compute precision; auto = bfloat16 on GPU, float32 on CPU."),
            ],
            outputs=[types.TextEncoder.Output(display_name="text_encoder")],
        )

    @classmethod
    def validate_inputs(cls, text_encoder_name: Any = None, **kwargs: Any) -> bool | str:
        return check_name(paths.TEXT_ENCODER_FOLDERS, text_encoder_name, "text encoder")

    @classmethod
    def execute(cls, text_encoder_name: str, dtype: str) -> io.NodeOutput:
        path = paths.resolve(paths.TEXT_ENCODER_FOLDERS, text_encoder_name, "text encoder")
        precision = pick_dtype(dtype)
        encoder: TextEncoder = cached("text_encoder", (file_identity(path), precision),
                                      lambda: load_text_encoder(path, dtype=precision, device=torch_device()))
        return io.NodeOutput(encoder)


NODES = [SelfForcingModelLoader, SelfForcingVAELoader, SelfForcingTextEncoderLoader]
