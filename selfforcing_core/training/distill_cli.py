"""The Training II stages of `python -m selfforcing_core train`: ode, causal-init, self-forcing, baseline,
end-frame and evaluate. Only argparse here; the stages (torch, accelerate) are imported when one runs.
"""
from __future__ import annotations

import argparse

STAGES = ("ode", "causal-init", "self-forcing", "baseline", "end-frame", "evaluate")


def add_budget(parser: argparse.ArgumentParser, minutes: float) -> None:
    """`--minutes` or `--steps`, the budget of a training stage (shared with the Training I stages)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--minutes", type=float, default=None,
                       help=f"wall-clock budget of the stage (default {minutes} when --steps is not given)")
    group.add_argument("--steps", type=int, default=None,
                       help="exactly this many steps (generator steps when distilling; resumable)")


def add_precision(parser: argparse.ArgumentParser, choices: tuple[str, ...] = ("auto", "no", "bf16")) -> None:
    """`--precision`, the autocast of the training steps. Training I also offers fp16; Training II does not,
    since the accelerator's one gradient scaler would serve distillation's generator and critic together."""
    parser.add_argument("--precision", choices=choices, default="auto",
                        help="autocast precision of the training steps (auto: bf16 on GPU, float32 on CPU)")


def _models(parser: argparse.ArgumentParser, vae: bool = False) -> None:
    parser.add_argument("--out", required=True, help="output folder (state, weights, metrics, log)")
    parser.add_argument("--teacher", required=True, help="the bidirectional teacher (world_teacher.safetensors)")
    parser.add_argument("--text-encoder", required=True, help="world_text_encoder.safetensors")
    if vae:
        parser.add_argument("--vae", required=True, help="world_vae.safetensors")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even when a GPU is present")


def _optimiser(parser: argparse.ArgumentParser, lr: float, ema: float, minutes: float, warmup: int) -> None:
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--ema", type=float, default=ema, help="EMA decay")
    parser.add_argument("--warmup", type=int, default=warmup, help="learning-rate warm-up steps")
    parser.add_argument("--seed", type=int, default=0)
    add_precision(parser)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--log-every", type=int, default=10)
    add_budget(parser, minutes)


def _distill(parser: argparse.ArgumentParser, minutes: float) -> None:
    _models(parser)
    parser.add_argument("--init", required=True, help="the student to start from (causal_init.safetensors)")
    parser.add_argument("--bank", required=True, help="the clip bank written by `train ode`")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--critic-steps", type=int, default=5, help="critic updates per generator update")
    parser.add_argument("--critic-lr", type=float, default=5e-5)
    parser.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance of the real score")
    parser.add_argument("--start-probability", type=float, default=0.5,
                        help="fraction of rollouts that start from a ground-truth first frame (start keyframe)")
    parser.add_argument("--export", help="also write the EMA student here in float16 (the shipped file)")
    _optimiser(parser, lr=5e-5, ema=0.99, minutes=minutes, warmup=10)


def add_distillation_stages(stages: argparse._SubParsersAction) -> None:
    """Add the Training II stages to the `train` command's stage parsers."""
    ode = stages.add_parser("ode", help="clip bank + the teacher's ODE pairs at the student's timesteps")
    _models(ode, vae=True)
    ode.add_argument("--bank-clips", type=int, default=4096)
    ode.add_argument("--bank-minutes", type=float, default=0.4)
    ode.add_argument("--pairs", type=int, default=2048)
    ode.add_argument("--pairs-minutes", type=float, default=0.5)
    ode.add_argument("--teacher-steps", type=int, default=24, help="Euler steps of the teacher (a multiple of 4)")
    ode.add_argument("--guidance", type=float, default=5.0)
    ode.add_argument("--batch", type=int, default=256)
    ode.add_argument("--workers", type=int, default=0, help="processes sampling world scenes (0: inline)")
    ode.add_argument("--seed", type=int, default=0)

    init = stages.add_parser("causal-init", help="regress the causal student onto the ODE pairs")
    _models(init)
    init.add_argument("--pairs", required=True, help="ode_pairs.safetensors from `train ode`")
    init.add_argument("--batch", type=int, default=64)
    _optimiser(init, lr=1e-4, ema=0.995, minutes=1.0, warmup=50)

    _distill(stages.add_parser("self-forcing", help="Self Forcing: DMD on the student's own KV-cache rollouts"), 1.5)
    baseline = stages.add_parser("baseline", help="teacher forcing or diffusion forcing with the same loss")
    baseline.add_argument("--method", choices=("teacher_forcing", "diffusion_forcing"), required=True)
    _distill(baseline, 1.5)
    end = stages.add_parser("end-frame", help="Self Forcing with the end keyframe as a goal prefix")
    end.add_argument("--goal-weight", type=float, default=1.0)
    _distill(end, 1.0)

    evaluate = stages.add_parser("evaluate", help="score a causal model, the teacher or ground truth")
    evaluate.add_argument("--out", required=True)
    evaluate.add_argument("--label", required=True, help="name of the run (eval_<label>.json)")
    evaluate.add_argument("--model", help="a causal student file")
    evaluate.add_argument("--teacher", help="the bidirectional teacher (scored at 1x)")
    evaluate.add_argument("--truth", action="store_true", help="also score the ground-truth clips")
    evaluate.add_argument("--vae", required=True)
    evaluate.add_argument("--text-encoder", required=True)
    evaluate.add_argument("--lengths", default="1,2,4",
                          help="multiples of the training length for text-only runs (empty: none)")
    evaluate.add_argument("--clips", type=int, default=200, help="held-out captions at 1x")
    evaluate.add_argument("--long-clips", type=int, default=100, help="held-out captions at longer lengths")
    evaluate.add_argument("--keyframes", default="", help="1x keyframe runs: start,guidance,goal,goal_pinned")
    evaluate.add_argument("--end-strength", type=float, default=0.5, help="pull of the training-free end guidance")
    evaluate.add_argument("--local-window", type=int, help="override the model's attention window (latent frames)")
    evaluate.add_argument("--sink-frames", type=int, help="override the model's attention sink (latent frames)")
    evaluate.add_argument("--teacher-steps", type=int, default=30)
    evaluate.add_argument("--guidance", type=float, default=5.0)
    evaluate.add_argument("--teacher-draws", choices=("distill", "teacher"), default="distill",
                          help="noise of the --teacher samples: Training II's evaluations' or the one `train "
                               "teacher` scores itself with at its end (to redo that figure)")
    evaluate.add_argument("--samples", type=int, default=2, help="clips of each run kept in samples_<label>.npz")
    evaluate.add_argument("--workers", type=int, default=0, help="evaluator processes (0: inline)")
    evaluate.add_argument("--cpu", action="store_true")


def _train_options(args: argparse.Namespace, default_minutes: float, betas: tuple[float, float] | None = None):
    from .trainer import TrainOptions

    minutes = args.minutes if args.minutes is not None or args.steps is not None else default_minutes
    extra = {} if betas is None else {"betas": betas}
    return TrainOptions(lr=args.lr, warmup_steps=args.warmup, ema_decay=args.ema, steps=args.steps, minutes=minutes,
                        checkpoint_every=args.checkpoint_every, log_every=args.log_every, seed=args.seed, **extra)


def run_distillation_stage(args: argparse.Namespace) -> int:
    """Dispatch a Training II stage."""
    from . import distill_stages as stages
    from .distillation import DistillOptions
    from .dmd import DMDOptions

    if args.stage == "ode":
        stages.run_ode_stage(stages.OdeStage(
            out=args.out, teacher=args.teacher, vae=args.vae, text_encoder=args.text_encoder,
            bank_clips=args.bank_clips, bank_minutes=args.bank_minutes, pairs=args.pairs,
            pairs_minutes=args.pairs_minutes, teacher_steps=args.teacher_steps, guidance=args.guidance,
            batch=args.batch, workers=args.workers, seed=args.seed, cpu=args.cpu))
    elif args.stage == "causal-init":
        stages.run_causal_init_stage(stages.CausalInitStage(
            out=args.out, teacher=args.teacher, text_encoder=args.text_encoder, pairs=args.pairs, batch=args.batch,
            train=_train_options(args, 1.0), precision=args.precision, cpu=args.cpu))
    elif args.stage == "evaluate":
        stages.run_evaluate_stage(stages.EvaluateStage(
            out=args.out, label=args.label, vae=args.vae, text_encoder=args.text_encoder, model=args.model,
            teacher=args.teacher, truth=args.truth, lengths=tuple(int(v) for v in args.lengths.split(",") if v),
            clips=args.clips, long_clips=args.long_clips,
            keyframe_modes=tuple(m for m in args.keyframes.split(",") if m), end_strength=args.end_strength,
            local_window=args.local_window, sink_frames=args.sink_frames,
            teacher_steps=args.teacher_steps, guidance=args.guidance, teacher_draws=args.teacher_draws,
            samples=args.samples, workers=args.workers, cpu=args.cpu))
    else:
        method = args.method if args.stage == "baseline" else "self_forcing"
        options = DistillOptions(method=method, batch=args.batch, critic_steps=args.critic_steps,
                                 start_probability=args.start_probability, end_frame=args.stage == "end-frame",
                                 goal_weight=getattr(args, "goal_weight", 1.0), dmd=DMDOptions(guidance=args.guidance))
        stages.run_distill_stage(stages.DistillStage(
            out=args.out, init=args.init, teacher=args.teacher, text_encoder=args.text_encoder, bank=args.bank,
            options=options, train=_train_options(args, 1.0 if args.stage == "end-frame" else 1.5, (0.0, 0.999)),
            critic_lr=args.critic_lr, export=args.export, precision=args.precision, cpu=args.cpu))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m selfforcing_core.training.distill_cli <stage> ...`: the stages without the package CLI
    (whose generate command needs imageio-ffmpeg, absent on some training machines)."""
    parser = argparse.ArgumentParser(prog="python -m selfforcing_core.training.distill_cli")
    add_distillation_stages(parser.add_subparsers(dest="stage", required=True))
    return run_distillation_stage(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
