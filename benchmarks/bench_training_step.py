"""Where a training step of the world models spends its time: step rate and the top GPU kernels.

Runs the VAE step (batch of 33-frame 128x128 clips) and the teacher step (flow matching on latents)
of the `world` sizes with bf16 autocast, as `train vae` / `train teacher` do, eager or with one of the
speed-ups to try, and prints the steps per second and the kernels that take most of the GPU time
(torch.profiler; `--top 0` skips it).

    python benchmarks/bench_training_step.py --steps 30 --top 12
    python benchmarks/bench_training_step.py --top 0 --teacher-variants eager,blocks,whole \
        --vae-variants eager,compiled,channels_last      # which speed-ups pay (compiled ones warm up first)
    python benchmarks/bench_training_step.py --top 12 --teacher-variants whole,trainer --vae-variants ""

The `trainer` variant is the compiled teacher inside `Trainer.step` (accelerate's autocast, gradient clipping,
EMA, learning-rate schedule) on clips gathered from a latent bank, as `train teacher --compile` runs it: its gap
to `whole` is what the training loop adds around the model.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from selfforcing_core.training.data import CaptionTokens, LatentBank, world_clips  # noqa: E402
from selfforcing_core.training.model_sizes import PRESETS  # noqa: E402
from selfforcing_core.training.teacher_training import bank_flow_loss, build_teacher, flow_matching_loss  # noqa: E402
from selfforcing_core.training.vae_training import VAEAutoencoder, init_posterior, vae_loss  # noqa: E402
from selfforcing_core.training.world_scene import WorldConfig  # noqa: E402
from selfforcing_core.wan_vae import WanVAE  # noqa: E402

StepFn = Callable[[torch.Generator], torch.Tensor]
VARIANTS = {"teacher": ("eager", "blocks", "whole", "trainer"), "vae": ("eager", "compiled", "channels_last")}


def vae_step_fn(batch: int, device: torch.device, variant: str) -> tuple[torch.nn.Module, StepFn]:
    """The VAE step; variants: eager, compiled (encoder + decoder, as `--compile`), channels_last (3D NHWC)."""
    vae = WanVAE(PRESETS["world"].vae).to(device)
    init_posterior(vae)
    model = VAEAutoencoder(vae)
    video, _ = world_clips(0, range(batch), WorldConfig(height=128, width=128, num_frames=33), device)
    if variant == "compiled":
        vae.encoder.compile()
        vae.decoder.compile()
    elif variant == "channels_last":
        for conv in (m for m in vae.modules() if isinstance(m, torch.nn.Conv3d)):
            conv.to(memory_format=torch.channels_last_3d)
        video = video.contiguous(memory_format=torch.channels_last_3d)
    return model, lambda generator: vae_loss(model, video, generator)[0]


def teacher_step_fn(batch: int, device: torch.device, variant: str) -> tuple[torch.nn.Module, StepFn]:
    """The teacher step; variants: eager, blocks (the blocks' fixed parts), whole (the whole teacher, as
    `--compile`)."""
    sizes = PRESETS["world"]
    model = build_teacher(sizes.dit, sizes.text).to(device)
    tokens = CaptionTokens(sizes.text_len)
    latents = torch.randn(batch, 16, 9, 16, 16, device=device)
    ids, mask = tokens(["a red circle moves right across a blue background"] * batch)
    ids, mask = ids.to(device), mask.to(device)
    empty_ids, empty_mask = tokens.empty_ids.to(device), tokens.empty_mask.to(device)
    if variant == "blocks":
        model.dit.compile_blocks()
    elif variant == "whole":
        model.compile()
    return model, lambda generator: flow_matching_loss(model, latents, ids, mask, empty_ids, empty_mask, generator,
                                                       3.0, 0.1)


def teacher_trainer_step(batch: int, device: torch.device) -> Callable[[], torch.Tensor]:
    """One `Trainer.step` of the compiled teacher on a random 4096-clip latent bank (the `trainer` variant)."""
    from selfforcing_core.training.trainer import TrainOptions, Trainer, make_accelerator

    sizes = PRESETS["world"]
    model = build_teacher(sizes.dit, sizes.text)
    model.compile()
    tokens = CaptionTokens(sizes.text_len)
    captions = [f"a red circle moves right across a blue background {i}" for i in range(4096)]
    ids, mask = tokens(captions)
    bank = LatentBank(torch.randn(4096, 16, 9, 16, 16, device=device), ids.to(device), mask.to(device), captions)
    empty_ids, empty_mask = tokens.empty_ids.to(device), tokens.empty_mask.to(device)
    trainer = Trainer(model, TrainOptions(steps=10**9, warmup_steps=10),
                      make_accelerator("auto", cpu=device.type == "cpu"))
    loss_fn = bank_flow_loss(bank, batch, empty_ids, empty_mask, 3.0, 0.1)
    return lambda: trainer.step(loss_fn)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_step(model: torch.nn.Module, loss_fn: StepFn, device: torch.device) -> Callable[[], None]:
    """Forward, backward and AdamW under bf16 autocast, nothing else."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator(device).manual_seed(0)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_fn(generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def measure(name: str, step: Callable[[], object], steps: int, top: int, device: torch.device) -> None:
    """Warm up, then print steps/s (and the `top` GPU kernels when top > 0)."""
    for _ in range(3):
        step()
    sync(device)
    began = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - began) / steps
    print(f"{name}: {1 / seconds:.1f} steps/s ({1000 * seconds:.1f} ms/step)")
    if top <= 0:
        return
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as profiler:
        for _ in range(3):
            step()
        sync(device)
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    table = profiler.key_averages().table(sort_by=sort, row_limit=top, max_name_column_width=60)
    print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--vae-batch", type=int, default=8)
    parser.add_argument("--teacher-batch", type=int, default=128)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--teacher-variants", default="eager", help=f"comma list of {VARIANTS['teacher']}")
    parser.add_argument("--vae-variants", default="eager", help=f"comma list of {VARIANTS['vae']}")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    print(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch", torch.__version__)
    for variant in filter(None, args.teacher_variants.split(",")):
        if variant == "trainer":
            step = teacher_trainer_step(args.teacher_batch, device)
        else:
            step = plain_step(*teacher_step_fn(args.teacher_batch, device, variant), device)
        measure(f"teacher {variant}", step, args.steps, args.top, device)
    for variant in filter(None, args.vae_variants.split(",")):
        measure(f"vae {variant}", plain_step(*vae_step_fn(args.vae_batch, device, variant), device), args.steps,
                args.top, device)


if __name__ == "__main__":
    main()
