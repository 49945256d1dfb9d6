"""Prompt schedules written as text, and the raw <-> normalised latent conversion ComfyUI's LATENT needs."""
from __future__ import annotations

import pytest
import torch

from selfforcing_core.latent_format import from_raw, to_raw
from selfforcing_core.prompt_schedule import ScheduledPrompt, parse_schedule
from selfforcing_core.wan_vae import WAN21_LATENT_MEAN, WAN21_LATENT_STD


def test_seconds_frames_comments_and_blank_lines() -> None:
    text = "# a fox story\n0: a red fox\n\n2.5s: it jumps\n  60f : it lands  \n4: it sleeps"
    assert parse_schedule(text) == [ScheduledPrompt(0, "a red fox"), ScheduledPrompt(40, "it jumps"),
                                    ScheduledPrompt(60, "it lands"), ScheduledPrompt(64, "it sleeps")]


def test_prompt_text_may_hold_colons() -> None:
    assert parse_schedule("0: a sign that reads: OPEN") == [ScheduledPrompt(0, "a sign that reads: OPEN")]


@pytest.mark.parametrize("text, message", [
    ("", "the prompt schedule is empty"),
    ("a fox", r"schedule line 1 \('a fox'\) is not 'TIME: prompt'"),
    ("0: a fox\n1:", "schedule line 2 has no prompt text"),
    ("1: a fox", "the first prompt starts at frame 16; the schedule must start at 0"),
    ("0: a fox\n2: b\n1: c", "schedule line 3 starts at frame 16, not after the previous prompt"),
    ("0: a fox\n1.5f: b", "a frame number must be whole"),
])
def test_bad_schedules_say_what_to_fix(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_schedule(text)


def test_raw_latents_are_vae_means() -> None:
    normalised = torch.randn(2, 16, 3, 4, 5, dtype=torch.float64)
    raw = to_raw(normalised)
    mean = torch.tensor(WAN21_LATENT_MEAN, dtype=torch.float64)
    std = torch.tensor(WAN21_LATENT_STD, dtype=torch.float64)
    assert torch.allclose(raw[1, :, 2, 3, 4], normalised[1, :, 2, 3, 4] * std + mean)
    assert torch.allclose(from_raw(raw), normalised, atol=1e-12)
    with pytest.raises(ValueError, match=r"expected Wan2.1 latents \[B, 16, T, h, w\]"):
        to_raw(torch.zeros(1, 4, 3, 4, 4))
