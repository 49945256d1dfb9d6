"""The long-video measures: switch seams (smooth vs jump cut), windowed drift, memory and chunk-time probes."""
from __future__ import annotations

import os

import pytest
import torch

from benchmarks.stream_probe import MemoryTimeline, ProcessPeakRSS, run_stream, time_profile
from selfforcing_core.config import CausalSettings
from selfforcing_core.pipeline import GenerationRequest, PromptSegment, VideoPipeline
from selfforcing_core.training.causal_eval import Scorer
from selfforcing_core.training.long_video_eval import seam_continuity, window_scores
from selfforcing_core.training.world import sample_batch
from selfforcing_core.training.world_scene import WorldConfig

from tiny_models import TINY, tiny_model

CONFIG = WorldConfig(height=64, width=64, num_frames=33)
linux_rss = pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                               reason="needs Linux's /proc/self/clear_refs")
# The meter fixes glibc's mmap threshold for the whole process: at glibc's own upper bound it leaves the
# speed of the tests that run after these as it was.
MMAP_THRESHOLD = 32 * 2**20


@pytest.fixture(scope="module")
def clips():
    video, _, scenes = sample_batch(7, 6, config=CONFIG)
    return video, scenes


def test_a_smooth_clip_passes_and_a_jump_cut_is_flagged(clips):
    video, _ = clips
    smooth = seam_continuity(video, 16)
    cut = video.clone()
    cut[:, 16:] = video.roll(1, dims=0)[:, 16:]  # from frame 16 on, another clip
    jump = seam_continuity(cut, 16)
    assert smooth["change_ratio"] < 1.5 and smooth["tracks_kept"] == 1.0
    assert smooth["seam_step"] <= 1.1 * smooth["other_step"]
    assert jump["change_ratio"] > 20 and jump["tracks_kept"] < 0.8
    assert jump["seam_step"] > 2 * jump["other_step"]


def test_the_seam_measure_reads_bytes_as_the_evaluator_does(clips):
    video = clips[0][:2]
    as_bytes = ((video + 1) * 127.5).round().to(torch.uint8)
    expected = seam_continuity(video, 16)["change_ratio"]
    assert seam_continuity(as_bytes, 16)["change_ratio"] == pytest.approx(expected, rel=0.05)


def test_windows_score_adherence_and_drift_against_the_opening(clips):
    """A clip played forward then backward keeps its colours, shapes and tone; fading the replay is drift."""
    video, scenes = clips
    long = torch.cat([video, video.flip(1)], dim=1)
    faded = long.clone()
    faded[:, 33:] *= 0.1
    replay = window_scores(Scorer(), long, scenes, [66])
    fade = window_scores(Scorer(), faded, scenes, [66])
    assert set(replay) == {33, 66}
    assert replay[33]["drift_from_start"] == 0 and replay[33]["object_loss_from_start"] == 0
    assert replay[66]["colour_accuracy"] >= 0.9 and replay[66]["shape_accuracy"] >= 0.9
    assert replay[66]["drift_from_start"] < 0.01 and abs(replay[66]["object_loss_from_start"]) < 0.05
    assert fade[66]["drift_from_start"] > 0.1 and fade[66]["object_loss_from_start"] > 0.3
    with pytest.raises(ValueError, match="does not fit"):
        window_scores(Scorer(), long, scenes, [70])


@linux_rss
def test_the_rss_meter_sees_a_transient_allocation_and_forgets_it_after_a_reset():
    meter = ProcessPeakRSS(MMAP_THRESHOLD)
    meter.reset()
    base = meter.peak_bytes()
    block = torch.ones(64 * 2**20, dtype=torch.float32)  # 256 MiB, every page written
    del block
    assert meter.peak_bytes() > base + 200 * 2**20
    meter.reset()
    assert meter.peak_bytes() < base + 100 * 2**20


class ScriptedMeter:
    """Peaks read from a list, one per reading."""

    name = "scripted"

    def __init__(self, readings: list[int]):
        self.readings = readings
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def peak_bytes(self) -> int:
        return self.readings.pop(0)


def test_the_timeline_keeps_interval_and_running_peaks_per_mark():
    meter = ScriptedMeter([50, 30, 70])
    timeline = MemoryTimeline(meter, [10, 1, 30, 60], held=lambda: {"kv": 5})
    timeline.start()
    for second in (0.5, 1.2, 9.0, 12.0, 61.0, 70.0):
        timeline.after(second)
    assert [(m.mark, m.second, m.interval_bytes, m.peak_bytes) for m in timeline.marks] == [
        (1, 1.2, 50, 50), (10, 12.0, 30, 50), (30, 61.0, 70, 70), (60, 61.0, 70, 70)]
    assert meter.resets == 4 and timeline.marks[0].held == {"kv": 5}


def test_time_profile_leaves_out_the_warm_up_chunk():
    profile = time_profile([9.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0], 2)
    assert (profile["first"], profile["middle"], profile["last"], profile["last_over_first"]) == (1.0, 2.0, 3.0, 3.0)


@linux_rss
def test_a_measured_stream_holds_a_constant_cache_past_the_window():
    settings = CausalSettings(chunk_frames=3, local_window=6, sink_frames=3, rebase_sink=True, denoising_steps=(1000,))
    pipeline = VideoPipeline(tiny_model(dtype=torch.float32), settings)
    text = torch.randn(1, TINY.text_len, TINY.text_dim)
    request = GenerationRequest([PromptSegment(text)], 32, 32, 129)

    def held() -> dict[str, int]:
        return {"kv": pipeline.sampler.cache.memory_bytes()}

    timeline = MemoryTimeline(ProcessPeakRSS(MMAP_THRESHOLD), [1, 4, 8], held)
    seen = []
    run = run_stream(pipeline, request, timeline, on_chunk=lambda chunk: seen.append(chunk.end_frame))
    assert run.frames == 129 == seen[-1] and len(run.chunk_seconds) == len(run.cpu_seconds) == len(seen) == 11
    assert [m.mark for m in run.marks] == [1, 4, 8]
    assert len({m.held["kv"] for m in run.marks}) == 1
    first, last = run.marks[0].interval_bytes, run.marks[-1].interval_bytes
    assert abs(last - first) < 0.1 * first  # memory flat from the first seconds to the last
