"""The flow-matching schedule: warped steps, sigma lookup, x0 and re-noising."""
from __future__ import annotations

import pytest
import torch

from selfforcing_core.schedule import FlowMatchSchedule


def test_warp_matches_the_reference_timesteps():
    schedule = FlowMatchSchedule(shift=5.0)
    warped = schedule.warp([1000, 750, 500, 250])
    assert warped.dtype == torch.float32
    assert warped.tolist() == [1000.0, 937.5, 833.3333129882812, 625.0]
    assert schedule.warp([0]).tolist() == [0.0]


def test_unshifted_schedule_is_linear():
    schedule = FlowMatchSchedule(shift=1.0)
    assert schedule.warp([1000, 500]).tolist() == pytest.approx([1000.0, 500.0])


def test_noise_then_x0_round_trip():
    schedule = FlowMatchSchedule(shift=3.0)
    x0 = torch.randn(2, 4, 3, 5, 5, dtype=torch.float64)
    noise = torch.randn_like(x0)
    t = torch.tensor([[900.0, 500.0, 100.0], [700.0, 300.0, 50.0]])
    xt = schedule.add_noise(x0, noise, t)
    flow = noise - x0
    torch.testing.assert_close(schedule.flow_to_x0(flow, xt, t), x0, rtol=0, atol=1e-6)
    torch.testing.assert_close(schedule.x0_to_flow(x0, xt, t), flow, rtol=0, atol=1e-5)


@pytest.mark.parametrize("bad", [[1001], [-1]])
def test_steps_out_of_range_are_refused(bad):
    with pytest.raises(ValueError, match="denoising steps must lie in 0..1000"):
        FlowMatchSchedule().warp(bad)


def test_shift_must_be_positive():
    with pytest.raises(ValueError, match="shift must be > 0"):
        FlowMatchSchedule(shift=0)
