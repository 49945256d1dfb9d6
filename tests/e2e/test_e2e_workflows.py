"""API-format workflows on a real ComfyUI: every node is listed, and t2v, keyframes and prompt
schedules produce mp4s with the right frames while each chunk streams to the client at once."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from comfy_client import ComfyClient
from comfy_server import ComfyServer
from conftest import output_file
from selfforcing_core.keyframes import encode_continuation, encode_keyframe
from selfforcing_core.video_export import iter_frames, read_video
from tiny_weights import tiny_vae
import workflows

NODES = {
    "SelfForcingModelLoader": ["model_name", "dtype", "attention", "chunk_frames", "local_window", "sink_frames",
                               "sink_placement"],
    "SelfForcingVAELoader": ["vae_name", "dtype"],
    "SelfForcingTextEncoderLoader": ["text_encoder_name", "dtype"],
    "SelfForcingTextEncode": ["text_encoder", "text"],
    "SelfForcingPromptSchedule": ["schedule", "text_encoder", "clip"],
    "SelfForcingKeyframes": ["vae", "start_image", "end_image", "end_strength", "end_mode"],
    "SelfForcingSampler": ["model", "positive", "seed", "steps", "length", "length_unit", "width", "height",
                           "batch_size", "vae", "keyframes", "filename_prefix", "keep_frames"],
    "SelfForcingDecode": ["latent", "vae", "chunk_frames"],
    "SelfForcingSaveVideo": ["images", "filename_prefix", "format", "fps", "crf"],
}


def test_object_info_lists_every_node_with_its_inputs(comfy: ComfyClient, tiny_models: dict[str, str]) -> None:
    info = comfy.object_info()
    for node_id, inputs in NODES.items():
        spec = info[node_id]
        assert spec["category"] == "SelfForcing"
        listed = {**spec["input"]["required"], **spec["input"].get("optional", {})}
        assert sorted(listed) == sorted(inputs), node_id
    sampler = info["SelfForcingSampler"]["input"]
    assert sampler["required"]["positive"][0] == "CONDITIONING"
    assert sampler["required"]["steps"][1]["default"] == "1000,750,500,250"
    assert sampler["optional"]["vae"][0] == "VAE,SELFFORCING_VAE"
    assert info["SelfForcingSampler"]["output"] == ["LATENT", "IMAGE"]
    assert sampler["optional"]["filename_prefix"][1]["default"] == "" and sampler["optional"]["keep_frames"][1]["default"]
    assert tiny_models["model"] in info["SelfForcingModelLoader"]["input"]["required"]["model_name"][1]["options"]


def test_text_to_video_streams_every_chunk_and_saves_mp4(comfy_server: ComfyServer, comfy: ComfyClient,
                                                        tiny_models: dict[str, str]) -> None:
    prompt_id = comfy.queue(workflows.text_to_video(width=48, height=32, length=25, seed=1))
    entry = comfy.wait(prompt_id)
    assert entry["finished"]["type"] == "execution_success"
    info = read_video(str(output_file(comfy_server, entry)))
    assert (info.width, info.height, info.frame_count, info.codec) == (48, 32, 25, "h264")
    chunks = comfy.events_for(prompt_id, "selfforcing.frames")
    assert [c["data"]["chunk"] for c in chunks] == [0, 0, 1, 2]  # the first frame is pushed on its own first
    assert [len(c["data"]["frames"]) for c in chunks] == [1, 8, 12, 4]
    assert all(c["data"]["node"] == "5" and c["data"]["chunks"] == 3 for c in chunks)
    progress = [e["data"]["value"] for e in comfy.events_for(prompt_id, "progress") if e["data"]["node"] == "5"]
    assert progress == [1, 2, 3]
    order = [e["type"] for e in comfy.events_for(prompt_id)]
    assert order.index("selfforcing.frames") < order.index("executed")
    clip = entry["outputs"]["5"]["selfforcing_clip"][0]
    assert read_video(str(comfy_server.base_dir / "temp" / clip["filename"])).frame_count == 25


def _write_image(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_start_and_end_keyframes(comfy_server: ComfyServer, comfy: ComfyClient, tiny_models: dict[str, str]) -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:32, 0:32]
    start = np.stack([x * 8, y * 8, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    end = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    _write_image(comfy_server.base_dir / "input" / "start.png", start)
    _write_image(comfy_server.base_dir / "input" / "end.png", end)
    entry = comfy.run(workflows.keyframes_video("start.png", "end.png"))
    assert entry["finished"]["type"] == "execution_success"
    info = read_video(str(output_file(comfy_server, entry)))
    assert (info.width, info.height, info.frame_count) == (32, 32, 25)
    vae = tiny_vae()
    image = torch.from_numpy(start).float().div(255)
    expected = vae.decode(encode_keyframe(vae, image, 32, 32))[0, :, 0].permute(1, 2, 0).mul(0.5).add(0.5)
    expected = expected.clamp(0, 1).mul(255).numpy()
    plain = read_video(str(output_file(comfy_server, comfy.run(workflows.text_to_video(prefix="e2e/plain")))))
    error = luma_error(info.first_frame, expected)
    assert error < 2.0
    assert luma_error(plain.first_frame, expected) > 5 * error


def test_a_sampler_continues_another_ones_video(comfy: ComfyClient, comfy_server: ComfyServer,
                                               tiny_models: dict[str, str]) -> None:
    entry = comfy.run(workflows.continued_video())
    assert entry["finished"]["type"] == "execution_success"
    first, continued = (_saved(comfy_server, entry, node) for node in ("6", "11"))
    frames = torch.from_numpy(np.stack(list(iter_frames(str(first)))))
    info = read_video(str(continued))
    assert (info.width, info.height, info.frame_count) == (32, 32, 25)
    vae = tiny_vae()
    latents = encode_continuation(vae, frames, 32, 32)
    assert latents.shape[2] == 3  # its last 9 frames
    expected = vae.decode(latents)[0, :, 0].permute(1, 2, 0).mul(0.5).add(0.5).clamp(0, 1).mul(255).numpy()
    error = luma_error(info.first_frame, expected)  # the first video's mp4 coding error included
    assert error < 6.0
    assert luma_error(read_video(str(first)).first_frame, expected) > 2 * error


def _saved(server: ComfyServer, entry: dict, node: str):
    """The file save node `node` of a finished prompt wrote."""
    item = entry["outputs"][node]["images"][0]
    return server.base_dir / item["type"] / item["subfolder"] / item["filename"]


def luma_error(frame: np.ndarray, expected: np.ndarray) -> float:
    """Mean absolute difference in brightness (yuv420p keeps luma at full resolution; chroma is halved)."""
    weights = np.array([0.299, 0.587, 0.114])
    return float(np.abs(frame.astype(np.float64) @ weights - expected.astype(np.float64) @ weights).mean())


def saved_latent(server: ComfyServer, entry: dict) -> torch.Tensor:
    """The latent a prompt's SaveLatent node wrote."""
    item = entry["outputs"]["20"]["latents"][0]
    return load_file(str(server.base_dir / item["type"] / item["subfolder"] / item["filename"]))["latent_tensor"]


def test_prompt_schedule_changes_the_prompt_mid_video(comfy_server: ComfyServer, comfy: ComfyClient,
                                                      tiny_models: dict[str, str]) -> None:
    schedule = "0: a red fox in snow\n1.5s: a blue whale in the sea"
    prompt_id = comfy.queue(workflows.with_saved_latent(workflows.scheduled_video(schedule, length=49), "e2e/two"))
    entry = comfy.wait(prompt_id)
    assert entry["finished"]["type"] == "execution_success"
    assert read_video(str(output_file(comfy_server, entry))).frame_count == 49
    texts = [c["data"]["text"] for c in comfy.events_for(prompt_id, "selfforcing.frames")]
    assert texts == ["a red fox in snow"] * 3 + ["a blue whale in the sea"] * 3  # chunk 0 comes in two pieces
    single = comfy.run(workflows.with_saved_latent(
        workflows.scheduled_video("0: a red fox in snow", length=49, prefix="e2e/single"), "e2e/one"))
    two, one = saved_latent(comfy_server, entry), saved_latent(comfy_server, single)
    assert two.shape == one.shape == (1, 16, 13, 4, 4)
    switch = 6  # 1.5 s = frame 24, which lies in latent frame 6: the first chunk of the second prompt
    assert torch.equal(two[:, :, :switch], one[:, :, :switch])
    assert (two[:, :, switch:] - one[:, :, switch:]).abs().mean(dim=(0, 1, 3, 4)).gt(1e-3).all()


def test_bundled_world_model_runs_from_the_packs_own_folder(comfy_server: ComfyServer, comfy: ComfyClient) -> None:
    listed = comfy.object_info()["SelfForcingModelLoader"]["input"]["required"]["model_name"]
    assert "world_causal.safetensors" in str(listed)
    entry = comfy.wait(comfy.queue(workflows.bundled_model_video(length=17)))
    assert entry["finished"]["type"] == "execution_success"
    info = read_video(str(output_file(comfy_server, entry)))
    assert (info.width, info.height, info.frame_count) == (128, 128, 17)
