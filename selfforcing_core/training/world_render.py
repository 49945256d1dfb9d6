"""Vectorised torch rendering of procedural scenes into video tensors, on any device.

Shapes are signed distance fields evaluated for every object and frame at once, on a pixel
window around each object; a one-pixel ramp on the distance gives antialiased edges. Output
layout: [B, T, 3, H, W], float in [-1, 1] (frame-major, RGB, the layout the VAE encoder takes).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .world_scene import BackgroundParams, ObjectParams, SceneParams, WorldConfig
from .world_vocab import SHAPE_GEOMETRY, TEXTURED_KINDS


def render_scenes(
    scenes: Sequence[SceneParams], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Render scenes sharing one WorldConfig into a [B, T, 3, H, W] tensor in [-1, 1] of `dtype`.

    Geometry is computed in float32 at least (half precision cannot place a pixel in a 128-pixel
    frame). On CPU clips are drawn one at a time (their working set stays in cache, several
    times faster than one large batch); on an accelerator the whole batch is drawn at once.
    """
    config = scenes[0].config
    if any(scene.config != config for scene in scenes):
        raise ValueError("all scenes of a batch must share one WorldConfig")
    device = torch.device(device)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    if device.type != "cpu":
        return _render_chunk(scenes, config, device, work).to(dtype)
    return torch.cat([_render_chunk([scene], config, device, work).to(dtype) for scene in scenes])


def _render_chunk(
    scenes: Sequence[SceneParams], config: WorldConfig, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    frames = _render_backgrounds(scenes, config, device, dtype)
    for slot in range(max(len(scene.objects) for scene in scenes)):
        members = [index for index, scene in enumerate(scenes) if len(scene.objects) > slot]
        _draw_objects(frames, members, [scenes[index].objects[slot] for index in members], config)
    return frames.clamp_(0.0, 1.0).mul_(2.0).sub_(1.0)


def _tensor(values: Sequence | np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float64), device=device).to(dtype)


def _per_item(values: Sequence, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """One value per clip or object, shaped [N, 1, 1, 1] to broadcast over [N, T, H, W]."""
    return _tensor(values, device, dtype).view(-1, 1, 1, 1)


def _render_backgrounds(
    scenes: Sequence[SceneParams], config: WorldConfig, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Backgrounds [B, T, 3, H, W] in [0, 1]: a solid or gradient base plus any texture."""
    short = config.short_side
    backgrounds = [scene.background for scene in scenes]
    y = (torch.arange(config.height, device=device, dtype=dtype)[:, None] + 0.5) / short
    x = (torch.arange(config.width, device=device, dtype=dtype)[None, :] + 0.5) / short
    angle = _per_item([bg.angle for bg in backgrounds], device, dtype)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Gradients span the frame exactly along their direction.
    half_w, half_h = config.width / (2 * short), config.height / (2 * short)
    span = (cos.abs() * half_w + sin.abs() * half_h) * 2.0
    ramp = (0.5 + ((x - half_w) * cos + (y - half_h) * sin) / span).clamp(0.0, 1.0)
    start = _tensor([bg.rgb for bg in backgrounds], device, dtype).view(-1, 1, 3, 1, 1)
    end = _tensor([bg.end_rgb or bg.rgb for bg in backgrounds], device, dtype).view(-1, 1, 3, 1, 1)
    frames = torch.lerp(start, end, ramp.unsqueeze(2))
    frames = frames.expand(len(scenes), config.num_frames, 3, config.height, config.width).clone()
    textured = [index for index, bg in enumerate(backgrounds) if bg.kind in TEXTURED_KINDS]
    if textured:
        texture = _textures([backgrounds[index] for index in textured], x, y, short, device, dtype)
        frames[textured] += texture.unsqueeze(2)
    return frames


def _textures(
    backgrounds: Sequence[BackgroundParams],
    x: torch.Tensor,
    y: torch.Tensor,
    short: int,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Signed texture [N, T or 1, H, W] of striped/checkered backgrounds, moved by their camera."""
    angle = _per_item([bg.angle for bg in backgrounds], device, dtype)
    cos, sin = torch.cos(angle), torch.sin(angle)
    camera = _tensor(np.stack([bg.camera for bg in backgrounds]), device, dtype)
    if not any(bg.pan for bg in backgrounds):
        camera = camera[:, :1]
    camera_x, camera_y = camera[..., 0, None, None], camera[..., 1, None, None]
    period = _per_item([bg.period for bg in backgrounds], device, dtype)
    sharpness = period * short / 4.0

    def square_wave(along: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """A square wave with one-pixel soft edges, shifted per frame."""
        return (torch.sin((along + shift) * (2.0 * math.pi / period)) * sharpness).clamp(-1.0, 1.0)

    pattern = square_wave(x * cos + y * sin, camera_x * cos + camera_y * sin)
    is_checker = _per_item([bg.kind == "checker" for bg in backgrounds], device, dtype)
    if bool(is_checker.any()):
        across = square_wave(y * cos - x * sin, camera_y * cos - camera_x * sin)
        pattern = pattern * torch.lerp(torch.ones_like(across), across, is_checker)
    return _per_item([bg.contrast for bg in backgrounds], device, dtype) * pattern


def _draw_objects(
    frames: torch.Tensor, clips: Sequence[int], objects: Sequence[ObjectParams], config: WorldConfig
) -> None:
    """Composite one object into each listed clip of frames [B, T, 3, H, W], in place.

    The distance field is evaluated only in a window around each object (the same window size for
    all of them, placed per frame), which is where all of its coverage lies.
    """
    device, dtype = frames.device, frames.dtype
    short = config.short_side
    pixels_per_unit = _tensor([config.width, config.height], device, dtype)
    centre = _tensor(np.stack([obj.track for obj in objects]), device, dtype) * pixels_per_unit
    size = _tensor(np.stack([obj.radius * obj.scale for obj in objects]), device, dtype) * short
    geometry = [SHAPE_GEOMETRY[obj.shape] for obj in objects]
    reach = max(float(obj.extent(short).max()) for obj in objects)
    window_h, window_w = (min(2 * math.ceil(reach) + 4, side) for side in (config.height, config.width))
    top = (centre[..., 1].floor() - window_h // 2).clamp(0, config.height - window_h).long()
    left = (centre[..., 0].floor() - window_w // 2).clamp(0, config.width - window_w).long()
    rows = top[..., None] + torch.arange(window_h, device=device)
    cols = left[..., None] + torch.arange(window_w, device=device)
    distance = signed_distance(
        cols.to(dtype)[..., None, :] + 0.5 - centre[..., 0, None, None],
        rows.to(dtype)[..., :, None] + 0.5 - centre[..., 1, None, None],
        outer=_per_item([g.outer for g in geometry], device, dtype) * size[..., None, None],
        points=_per_item([g.points for g in geometry], device, dtype),
        inner_ratio=_per_item([g.inner_ratio for g in geometry], device, dtype),
        phase=_per_item([g.phase for g in geometry], device, dtype),
    )
    alpha = (0.5 - distance).clamp_(0.0, 1.0).unsqueeze(2)
    rgb = _tensor(np.stack([obj.rgb_track for obj in objects]), device, dtype)[..., None, None]
    clip = torch.tensor(clips, device=device)[:, None, None, None, None]
    frame = torch.arange(config.num_frames, device=device)[None, :, None, None, None]
    channel = torch.arange(3, device=device)[None, None, :, None, None]
    plane = ((clip * config.num_frames + frame) * 3 + channel) * config.height
    flat = frames.view(-1)
    index = ((plane + rows[:, :, None, :, None]) * config.width + cols[:, :, None, None, :]).flatten()
    patch = flat[index].view(len(objects), config.num_frames, 3, window_h, window_w)
    flat[index] = torch.lerp(patch, rgb, alpha).flatten()


def signed_distance(
    dx: torch.Tensor,
    dy: torch.Tensor,
    outer: torch.Tensor,
    points: torch.Tensor,
    inner_ratio: torch.Tensor,
    phase: torch.Tensor,
) -> torch.Tensor:
    """Signed distance (negative inside) from offsets (dx, dy) to a regular star polygon or circle.

    The angle is folded into one half-sector of the shape's symmetry, where the boundary is a
    single segment from an outer vertex to the neighbouring inner vertex. `points == 0` is a
    circle of radius `outer`. All arguments broadcast together.
    """
    rho = torch.hypot(dx, dy)
    is_circle = points == 0
    points = torch.where(is_circle, torch.full_like(points, 4.0), points)
    sector = 2.0 * math.pi / points
    folded = torch.remainder(torch.atan2(dy, dx) - phase, sector)
    folded = torch.minimum(folded, sector - folded)
    qx, qy = rho * torch.cos(folded), rho * torch.sin(folded)
    inner = outer * inner_ratio
    edge_x = inner * torch.cos(sector / 2) - outer
    edge_y = inner * torch.sin(sector / 2)
    rel_x = qx - outer
    along = ((rel_x * edge_x + qy * edge_y) / (edge_x**2 + edge_y**2)).clamp(0.0, 1.0)
    distance = torch.hypot(rel_x - along * edge_x, qy - along * edge_y)
    inside = edge_x * qy - edge_y * rel_x > 0
    polygon = torch.where(inside, -distance, distance)
    return torch.where(is_circle, rho - outer, polygon)
