"""The long-video example workflow through the HTTP API: a prompt schedule over a rolling window and
sink, each chunk appended to the sampler's mp4 as it is decoded, the outputs holding only the last
frame, and the server's peak memory the same for a video four times as long."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from comfy_client import ComfyClient
from comfy_server import ComfyServer
from selfforcing_core.video_export import read_video
from ui_workflow import api_prompt

LONG_VIDEO = Path(__file__).resolve().parents[2] / "example_workflows" / "selfforcing_long_video_prompt_schedule.json"
SCHEDULE = "0: a red fox in snow\n1s: a blue whale in the sea\n2.5s: a green parrot in a tree"
FOX, WHALE, PARROT = "a red fox in snow", "a blue whale in the sea", "a green parrot in a tree"
SIZE = 128
SAMPLER = "5"
MiB = 1024 * 1024
pytestmark = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="reads Linux's peak memory counter")


def long_video(comfy: ComfyClient, tiny_models: dict[str, str], seconds: float, seed: int,
               keep_frames: bool = False) -> dict:
    """The example workflow as the API prompt, with the tiny models, a 3-prompt schedule and 128x128."""
    workflow = json.loads(LONG_VIDEO.read_text())
    return api_prompt(workflow, comfy.object_info(), {
        "model_name": tiny_models["model"], "text_encoder_name": tiny_models["text_encoder"],
        "vae_name": tiny_models["vae"], "dtype": "float32", "schedule": SCHEDULE, "length": seconds,
        "width": SIZE, "height": SIZE, "seed": seed, "filename_prefix": "e2e/long", "keep_frames": keep_frames})


def sampler_video(server: ComfyServer, entry: dict) -> Path:
    """The mp4 the sampler wrote (its `images` UI output, like a save node's)."""
    item, = entry["outputs"][SAMPLER]["images"]
    return server.base_dir / item["type"] / item["subfolder"] / item["filename"]


def peak_growth(server: ComfyServer, comfy: ComfyClient, prompt: dict) -> tuple[dict, int]:
    """Run a prompt; returns its /history entry and how far the server's resident memory rose above
    what it held before (the peak, so memory freed again by the end still counts)."""
    server.reset_peak_rss()
    before = server.rss_bytes()
    entry = comfy.run(prompt, timeout=600)
    assert entry["finished"]["type"] == "execution_success", entry["finished"]
    return entry, server.peak_rss_bytes() - before


def test_long_video_streams_to_disk_with_flat_memory(comfy_server: ComfyServer, comfy: ComfyClient,
                                                     tiny_models: dict[str, str]) -> None:
    first = long_video(comfy, tiny_models, seconds=2, seed=1)
    first["20"] = {"class_type": "SaveLatent", "inputs": {"samples": [SAMPLER, 0], "filename_prefix": "e2e/last"}}
    first["21"] = {"class_type": "SelfForcingSaveVideo", "inputs": {
        "images": [SAMPLER, 1], "filename_prefix": "e2e/last", "format": "mp4", "fps": 16.0, "crf": 10}}
    prompt_id = comfy.queue(first)
    entry = comfy.wait(prompt_id, timeout=600)
    assert entry["finished"]["type"] == "execution_success", entry["finished"]
    info = read_video(str(sampler_video(comfy_server, entry)))
    assert (info.width, info.height, info.frame_count, info.codec) == (SIZE, SIZE, 32, "h264")
    texts = [c["data"]["text"] for c in comfy.events_for(prompt_id, "selfforcing.frames")]
    assert texts == [FOX, FOX, FOX, WHALE]  # chunk 0 comes as its first frame, then the rest
    assert entry["outputs"][SAMPLER]["selfforcing_clip"][0]["frames"] == 32
    latent, = entry["outputs"]["20"]["latents"]
    latent = load_file(str(comfy_server.base_dir / "output" / latent["subfolder"] / latent["filename"]))
    assert latent["latent_tensor"].shape == (1, 16, 1, SIZE // 8, SIZE // 8)  # the last latent frame only
    last, = entry["outputs"]["21"]["images"]
    assert read_video(str(comfy_server.base_dir / "output" / last["subfolder"] / last["filename"])).frame_count == 1

    # Measured after that first run has loaded the models; the last run keeps every frame, to show that
    # holding a video's frames would show in this measure.
    short, short_growth = peak_growth(comfy_server, comfy, long_video(comfy, tiny_models, seconds=2, seed=2))
    long, long_growth = peak_growth(comfy_server, comfy, long_video(comfy, tiny_models, seconds=8, seed=3))
    _, holding_growth = peak_growth(comfy_server, comfy,
                                    long_video(comfy, tiny_models, seconds=8, seed=4, keep_frames=True))
    assert read_video(str(sampler_video(comfy_server, short))).frame_count == 32
    assert read_video(str(sampler_video(comfy_server, long))).frame_count == 128
    texts = [c["data"]["text"] for c in comfy.events_for(long["finished"]["data"]["prompt_id"], "selfforcing.frames")]
    assert texts == [FOX] * 3 + [WHALE] * 2 + [PARROT] * 7
    frames_bytes = 128 * SIZE * SIZE * 3 * 4  # the 8 s video as float32 IMAGE frames
    growth = {name: round(value / MiB, 1) for name, value in
              (("2s", short_growth), ("8s", long_growth), ("8s keeping frames", holding_growth))}
    assert long_growth - short_growth < frames_bytes / 2, growth
    assert holding_growth - long_growth > frames_bytes / 2, growth
