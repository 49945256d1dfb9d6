"""Video export: streamed chunks become one mp4/webm with the right frames, size, codec and fps."""
from __future__ import annotations

import gc
import os
import weakref

import numpy as np
import pytest
import torch

from selfforcing_core.video_export import BatchVideoWriter, VideoWriter, read_video, to_uint8_frames, write_video


def gradient_frames(count: int, height: int, width: int, start: int = 0) -> np.ndarray:
    """Smooth, distinct float frames in [0, 1] (video codecs keep smooth content nearly exact)."""
    y = np.linspace(0.0, 1.0, height)[:, None]
    x = np.linspace(0.0, 1.0, width)[None, :]
    frames = []
    for index in range(start, start + count):
        phase = index / 10.0
        frames.append(np.stack([
            0.5 + 0.25 * np.sin(np.pi * (x + phase)) * np.ones_like(y),
            0.5 + 0.25 * np.cos(np.pi * (y + phase)) * np.ones_like(x),
            0.25 + (x + y) / 4.0,
        ], axis=-1))
    return np.stack(frames).astype(np.float32)


def mean_abs_error(decoded: np.ndarray, source: np.ndarray) -> float:
    return float(np.abs(decoded.astype(np.float64) - to_uint8_frames(source)[0].astype(np.float64)).mean())


@pytest.mark.parametrize("suffix, codec", [("mp4", "h264"), ("webm", "vp9")])
def test_chunks_stream_into_one_file(tmp_path, suffix: str, codec: str) -> None:
    path = str(tmp_path / f"clip.{suffix}")
    chunks = [gradient_frames(5, 48, 64, 0), gradient_frames(4, 48, 64, 5), gradient_frames(3, 48, 64, 9)]
    with VideoWriter(path, fps=16, crf=10) as writer:
        for chunk in chunks:
            writer.write(chunk)
        assert writer.frames_written == 12
    info = read_video(path)
    assert (info.width, info.height, info.frame_count) == (64, 48, 12)
    assert info.codec == codec and info.pix_fmt == "yuv420p"
    assert info.fps == pytest.approx(16.0)
    assert mean_abs_error(info.first_frame, chunks[0][:1]) < 2.5
    assert mean_abs_error(info.last_frame, chunks[-1][-1:]) < 2.5
    assert mean_abs_error(info.last_frame, chunks[0][:1]) > 10.0


def test_fps_and_crf_reach_the_file(tmp_path) -> None:
    frames = gradient_frames(8, 64, 64)
    fine = os.path.getsize(write_video(str(tmp_path / "fine.mp4"), frames, fps=24, crf=5))
    coarse_path = write_video(str(tmp_path / "coarse.mp4"), frames, fps=24, crf=45)
    assert os.path.getsize(coarse_path) < fine
    assert read_video(coarse_path).fps == pytest.approx(24.0)


def test_odd_size_is_padded_by_repeating_the_edge(tmp_path) -> None:
    frames = gradient_frames(3, 33, 47)
    info = read_video(write_video(str(tmp_path / "odd.mp4"), frames, crf=5))
    assert (info.width, info.height, info.frame_count) == (48, 34, 3)
    source = to_uint8_frames(frames[:1])[0].astype(np.float64)
    decoded = info.first_frame.astype(np.float64)
    assert np.abs(decoded[:33, :47] - source).mean() < 2.5
    assert np.abs(decoded[33, :47] - source[32]).mean() < 4.0
    assert np.abs(decoded[:33, 47] - source[:, 46]).mean() < 4.0


def test_uint8_and_torch_inputs_match(tmp_path) -> None:
    floats = gradient_frames(2, 32, 32)
    as_uint8 = to_uint8_frames(floats)
    assert np.array_equal(to_uint8_frames(torch.from_numpy(floats)), as_uint8)
    assert np.array_equal(to_uint8_frames(torch.from_numpy(as_uint8)), as_uint8)
    assert to_uint8_frames(floats[0]).shape == (1, 32, 32, 3)
    assert to_uint8_frames(np.array([[[[-0.5, 0.5, 1.5]]]])).tolist() == [[[[0, 128, 255]]]]


def test_writer_keeps_no_chunk(tmp_path) -> None:
    chunk = to_uint8_frames(gradient_frames(4, 32, 32))
    alive = weakref.ref(chunk)
    with VideoWriter(str(tmp_path / "a.mp4")) as writer:
        writer.write(chunk)
        del chunk
        gc.collect()
        assert alive() is None


def test_size_change_between_chunks_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="frame size changed from 32x32 to 48x32"):
        with VideoWriter(str(tmp_path / "a.mp4")) as writer:
            writer.write(gradient_frames(2, 32, 32))
            writer.write(gradient_frames(2, 32, 48))
    assert not (tmp_path / "a.mp4").exists()


def test_bad_arguments_say_what_is_wrong(tmp_path) -> None:
    with pytest.raises(ValueError, match="unsupported video format 'avi'"):
        VideoWriter(str(tmp_path / "a.avi"))
    with pytest.raises(ValueError, match=r"crf for mp4 must be in 0\.\.51"):
        VideoWriter(str(tmp_path / "a.mp4"), crf=60)
    with pytest.raises(ValueError, match="fps must be positive"):
        VideoWriter(str(tmp_path / "a.mp4"), fps=0)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\) RGB"):
        to_uint8_frames(np.zeros((2, 8, 8, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8 or float"):
        to_uint8_frames(np.zeros((2, 8, 8, 3), dtype=np.int64))
    writer = VideoWriter(str(tmp_path / "empty.mp4"))
    with pytest.raises(ValueError, match="no frames were written"):
        writer.close()
    assert not (tmp_path / "empty.mp4").exists()


def test_batch_writer_streams_each_video_to_its_own_file(tmp_path) -> None:
    paths = [str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")]
    first, second = gradient_frames(7, 32, 48), gradient_frames(7, 32, 48, start=20)
    with BatchVideoWriter(paths, fps=16, crf=10) as writer:
        for start in (0, 4):
            writer.write(np.stack([first[start:start + 4], second[start:start + 4]]))
    infos = [read_video(path) for path in paths]
    assert [info.frame_count for info in infos] == [7, 7]
    assert mean_abs_error(infos[0].last_frame, first[-1:]) < 2.5
    assert mean_abs_error(infos[1].first_frame, second[:1]) < 2.5


def test_batch_writer_removes_every_file_on_error(tmp_path) -> None:
    paths = [str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")]
    with pytest.raises(ValueError, match="a chunk of 1 videos for 2 files"):
        with BatchVideoWriter(paths) as writer:
            writer.write(np.stack([gradient_frames(2, 32, 32)] * 2))
            writer.write(gradient_frames(2, 32, 32)[None])
    assert list(tmp_path.iterdir()) == []


def test_a_batch_file_that_cannot_be_finished_takes_the_unfinished_ones_with_it(tmp_path, monkeypatch):
    paths = [str(tmp_path / f"{index}.mp4") for index in range(3)]
    writer = BatchVideoWriter(paths, fps=16)
    writer.write(np.zeros((3, 2, 16, 16, 3), dtype=np.uint8))

    def broken() -> None:
        raise OSError("disk full")

    monkeypatch.setattr(writer.writers[1], "close", broken)
    with pytest.raises(OSError, match="disk full"):
        writer.close()
    assert os.path.exists(paths[0]) and read_video(paths[0]).frame_count == 2
    assert not os.path.exists(paths[1]) and not os.path.exists(paths[2])
    assert writer.writers[2]._encoder is None


def test_a_growing_mp4_is_fragmented_and_plays_back_whole(tmp_path):
    path = str(tmp_path / "long.mp4")
    frames = np.random.default_rng(0).integers(0, 255, (2, 16, 16, 16, 3), dtype=np.uint8)
    with VideoWriter(path, fps=16, growing=True) as writer:
        for chunk in frames:
            writer.write(chunk)
    data = open(path, "rb").read()
    assert b"moof" in data and data.index(b"moov") < data.index(b"mdat")
    assert read_video(path).frame_count == 32
    plain = write_video(str(tmp_path / "plain.mp4"), frames[0])
    assert b"moof" not in open(plain, "rb").read()
