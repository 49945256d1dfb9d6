"""Command line: `python -m selfforcing_core generate ...` and `python -m selfforcing_core train <stage> ...`.

Training modules (and `accelerate`) are imported only when a train command runs.
"""
from __future__ import annotations

import argparse
import logging
from typing import Sequence

from .training.distill_cli import STAGES as DISTILLATION_STAGES
from .training.distill_cli import add_budget, add_distillation_stages, add_precision, run_distillation_stage


def _common(parser: argparse.ArgumentParser, lr: float, ema: float, minutes: float) -> None:
    parser.add_argument("--out", required=True, help="output folder (state, weights, metrics, samples, log)")
    parser.add_argument("--size", choices=("world", "toy"), default="world",
                        help="model sizes: 'world' (the shipped default) or 'toy' (tests)")
    parser.add_argument("--resolution", type=int, default=128, help="square frame size in pixels")
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--warmup", type=int, default=100, help="learning-rate warm-up steps")
    parser.add_argument("--ema", type=float, default=ema, help="EMA decay")
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    add_precision(parser, ("auto", "no", "bf16", "fp16"))
    parser.add_argument("--cpu", action="store_true", help="train on CPU even when a GPU is present")
    add_budget(parser, minutes)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    return value


def add_train_commands(commands: argparse._SubParsersAction) -> None:
    """The `train` command and its stages."""
    train = commands.add_parser("train", help="train the world models (VAE, then teacher)")
    stages = train.add_subparsers(dest="stage", required=True)

    vae = stages.add_parser("vae", help="train the Wan VAE on world clips")
    _common(vae, lr=1e-3, ema=0.995, minutes=2.5)
    vae.add_argument("--frames", type=int, default=33,
                     help="frames per training clip (1 + 4k); frames past the training length decode worse")
    vae.add_argument("--batch", type=int, default=4)
    vae.add_argument("--crop", type=int, default=128, help="train on random square crops of this size (pixels)")
    vae.add_argument("--init", help="start from this exported VAE's weights (continue training in a new run)")
    vae.add_argument("--decoder-only", action="store_true",
                     help="train only the decoder of the --init VAE: its encoder, and so the latents that teachers "
                          "and students were trained on, stay exactly as they are")
    vae.add_argument("--eval-clips", type=int, default=64, help="held-out clips for the PSNR")
    vae.add_argument("--workers", type=int, default=0, help="processes sampling world scenes ahead (0: inline)")
    vae.add_argument("--bank-clips", type=int, default=0,
                     help="keep this many clips on the device and sample batches from them (0: render each step's)")
    vae.add_argument("--bank-refresh-every", type=int, default=16,
                     help="steps between bank refreshes (each renders 64 new clips, or the whole bank if smaller)")
    vae.add_argument("--compile", action="store_true", help="torch.compile the encoder and decoder")

    teacher = stages.add_parser("teacher", help="train the bidirectional DiT + text encoder on VAE latents")
    _common(teacher, lr=5e-4, ema=0.999, minutes=5.0)
    teacher.add_argument("--vae", required=True, help="the trained VAE (world_vae.safetensors)")
    teacher.add_argument("--frames", type=int, default=33, help="frames per clip (1 + 4k)")
    teacher.add_argument("--batch", type=int, default=64)
    teacher.add_argument("--bank-clips", type=int, default=16384, help="world clips encoded for training")
    teacher.add_argument("--bank-minutes", type=float, default=1.0, help="stop encoding the bank after this")
    teacher.add_argument("--workers", type=int, default=0, help="processes sampling the bank's scenes (0: inline)")
    teacher.add_argument("--shift", type=float, default=3.0, help="timestep shift of training and sampling")
    teacher.add_argument("--text-dropout", type=float, default=0.1)
    teacher.add_argument("--eval-clips", type=int, default=200, help="held-out captions scored at the end (0: none)")
    teacher.add_argument("--eval-steps", type=int, default=30)
    teacher.add_argument("--loss-clips", type=int, default=256,
                         help="bank and held-out clips whose flow loss is compared at the end (0: none)")
    teacher.add_argument("--guidance", type=float, default=5.0)
    teacher.add_argument("--compile", action="store_true",
                         help="torch.compile the whole teacher (text encoder and DiT)")
    teacher.add_argument("--init", help="start from the DiT and text encoder exported in this folder (a previous run's "
                                        "--out), to continue training in a new run")
    teacher.add_argument("--text-layers", type=_positive_int,
                         help="text-encoder depth instead of the --size preset's (with --init: the folder's); "
                              "from a shallower --init run, its layers are kept and the added ones start as "
                              "identities")
    teacher.add_argument("--dit-layers", type=_positive_int, help="DiT depth instead of the preset's (grows as --text-layers)")
    teacher.add_argument("--binding-weight", type=_non_negative_float, default=0.0,
                         help="weight of the caption-binding loss: heads must read each object's colour, shape, "
                              "size and motion from the text encoder at its shape word (0: off)")

    snapshot = stages.add_parser("snapshot", help="export the EMA weights of a teacher run's latest saved state, "
                                                  "also while it trains")
    snapshot.add_argument("--out", required=True, help="the teacher run's --out (it holds teacher_state.*)")
    snapshot.add_argument("--to", required=True,
                          help="folder for world_teacher / world_text_encoder.safetensors (what --init takes)")
    snapshot.add_argument("--size", choices=("world", "toy"), default="world",
                          help="the run's --size (its depths are read from the state)")
    snapshot.add_argument("--resolution", type=int, default=128, help="the run's --resolution")
    snapshot.add_argument("--frames", type=int, default=33, help="the run's --frames")
    snapshot.add_argument("--shift", type=float, default=3.0, help="the run's --shift")

    sample = stages.add_parser("sample", help="videos from the exported teacher (held-out or given captions)")
    sample.add_argument("--out", required=True, help="folder for the mp4 files")
    sample.add_argument("--vae", required=True)
    sample.add_argument("--teacher", required=True)
    sample.add_argument("--text-encoder", required=True)
    sample.add_argument("--prompt", action="append", default=[], help="a caption (repeatable)")
    sample.add_argument("--count", type=int, default=4, help="held-out captions when no --prompt is given")
    sample.add_argument("--resolution", type=int, default=128)
    sample.add_argument("--frames", type=int, default=33)
    sample.add_argument("--steps", type=int, default=30)
    sample.add_argument("--guidance", type=float, default=5.0)
    sample.add_argument("--shift", type=float, default=3.0)
    sample.add_argument("--seed", type=int, default=0)
    add_distillation_stages(stages)


def generation_cli():
    """The generate command's module, imported on use: it needs imageio-ffmpeg, training does not."""
    from . import generation_cli as module

    return module


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m selfforcing_core",
                                     description="Self-Forcing video generation: core library commands")
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="stream a video to an mp4/webm file (bundled model by default)")
    generation_cli().add_arguments(generate)
    add_train_commands(commands)
    return parser


def _train_options(args: argparse.Namespace, default_minutes: float):
    from .training.trainer import TrainOptions

    minutes = args.minutes if args.minutes is not None or args.steps is not None else default_minutes
    return TrainOptions(lr=args.lr, warmup_steps=args.warmup, ema_decay=args.ema, steps=args.steps, minutes=minutes,
                        checkpoint_every=args.checkpoint_every, log_every=args.log_every, seed=args.seed)


def run_train(args: argparse.Namespace) -> int:
    """Dispatch a `train` stage."""
    if args.stage in DISTILLATION_STAGES:
        return run_distillation_stage(args)
    from .training import stages

    if args.stage == "vae":
        try:
            stage = stages.VAEStage(
                out=args.out, size=args.size, resolution=args.resolution, frames=args.frames, batch=args.batch,
                crop=args.crop, init=args.init, decoder_only=args.decoder_only, train=_train_options(args, 2.5),
                eval_clips=args.eval_clips, workers=args.workers, bank_clips=args.bank_clips,
                bank_refresh_every=args.bank_refresh_every, compile=args.compile, precision=args.precision,
                cpu=args.cpu)
        except ValueError as error:
            raise SystemExit(f"train vae: {error}") from None
        stages.run_vae_stage(stage)
    elif args.stage == "teacher":
        stages.run_teacher_stage(stages.TeacherStage(
            out=args.out, vae=args.vae, size=args.size, resolution=args.resolution, frames=args.frames,
            batch=args.batch, bank_clips=args.bank_clips, bank_minutes=args.bank_minutes, workers=args.workers,
            shift=args.shift, text_dropout=args.text_dropout, init=args.init, text_layers=args.text_layers,
            dit_layers=args.dit_layers, binding_weight=args.binding_weight, train=_train_options(args, 5.0),
            eval_clips=args.eval_clips, eval_steps=args.eval_steps, loss_clips=args.loss_clips, guidance=args.guidance,
            compile=args.compile, precision=args.precision, cpu=args.cpu))
    elif args.stage == "snapshot":
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        try:
            stages.snapshot_teacher(args.out, args.to, args.size, args.resolution, args.frames, args.shift)
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(f"train snapshot: {error}") from None
    else:
        stages.setup_logging(args.out, "sample")
        stages.run_sample_stage(stages.SampleStage(
            out=args.out, vae=args.vae, teacher=args.teacher, text_encoder=args.text_encoder, prompts=args.prompt,
            count=args.count, resolution=args.resolution, frames=args.frames, steps=args.steps,
            guidance=args.guidance, shift=args.shift, seed=args.seed))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "generate":
        generation_cli().run(args)
        return 0
    if args.command == "train":
        return run_train(args)
    raise AssertionError(f"unhandled command {args.command}")
