"""Batches onto an accelerator: ``tfd.DataLoader(device=..., prefetch_to_device=N)``.

``_check_device`` refuses a device this machine does not have (never a silent CPU fallback);
``_DevicePrefetcher`` copies the next N batches on a side CUDA stream with ``non_blocking=True``
from pinned memory, so the training loop receives tensors already on the device.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from typing import Any

import torch

from .errors import ConfigError, NoDeviceError


def _check_device(device: str | torch.device | None, prefetch: int) -> torch.device | None:
    if prefetch < 0:
        raise ConfigError(f"prefetch_to_device must be >= 0, got {prefetch}")
    if device is None:
        if prefetch:
            raise ConfigError("prefetch_to_device needs device= (for example device='cuda')")
        return None
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NoDeviceError(
            f"device={str(device)!r} was asked for but torch sees no CUDA device on this machine "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
            "tensorfeed does not silently fall back to the CPU"
        )
    return dev


def _to_device(batch: Any, device: torch.device, non_blocking: bool) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {k: _to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(_to_device(v, device, non_blocking) for v in batch)
    return batch


def _record(batch: Any, stream: Any) -> None:
    if isinstance(batch, torch.Tensor):
        batch.record_stream(stream)
    elif isinstance(batch, dict):
        for v in batch.values():
            _record(v, stream)
    elif isinstance(batch, tuple):
        for v in batch:
            _record(v, stream)


class _DevicePrefetcher:
    """Copies the next ``depth`` batches to the device on a side CUDA stream (non_blocking from
    pinned memory), so the copy of batch k+1 overlaps the training step on batch k."""

    def __init__(self, it: Iterator[Any], device: torch.device, depth: int) -> None:
        self._it = it
        self._device = device
        self._depth = depth
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._queue: deque[Any] = deque()
        self._done = False

    def __iter__(self) -> _DevicePrefetcher:
        return self

    def _fill(self) -> None:
        while not self._done and len(self._queue) < self._depth:
            try:
                batch = next(self._it)
            except StopIteration:
                self._done = True
                break
            if self._stream is not None:
                with torch.cuda.stream(self._stream):
                    batch = _to_device(batch, self._device, True)
            else:
                batch = _to_device(batch, self._device, True)
            self._queue.append(batch)

    def __next__(self) -> Any:
        self._fill()
        if not self._queue:
            raise StopIteration
        batch = self._queue.popleft()
        if self._stream is not None:
            current = torch.cuda.current_stream(self._device)
            current.wait_stream(self._stream)
            _record(batch, current)
        self._fill()
        return batch
