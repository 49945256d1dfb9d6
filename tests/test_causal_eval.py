"""The Training II scores: prompt adherence, drift, object loss and the last-second jump (CPU)."""
from __future__ import annotations

import pytest
import torch

from selfforcing_core.training.causal_eval import Scorer
from selfforcing_core.training.world import sample_batch
from selfforcing_core.training.world_scene import WorldConfig

CONFIG = WorldConfig(height=64, width=64, num_frames=33)


@pytest.fixture(scope="module")
def truth():
    video, _, scenes = sample_batch(5, 12, config=CONFIG)
    return video, scenes


def test_ground_truth_adheres_and_does_not_drift(truth):
    video, scenes = truth
    scores = Scorer().score(video, scenes, video[:, 0], video[:, -1])
    assert scores["prompt_adherence"] >= 98
    assert scores["drift"] < 0.05 and abs(scores["object_loss"]) < 0.02
    assert scores["end_jump"] < 0.1 and scores["end_psnr"] > 60


def test_fading_to_grey_is_drift_and_a_cut_is_a_jump(truth):
    video, scenes = truth
    base = Scorer().score(video, scenes)
    fade = torch.linspace(0, 1, CONFIG.num_frames).view(1, -1, 1, 1, 1)
    faded = Scorer().score(video * (1 - fade), scenes)
    assert faded["drift"] > base["drift"] + 0.1 and faded["object_loss"] > 0.3
    cut = video.clone()
    cut[:, -3:] = video[:, :1]  # the last frames jump back to the start
    assert Scorer().score(cut, scenes)["end_jump"] > 3 * base["end_jump"]


def test_worker_processes_score_as_the_inline_evaluator(truth):
    video, scenes = truth
    pool = Scorer(workers=2, clips_per_task=5)
    try:
        assert pool.score(video, scenes) == pytest.approx(Scorer().score(video, scenes), nan_ok=True)
    finally:
        pool.close()
