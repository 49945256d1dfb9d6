"""Measuring a long streamed generation: peak memory at chosen seconds of video, and time per chunk.

Memory meters are reset when the generation starts and again at every mark, so each mark holds the peak of
its own interval and the running peak since the start, and nothing from loading the models:
- `ProcessPeakRSS`: the process's resident-set high-water mark (Linux `VmHWM`, reset through
  `/proc/self/clear_refs`). It sees every byte the generation touches (tensors, allocator slack, Python
  objects) at its true peak inside a chunk, not only where it is sampled. It fixes glibc's mmap threshold
  first: by default glibc raises that threshold as large blocks are freed, after which freed tensors stay
  resident and the high-water mark creeps up with the allocator's history rather than with live memory
  (measured on a 60 s video at constant tensor memory: +9 % from 10 s to 60 s; fixed: flat to 0.1 %). The
  price is time: every large block is mapped and zeroed afresh (on the world model, CPU: +40 % per chunk).
- `CudaPeakMemory`: torch's peak of allocated CUDA memory on one device.
A chunk's time is the wall time from the previous chunk's hand-off to its own, so it includes the cache
pass of the chunk before it, any prompt re-cache, and the decode; its CPU time (this process, all threads)
is taken over the same span, which other work on a shared CPU inflates far less than the wall time.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import torch

from selfforcing_core.pipeline import GenerationRequest, StreamedChunk, VideoPipeline
from selfforcing_core.video_geometry import FPS


class PeakMemory(Protocol):
    """A resettable peak-memory reading."""

    name: str

    def reset(self) -> None: ...

    def peak_bytes(self) -> int: ...


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)


class ProcessPeakRSS:
    """This process's resident-set high-water mark (Linux with glibc)."""

    name = ("process RSS high-water mark (VmHWM, reset at the start and at every mark; glibc serves blocks of "
            "128 KiB and more from mmap, so freed tensors leave the RSS at once)")

    def __init__(self, mmap_threshold: int = 128 * 1024):
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        if not hasattr(libc, "mallopt") or not libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold):
            raise RuntimeError("fixing the mmap threshold needs glibc's mallopt")

    def reset(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
        except OSError as error:
            raise RuntimeError("resetting the RSS high-water mark needs Linux's /proc/self/clear_refs") from error

    def peak_bytes(self) -> int:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("/proc/self/status has no VmHWM line")


class CudaPeakMemory:
    """torch's peak of allocated memory on one CUDA device."""

    name = "torch.cuda.max_memory_allocated (reset at the start and at every mark)"

    def __init__(self, device: torch.device | str = "cuda"):
        self.device = torch.device(device)

    def reset(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak_bytes(self) -> int:
        return torch.cuda.max_memory_allocated(self.device)


@dataclass
class MemoryMark:
    """Memory when the video passed `mark` seconds (sampled after the chunk ending at `second`)."""

    mark: float
    second: float
    peak_bytes: int
    interval_bytes: int
    held: dict[str, int] = field(default_factory=dict)


class MemoryTimeline:
    """Samples a meter as the video passes given seconds; `held()` adds exact sizes (e.g. the KV cache)."""

    def __init__(self, meter: PeakMemory, marks: Sequence[float], held: Callable[[], dict[str, int]] = dict):
        self.meter = meter
        self.pending = sorted(marks)
        self.held = held
        self.marks: list[MemoryMark] = []
        self._peak = 0

    def start(self) -> None:
        """Forget everything before this moment (model loading, earlier runs)."""
        self.meter.reset()

    def after(self, second: float) -> None:
        """Record every pending mark the video has reached at `second`."""
        reached = [mark for mark in self.pending if mark <= second]
        if not reached:
            return
        interval = self.meter.peak_bytes()
        self.meter.reset()
        self._peak = max(self._peak, interval)
        held = self.held()
        self.marks += [MemoryMark(mark, second, self._peak, interval, held) for mark in reached]
        self.pending = self.pending[len(reached):]


@dataclass
class StreamRun:
    """Wall, CPU and model seconds of every chunk, memory marks, total seconds and video frames of one run."""

    chunk_seconds: list[float]
    cpu_seconds: list[float]
    model_seconds: list[float]
    marks: list[MemoryMark]
    seconds: float
    frames: int


def run_stream(
    pipeline: VideoPipeline,
    request: GenerationRequest,
    timeline: MemoryTimeline,
    on_chunk: Callable[[StreamedChunk], None] = lambda chunk: None,
    synchronize: Callable[[], None] = lambda: None,
) -> StreamRun:
    """Stream `request` to the end, handing every chunk to `on_chunk`, timing chunks and sampling memory.

    The pieces of one chunk (the first chunk's early first frame, then the rest) are timed as one chunk.
    """
    chunk_seconds, cpu_seconds, model_seconds, frames = [], [], [], 0
    timeline.start()
    began = last = time.perf_counter()
    last_cpu = time.process_time()
    for chunk in pipeline.stream(request):
        on_chunk(chunk)
        synchronize()
        if not chunk.continues:
            chunk_seconds.append(0.0)
            cpu_seconds.append(0.0)
            model_seconds.append(0.0)
        chunk_seconds[-1] += time.perf_counter() - last
        cpu_seconds[-1] += time.process_time() - last_cpu
        model_seconds[-1] += chunk.model_seconds
        frames = min(chunk.end_frame, request.num_frames)  # the last chunk may decode past the length
        timeline.after(chunk.end_frame / FPS)
        last, last_cpu = time.perf_counter(), time.process_time()
    return StreamRun(chunk_seconds, cpu_seconds, model_seconds, timeline.marks, time.perf_counter() - began, frames)


def time_profile(seconds: Sequence[float], count: int) -> dict[str, float]:
    """Medians of the first, middle and last `count` chunks and last/first; the first chunk (warm-up:
    allocation, first calls) is left out."""
    rest = list(seconds[1:])
    if not rest:
        raise ValueError("a time profile needs at least two chunks")
    count = max(1, min(count, len(rest) // 3 or 1))
    middle = (len(rest) - count) // 2
    first = statistics.median(rest[:count])
    last = statistics.median(rest[-count:])
    return {"first": first, "middle": statistics.median(rest[middle : middle + count]),
            "last": last, "last_over_first": last / first}
