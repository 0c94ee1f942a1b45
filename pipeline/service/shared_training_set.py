"""A training set handed to the training process through shared memory, copied in slices.

The worker trains in another process (pipeline/service/worker_loop.py `_train`). Handing the
labelled history to it as an argument pickles it in one call: at the book's cap (500,000
rows × 52 features, ~110 MB) that call held the interpreter for 0.35–0.6 s on the project
machine, a stall of the event loop (bench/worker_retrain_stall.py). Here the arrays are
copied into one shared-memory block `SLICE_BYTES` at a time with a turn of the event loop
between slices, and the process gets only the block's name and layout (`SharedTrainingSet`,
a few hundred bytes); it copies the arrays out and trains on exactly the same values.

The creator owns the block: `share` returns it, and the creator closes and unlinks it once
the training has returned (the training process has copied the arrays out and closed it).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

from pipeline.service.churn_learning import TrainingSet, fit_model

SLICE_BYTES = 4 << 20   # copied between two turns of the event loop (a few ms)
_ARRAYS = ("X", "y", "t", "reference", "here")


@dataclass(frozen=True)
class SharedTrainingSet:
    """What the training process receives: the block's name and where each array lies."""
    name: str
    layout: tuple[tuple[str, tuple[int, ...], str, int], ...]   # (field, shape, dtype, byte offset)
    leavers: int
    horizon_days: float

    def load(self) -> TrainingSet:
        """The training set, copied out of the block (which is closed again)."""
        block = shared_memory.SharedMemory(name=self.name)
        try:
            arrays = {field: np.ndarray(shape, np.dtype(dtype), buffer=block.buf, offset=offset).copy()
                      for field, shape, dtype, offset in self.layout}
        finally:
            block.close()
        return TrainingSet(arrays["X"], arrays["y"], arrays["t"], arrays["reference"], self.leavers,
                           self.horizon_days, arrays.get("here"))


async def share(data: TrainingSet) -> tuple[SharedTrainingSet, shared_memory.SharedMemory]:
    """Copy `data`'s arrays into a new shared-memory block, a slice at a time with a turn of
    the event loop between slices. The caller closes and unlinks the block when done."""
    arrays = [(field, np.ascontiguousarray(getattr(data, field))) for field in _ARRAYS
              if getattr(data, field) is not None]
    layout = []
    offset = 0
    for field, a in arrays:
        layout.append((field, tuple(a.shape), a.dtype.str, offset))
        offset += -(-a.nbytes // 8) * 8   # each array 8-byte aligned
    block = shared_memory.SharedMemory(create=True, size=max(offset, 1))
    try:
        for (field, a), (_, shape, dtype, start) in zip(arrays, layout):
            target = np.ndarray(shape, np.dtype(dtype), buffer=block.buf, offset=start)
            rows = len(a) if a.ndim else 1
            step = max(1, SLICE_BYTES // max(1, a.nbytes // max(rows, 1)))
            for i in range(0, rows, step):
                target[i:i + step] = a[i:i + step]
                await asyncio.sleep(0)
            del target   # no view left on the block: the caller can close it
    except BaseException:
        block.close()
        block.unlink()
        raise
    return SharedTrainingSet(block.name, tuple(layout), data.leavers, data.horizon_days), block


def fit_shared(kind: str, now: float, shared: SharedTrainingSet):
    """`fit_model` on a shared training set (run in the training process)."""
    return fit_model(kind, now, shared.load())
