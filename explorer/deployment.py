"""A deployment: GPUs of one model x count and how the model is split over them (tensor parallel, or DeepSeek's
data-parallel attention), with memory per GPU, capacity (longest context, largest batch) and both roofline
ceilings of a decode step (memory: bytes read / bandwidth; compute: FLOPs / peak throughput).

Rules (each tested by hand): tensor parallelism splits the weights and the KV heads; once it exceeds the KV heads,
heads are replicated, so the cache per GPU stops shrinking. MLA's latent cannot be split by head: every tensor-
parallel rank keeps all of it. Under data-parallel attention each GPU keeps only its own sequences' cache and a
whole copy of the attention weights; the routed experts are expert-parallel (each GPU holds E / count of them) and
the rest (dense MLPs, shared experts, embeddings) is tensor-parallel, so everything but attention is split evenly.

At batch 1 under data-parallel attention only one GPU has a sequence: it reads its whole copy of the attention
weights, and the experts its token picked are read on the GPUs that hold them, taken as spread evenly (1 / count
of the routed weights read per GPU). Each step waits for the slowest GPU, so the ceilings use that one GPU's bytes
and FLOPs. A deployment whose weights and cache do not fit has no decode speed: `DecodeBound.fits` is False and
the command line's `decode_tokens_per_s` is null.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from explorer.config import ModelConfig
from explorer.hardware import GPU
from explorer.kv import kv_cache_size
from explorer.params import ParameterEstimate, WeightBytes

Parallel = Literal["tp", "dp-attention"]
PARALLELS: tuple[str, ...] = ("tp", "dp-attention")


@dataclass(frozen=True)
class Deployment:
    """GPUs serving one model."""

    gpu: GPU  # every GPU is this model
    count: int = 1  # GPUs in all (1-8 per node, several nodes)
    parallel: Parallel = "tp"  # tensor parallel over all GPUs, or data-parallel attention (experts split)

    def __post_init__(self):
        if self.count < 1 or self.parallel not in PARALLELS:
            raise ValueError(f"Choose at least one GPU and a parallel layout among {', '.join(PARALLELS)}.")

    @property
    def label(self) -> str:
        return f"{self.count}×{self.gpu.name} ({self.parallel})"


@dataclass(frozen=True)
class PerGPU:
    """Bytes on each GPU of a deployment, and what a decode step does there."""

    weights: float  # weight bytes held by one GPU
    kv_cache: float  # cache bytes held by one GPU
    fits: bool  # weights + cache within what a framework can allocate
    weight_read: float  # weight bytes one GPU reads per decode step
    flops: float  # FLOPs one GPU does per decode step

    @property
    def total(self) -> float:
        return self.weights + self.kv_cache


def cache_share(layout: ModelConfig, deployment: Deployment) -> float:
    """The fraction of the whole cache of a batch that one GPU keeps, under tensor parallelism: its KV heads
    (ceil(n_g / TP) of n_g: replicated past n_g), or all of an MLA latent (it cannot be split by head)."""
    if layout.attention == "mla":
        return 1.0
    return math.ceil(layout.kv_heads / deployment.count) / layout.kv_heads


def per_gpu(
    layout: ModelConfig, parameters: ParameterEstimate, weights_dtype: str, deployment: Deployment, tokens: int,
    batch: int = 1, cache_dtype: str = "bf16",
) -> PerGPU:
    """Memory per GPU and the work of one decode step of `batch` sequences at `tokens` tokens of context."""
    weights = WeightBytes(parameters, weights_dtype)
    bytes_per_parameter = weights.total_bytes / parameters.total
    n = deployment.count
    if deployment.parallel == "tp":
        held = weights.total_bytes / n
        read = weights.read_bytes(batch) / n
        cache = kv_cache_size(layout, tokens, batch, cache_dtype).kv_cache_bytes * cache_share(layout, deployment)
        sequences = batch  # every rank works on every sequence, on its share of the heads
    else:
        attention = parameters.attention * bytes_per_parameter  # replicated on every rank
        held = attention + (weights.total_bytes - attention) / n
        read = attention + (weights.read_bytes(batch) - attention) / n
        sequences = math.ceil(batch / n)  # each rank decodes its own sequences
        cache = kv_cache_size(layout, tokens, sequences, cache_dtype).kv_cache_bytes
    per_token = decode_flops_per_token(layout, parameters, tokens)
    if deployment.parallel == "tp":
        flops = batch * per_token / n
    else:  # its own sequences' attention (projections and over the context), an even share of the rest
        attention = 2 * parameters.attention + (per_token - 2 * parameters.active_per_token)
        flops = sequences * attention + batch * (per_token - attention) / n
    return PerGPU(held, cache, held + cache <= deployment.gpu.memory_bytes, read, flops)


def decode_flops_per_token(layout: ModelConfig, parameters: ParameterEstimate, tokens: int) -> float:
    """FLOPs to decode one token: 2 x active parameters, plus attention over the cached tokens of every layer
    (scores and weighted values: 2 FLOPs a multiply-add; MLA absorbed attends over its latent)."""
    if layout.attention == "mla":
        per_position = layout.query_heads * (2 * layout.latent_rank + layout.rope_head_dim)  # q·[c, k_R], p·c
    else:
        per_position = layout.query_heads * 2 * layout.head_dim  # q·k and p·v
    cached = kv_cache_size(layout, tokens, 1).cached_tokens_per_layer
    return 2 * parameters.active_per_token + 2 * per_position * sum(cached)


@dataclass(frozen=True)
class DecodeBound:
    """Both ceilings of a decode step of the whole batch; the lower one bounds the speed."""

    memory_tokens_per_s: float  # batch / (bytes one GPU reads / its bandwidth)
    compute_tokens_per_s: float  # batch / (FLOPs one GPU does / its peak)
    tokens_per_s: float  # the lower of the two
    bound_by: Literal["memory", "compute"]
    fits: bool = True  # weights and cache fit on every GPU (False: the figures are for a deployment that cannot run)


def decode_bound(
    layout: ModelConfig, parameters: ParameterEstimate, weights_dtype: str, deployment: Deployment, tokens: int,
    batch: int = 1, cache_dtype: str = "bf16",
) -> DecodeBound:
    """tokens/s of the whole batch <= min(memory ceiling, compute ceiling); matrix products run at the weights'
    dtype's peak (fp8 where the GPU has it)."""
    gpu = deployment.gpu
    share = per_gpu(layout, parameters, weights_dtype, deployment, tokens, batch, cache_dtype)
    memory = batch * gpu.bandwidth_bytes_per_s / (share.weight_read + share.kv_cache)
    compute = batch * gpu.peak_flops(weights_dtype) / share.flops
    return DecodeBound(memory, compute, min(memory, compute), "memory" if memory <= compute else "compute",
                       share.fits)


def _largest(fits, start: int = 1, limit: int = 1 << 40) -> int:
    """The largest n in [start, limit] with fits(n), for fits that holds up to some n and fails after; 0 if none."""
    if not fits(start):
        return 0
    low, high = start, start * 2
    while high <= limit and fits(high):
        low, high = high, high * 2
    high = min(high, limit + 1)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def longest_context(layout, parameters, weights_dtype, deployment, batch=1, cache_dtype="bf16") -> int | None:
    """The longest context whose cache fits on every GPU beside its weights; None when memory sets no limit
    (every layer slides and the full windows fit), 0 when not even one token fits."""
    def fits(tokens):
        return per_gpu(layout, parameters, weights_dtype, deployment, tokens, batch, cache_dtype).fits

    windows = layout.layer_windows
    if windows and all(window is not None for window in windows) and fits(max(windows)):
        return None
    return _largest(fits)


def max_batch(layout, parameters, weights_dtype, deployment, tokens, cache_dtype="bf16") -> int:
    """The most sequences of `tokens` tokens whose cache fits on every GPU beside its weights (0: none)."""
    return _largest(lambda batch: per_gpu(layout, parameters, weights_dtype, deployment, tokens, batch,
                                          cache_dtype).fits)


SERVING_KEY = "_serving"  # in a reference config: {"gpu": ..., "weights_dtype": ...} it is usually served on


def serving_defaults(config: dict | None) -> tuple[str, str]:
    """(GPU name, weights dtype) a model opens on: its reference config's `_serving` entry (DeepSeek-V3: H200 with
    fp8 weights, as it is published; Llama-3-70B: H100 SXM), else an H200 with bf16 weights."""
    entry = (config or {}).get(SERVING_KEY, {})
    return entry.get("gpu", "H200"), entry.get("weights_dtype", "bf16")


def default_deployment(layout: ModelConfig, parameters: ParameterEstimate | None, weights_dtype: str,
                       gpu: GPU, tokens: int = 32_768, cache_dtype: str = "bf16") -> Deployment:
    """A deployment that can serve the model: the fewest of `gpu` (1, 2, 4, 8, then whole nodes) that hold the
    weights and one sequence of `tokens` tokens; data-parallel attention for MLA (its latent cannot be split by
    head), tensor parallel otherwise."""
    parallel: Parallel = "dp-attention" if layout.attention == "mla" else "tp"
    for count in (1, 2, 4, 8, 16, 24, 32, 48, 64):
        deployment = Deployment(gpu, count, parallel)
        if parameters is None:
            return deployment
        if per_gpu(layout, parameters, weights_dtype, deployment, tokens, 1, cache_dtype).fits:
            return deployment
    return Deployment(gpu, 64, parallel)


def capacity_table(layouts, parameters: ParameterEstimate, weights_dtype: str, deployment: Deployment, tokens: int,
                   batch: int, cache_dtype: str) -> list[dict[str, object]]:
    """One row per variant on a deployment: memory per GPU, longest context at `batch`, largest batch at `tokens`,
    and the decode bound of the batch with what bounds it."""
    rows = []
    for layout in layouts:
        share = per_gpu(layout, parameters, weights_dtype, deployment, tokens, batch, cache_dtype)
        bound = decode_bound(layout, parameters, weights_dtype, deployment, tokens, batch, cache_dtype)
        longest = longest_context(layout, parameters, weights_dtype, deployment, batch, cache_dtype)
        rows.append({
            "variant": layout.legend,
            "cache / GPU (GiB)": round(share.kv_cache / 2**30, 2),
            "weights + cache / GPU (GiB)": round(share.total / 2**30, 1),
            "fits": share.fits,
            f"longest context at batch {batch}": "no limit" if longest is None else f"{longest:,}",
            f"largest batch at {tokens:,} tokens": max_batch(layout, parameters, weights_dtype, deployment, tokens,
                                                             cache_dtype),
            "decode tokens/s (batch)": round(bound.tokens_per_s, 1) if bound.fits else None,
            "bound by": bound.bound_by if bound.fits else "does not fit",
        })
    return rows


def batch_grid(max_batch_size: int = 4096) -> list[int]:
    """Batch sizes 1, 2, 4, ... up to `max_batch_size` (for the ceilings against batch)."""
    return [2**i for i in range(max_batch_size.bit_length()) if 2**i <= max_batch_size]


def ceiling_curves(layouts, parameters: ParameterEstimate, weights_dtype: str, deployment: Deployment, tokens: int,
                   batches, cache_dtype: str) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(memory ceiling, compute ceiling) of the whole batch's decode tokens/s at each batch size, by variant legend;
    NaN where weights and cache do not fit on the deployment (for explorer.charts.kv.ceilings_figure)."""
    memory: dict[str, list[float]] = {}
    compute: dict[str, list[float]] = {}
    for layout in layouts:
        memory[layout.legend], compute[layout.legend] = [], []
        for batch in batches:
            fits = per_gpu(layout, parameters, weights_dtype, deployment, tokens, batch, cache_dtype).fits
            bound = decode_bound(layout, parameters, weights_dtype, deployment, tokens, batch, cache_dtype)
            memory[layout.legend].append(bound.memory_tokens_per_s if fits else math.nan)
            compute[layout.legend].append(bound.compute_tokens_per_s if fits else math.nan)
    return memory, compute


def context_ceiling_curves(layouts, parameters: ParameterEstimate, weights_dtype: str, deployment: Deployment,
                           contexts, batch: int, cache_dtype: str) -> tuple[dict[str, list[float]],
                                                                             dict[str, list[float]]]:
    """(memory ceiling, compute ceiling) of the whole batch's decode tokens/s at each context length, by variant
    legend; NaN where weights and cache do not fit on the deployment (for explorer.charts.kv.ceilings_figure)."""
    memory: dict[str, list[float]] = {}
    compute: dict[str, list[float]] = {}
    for layout in layouts:
        memory[layout.legend], compute[layout.legend] = [], []
        for tokens in contexts:
            bound = decode_bound(layout, parameters, weights_dtype, deployment, tokens, batch, cache_dtype)
            memory[layout.legend].append(bound.memory_tokens_per_s if bound.fits else math.nan)
            compute[layout.legend].append(bound.compute_tokens_per_s if bound.fits else math.nan)
    return memory, compute


def gpu_figures(gpu: GPU, weights_dtype: str) -> str:
    """One GPU's figures behind the ceilings, with their sources (a sentence for the page)."""
    fp8 = f"{gpu.fp8_tflops:,.0f} dense fp8" if gpu.fp8_tflops else "no fp8 tensor cores"
    return (f"Each {gpu.name}: {gpu.memory_gib:g} GiB a framework can allocate ({gpu.memory_source}); "
            f"{gpu.bandwidth_gb_per_s:,.0f} GB/s; {gpu.bf16_tflops:,.0f} dense bf16 and {fp8} TFLOP/s, "
            f"{gpu.peak_flops(weights_dtype) / 1e12:,.0f} used for {weights_dtype} weights ({gpu.source}).")
