"""API-format workflows (what POST /prompt takes) built from the pack's nodes, for the e2e tests."""
from __future__ import annotations

from typing import Any

from tiny_weights import MODEL_FILE, TEXT_ENCODER_FILE, VAE_FILE


def _base(width: int, height: int, length: float, seed: int, prefix: str, unit: str = "frames") -> dict[str, Any]:
    return {
        "1": {"class_type": "SelfForcingModelLoader",
              "inputs": {"model_name": MODEL_FILE, "dtype": "float32", "attention": "auto", "chunk_frames": 0,
                         "local_window": -1, "sink_frames": -1}},
        "2": {"class_type": "SelfForcingTextEncoderLoader",
              "inputs": {"text_encoder_name": TEXT_ENCODER_FILE, "dtype": "float32"}},
        "3": {"class_type": "SelfForcingTextEncode", "inputs": {"text_encoder": ["2", 0], "text": "a red fox in snow"}},
        "4": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_FILE}},
        "5": {"class_type": "SelfForcingSampler",
              "inputs": {"model": ["1", 0], "positive": ["3", 0], "seed": seed, "steps": "1000,750,500,250",
                         "length": length, "length_unit": unit, "width": width, "height": height,
                         "batch_size": 1, "vae": ["4", 0]}},
        "6": {"class_type": "SelfForcingSaveVideo",
              "inputs": {"images": ["5", 1], "filename_prefix": prefix, "format": "mp4", "fps": 16.0, "crf": 10}},
    }


def text_to_video(width: int = 32, height: int = 32, length: float = 25, seed: int = 0,
                  prefix: str = "e2e/t2v", unit: str = "frames") -> dict[str, Any]:
    """Model + our text encoder + native VAELoader -> streaming sampler -> mp4."""
    return _base(width, height, length, seed, prefix, unit)


def keyframes_video(start_image: str, end_image: str, width: int = 32, height: int = 32, length: float = 25,
                    prefix: str = "e2e/keyframes") -> dict[str, Any]:
    """t2v plus LoadImage start/end keyframes (files in ComfyUI's input folder)."""
    prompt = _base(width, height, length, 0, prefix)
    prompt["7"] = {"class_type": "LoadImage", "inputs": {"image": start_image}}
    prompt["8"] = {"class_type": "LoadImage", "inputs": {"image": end_image}}
    prompt["9"] = {"class_type": "SelfForcingKeyframes",
                   "inputs": {"vae": ["4", 0], "start_image": ["7", 0], "end_image": ["8", 0], "end_strength": 0.5}}
    prompt["5"]["inputs"]["keyframes"] = ["9", 0]
    return prompt


def continued_video(length: float = 25, prefix: str = "e2e/continued") -> dict[str, Any]:
    """t2v, then a second sampler that continues the first one's frames (all of them as start_image)."""
    prompt = _base(32, 32, length, 0, prefix)
    prompt["6"]["inputs"]["filename_prefix"] = f"{prefix}_first"
    prompt["9"] = {"class_type": "SelfForcingKeyframes", "inputs": {"vae": ["4", 0], "start_image": ["5", 1],
                                                                    "end_strength": 0.5}}
    prompt["10"] = {"class_type": "SelfForcingSampler",
                    "inputs": {**prompt["5"]["inputs"], "seed": 1, "keyframes": ["9", 0]}}
    prompt["11"] = {"class_type": "SelfForcingSaveVideo",
                    "inputs": {"images": ["10", 1], "filename_prefix": prefix, "format": "mp4", "fps": 16.0, "crf": 10}}
    return prompt


def scheduled_video(schedule: str, length: float = 49, prefix: str = "e2e/schedule") -> dict[str, Any]:
    """t2v with a prompt schedule instead of one prompt."""
    prompt = _base(32, 32, length, 0, prefix)
    prompt["3"] = {"class_type": "SelfForcingPromptSchedule", "inputs": {"schedule": schedule, "text_encoder": ["2", 0]}}
    return prompt


def with_saved_latent(prompt: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Also save the sampler's LATENT (ComfyUI's SaveLatent: a safetensors `.latent` file)."""
    prompt["20"] = {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": prefix}}
    return prompt


def bundled_model_video(length: float = 17, prefix: str = "e2e/bundled") -> dict[str, Any]:
    """The bundled world model (the pack's own models/ folder, listed without copying) at 128x128 on CPU."""
    prompt = _base(128, 128, length, 0, prefix)
    prompt["1"]["inputs"]["model_name"] = "world_causal.safetensors"
    prompt["2"]["inputs"]["text_encoder_name"] = "world_text_encoder.safetensors"
    prompt["3"]["inputs"]["text"] = "a large red circle moves right on a navy background"
    prompt["4"] = {"class_type": "SelfForcingVAELoader", "inputs": {"vae_name": "world_vae.safetensors", "dtype": "float32"}}
    return prompt
