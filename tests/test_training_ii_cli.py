"""`python -m selfforcing_core train ode|causal-init|self-forcing|baseline|end-frame|evaluate` end to end
on toy models (CPU, a few steps each): every stage reads the files of the one before and writes its own."""
from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import torch

from selfforcing_core.checkpoint import load_transformer
from selfforcing_core.cli import main
from selfforcing_core.keyframe_prefix import trained_with_goal
from selfforcing_core.training.causal_eval import video_bytes
from selfforcing_core.training.data import CaptionTokens
from selfforcing_core.training.distill_cli import main as distill_main
from selfforcing_core.training.distill_stages import load_dit, load_text
from selfforcing_core.training.evaluation import evaluate_teacher
from selfforcing_core.training.model_sizes import TOY
from selfforcing_core.training.teacher_training import Teacher, export_teacher, init_teacher
from selfforcing_core.training.vae_training import export_vae
from selfforcing_core.training.world_scene import WorldConfig
from selfforcing_core.vae_loading import load_wan_vae
from selfforcing_core.wan_vae import WanVAE


def _toy_files(folder) -> dict[str, str]:
    torch.manual_seed(0)
    teacher = Teacher(TOY.dit, TOY.text)
    init_teacher(teacher)
    with torch.no_grad():
        teacher.dit.head.head.weight.normal_(0, 0.02)
    paths = {name: str(folder / f"{name}.safetensors") for name in ("teacher", "text", "vae")}
    export_teacher(teacher, paths["teacher"], paths["text"],
                   {"resolution": "32x32", "timestep_shift": "3.0", "num_frames": "17"})
    export_vae(WanVAE(TOY.vae), paths["vae"])
    return paths


def test_training_ii_stages_run_end_to_end_on_toy_models(tmp_path):
    files = _toy_files(tmp_path)
    common = ["--teacher", files["teacher"], "--text-encoder", files["text"], "--cpu"]
    out = str(tmp_path / "run")
    distill_main(["ode", "--out", out, "--vae", files["vae"], "--bank-clips", "6", "--pairs", "4",  # standalone entry
                  "--teacher-steps", "8", "--batch", "4", *common])
    bank, pairs = os.path.join(out, "clip_bank.safetensors"), os.path.join(out, "ode_pairs.safetensors")
    main(["train", "causal-init", "--out", out, "--pairs", pairs, "--steps", "2", "--batch", "2", *common])
    init = os.path.join(out, "causal_init.safetensors")
    distill = ["--bank", bank, "--steps", "1", "--batch", "2", "--critic-steps", "2", *common]
    shipped = str(tmp_path / "world_causal.safetensors")
    main(["train", "self-forcing", "--out", out, "--init", init, "--export", shipped, *distill])
    main(["train", "baseline", "--method", "teacher_forcing", "--out", out, "--init", init, *distill])
    main(["train", "end-frame", "--out", out, "--init", os.path.join(out, "self_forcing.safetensors"), *distill])

    loaded = load_transformer(shipped, dtype=torch.float32)
    assert loaded.metadata["resolution"] == "32x32" and loaded.metadata["num_frames"] == "17"
    assert loaded.settings.local_window == 6 and loaded.settings.sink_frames == 3 and loaded.settings.rebase_sink
    assert loaded.settings.timestep_shift == 3.0
    assert next(iter(loaded.model.parameters())).dtype == torch.float32
    assert not trained_with_goal(loaded.metadata)
    assert trained_with_goal(load_transformer(os.path.join(out, "end_frame.safetensors")).metadata)
    from safetensors import safe_open
    with safe_open(shipped, "pt") as handle:
        assert handle.get_tensor("head.head.weight").dtype == torch.float16

    decode = ["--vae", files["vae"], "--text-encoder", files["text"], "--cpu", "--clips", "2", "--long-clips", "2"]
    main(["train", "evaluate", "--out", out, "--label", "sf", "--model", shipped, "--lengths", "1,2",
          "--keyframes", "start,guidance", *decode])
    main(["train", "evaluate", "--out", out, "--label", "goal", "--lengths", "", "--keyframes", "goal,goal_pinned",
          "--model", os.path.join(out, "end_frame.safetensors"), *decode])
    main(["train", "evaluate", "--out", out, "--label", "teacher", "--teacher", files["teacher"], "--truth",
          "--lengths", "1,2", "--teacher-steps", "2", *decode])
    runs = {label: json.load(open(os.path.join(out, f"eval_{label}.json")))["runs"]
            for label in ("sf", "goal", "teacher")}
    assert set(runs["sf"]) == {"text_1x", "text_2x", "start_1x", "guidance_1x"}
    assert set(runs["goal"]) == {"goal_1x", "goal_pinned_1x"}
    assert set(runs["teacher"]) == {"truth_1x", "truth_2x", "teacher_1x"}
    assert runs["teacher"]["truth_1x"]["colour_accuracy"] == 1.0
    assert {"prompt_adherence", "drift", "object_loss", "end_jump"} <= set(runs["sf"]["text_2x"])
    assert "end_psnr" in runs["sf"]["guidance_1x"] and "start_psnr" in runs["sf"]["start_1x"]
    for name in ("self_forcing", "teacher_forcing", "end_frame"):
        metrics = json.load(open(os.path.join(out, f"{name}_metrics.json")))
        assert metrics["generator_steps"] == 1 and metrics["critic_steps"] == 2


def test_training_ii_steps_run_under_bf16_autocast(tmp_path, fresh_accelerate_state):
    """`--precision bf16` (the GPU default) puts the rollouts, the DMD and the critic under autocast: the
    linear layers compute in bfloat16 and the losses stay finite (CPU autocast here, toy models)."""
    files = _toy_files(tmp_path)
    common = ["--teacher", files["teacher"], "--text-encoder", files["text"], "--cpu"]
    out = str(tmp_path / "run")
    distill_main(["ode", "--out", out, "--vae", files["vae"], "--bank-clips", "6", "--pairs", "4",
                  "--teacher-steps", "8", "--batch", "4", *common])
    dtypes = set()

    def record(module, inputs, output):
        if isinstance(module, torch.nn.Linear) and torch.is_grad_enabled():
            dtypes.add(output.dtype)

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        main(["train", "causal-init", "--out", out, "--pairs", os.path.join(out, "ode_pairs.safetensors"),
              "--steps", "2", "--batch", "2", "--precision", "bf16", *common])
        main(["train", "self-forcing", "--out", out, "--init", os.path.join(out, "causal_init.safetensors"),
              "--bank", os.path.join(out, "clip_bank.safetensors"), "--steps", "2", "--batch", "2",
              "--critic-steps", "2", "--precision", "bf16", *common])
    finally:
        hook.remove()
    assert dtypes == {torch.bfloat16}
    init = json.load(open(os.path.join(out, "causal_init_metrics.json")))
    distilled = json.load(open(os.path.join(out, "self_forcing_metrics.json")))
    assert distilled["generator_steps"] == 2 and distilled["critic_steps"] == 4
    values = [init["final_loss"], distilled["critic_loss"], distilled["generator_loss"], distilled["dmd_grad"]]
    assert all(torch.isfinite(torch.tensor(values)))


def test_teacher_draws_redo_the_teacher_stage_samples(tmp_path):
    """`--teacher-draws teacher` samples with the noise `train teacher` scores itself with; the default doesn't."""
    files = _toy_files(tmp_path)
    out = str(tmp_path / "eval")
    common = ["--teacher", files["teacher"], "--vae", files["vae"], "--text-encoder", files["text"], "--cpu",
              "--clips", "2", "--lengths", "1", "--teacher-steps", "2", "--samples", "2"]
    main(["train", "evaluate", "--out", out, "--label", "stage", "--teacher-draws", "teacher", *common])
    main(["train", "evaluate", "--out", out, "--label", "distill", *common])
    clips = {label: np.load(os.path.join(out, f"samples_{label}.npz"))["teacher_1x"].astype(np.float64)
             for label in ("stage", "distill")}

    cpu = torch.device("cpu")
    dit = load_dit(files["teacher"], cpu).model
    teacher = SimpleNamespace(dit=dit, text=load_text(files["text"], cpu, TOY.text_len))
    vae = load_wan_vae(files["vae"], dtype=torch.float32)
    _, videos, _ = evaluate_teacher(teacher, vae, CaptionTokens(TOY.text_len), 2,
                                    WorldConfig(height=32, width=32, num_frames=17), steps=2)
    expected = video_bytes(videos).astype(np.float64)
    # The same noise through the same models; the text encoder is reached by two paths (rounding: one level).
    assert np.abs(clips["stage"] - expected).max() <= 1.0
    assert np.abs(clips["distill"] - expected).mean() > 5.0
