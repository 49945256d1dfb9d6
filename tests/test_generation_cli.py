"""The `generate` command streams a playable video from model files, with keyframes and schedules."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from selfforcing_core.checkpoint import save_transformer
from selfforcing_core.config import CausalSettings, WanConfig
from selfforcing_core.generation_cli import add_arguments, run
from selfforcing_core.text_encoder import UMT5Config, UMT5Encoder
from selfforcing_core.video_export import read_video
from selfforcing_core.wan_vae import WanVAE, WanVAEConfig

from tiny_models import tiny_model

TEXT_DIM = 32


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    config = WanConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=TEXT_DIM, text_len=16, freq_dim=16)
    for name, marks in (("dit", {}), ("goal_dit", {"end_frame": "goal_prefix"})):
        save_transformer(tiny_model(config).float(), str(folder / f"{name}.safetensors"),
                         CausalSettings(chunk_frames=3, denoising_steps=(1000, 500)),
                         extra_metadata={"resolution": "32x48", **marks})
    vae = WanVAE(WanVAEConfig(dim=8))
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(folder / "vae.safetensors"))
    text = UMT5Encoder(UMT5Config(vocab=259, dim=TEXT_DIM, dim_attn=TEXT_DIM, dim_ffn=64, num_heads=2, num_layers=1))
    save_file({k: v.contiguous() for k, v in text.state_dict().items()}, str(folder / "text.safetensors"))
    return folder


def _args(folder, tmp_path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([
        "--model", str(folder / "dit.safetensors"), "--vae", str(folder / "vae.safetensors"),
        "--text-encoder", str(folder / "text.safetensors"), "--seconds", "1", "--out", str(tmp_path / "v.mp4"),
        *extra,
    ])


def test_generate_writes_the_video_at_the_models_native_size(model_files, tmp_path, capsys):
    path = run(_args(model_files, tmp_path, "--prompt", "a red circle"))
    info = read_video(path)
    assert info.frame_count == 16 and (info.width, info.height) == (32, 48)
    out = capsys.readouterr().out
    assert "chunk 1/2" in out and "wrote" in out and "first frames after" in out


def test_generate_with_keyframes_and_a_prompt_schedule(model_files, tmp_path):
    import imageio.v3 as iio

    image = np.zeros((60, 40, 3), dtype=np.uint8)
    image[..., 0] = 255
    iio.imwrite(tmp_path / "start.png", image)
    path = run(_args(model_files, tmp_path, "--start-image", str(tmp_path / "start.png"),
                     "--end-image", str(tmp_path / "start.png"), "--prompt", "one", "--prompt", "two",
                     "--switch-at", "0.5", "--width", "32", "--height", "32"))
    assert read_video(path).frame_count == 16


def test_end_mode_goal_prefix_runs_on_a_marked_model_and_is_refused_by_others(model_files, tmp_path):
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "end.png", np.full((48, 32, 3), 200, dtype=np.uint8))
    end = ["--end-image", str(tmp_path / "end.png"), "--end-mode", "goal_prefix"]
    assert read_video(run(_args(model_files, tmp_path, "--model", str(model_files / "goal_dit.safetensors"),
                                *end))).frame_count == 16
    with pytest.raises(ValueError, match="needs a model trained with end frames"):
        run(_args(model_files, tmp_path, *end))


def test_a_schedule_needs_one_switch_time_per_extra_prompt(model_files, tmp_path):
    with pytest.raises(SystemExit, match="2 prompts need 1 --switch-at"):
        run(_args(model_files, tmp_path, "--prompt", "one", "--prompt", "two"))


def test_extend_copies_the_video_and_continues_it_from_its_last_frames(model_files, tmp_path):
    from selfforcing_core.video_export import write_video

    original = torch.zeros(13, 48, 32, 3)
    original[..., 1] = torch.linspace(0, 1, 13).view(-1, 1, 1)
    write_video(str(tmp_path / "in.mp4"), original, fps=16)
    args = _args(model_files, tmp_path, "--extend", str(tmp_path / "in.mp4"), "--prompt", "one", "--prompt", "two",
                 "--switch-at", "0.5")
    info = read_video(run(args))
    assert info.frame_count == 13 + 16 and (info.width, info.height) == (32, 48)
    assert abs(int(info.first_frame[..., 1].mean()) - 0) <= 3
    write_video(str(tmp_path / "other.mp4"), 1.0 - original, fps=16)
    other = read_video(run(_args(model_files, tmp_path, "--extend", str(tmp_path / "other.mp4"), "--prompt", "one",
                                 "--prompt", "two", "--switch-at", "0.5")))
    assert other.frame_count == info.frame_count
    assert not np.array_equal(other.last_frame, info.last_frame)  # the continuation follows its prefix
    with pytest.raises(SystemExit, match="leave out --start-image"):
        run(_args(model_files, tmp_path, "--extend", str(tmp_path / "in.mp4"), "--start-image", "x.png"))
