"""Video files from RGB frames: streaming mp4 (H.264) / webm (VP9) writers (one file, or one per video
of a batch) and a small reader.

Frames are (T, H, W, 3) arrays or tensors, either uint8 or float in [0, 1]. Both codecs store
yuv420p, which needs even sizes: an odd width or height is padded by one repeated edge pixel
(right/bottom), so every source pixel is kept and the file is at most one pixel larger.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterator, Sequence, TypeVar

import imageio_ffmpeg
import numpy as np


@dataclass(frozen=True)
class VideoFormat:
    """One container + codec and the ffmpeg options that give it constant quality."""

    codec: str
    default_crf: int
    max_crf: int
    extra_params: tuple[str, ...]


FORMATS: dict[str, VideoFormat] = {
    "mp4": VideoFormat("libx264", 19, 51, ("-preset", "medium", "-movflags", "+faststart")),
    "webm": VideoFormat("libvpx-vp9", 31, 63, ("-b:v", "0", "-deadline", "good", "-cpu-used", "4",
                                               "-row-mt", "1")),
}


def video_format(path: str, fmt: str | None = None) -> str:
    """The format name for `path` ("mp4" or "webm"), from `fmt` or else the file suffix."""
    name = (fmt or os.path.splitext(path)[1].lstrip(".")).lower()
    if name not in FORMATS:
        raise ValueError(f"unsupported video format {name!r} for {path!r}; use one of {sorted(FORMATS)}")
    return name


def to_uint8_frames(frames: Any) -> np.ndarray:
    """(T, H, W, 3) uint8 from a uint8 or [0, 1] float array/tensor; a single (H, W, 3) frame is T=1."""
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu()
        frames = frames.numpy() if str(frames.dtype) == "torch.uint8" else frames.float().numpy()
    array = np.asarray(frames)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3) RGB, got shape {tuple(array.shape)}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"frames must be uint8 or float in [0, 1], got {array.dtype}")
    return np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)


def pad_to_even(frames: np.ndarray) -> np.ndarray:
    """Repeat the last column/row where the width/height is odd (yuv420p needs even sizes)."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


_Self = TypeVar("_Self", bound="_FinishedOnExit")


class _FinishedOnExit:
    """As a context manager: `close()` when the block succeeds, `abort()` (no partial file) when it raises."""

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class VideoWriter(_FinishedOnExit):
    """Appends chunks of frames to an mp4/webm file as they arrive; only one chunk is held at a time.

    The first chunk fixes the frame size. Use as a context manager, or call `close()`; on an
    exception inside the `with` block the partial file is removed.
    """

    def __init__(self, path: str, fps: float = 16.0, crf: int | None = None, fmt: str | None = None,
                 growing: bool = False):
        """`growing`: a fragmented mp4 for long streams, playable up to its last fragment while it is
        written (or if the process dies) and never rewritten at the end as `+faststart` files are."""
        self.path = path
        self.growing = growing
        self.format = video_format(path, fmt)
        spec = FORMATS[self.format]
        self.crf = spec.default_crf if crf is None else int(crf)
        if not 0 <= self.crf <= spec.max_crf:
            raise ValueError(f"crf for {self.format} must be in 0..{spec.max_crf}, got {crf}")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = Fraction(fps).limit_denominator(1001)
        self.size: tuple[int, int] | None = None
        self.frames_written = 0
        self._encoder = None

    def write(self, frames: Any) -> None:
        """Encode a chunk of frames (T, H, W, 3), uint8 or float in [0, 1]."""
        chunk = pad_to_even(to_uint8_frames(frames))
        size = (chunk.shape[2], chunk.shape[1])
        if self._encoder is None:
            self._open(size)
        elif size != self.size:
            raise ValueError(f"frame size changed from {self.size[0]}x{self.size[1]} to {size[0]}x{size[1]}")
        for frame in chunk:
            self._encoder.send(frame.tobytes())
        self.frames_written += len(chunk)

    def close(self) -> None:
        """Finish the file; a writer that got no frames raises and leaves no file."""
        if self._encoder is None:
            raise ValueError(f"no frames were written to {self.path}")
        encoder, self._encoder = self._encoder, None
        encoder.close()

    def _open(self, size: tuple[int, int]) -> None:
        spec = FORMATS[self.format]
        params = list(spec.extra_params)
        if self.growing and self.format == "mp4":
            params[params.index("+faststart")] = "+frag_keyframe+empty_moov+default_base_moof"
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self.size = size
        self._encoder = imageio_ffmpeg.write_frames(
            self.path, size, fps=self.fps, codec=spec.codec, pix_fmt_out="yuv420p", quality=None,
            macro_block_size=1, ffmpeg_log_level="error",
            output_params=["-crf", str(self.crf), *params],
        )
        self._encoder.send(None)

    def abort(self) -> None:
        """Stop encoding and remove the partial file."""
        if self._encoder is not None:
            encoder, self._encoder = self._encoder, None
            encoder.close()
        if os.path.exists(self.path):
            os.remove(self.path)


class BatchVideoWriter(_FinishedOnExit):
    """One streaming `VideoWriter` per video of a batch: chunks [B, T, H, W, 3] go to B files as they
    arrive (video b to `paths[b]`), so a batch is never held whole either."""

    def __init__(self, paths: Sequence[str], fps: float = 16.0, crf: int | None = None, fmt: str | None = None,
                 growing: bool = False):
        self.writers = [VideoWriter(path, fps=fps, crf=crf, fmt=fmt, growing=growing) for path in paths]

    def write(self, frames: Any) -> None:
        """Append a chunk of frames [B, T, H, W, 3], uint8 or float in [0, 1]."""
        if len(frames) != len(self.writers):
            raise ValueError(f"a chunk of {len(frames)} videos for {len(self.writers)} files")
        for writer, video in zip(self.writers, frames):
            writer.write(video)

    def close(self) -> None:
        """Finish every file; if one cannot be finished, the ones not yet finished are removed too."""
        for index, writer in enumerate(self.writers):
            try:
                writer.close()
            except BaseException:
                for rest in self.writers[index:]:
                    rest.abort()
                raise

    def abort(self) -> None:
        """Stop encoding and remove every partial file."""
        for writer in self.writers:
            writer.abort()


def write_video(path: str, frames: Any, fps: float = 16.0, crf: int | None = None, fmt: str | None = None) -> str:
    """Write all `frames` (T, H, W, 3) to `path` in one go; returns `path`."""
    with VideoWriter(path, fps=fps, crf=crf, fmt=fmt) as writer:
        writer.write(frames)
    return path


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds: size, frame count, fps, codec, and its first and last frames."""

    width: int
    height: int
    frame_count: int
    fps: float
    codec: str
    pix_fmt: str
    first_frame: np.ndarray
    last_frame: np.ndarray


def read_video(path: str) -> VideoInfo:
    """Decode a whole video once, keeping only the first and last frames (uint8 RGB)."""
    meta, frames = _decode(path)
    first = last = None
    count = 0
    for frame in frames:
        if first is None:
            first = frame
        last = frame
        count += 1
    if first is None:
        raise ValueError(f"{path} has no video frames")
    width, height = meta["size"]
    return VideoInfo(width, height, count, float(meta["fps"]), meta["codec"].split()[0],
                     meta["pix_fmt"].split("(")[0], first, last)


def iter_frames(path: str) -> Iterator[np.ndarray]:
    """The frames of a video file one at a time (uint8 RGB [H, W, 3]), so a long one never fills memory."""
    return _decode(path)[1]


def _decode(path: str) -> tuple[dict[str, Any], Iterator[np.ndarray]]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no video file at {path}")
    reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
    meta = next(reader)
    width, height = meta["size"]
    return meta, (np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3) for raw in reader)
