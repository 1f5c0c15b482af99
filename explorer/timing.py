"""Timing work on a device: the one place that waits for a GPU to finish, and a median of repeated calls.

A CUDA call returns when the work is queued, not done: without a synchronisation a timer measures the launch.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait until every queued kernel on `device` has finished (nothing to wait for on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def median_seconds(run: Callable[[], object], device: torch.device, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of `run()` over `repeats` calls, after `warmup` untimed calls (kernels chosen, caches
    warm); on a GPU the device is synchronised around each call so the time covers the work, not the launch."""
    if repeats < 1:
        raise ValueError("Time at least one repeat.")
    for _ in range(warmup):
        run()
    synchronize(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)
