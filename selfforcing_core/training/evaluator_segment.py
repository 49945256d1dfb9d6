"""Per-frame segmentation of world videos into coloured blobs with position, size and shape features.

The world's backgrounds are smooth (a linear gradient at most, plus a faint texture) and its
objects are saturated colours far from them, so: fit a linear colour model per frame robustly,
call pixels far from it foreground, split the foreground into connected components, and explain
each pixel as a blend of the background and one palette colour (which keeps blurred and
antialiased edges with their object). Runs batched in torch on any device.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .world_vocab import OBJECT_COLOURS

PALETTE_NAMES: tuple[str, ...] = tuple(OBJECT_COLOURS)
HARMONICS: tuple[int, ...] = (3, 4, 5)
FOREGROUND_THRESHOLD = 0.2
_FIT_THRESHOLDS = (0.3, 0.2, 0.15)
_MIN_BLEND = 0.25
_MIN_AREA_FRACTION = 0.0006


@dataclass(frozen=True)
class Blobs:
    """Connected foreground components of a stack of frames, one row per blob.

    `frame` indexes the flattened frames; `centre` is (x, y) in pixels; `area` is the sum of the
    per-pixel blend weights; `votes` [n, K] weighs each palette colour; `harmonics` [n, 3] are the
    complex angular moments (k = 3, 4, 5) of the blob's mass about its centre, divided by its area.
    """

    frame: torch.Tensor
    centre: torch.Tensor
    area: torch.Tensor
    votes: torch.Tensor
    harmonics: torch.Tensor


def fit_background(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Robust per-frame linear colour model of frames [N, 3, H, W] in [0, 1]: (fit, distance to it).

    Least squares on (1, x, y) per channel over every second pixel, refitted on the pixels that
    lie close to the previous fit; the fit and the distance come back at full resolution.
    """
    n, _, h, w = frames.shape
    ys = torch.linspace(-1.0, 1.0, h, device=frames.device, dtype=frames.dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=frames.device, dtype=frames.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    basis = torch.stack([torch.ones_like(grid_x), grid_x, grid_y])
    sample_basis = basis[:, ::2, ::2].reshape(3, -1)
    samples = frames[:, :, ::2, ::2].reshape(n, 3, -1)
    weight = torch.ones(n, 1, samples.shape[-1], device=frames.device, dtype=frames.dtype)
    for threshold in (None, *_FIT_THRESHOLDS):
        if threshold is not None:
            fit = torch.einsum("ncp,pk->nck", coefficients, sample_basis)
            weight = ((samples - fit).square().sum(dim=1, keepdim=True) < threshold**2).to(frames.dtype)
        gram = torch.einsum("npk,qk->npq", weight * sample_basis, sample_basis)
        gram = gram + 1e-4 * torch.eye(3, device=frames.device, dtype=frames.dtype)
        moments = torch.einsum("nck,pk->ncp", weight * samples, sample_basis)
        coefficients = torch.linalg.solve(gram, moments.transpose(1, 2)).transpose(1, 2)
    fit = torch.einsum("ncp,phw->nchw", coefficients, basis)
    return fit, (frames - fit).square().sum(dim=1).sqrt()


def connected_components(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8-connected components of mask [N, H, W].

    Returns the flat indices [M] of the mask's pixels (ascending) and, for each, the position in
    that list of the first pixel of its component. Labels start as positions and shrink to the
    smallest over each neighbour pair, with pointer jumps (take the label of the pixel one's label
    names) so that a component settles in far fewer rounds than its diameter.
    """
    n, h, w = mask.shape
    flat = mask.flatten().nonzero().squeeze(1)
    count = flat.numel()
    lookup = torch.full((n * h * w,), -1, device=mask.device, dtype=torch.long)
    lookup[flat] = torch.arange(count, device=mask.device)
    y, x = (flat // w) % h, flat % w
    sources, targets = [], []
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):
        inside = ((y + dy < h) & (x + dx >= 0) & (x + dx < w)).nonzero().squeeze(1)
        neighbour = lookup[flat[inside] + dy * w + dx]
        linked = neighbour >= 0
        sources.append(inside[linked])
        targets.append(neighbour[linked])
    source, target = torch.cat(sources), torch.cat(targets)
    labels = torch.arange(count, device=mask.device)
    while True:
        lowest = labels.clone()
        lowest.scatter_reduce_(0, source, labels[target], "amin")
        lowest.scatter_reduce_(0, target, labels[source], "amin")
        lowest = lowest[lowest]
        if torch.equal(lowest, labels):
            return flat, labels
        labels = lowest


def explain_colours(pixels: torch.Tensor, background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best palette colour index and blend weight for pixels [M, 3] over their background [M, 3].

    Each pixel is matched to the segment background -> palette colour it lies closest to, among
    colours reached at least a quarter of the way; the weight is how far along that segment it is.
    """
    palette = torch.tensor(list(OBJECT_COLOURS.values()), device=pixels.device, dtype=pixels.dtype)
    offset = (pixels - background).unsqueeze(1)
    direction = palette.unsqueeze(0) - background.unsqueeze(1)
    length2 = (direction * direction).sum(-1)
    blend = (offset * direction).sum(-1) / length2.clamp_min(1e-6)
    miss = (offset - blend.clamp(0.0, 1.0).unsqueeze(-1) * direction).square().sum(-1).sqrt()
    usable = (blend >= _MIN_BLEND) & (length2 > FOREGROUND_THRESHOLD**2)
    miss = torch.where(usable, miss, torch.full_like(miss, float("inf")))
    index = miss.argmin(dim=1)
    weight = blend.gather(1, index[:, None]).squeeze(1).clamp(0.0, 1.0)
    return index, torch.where(torch.isfinite(miss.min(dim=1).values), weight, torch.zeros_like(weight))


def segment(frames: torch.Tensor) -> tuple[Blobs, torch.Tensor]:
    """Blobs of frames [N, 3, H, W] in [0, 1], and the foreground fraction of each frame [N]."""
    _, _, h, w = frames.shape
    fit, distance = fit_background(frames)
    mask = distance > FOREGROUND_THRESHOLD
    flat, component = connected_components(mask)
    colour, weight = explain_colours(_at(frames, flat), _at(fit, flat))
    roots, blob = torch.unique(component, return_inverse=True)
    count = roots.numel()
    x = (flat % w).to(frames.dtype) + 0.5
    y = ((flat // w) % h).to(frames.dtype) + 0.5

    def total(values: torch.Tensor) -> torch.Tensor:
        out = torch.zeros((count, *values.shape[1:]), device=values.device, dtype=values.dtype)
        return out.index_add_(0, blob, values)

    area = total(weight)
    safe_area = area.clamp_min(1e-6)
    centre = torch.stack([total(weight * x), total(weight * y)], dim=1) / safe_area[:, None]
    votes = total(F.one_hot(colour, len(PALETTE_NAMES)).to(frames.dtype) * (weight**2)[:, None])
    angle = torch.atan2(y - centre[blob, 1], x - centre[blob, 0])
    orders = torch.tensor(HARMONICS, device=frames.device, dtype=frames.dtype)
    phase = angle[:, None] * orders[None, :]
    cosines, sines = total(weight[:, None] * torch.cos(phase)), total(weight[:, None] * torch.sin(phase))
    harmonics = torch.complex(cosines, -sines) / safe_area[:, None]
    keep = area >= _MIN_AREA_FRACTION * h * w
    blobs = Blobs(
        frame=(flat[roots] // (h * w))[keep],
        centre=centre[keep],
        area=area[keep],
        votes=votes[keep],
        harmonics=harmonics[keep],
    )
    return blobs, mask.to(frames.dtype).mean(dim=(1, 2))


def _at(images: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """RGB values [M, 3] of images [N, 3, H, W] at flat pixel indices into [N, H, W]."""
    return images.permute(0, 2, 3, 1).reshape(-1, images.shape[1])[flat]
