"""Long videos on the CPU with the bundled world model: memory and chunk time over 60 s, drift with and
without the attention sink, and a prompt switch.

(a) Streams `--seconds` of video (rolling window + sink, every chunk decoded by the VAE as a user sees it)
    and reports the peak memory at each mark (stream_probe.ProcessPeakRSS: the process's RSS high-water
    mark, reset when streaming starts; the decoded frames go to a byte buffer allocated before it starts,
    so what grows is the generation's own memory) with the exact KV-cache and decoder-state bytes, and the
    median chunk time of the first, middle and last chunks.
(b) Scores windows of the training clip length ending at each mark with the world evaluator
    (training/long_video_eval.py: prompt adherence, detection rate, track jumps, drift against the
    opening window) on held-out captions x noise seeds, for each cache variant: `rebased` (sink moved to
    just before the window), `fixed` (sink at its first positions, the reference behaviour) and `nosink`
    (sink 0, same window).
(c) Switches to a prompt of other colours and shapes at `--switch-at` seconds (smooth, cut=False): the
    evaluator's colour/shape accuracy per the old and the new prompt in the second before, the second
    after and the last second, and the continuity of the switch seam against the ordinary chunk seams
    (a hard cut, cut=True, is run beside it as a control).

Usage: python benchmarks/long_video.py [--seconds 60] [--marks 10,30,60] [--captions 2] [--seeds 1]
    [--variants rebased,fixed,nosink] [--switch-at 4] [--after 4] [--threads 1] [--skip drift|switch]
    [--results benchmarks/long_video_results.md]
Cost on this project's 2-core CPU: about 1.6 min per minute of video and caption, per variant and seed (the
defaults run in ~8 min); the switch part adds two 8 s videos.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
from dataclasses import dataclass

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from selfforcing_core.checkpoint import LoadedTransformer, load_transformer  # noqa: E402
from selfforcing_core.config import CausalSettings  # noqa: E402
from selfforcing_core.generation_cli import DEFAULT_MODEL, DEFAULT_TEXT_ENCODER, DEFAULT_VAE  # noqa: E402
from selfforcing_core.pipeline import GenerationRequest, PromptSegment, StreamedChunk, VideoPipeline  # noqa: E402
from selfforcing_core.text_encoder import TextEncoder  # noqa: E402
from selfforcing_core.text_encoder_loading import load_text_encoder  # noqa: E402
from selfforcing_core.training.causal_eval import Scorer  # noqa: E402
from selfforcing_core.training.evaluation import HELD_OUT_SEED  # noqa: E402
from selfforcing_core.training.long_video_eval import mean_scores, seam_continuity, window_scores  # noqa: E402
from selfforcing_core.training.world import sample_scenes  # noqa: E402
from selfforcing_core.training.world_scene import SceneParams, WorldConfig  # noqa: E402
from selfforcing_core.vae_loading import load_video_decoder  # noqa: E402
from selfforcing_core.vae_stream import ChunkDecoder  # noqa: E402
from selfforcing_core.video_geometry import FPS, latent_frames_for, seconds_to_frames, video_frames_for  # noqa: E402

from stream_probe import MemoryTimeline, ProcessPeakRSS, StreamRun, run_stream, time_profile  # noqa: E402

VARIANTS = {
    "rebased": "window + sink, sink re-based to just before the window",
    "fixed": "window + sink, sink at its first positions (reference)",
    "nosink": "window only (sink 0)",
}
SECOND_FRAMES = FPS + 1  # one second as the evaluator takes it (1 + 4k frames)
SEAM_REACH = 8
MiB = 2**20


@dataclass
class World:
    """The bundled model's pieces and the world its clips come from."""

    loaded: LoadedTransformer
    text: TextEncoder
    decoder: ChunkDecoder
    config: WorldConfig

    def pipeline(self, settings: CausalSettings) -> VideoPipeline:
        """A pipeline of this model and decoder under `settings`."""
        return VideoPipeline(self.loaded.model, settings, self.decoder)

    def embed(self, scenes: list[SceneParams]) -> torch.Tensor:
        """Text embeddings [B, L, D] of the scenes' captions."""
        return self.text([scene.caption for scene in scenes]).embeddings


class FrameStore:
    """A whole video as bytes [B, T, 3, H, W], allocated and written once before streaming starts."""

    def __init__(self, batch: int, frames: int, config: WorldConfig):
        self.videos = torch.zeros(batch, video_frames_for(latent_frames_for(frames)), 3, config.height, config.width,
                                  dtype=torch.uint8)
        self.starts: list[int] = []
        self.switch: int | None = None

    def add(self, chunk: StreamedChunk) -> None:
        """Keep a decoded chunk's frames, its first frame, and the first frame of the second prompt."""
        frames = chunk.frames.permute(0, 1, 4, 2, 3).mul(255).round().to(torch.uint8)
        self.videos[:, chunk.start_frame : chunk.end_frame] = frames
        self.starts.append(chunk.start_frame)
        if chunk.prompt > 0 and self.switch is None:
            self.switch = chunk.start_frame


def load_world(args: argparse.Namespace) -> World:
    """The model, text encoder and decoder files of `args`, and the world config of the model's training clips."""
    loaded = load_transformer(args.model, dtype=torch.float32, device="cpu")
    if "num_frames" not in loaded.metadata:
        raise SystemExit(f"{args.model} does not say its training clip length (metadata num_frames); "
                         "this benchmark needs a world model trained by this project")
    width, height = (int(v) for v in loaded.metadata.get("resolution", "128x128").split("x"))
    text = load_text_encoder(args.text_encoder, dtype=torch.float32, text_len=loaded.config.text_len)
    decoder = load_video_decoder(args.vae, dtype=torch.float32)
    return World(loaded, text, decoder, WorldConfig(height, width, int(loaded.metadata["num_frames"])))


def variant_settings(settings: CausalSettings, variant: str, window: int | None, sink: int | None) -> CausalSettings:
    """The model's settings with the variant's sink (and `window`/`sink` overrides)."""
    window = window or settings.local_window
    if window is None:
        raise SystemExit("the model attends globally (no local window); pass --window")
    sink = settings.sink_frames if sink is None else sink
    if variant == "nosink":
        return settings.with_(local_window=window, sink_frames=0, rebase_sink=False)
    return settings.with_(local_window=window, sink_frames=sink, rebase_sink=variant == "rebased")


def stream(world: World, settings: CausalSettings, prompts: list[PromptSegment], frames: int, seed: int,
           marks: list[float] = ()) -> tuple[StreamRun, FrameStore]:
    """Stream one batched video into a frame store, measuring memory at `marks` (seconds)."""
    pipeline = world.pipeline(settings)
    batch = prompts[0].embeddings.shape[0]
    store = FrameStore(batch, frames, world.config)

    def held() -> dict[str, int]:
        return {"kv_cache": pipeline.sampler.cache.memory_bytes(), "decoder_state": pipeline.decoder.state_nbytes()}

    timeline = MemoryTimeline(ProcessPeakRSS(), marks, held)
    request = GenerationRequest(prompts, world.config.width, world.config.height, frames, seed=seed, batch_size=batch)
    return run_stream(pipeline, request, timeline, store.add), store


def memory_rows(variant: str, run: StreamRun) -> list[str]:
    """One table row per memory mark of a run."""
    return [f"| {variant} | {m.mark:g} s | {m.second:.2f} s | {m.peak_bytes / MiB:.1f} MiB "
            f"| {m.interval_bytes / MiB:.1f} MiB | {m.held['kv_cache'] / MiB:.2f} MiB "
            f"| {m.held['decoder_state'] / MiB:.2f} MiB |" for m in run.marks]


def memory_ratio(variant: str, run: StreamRun) -> str:
    """The last mark's peaks over the first mark's."""
    first, last = run.marks[0], run.marks[-1]
    return (f"`{variant}`: peak at {last.mark:g} s / peak at {first.mark:g} s = "
            f"{last.peak_bytes / first.peak_bytes:.3f}; peak of the last interval / of the first = "
            f"{last.interval_bytes / first.interval_bytes:.3f}.  ")


def timing_row(variant: str, run: StreamRun, tail: int) -> str:
    """Wall and CPU chunk-time profiles of a run, its total time and fps."""
    profiles = [time_profile(run.chunk_seconds, tail), time_profile(run.cpu_seconds, tail)]
    cells = " | ".join(f"{p['first']:.3f} s | {p['middle']:.3f} s | {p['last']:.3f} s | {p['last_over_first']:.2f}"
                       for p in profiles)
    return f"| {variant} | {len(run.chunk_seconds)} | {cells} | {run.seconds:.1f} s | {run.frames / run.seconds:.1f} |"


def quality_row(variant: str, end: int, s: dict[str, float]) -> str:
    """The window scores of one variant and window."""
    return (f"| {variant} | {end / FPS:.2f} s | {s['prompt_adherence']:.1f} | {s['colour_accuracy']:.2f} "
            f"| {s['shape_accuracy']:.2f} | {s['motion_accuracy']:.2f} | {s['detection_rate']:.3f} "
            f"| {s['drift_from_start']:.3f} | {s['object_loss_from_start']:.3f} | {s['drift']:.3f} "
            f"| {s['max_jump']:.3f} |")


def drift_section(world: World, args: argparse.Namespace, scorer: Scorer) -> list[str]:
    """(a) and (b): memory, chunk time and windowed scores for every variant."""
    scenes = sample_scenes(HELD_OUT_SEED, range(args.captions), world.config)
    embeddings = world.embed(scenes)
    frames = seconds_to_frames(args.seconds)
    length = world.config.num_frames
    last = video_frames_for(latent_frames_for(frames))
    ends = [max(length, min(seconds_to_frames(mark), last)) for mark in args.marks]
    memory, ratios, timing, quality = [], [], [], []
    for variant in args.variants:
        settings = variant_settings(world.loaded.settings, variant, args.window, args.sink)
        per_seed = []
        for seed in range(args.seeds):
            run, store = stream(world, settings, [PromptSegment(embeddings)], frames, seed * args.captions, args.marks)
            per_seed.append(window_scores(scorer, store.videos, scenes, ends))
            print(f"{variant} seed {seed}: {run.frames} frames in {run.seconds:.1f}s", flush=True)
            if seed == 0:
                memory += memory_rows(variant, run)
                ratios.append(memory_ratio(variant, run))
                timing.append(timing_row(variant, run, args.tail))
        quality += [quality_row(variant, end, mean_scores([scores[end] for scores in per_seed])) for end in per_seed[0]]
    return [
        f"### Memory and chunk time: {args.seconds:g} s of video, batch {args.captions} (one clip per caption)", "",
        f"Memory: {ProcessPeakRSS.name}; the decoded frames go to a byte buffer allocated before streaming starts. "
        "KV cache and decoder state: their exact tensor bytes.", "",
        "| variant | mark | sampled at | peak since start | peak in interval | KV cache | decoder state |",
        "| --- | --- | --- | --- | --- | --- | --- |", *memory, "", *ratios, "",
        f"Chunk time (denoise + the previous chunk's cache pass + decode): medians of {args.tail} chunks, chunk 0 (the "
        "warm-up) left out. Wall time depends on other work on this shared CPU; the process's CPU time less so. "
        "Both include the memory meter's cost (large blocks mapped afresh: about +40 % against glibc's default).", "",
        "| variant | chunks | wall: first | middle | last | last / first | CPU: first | middle | last | last / first "
        "| total wall | fps |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", *timing, "",
        f"### Drift: windows of {length} frames (the training clip length) ending at each time, "
        f"{args.captions} held-out captions x {args.seeds} noise seeds", "",
        "Adherence = mean of colour, shape and motion accuracy (points); drift from start = |saturation change| + "
        "|contrast change| against the opening window; object loss = the detection rate's drop against it; in-window "
        "drift = the same between the window's first and last second; max jump = the largest frame-to-frame move of a "
        "matched object (shorter-side units).", "",
        "| variant | window ends | adherence | colour | shape | motion | detection rate | drift from start "
        "| object loss | in-window drift | max jump |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", *quality]


def switch_pairs(config: WorldConfig, count: int) -> tuple[list[SceneParams], list[SceneParams]]:
    """Held-out scenes and, for each, a later held-out scene sharing none of its colours and shapes."""
    old = sample_scenes(HELD_OUT_SEED, range(count), config)
    pool = sample_scenes(HELD_OUT_SEED, range(count, count + 200), config)
    new = []
    for scene in old:
        colours, shapes = {o.colour for o in scene.objects}, {o.shape for o in scene.objects}
        new.append(next(c for c in pool if c not in new and not colours & {o.colour for o in c.objects}
                        and not shapes & {o.shape for o in c.objects}))
    return old, new


def switch_section(world: World, args: argparse.Namespace, scorer: Scorer) -> list[str]:
    """(c): adherence to the old and the new prompt around a switch, and the continuity of its seam."""
    config = WorldConfig(world.config.height, world.config.width, SECOND_FRAMES)
    old, new = switch_pairs(config, args.captions)
    settings = variant_settings(world.loaded.settings, args.variants[0], args.window, args.sink)
    frames = seconds_to_frames(args.switch_at + args.after)
    adherence, continuity, effective = [], [], None
    for cut in (False, True)[: 1 + args.cut_control]:
        prompts = [PromptSegment(world.embed(old)),
                   PromptSegment(world.embed(new), seconds_to_frames(args.switch_at), cut)]
        run, store = stream(world, settings, prompts, frames, 0)
        switch, videos, name = store.switch, store.videos, "hard cut" if cut else "smooth"
        effective = switch
        print(f"switch ({name}): at frame {switch}, {run.frames} frames in {run.seconds:.1f}s", flush=True)
        total = videos.shape[1]
        windows = {"second before": switch, "second after": switch + SECOND_FRAMES, "last second": total}
        vs_old = window_scores(scorer, videos, old, list(windows.values()))
        vs_new = window_scores(scorer, videos, new, list(windows.values()))
        for label, end in windows.items():
            a, b = vs_old[end], vs_new[end]
            adherence.append(f"| {name} | {label} ({(end - SECOND_FRAMES) / FPS:.2f}-{end / FPS:.2f} s) "
                             f"| {a['colour_accuracy']:.2f} | {a['shape_accuracy']:.2f} "
                             f"| {b['colour_accuracy']:.2f} | {b['shape_accuracy']:.2f} |")
        ordinary = [s for s in store.starts
                    if abs(s - switch) > 2 * SEAM_REACH and SEAM_REACH <= s < total - SEAM_REACH]
        seams = {f"the switch (frame {switch})": seam_continuity(videos, switch, SEAM_REACH),
                 f"{len(ordinary)} other chunk seams (mean)":
                     mean_scores([seam_continuity(videos, s, SEAM_REACH) for s in ordinary])}
        continuity += [f"| {name} | {label} | {c['change_ratio']:.2f} | {c['tracks_kept']:.2f} | {c['seam_step']:.3f} "
                       f"| {c['other_step']:.3f} |" for label, c in seams.items()]
    return [
        f"### Prompt switch requested at {args.switch_at:g} s ({args.variants[0]}, {args.captions} caption pairs, "
        f"{frames} frames)", "",
        f"The new prompt takes over at a chunk boundary (every {settings.chunk_frames} latent frames): frame "
        f"{effective} ({effective / FPS:.2f} s). New prompts share no colour and no shape with the old ones: "
        + "; ".join(f"'{a.caption}' -> '{b.caption}'" for a, b in zip(old, new)) + ".", "",
        "Colour and shape accuracy against each prompt in one-second windows:", "",
        "| switch | window | colour vs old | shape vs old | colour vs new | shape vs new |",
        "| --- | --- | --- | --- | --- | --- |", *adherence, "",
        f"Continuity over the {2 * SEAM_REACH + 1} frames around a seam: change ratio = the largest pixel change at "
        "the seam / the median change elsewhere (about 1 when smooth); tracks kept = the fraction of objects seen "
        "just before the seam that the detector still follows just after it (a jump cut ends them); the largest "
        "object step at / away from the seam (shorter-side units). The hard cut (cut=True) is the control.", "",
        "| switch | seam | change ratio | tracks kept | largest step at seam | largest step elsewhere |",
        "| --- | --- | --- | --- | --- | --- |", *continuity]


def device_line() -> str:
    """This CPU, its cores and load, and torch's version."""
    name = platform.processor() or "CPU"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as handle:
            name = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), name)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    return (f"{name}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, load average {load:.1f} "
            f"at the start (other work shares this CPU), torch {torch.__version__}")


def describe(world: World, args: argparse.Namespace) -> str:
    """The model, its training length against the video's, its cache settings and the variants."""
    settings = variant_settings(world.loaded.settings, "rebased", args.window, args.sink)
    config = world.config
    return (f"Model: `{os.path.relpath(args.model, REPO)}` ({world.loaded.metadata.get('kind', 'unknown')}), "
            f"{config.width}x{config.height}, trained on {config.num_frames}-frame clips "
            f"({config.num_frames / FPS:.2f} s; the long video is {args.seconds * FPS / config.num_frames:.1f}x that); "
            f"chunks of {settings.chunk_frames} latent frames, window {settings.local_window}, sink "
            f"{settings.sink_frames}, steps {list(settings.denoising_steps)}. Variants: "
            + "; ".join(f"`{v}` = {VARIANTS[v]}" for v in args.variants) + ".")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--vae", default=DEFAULT_VAE)
    parser.add_argument("--text-encoder", default=DEFAULT_TEXT_ENCODER)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the long video")
    parser.add_argument("--marks", default="10,30,60", help="seconds at which memory and windows are measured")
    parser.add_argument("--captions", type=int, default=2, help="held-out captions (the batch of every run)")
    parser.add_argument("--seeds", type=int, default=1, help="noise seeds per caption for the drift runs")
    parser.add_argument("--variants", default="rebased,nosink", help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--window", type=int, help="local window in latent frames (default: the model's)")
    parser.add_argument("--sink", type=int, help="sink frames of the sink variants (default: the model's)")
    parser.add_argument("--tail", type=int, default=10, help="chunks in each chunk-time median")
    parser.add_argument("--switch-at", type=float, default=4.0, help="second of the prompt switch")
    parser.add_argument("--after", type=float, default=4.0, help="seconds of video after the switch")
    parser.add_argument("--no-cut-control", dest="cut_control", action="store_false",
                        help="skip the hard-cut run beside the smooth switch")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: drift, switch")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 by default: on a shared 2-core CPU two threads stall at every OpenMP "
                             "barrier whenever other work takes a core (measured up to 10x slower)")
    parser.add_argument("--results", help="append the markdown section to this file")
    args = parser.parse_args()
    args.variants = args.variants.split(",")
    if unknown := set(args.variants) - set(VARIANTS):
        parser.error(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    args.marks = [float(mark) for mark in args.marks.split(",")]
    if max(args.marks) > args.seconds:
        parser.error(f"mark {max(args.marks):g} s lies past the video's {args.seconds:g} s")
    if args.switch_at < 1.5 or args.after < 2:
        parser.error("the switch needs --switch-at >= 1.5 and --after >= 2 seconds: a second is scored on each side, "
                     "and the switch lands on the next chunk boundary (up to 0.75 s later)")

    torch.set_num_threads(args.threads)
    device = device_line()
    world = load_world(args)
    scorer = Scorer()
    lines = [f"## {datetime.datetime.now():%Y-%m-%d %H:%M}, CPU", "", f"Device: {device}.",
             f"Command: `python benchmarks/{os.path.basename(__file__)} {' '.join(sys.argv[1:])}`", "",
             describe(world, args), ""]
    skip = set(args.skip.split(","))
    if "drift" not in skip:
        lines += drift_section(world, args, scorer) + [""]
    if "switch" not in skip:
        lines += switch_section(world, args, scorer) + [""]
    text = "\n".join(lines)
    print(text)
    if args.results:
        with open(args.results, "a") as handle:
            handle.write("\n" + text)


if __name__ == "__main__":
    main()
