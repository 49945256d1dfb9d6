"""Bad input through the API fails with a message that says what to fix, and the server keeps
serving; names from the API never reach outside ComfyUI's folders."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from comfy_client import ComfyClient
from comfy_server import ComfyServer
import workflows


def rejected(comfy: ComfyClient, prompt: dict) -> str:
    """POST a prompt that must fail validation; returns ComfyUI's error JSON as text."""
    status, body = comfy.post_prompt(prompt)
    assert status == 400, body
    return json.dumps(body)


def failed(comfy: ComfyClient, prompt: dict) -> str:
    """Run a prompt that must fail while executing; returns the error message."""
    entry = comfy.run(prompt)
    assert entry["finished"]["type"] == "execution_error", entry["finished"]
    return entry["finished"]["data"]["exception_message"]


@pytest.fixture
def still_serving(comfy: ComfyClient, tiny_models: dict[str, str]):
    """After the test, a good prompt still runs to the end."""
    yield
    assert comfy.run(workflows.text_to_video(seed=99, prefix="e2e/ok"))["finished"]["type"] == "execution_success"


def test_missing_model_file(comfy: ComfyClient, still_serving) -> None:
    prompt = workflows.text_to_video()
    prompt["1"]["inputs"]["model_name"] = "self_forcing_dmd.pt"
    message = rejected(comfy, prompt)
    assert "model 'self_forcing_dmd.pt' was not found in models/self_forcing or models/diffusion_models" in message


def test_width_not_multiple_of_16(comfy: ComfyClient, still_serving) -> None:
    message = rejected(comfy, workflows.text_to_video(width=500))
    assert "width 500 is not a multiple of 16; use 496 or 512" in message


def test_bad_step_list(comfy: ComfyClient, still_serving) -> None:
    prompt = workflows.text_to_video()
    prompt["5"]["inputs"]["steps"] = "250,500"
    assert "must be decreasing timesteps between 1 and 1000" in rejected(comfy, prompt)


def test_end_image_of_another_size(comfy_server: ComfyServer, comfy: ComfyClient, still_serving) -> None:
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(comfy_server.base_dir / "input" / "small.png")
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(comfy_server.base_dir / "input" / "wide.png")
    message = failed(comfy, workflows.keyframes_video("small.png", "wide.png", prefix="e2e/bad"))
    assert "end_image is 48x32 but start_image is 32x32" in message and "same size" in message


def test_vae_file_chosen_as_model(comfy_server: ComfyServer, comfy: ComfyClient, tiny_models: dict[str, str],
                                  still_serving) -> None:
    shutil.copy(comfy_server.models_dir("vae") / tiny_models["vae"],
                comfy_server.models_dir("diffusion_models") / "wan_2.1_vae.safetensors")
    prompt = workflows.text_to_video()
    prompt["1"]["inputs"]["model_name"] = "wan_2.1_vae.safetensors"
    message = failed(comfy, prompt)
    assert "this looks like a Wan2.1 VAE" in message and "load it with the VAE loader" in message


@pytest.mark.parametrize("name", ["../vae/tiny_wan_2.1_vae.safetensors", "/etc/passwd", "..\\..\\secret.pt"])
def test_names_outside_model_folders_are_refused(comfy: ComfyClient, name: str, still_serving) -> None:
    prompt = workflows.text_to_video()
    prompt["1"]["inputs"]["model_name"] = name
    message = rejected(comfy, prompt)
    assert json.dumps(repr(name))[1:-1] in message and "inside ComfyUI's models folders" in message


def test_keep_frames_off_needs_a_file_to_write(comfy: ComfyClient, still_serving) -> None:
    prompt = workflows.text_to_video()
    prompt["5"]["inputs"]["keep_frames"] = False
    assert "set filename_prefix so the video is written to the output folder" in rejected(comfy, prompt)
