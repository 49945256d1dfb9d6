"""The `train` command line: help texts, and the toy pipeline VAE -> teacher -> samples end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from selfforcing_core.checkpoint import load_transformer
from selfforcing_core.cli import main
from selfforcing_core.training.model_sizes import PRESETS
from selfforcing_core.training.stages import (DIT_FILE, HEADS_FILE, TEXT_FILE, VAE_FILE, init_depths,
                                              load_teacher_weights)
from selfforcing_core.training.teacher_training import build_teacher
from selfforcing_core.training.trainer import TrainOptions, Trainer, make_accelerator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["train", "vae", "--help"],
                                  ["train", "teacher", "--help"], ["train", "sample", "--help"],
                                  ["train", "snapshot", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_toy_pipeline_end_to_end(tmp_path):
    vae_dir, teacher_dir, sample_dir = (str(tmp_path / name) for name in ("vae", "teacher", "samples"))
    small = ["--size", "toy", "--resolution", "32", "--frames", "5", "--batch", "2", "--steps", "2", "--log-every", "1"]
    assert main(["train", "vae", "--out", vae_dir, *small, "--crop", "32", "--eval-clips", "2", "--bank-clips", "4",
                 "--bank-refresh-every", "1"]) == 0
    vae_metrics = json.load(open(os.path.join(vae_dir, "vae_metrics.json")))
    assert vae_metrics["steps"] == 2 and vae_metrics["truth/colour_accuracy"] == 1.0
    vae_file = os.path.join(vae_dir, VAE_FILE)
    _check_decoder_only(vae_file, str(tmp_path / "decoder"), small)
    assert main(["train", "teacher", "--vae", vae_file, "--out", teacher_dir, *small, "--bank-clips", "4",
                 "--eval-clips", "2", "--eval-steps", "3", "--loss-clips", "3"]) == 0
    metrics = json.load(open(os.path.join(teacher_dir, "teacher_metrics.json")))
    assert 0 < metrics["loss_bank_clips"] < 10 and 0 < metrics["loss_held_out_clips"] < 10
    assert metrics["steps"] == 2 and metrics["sample_steps"] == 3 and metrics["clips"] == 2
    assert 0.0 <= metrics["colour_accuracy"] <= 1.0
    assert os.path.isfile(os.path.join(teacher_dir, "teacher_state.safetensors"))
    assert not any(name.endswith(".tmp") for name in os.listdir(teacher_dir))
    _check_snapshot(teacher_dir, str(tmp_path / "snapshot"))
    continued = build_teacher(PRESETS["toy"].dit, PRESETS["toy"].text, seed=5)
    load_teacher_weights(continued, teacher_dir)
    exported = load_transformer(os.path.join(teacher_dir, DIT_FILE), dtype=torch.float32).model.state_dict()
    assert all(torch.equal(continued.dit.state_dict()[key], value) for key, value in exported.items())
    deeper = str(tmp_path / "deeper")
    assert main(["train", "teacher", "--vae", vae_file, "--out", deeper, *small, "--bank-clips", "4",
                 "--eval-clips", "0", "--loss-clips", "0", "--init", teacher_dir, "--text-layers", "2",
                 "--dit-layers", "3", "--binding-weight", "0.5"]) == 0
    _check_grown_run(deeper, str(tmp_path / "deeper_snapshot"))
    again = str(tmp_path / "again")  # going on from a grown run takes its depths from its files
    assert main(["train", "teacher", "--vae", vae_file, "--out", again, *small, "--bank-clips", "4",
                 "--eval-clips", "0", "--loss-clips", "0", "--init", deeper, "--binding-weight", "0.5"]) == 0
    assert init_depths(deeper) == init_depths(again) == (2, 3)
    binding = json.load(open(os.path.join(deeper, "teacher_metrics.json")))
    assert all(0.0 <= binding[f"binding_accuracy/{name}"] <= 1.0 for name in ("colour", "shape", "size", "motion"))
    assert main(["train", "sample", "--out", sample_dir, "--vae", vae_file, "--teacher",
                 os.path.join(teacher_dir, DIT_FILE), "--text-encoder", os.path.join(teacher_dir, TEXT_FILE),
                 "--prompt", "a red circle moves right on a gray background", "--resolution", "32", "--frames", "5",
                 "--steps", "2"]) == 0
    assert sorted(os.listdir(sample_dir)) == ["sample.log", "sample_00.mp4"]


def _check_snapshot(teacher_dir: str, snapshot_dir: str) -> None:
    """`train snapshot` of the finished toy run gives back exactly the files the run exported (both are the EMA
    weights of its last step), and says which step they are."""
    assert main(["train", "snapshot", "--out", teacher_dir, "--to", snapshot_dir, "--size", "toy",
                 "--resolution", "32", "--frames", "5"]) == 0
    for name in (DIT_FILE, TEXT_FILE):
        exported, snapped = (load_file(os.path.join(folder, name)) for folder in (teacher_dir, snapshot_dir))
        assert exported.keys() == snapped.keys()
        assert all(torch.equal(exported[key], snapped[key]) for key in exported)
    with safe_open(os.path.join(snapshot_dir, DIT_FILE), "pt") as dit:
        metadata = dit.metadata()
    assert metadata["kind"] == "bidirectional teacher (EMA at step 2)"
    assert metadata["resolution"] == "32x32" and metadata["num_frames"] == "5"


def _check_decoder_only(vae_file: str, out: str, small: list[str]) -> None:
    """A decoder-only run changes the decoder and leaves every weight the latents depend on, and the record
    of the statistics folded into them, exactly as they were."""
    assert main(["train", "vae", "--out", out, *small, "--crop", "32", "--eval-clips", "1", "--bank-clips", "4",
                 "--init", vae_file, "--decoder-only", "--lr", "1e-2"]) == 0
    with safe_open(vae_file, "pt") as source, safe_open(os.path.join(out, VAE_FILE), "pt") as tuned:
        assert source.keys() == tuned.keys()
        assert source.metadata()["latent_stats_folded"] == tuned.metadata()["latent_stats_folded"]
        moved = {key for key in source.keys() if not torch.equal(source.get_tensor(key), tuned.get_tensor(key))}
    assert moved and all(key.startswith(("decoder.", "conv2.")) for key in moved), sorted(moved)
    assert json.load(open(os.path.join(out, "vae_metrics.json")))["steps"] == 2


def test_decoder_only_needs_a_vae_to_start_from(capsys):
    with pytest.raises(SystemExit, match="give it --init"):
        main(["train", "vae", "--out", "x", "--decoder-only"])


def _grown_toy():
    sizes = PRESETS["toy"].with_layers(text=2, dit=3)
    return sizes.dit, sizes.text


def _check_grown_run(run_dir: str, snapshot_dir: str) -> None:
    """A toy run grown from the 1-layer toy teacher exports, and snapshots, the depths it was asked for, with
    its caption-binding heads in a file of their own that `--init` continues."""
    for folder in (run_dir, snapshot_dir):
        if folder == snapshot_dir:
            assert main(["train", "snapshot", "--out", run_dir, "--to", snapshot_dir, "--size", "toy",
                         "--resolution", "32", "--frames", "5"]) == 0
        configs = []
        for name in (DIT_FILE, TEXT_FILE):
            with safe_open(os.path.join(folder, name), "pt") as weights:
                configs.append(json.loads(weights.metadata()["config"]))
        assert configs[0]["num_layers"] == 3 and configs[1]["num_layers"] == 2
    heads = [load_file(os.path.join(folder, HEADS_FILE)) for folder in (run_dir, snapshot_dir)]
    assert heads[0].keys() == heads[1].keys() and "heads.colour.weight" in heads[0]
    assert all(torch.equal(heads[0][key], heads[1][key]) for key in heads[0])
    continued = build_teacher(*_grown_toy(), seed=7, binding=True)
    load_teacher_weights(continued, snapshot_dir)
    assert torch.equal(continued.binding.heads.colour.weight, heads[0]["heads.colour.weight"])


@pytest.mark.parametrize("option, value", [("--binding-weight", "-0.1"), ("--text-layers", "0"),
                                           ("--dit-layers", "-2")])
def test_bad_teacher_options_are_refused_at_once(option, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "teacher", "--vae", "v.safetensors", "--out", "x", option, value])
    assert exit_info.value.code == 2
    assert option in capsys.readouterr().err


def test_snapshot_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(SystemExit, match="no training state"):
        main(["train", "snapshot", "--out", str(tmp_path), "--to", str(tmp_path / "to")])
    teacher = build_teacher(PRESETS["toy"].dit, PRESETS["toy"].text, seed=0)
    Trainer(teacher, TrainOptions(steps=1), make_accelerator("no", cpu=True),
            str(tmp_path / "teacher_state")).save()
    with pytest.raises(SystemExit, match="does not hold a 'world' teacher"):
        main(["train", "snapshot", "--out", str(tmp_path), "--to", str(tmp_path / "to")])
    assert not os.path.exists(tmp_path / "to")


def test_training_commands_run_without_the_video_writer():
    """Training machines may lack imageio-ffmpeg: parsing a train command must not import it."""
    code = ("import sys; sys.modules['imageio_ffmpeg'] = None\n"
            "from selfforcing_core.cli import build_parser\n"
            "print(build_parser().parse_args(['train', 'vae', '--out', 'x']).stage)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "vae"
