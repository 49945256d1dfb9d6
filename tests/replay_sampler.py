"""Replay of a golden sampler case: our model, schedule and streaming sampler in float64.

The case's recorded noise and re-noise draws are fed through a `NoiseSource`, the model calls are
traced and checked against the case's call list, and the final latents are compared.
"""
from __future__ import annotations

import torch
from safetensors.torch import load_file

from selfforcing_core.config import CausalSettings, WanConfig
from selfforcing_core.sampler import StreamingSampler, plan_chunks
from selfforcing_core.transformer import CausalWanModel


def _to_model_layout(frames_major: torch.Tensor) -> torch.Tensor:
    """[B, F, C, H, W] (the reference pipeline's layout) -> [B, C, F, H, W] (ours)."""
    return frames_major.permute(0, 2, 1, 3, 4)


class RecordedNoise:
    """Serves a case's initial noise by frame range and its re-noise draws in recorded order."""

    def __init__(self, noise: torch.Tensor, draws: list[torch.Tensor], prefix_frames: int):
        self.noise = _to_model_layout(noise)
        self.draws = draws
        self.prefix_frames = prefix_frames
        self.used = 0

    def initial(self, start_frame: int, shape: torch.Size) -> torch.Tensor:
        first = start_frame - self.prefix_frames
        return self.noise[:, :, first : first + shape[2]]

    def renoise(self, shape: torch.Size) -> torch.Tensor:
        draw = self.draws[self.used]
        self.used += 1
        batch, _, frames = shape[:3]
        return _to_model_layout(draw.unflatten(0, (batch, frames)))


def settings_from_meta(meta: dict) -> CausalSettings:
    """The causal settings a case was made with (window/sink mapped from the reference's convention)."""
    sampler, model = meta["sampler"], meta["model"]
    local = model.get("local_attn_size", sampler.get("local_attn_size", -1))
    sink = model.get("sink_size", sampler.get("sink_size", 0))
    return CausalSettings(
        chunk_frames=sampler.get("num_frame_per_block", 1),
        local_window=None if local in (None, -1) else local - sink,
        sink_frames=sink if local not in (None, -1) else 0,
        denoising_steps=tuple(sampler["denoising_step_list"]),
        timestep_shift=sampler.get("timestep_shift", 5.0),
        warp_steps=sampler.get("warp_denoising_step", True),
        context_noise=sampler.get("context_noise", 0),
    )


def replay(path: str, meta: dict) -> float:
    """Max abs error of our final latents against the case's `output_latents`."""
    tensors = load_file(path)
    config = WanConfig.from_dict(meta["model"])
    model = CausalWanModel(config, attention_backend="math").to(torch.float64)
    weights = {k[len("weight."):]: v for k, v in tensors.items() if k.startswith("weight.")}
    model.load_state_dict(weights, strict=True)
    model.eval()

    settings = settings_from_meta(meta)
    prefix = tensors.get("initial_latent")
    prefix = None if prefix is None else _to_model_layout(prefix)
    prefix_frames = 0 if prefix is None else prefix.shape[2]
    noise = tensors["noise"]
    draws = [tensors[f"renoise.{i}"] for i in range(meta.get("renoise_draws", 0))]
    batch, frames, channels, height, width = noise.shape

    calls: list[tuple[list[float], int]] = []
    tokens = model.frame_tokens(height, width)

    def trace(_module, args, kwargs):
        calls.append((args[1][0].tolist(), kwargs["start_frame"] * tokens))

    handle = model.register_forward_pre_hook(trace, with_kwargs=True)
    sampler = StreamingSampler(model, settings, cache_last_chunk=True)  # as the reference; its trace has that pass
    plan = plan_chunks(frames, settings, start_frame=prefix_frames)
    output = sampler.sample(plan, tensors["context"], RecordedNoise(noise, draws, prefix_frames),
                            (batch, channels, height, width), prefix=prefix)
    handle.remove()

    expected_calls = [(c["t"], c["current_start"]) for c in meta.get("model_calls", [])]
    if expected_calls and [(list(map(float, t)), s) for t, s in calls] != [
        (list(map(float, t)), s) for t, s in expected_calls
    ]:
        raise AssertionError(f"model call trace differs from the reference:\nours {calls}\nref  {expected_calls}")
    reference = _to_model_layout(tensors["output_latents"])
    return (output - reference).abs().max().item()
