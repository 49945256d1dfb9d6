"""Run a generator in a worker thread so its consumer works at the same time (decode beside denoise).

Items cross a bounded queue; an exception in the worker re-raises in the consumer; closing the
consumer stops the worker at its next `stop_requested` check.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


class Cancelled(Exception):
    """Raised inside the worker when the consumer went away."""


def run_ahead(make: Callable[[Callable[[], None]], Iterator[T]], depth: int = 2) -> Iterator[T]:
    """Iterate `make(check)` in a thread, at most `depth` items ahead of the consumer.

    `check` must be called by the producer between units of work; it raises `Cancelled` once the
    consumer has stopped listening.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def check() -> None:
        if stop.is_set():
            raise Cancelled()

    def put(item) -> None:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def work() -> None:
        try:
            for item in make(check):
                put(item)
            put(_DONE)
        except Cancelled:
            pass
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)

    worker = threading.Thread(target=work, name="selfforcing-producer", daemon=True)
    worker.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()
