"""Measure the peak bytes of live tensor storage while some torch code runs, on any device (CPU too).

CPU torch has no `max_memory_allocated`, and process RSS is blurred by the allocator and by other
work. This probe watches every aten op through a `TorchDispatchMode`: each output whose storage is
new (not one of the op's inputs, so views and in-place results are not counted twice) is added to
the live total, and a weak reference to the storage's C++ object removes it the moment it is freed.
The peak of that total, sampled after every op, is the tensor memory the code really held (kernel
scratch space inside a single op is not visible, and is the same for any video length; so are the
opaque oneDNN tensors that a CPU convolution's input and output pass through, which have no storage).
"""
from __future__ import annotations

from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class PeakTensorMemory(TorchDispatchMode):
    """Context manager; after exit, `peak` is the most bytes of op-allocated storage alive at once."""

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self._forget_freed()
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if torch.is_tensor(t) and not t.is_mkldnn}
        for tensor in tree_flatten(out)[0]:
            if not torch.is_tensor(tensor) or tensor.is_mkldnn:
                continue
            storage = tensor.untyped_storage()
            pointer, size = storage.data_ptr(), storage.nbytes()
            if size and pointer not in inputs and pointer not in self._live:
                self._live[pointer] = (StorageWeakRef(storage), size)
                self.current += size
        self.peak = max(self.peak, self.current)
        return out

    def _forget_freed(self) -> None:
        for pointer, (ref, size) in list(self._live.items()):
            if ref.expired():
                del self._live[pointer]
                self.current -= size
