"""What fits on a GPU beside the weights, and the decode roofline: each step reads the weights it needs (an MoE
step only the experts its tokens picked) and every sequence's cache once, so tokens/s <= bandwidth / bytes read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from explorer.config import ModelConfig
from explorer.hardware import GPU
from explorer.kv import cache_curve, kv_cache_size
from explorer.params import WeightBytes


def _weights(weights: WeightBytes | float) -> WeightBytes:
    """Weights as `WeightBytes`; a plain byte count is a dense model that every step reads in full."""
    return weights if isinstance(weights, WeightBytes) else WeightBytes.dense(weights)


def longest_context(
    layout: ModelConfig, memory_bytes: float, weights: WeightBytes | float, batch: int = 1, dtype: str = "bf16"
) -> int | None:
    """The longest context whose cache (in `dtype`) fits in `memory_bytes` beside all the weights.

    0 when the weights alone (plus one token) do not fit; None when memory sets no limit (an encoder, or every
    layer has a sliding window and the full windows fit).
    """
    weight_bytes = _weights(weights).total_bytes
    if memory_bytes <= 0 or weight_bytes < 0:
        raise ValueError("Give a positive memory size and a weight size of 0 or more bytes.")
    free = memory_bytes - weight_bytes

    def fits(tokens: int) -> bool:
        return kv_cache_size(layout, tokens, batch, dtype).kv_cache_bytes <= free

    if not fits(1):
        return 0
    if not layout.is_decoder:
        return None
    if all(window is not None for window in layout.layer_windows) and fits(max(layout.layer_windows)):
        return None
    low, high = 1, 2
    while fits(high):  # the cache grows at least linearly once the windows are full: this ends
        low, high = high, high * 2
    while high - low > 1:  # invariant: fits(low), not fits(high)
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


@dataclass(frozen=True)
class DecodeRoofline:
    """Upper bound on decode speed when every step reads the weights it uses and every sequence's cache once."""

    gpu: GPU  # the accelerator
    tokens: int  # context length per sequence
    batch: int  # sequences decoded together
    weight_bytes: float  # weights held in memory (every expert)
    weight_read_bytes: float  # weights read per step (MoE: dense and shared plus min(E, batch·k) experts a layer)
    kv_cache_bytes: int  # cache read per step (all sequences)
    fits: bool  # all weights plus the cache fit in the memory a framework can allocate
    steps_per_second: float  # bandwidth / (weights read + cache)
    tokens_per_second: float  # batch x steps per second


def decode_roofline(
    layout: ModelConfig, gpu: GPU, tokens: int, weights: WeightBytes | float, batch: int = 1, dtype: str = "bf16"
) -> DecodeRoofline:
    """tokens/s <= bandwidth / (weight bytes read + KV bytes read per step), times the batch. `dtype` is the
    cache's; the weights carry their own (`ParameterEstimate.weights(dtype)`)."""
    weights = _weights(weights)
    cache = kv_cache_size(layout, tokens, batch, dtype).kv_cache_bytes
    read = weights.read_bytes(batch)
    steps = gpu.bandwidth_bytes_per_s / (read + cache)
    return DecodeRoofline(
        gpu=gpu, tokens=tokens, batch=batch, weight_bytes=weights.total_bytes, weight_read_bytes=read,
        kv_cache_bytes=cache, fits=weights.total_bytes + cache <= gpu.memory_bytes,
        steps_per_second=steps, tokens_per_second=batch * steps,
    )


def roofline_curve(
    layout: ModelConfig, gpu: GPU, context_lengths: Sequence[int], weights: WeightBytes | float, batch: int = 1,
    dtype: str = "bf16",
) -> list[float]:
    """Decode tokens/s bound at each context length; NaN where weights and cache do not fit (for charts)."""
    points = [decode_roofline(layout, gpu, tokens, weights, batch, dtype) for tokens in context_lengths]
    return [point.tokens_per_second if point.fits else math.nan for point in points]


def context_grid(
    max_tokens: int = 2**20, points: int = 81, include: Sequence[int] = (), min_tokens: int = 1
) -> list[int]:
    """Increasing context lengths from `min_tokens` to `max_tokens`, evenly spaced on a log axis, plus
    `include` (e.g. the sliding windows, where a curve bends)."""
    if not 1 <= min_tokens < max_tokens or points < 2:
        raise ValueError("Choose a longest context above the shortest (at least 1 token) and at least 2 points.")
    ratio = max_tokens / min_tokens
    spaced = {round(min_tokens * ratio ** (i / (points - 1))) for i in range(points)}
    return sorted(spaced | {t for t in include if min_tokens <= t <= max_tokens})


def variant_cache_curves(
    layouts: Sequence[ModelConfig], context_lengths: Sequence[int], batch: int = 1, dtype: str = "bf16"
) -> dict[str, list[int]]:
    """Cache bytes at each context length, by variant legend (for explorer.charts.kv.cache_size_figure)."""
    return {layout.legend: cache_curve(layout, context_lengths, batch, dtype) for layout in layouts}


def variant_longest_fits(
    layouts: Sequence[ModelConfig], memory_lines: dict[str, int], weights: WeightBytes | float, batch: int = 1,
    dtype: str = "bf16",
) -> list[tuple[str, str, int]]:
    """(variant legend, memory label, longest context) where memory sets a limit (for the chart's markers)."""
    fits = []
    for layout in layouts:
        for memory_label, memory_bytes in memory_lines.items():
            tokens = longest_context(layout, memory_bytes, weights, batch, dtype)
            if tokens is not None:
                fits.append((layout.legend, memory_label, tokens))
    return fits


def variant_roofline_curves(
    layouts: Sequence[ModelConfig], gpu: GPU, context_lengths: Sequence[int], weights: WeightBytes | float,
    batch: int = 1, dtype: str = "bf16",
) -> dict[str, list[float]]:
    """Decode tokens/s bound at each context length, by variant legend (for explorer.charts.kv.roofline_figure)."""
    return {layout.legend: roofline_curve(layout, gpu, context_lengths, weights, batch, dtype) for layout in layouts}
