"""Measured cost of attention on the current device: prefill time and memory against sequence length, and decode
speed against context for MHA, GQA, MQA and MLA (naive and absorbed), always on the fast path (PyTorch SDPA).

Shapes and weights are SmolLM2's own (30 layers, 9 query heads, head_dim 64); results carry the device, dtype,
library versions and date so that runs from different machines can sit side by side.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
import transformers
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from explorer import kv
from explorer.config import ModelConfig, classify
from explorer.dtypes import DTYPE_BITS
from explorer.hardware import GPU
from explorer.roofline import roofline_curve
from explorer.attention import attend, causal_mask, repeat_kv
from explorer.loading import LoadedModel
from explorer.variants.convert import convert
from explorer.variants.mla import rotate
from explorer.variants.spec import VariantSpec

Progress = Callable[[float, str], None]  # (fraction done in [0, 1], what is happening)

RESULTS_DIR = Path(__file__).resolve().parent.parent / "bench" / "results"

# The variants timed while decoding, and the conversion of SmolLM2 that gives each its weights. MQA mean-pools
# K/V heads (GQA paper); MLA is DeepSeek-V2's decoupled form (one shared RoPE key of 32 dims, latent of 256) so
# that the same weights run both the naive and the absorbed path. Plain SVD: speed does not depend on quality.
DECODE_VARIANTS: dict[str, VariantSpec] = {
    "MHA": VariantSpec(variant="mha"),
    "GQA": VariantSpec(variant="original"),
    "MQA": VariantSpec(variant="mqa", merge="mean"),
    "MLA naive": VariantSpec(variant="mla", form="decoupled", latent_rank=256, rope_dims=32, svd="plain",
                             merge="mean", attn_path="naive"),
    "MLA absorbed": VariantSpec(variant="mla", form="decoupled", latent_rank=256, rope_dims=32, svd="plain",
                                merge="mean", attn_path="absorb"),
}

PREFILL_SERIES = ("attention, materialised", "attention, SDPA", "rest of the layer", "full layer, SDPA")


# ---------------------------------------------------------------------------------------------------------
# What a run records
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """Where and with what a benchmark ran: enough to tell two result files apart and to trust neither blindly."""

    device: str  # "cpu" or "cuda"
    device_name: str  # the processor or GPU model, e.g. "NVIDIA H200"
    dtype: str  # "fp32", "bf16", ...: the dtype of weights, activations and caches
    threads: int  # torch CPU threads
    torch: str  # library versions
    transformers: str
    python: str
    date: str  # UTC, ISO 8601
    load_average: float | None  # 1-minute load average at the start (a shared CPU makes times move)


@dataclass(frozen=True)
class PrefillPoint:
    """Time and memory of one forward pass over `tokens` tokens (batch 1), one layer at SmolLM2's shape."""

    tokens: int  # sequence length T
    # median seconds
    attention_materialised_s: float | None  # softmax(QKᵀ)V with the T×T scores in memory (None: over the cap)
    attention_sdpa_s: float  # F.scaled_dot_product_attention, is_causal, enable_gqa (fused kernel)
    rest_of_layer_s: float  # norms, Q/K/V/O projections, RoPE and the MLP: everything but the attention core
    layer_sdpa_s: float  # the whole decoder layer with SDPA
    # bytes
    attention_materialised_bytes: int | None  # CUDA: peak allocated; CPU: scores + probabilities (H·T·T each)
    attention_sdpa_bytes: int  # CUDA: peak allocated; CPU: output + per-row log-sum-exp (fused kernel)


@dataclass(frozen=True)
class DecodePoint:
    """One decode step of the whole model (every layer, MLP and head included) with `context` tokens cached."""

    variant: str  # a key of DECODE_VARIANTS
    context: int  # tokens already in the cache
    step_s: float  # median seconds per step
    tokens_per_s: float  # batch / step_s
    cache_bytes: int  # bytes of the KV cache (or latent) at this context, every layer and sequence


@dataclass
class ScalingResults:
    """A whole benchmark run: prefill points, fitted slopes, decode points, and how they were measured."""

    info: RunInfo
    model: str  # catalogue key of the model whose shapes and weights were used
    shape: dict[str, int]  # layers, query heads, KV heads, head dim, hidden size
    parameters: int  # parameters of the model (for the roofline's weight bytes)
    decode_batch: int  # sequences decoded together
    repeats: int  # timed repeats per point (median reported), after one warm-up
    prefill: list[PrefillPoint] = field(default_factory=list)
    slopes: dict[str, float] = field(default_factory=dict)  # series -> fitted log-log slope of time
    memory_slopes: dict[str, float] = field(default_factory=dict)  # series -> fitted log-log slope of bytes
    fit_range: tuple[int, int] = (0, 0)  # shortest and longest length in the slope fits
    decode: list[DecodePoint] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how memory was counted, which kernels ran, what was skipped

    @property
    def label(self) -> str:
        """A column heading: "CPU (AMD EPYC, 2 threads), fp32" or "NVIDIA H200, bf16"."""
        if self.info.device == "cpu":
            threads = f"{self.info.threads} thread{'s' if self.info.threads != 1 else ''}"
            return f"CPU ({self.info.device_name}, {threads}), {self.info.dtype}"
        return f"{self.info.device_name}, {self.info.dtype}"

    @property
    def memory_method(self) -> str:
        """How the attention memory was counted: measured on CUDA, from tensor shapes on a CPU."""
        return "peak allocated" if self.info.device == "cuda" else "from tensor shapes"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ScalingResults":
        data = dict(data)
        data["info"] = RunInfo(**data["info"])
        data["prefill"] = [PrefillPoint(**point) for point in data["prefill"]]
        data["decode"] = [DecodePoint(**point) for point in data["decode"]]
        data["fit_range"] = tuple(data["fit_range"])
        return cls(**data)

    def decode_series(self) -> tuple[list[int], dict[str, list[float]]]:
        """(contexts, {variant: tokens/s at each context}) for the decode chart."""
        contexts = sorted({point.context for point in self.decode})
        by_variant: dict[str, dict[int, float]] = {}
        for point in self.decode:
            by_variant.setdefault(point.variant, {})[point.context] = point.tokens_per_s
        return contexts, {name: [values.get(c, math.nan) for c in contexts] for name, values in by_variant.items()}

    def prefill_series(self, what: str = "time") -> tuple[list[int], dict[str, list[float]]]:
        """(lengths, {series: seconds or bytes at each length}); NaN where a point was not measured."""
        lengths = [point.tokens for point in self.prefill]
        if what == "time":
            columns = dict(zip(PREFILL_SERIES, ("attention_materialised_s", "attention_sdpa_s", "rest_of_layer_s",
                                                "layer_sdpa_s")))
        elif what == "memory":
            columns = {"attention, materialised": "attention_materialised_bytes",
                       "attention, SDPA": "attention_sdpa_bytes"}
        else:
            raise ValueError(f"Choose 'time' or 'memory', not '{what}'.")
        series = {}
        for name, column in columns.items():
            values = [getattr(point, column) for point in self.prefill]
            series[name] = [math.nan if value is None else float(value) for value in values]
        return lengths, series


def run_info(device: torch.device, dtype: torch.dtype) -> RunInfo:
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = _cpu_name()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return RunInfo(
        device=device.type,
        device_name=device_name,
        dtype=kv.TORCH_DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch.")),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        python=platform.python_version(),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        load_average=round(load, 2) if load is not None else None,
    )


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def first_layers(loaded: LoadedModel, layers: int) -> LoadedModel:
    """The model cut to its first `layers` decoder layers, sharing the original's weights (nothing is copied or
    changed): the same code paths at a fraction of the cost, for tests and quick live runs."""
    total = loaded.config.num_hidden_layers
    if not 1 <= layers <= total:
        raise ValueError(f"{loaded.name} has {total} layers; keep between 1 and {total}.")
    config = copy.deepcopy(loaded.config)
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:layers]
    with torch.device("meta"):
        model = type(loaded.model)(config)  # (no memory: every tensor is a placeholder until assigned)
    kept = {name: tensor for name, tensor in loaded.model.state_dict().items()
            if not name.startswith("model.layers.") or int(name.split(".")[2]) < layers}
    model.load_state_dict(kept, assign=True, strict=True)
    model.model.rotary_emb = loaded.model.model.rotary_emb  # its inverse frequencies are a non-saved buffer
    return dataclasses.replace(loaded, model=model.eval())


# ---------------------------------------------------------------------------------------------------------
# Timing and fitting
# ---------------------------------------------------------------------------------------------------------


def _synchronise(device: torch.device) -> None:
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
    _synchronise(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        _synchronise(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def fit_slope(lengths: Sequence[float], values: Sequence[float]) -> float:
    """The slope of log(value) against log(length), by least squares: 2 for a quadratic cost, 1 for a linear one."""
    if len(lengths) != len(values):
        raise ValueError(f"Give one value per length: {len(lengths)} lengths, {len(values)} values.")
    if any(x <= 0 for x in lengths) or any(y <= 0 for y in values if y is not None and not math.isnan(y)):
        raise ValueError("A log-log slope needs positive lengths and values.")
    points = [(math.log(x), math.log(y)) for x, y in zip(lengths, values) if y is not None and not math.isnan(y)]
    if len({x for x, _ in points}) < 2:
        raise ValueError("Fitting a slope needs at least two different lengths with a value.")
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in points)
    variance = sum((x - mean_x) ** 2 for x, _ in points)
    return covariance / variance


def length_grid(max_tokens: int, min_tokens: int = 128) -> list[int]:
    """Powers of two from `min_tokens` to `max_tokens`: 128, 256, ..., 8192."""
    if min_tokens < 1 or max_tokens < min_tokens:
        raise ValueError("Choose a longest length of at least the shortest, and a shortest of at least 1 token.")
    lengths = [min_tokens]
    while lengths[-1] * 2 <= max_tokens:
        lengths.append(lengths[-1] * 2)
    return lengths


# ---------------------------------------------------------------------------------------------------------
# Prefill: one layer over T tokens
# ---------------------------------------------------------------------------------------------------------


def _layer_parts(layer, rotary, hidden: torch.Tensor, with_attention: bool) -> torch.Tensor:
    """One Llama decoder layer on the fast path; without the attention core when `with_attention` is False
    (the output projection then reads the queries, so every matrix product of the layer still runs)."""
    attn = layer.self_attn
    heads, kv_heads, hd = attn.config.num_attention_heads, attn.config.num_key_value_heads, attn.head_dim
    B, T, _ = hidden.shape  # batch, tokens, d_model
    positions = torch.arange(T, device=hidden.device)[None]  # (1, T)
    cos, sin = rotary(hidden, positions)  # (1, T, hd) each
    x = layer.input_layernorm(hidden)  # (B, T, d)
    q = attn.q_proj(x).view(B, T, heads, hd).transpose(1, 2)  # (B, H, T, hd)
    k = attn.k_proj(x).view(B, T, kv_heads, hd).transpose(1, 2)  # (B, kv, T, hd)
    v = attn.v_proj(x).view(B, T, kv_heads, hd).transpose(1, 2)  # (B, kv, T, hd)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)  # (B, H, T, hd), (B, kv, T, hd)
    if with_attention:
        q = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # (B, H, T, hd)
    hidden = hidden + attn.o_proj(q.transpose(1, 2).reshape(B, T, heads * hd))  # (B, T, d)
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))  # (B, T, d)


def _peak_bytes(run: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes allocated by `run()` beyond what was allocated before (CUDA only; None on a CPU)."""
    if device.type != "cuda":
        return None
    _synchronise(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    with torch.inference_mode():
        run()
    _synchronise(device)
    return torch.cuda.max_memory_allocated(device) - before


@torch.inference_mode()
def measure_prefill(
    loaded: LoadedModel, tokens: int, repeats: int = 3, max_materialised_bytes: int = 3 * 2**30
) -> PrefillPoint:
    """Time one layer of the model over `tokens` tokens: the attention core materialised (the eager kernel used
    for pictures) and fused (SDPA), the rest of the layer, and the whole layer. Inputs are random at the model's
    shapes (the time does not depend on the values); the layer's weights are the model's first layer."""
    model, device, dtype = loaded.model, loaded.device, loaded.dtype
    config = model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    hd = getattr(config, "head_dim", None) or config.hidden_size // heads
    value_bytes = torch.finfo(dtype).bits // 8
    generator = torch.Generator(device="cpu").manual_seed(tokens)
    q = torch.randn(1, heads, tokens, hd, generator=generator).to(device, dtype)  # (1, H, T, hd)
    k = torch.randn(1, kv_heads, tokens, hd, generator=generator).to(device, dtype)  # (1, kv, T, hd)
    v = torch.randn(1, kv_heads, tokens, hd, generator=generator).to(device, dtype)  # (1, kv, T, hd)
    hidden = torch.randn(1, tokens, config.hidden_size, generator=generator).to(device, dtype)  # (1, T, d)
    scale = hd**-0.5

    def materialised():
        mask = causal_mask(tokens, tokens, dtype, device)  # (1, 1, T, T)
        return attend(q, repeat_kv(k, heads // kv_heads), repeat_kv(v, heads // kv_heads), mask, scale)

    def fused():
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # (1, H, T, hd)

    layer, rotary = model.model.layers[0], model.model.rotary_emb
    scores_bytes = heads * tokens * tokens * value_bytes  # one (1, H, T, T) tensor
    fits = 2 * scores_bytes + tokens * tokens * value_bytes <= max_materialised_bytes  # scores, probs, mask
    return PrefillPoint(
        tokens=tokens,
        attention_materialised_s=median_seconds(materialised, device, repeats) if fits else None,
        attention_sdpa_s=median_seconds(fused, device, repeats),
        rest_of_layer_s=median_seconds(lambda: _layer_parts(layer, rotary, hidden, False), device, repeats),
        layer_sdpa_s=median_seconds(lambda: _layer_parts(layer, rotary, hidden, True), device, repeats),
        attention_materialised_bytes=(_peak_bytes(materialised, device) or 2 * scores_bytes) if fits else None,
        # the fused kernel keeps the output (1, H, T, hd) and one log-sum-exp per row (1, H, T) in float32
        attention_sdpa_bytes=_peak_bytes(fused, device) or heads * tokens * (hd * value_bytes + 4),
    )


def sdpa_kernel(device: torch.device, dtype: torch.dtype) -> str:
    """The name of the kernel PyTorch picks for causal GQA prefill at SmolLM2's shape (e.g. flash attention)."""
    from torch.profiler import ProfilerActivity, profile

    q = torch.randn(1, 9, 64, 64, device=device, dtype=dtype)  # (1, H, T, hd)
    k = torch.randn(1, 3, 64, 64, device=device, dtype=dtype)  # (1, kv, T, hd)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler, torch.inference_mode():
        F.scaled_dot_product_attention(q, k, k, is_causal=True, enable_gqa=True)
    names = [event.key for event in profiler.key_averages() if event.key.startswith("aten::_scaled_dot_product")]
    return names[0].removeprefix("aten::") if names else "unknown"


# ---------------------------------------------------------------------------------------------------------
# Decode: one new token with `context` tokens cached, per variant
# ---------------------------------------------------------------------------------------------------------


@dataclass
class DecodeCache:
    """One layer's cache, allocated for context + 1 tokens and filled with random values up to `context`
    (decode time does not depend on the cached values). MHA/GQA/MQA: keys and values (B, kv, S, hd);
    MLA: one buffer (B, 1, S, r + dr) holding the latent and the shared RoPE key side by side, so that the
    absorbed path reads it as keys and its first r columns as values without a copy."""

    keys: torch.Tensor  # (B, kv, S, hd), or (B, 1, S, r + dr) for MLA
    values: torch.Tensor | None  # (B, kv, S, hd); None for MLA

    def nbytes(self, context: int) -> int:
        tensors = [self.keys] + ([self.values] if self.values is not None else [])
        return sum(t[:, :, :context].numel() * t.element_size() for t in tensors)


def _kv_step(attn, x, cos, sin, cache: DecodeCache, position: int) -> torch.Tensor:
    """MHA/GQA/MQA: project the new token, write its K/V at `position`, attend over the cache with SDPA."""
    B = x.shape[0]  # batch
    hd = attn.head_dim  # dims per head
    heads, kv_heads = attn.q_proj.weight.shape[0] // hd, cache.keys.shape[1]  # query heads, cached KV heads
    q = attn.q_proj(x).view(B, 1, heads, hd).transpose(1, 2)  # (B, H, 1, hd)
    k = attn.k_proj(x).view(B, 1, kv_heads, hd).transpose(1, 2)  # (B, kv, 1, hd)
    v = attn.v_proj(x).view(B, 1, kv_heads, hd).transpose(1, 2)  # (B, kv, 1, hd)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)  # (B, H, 1, hd), (B, kv, 1, hd)
    cache.keys[:, :, position] = k[:, :, 0]
    cache.values[:, :, position] = v[:, :, 0]
    keys, values = cache.keys[:, :, : position + 1], cache.values[:, :, : position + 1]  # (B, kv, S, hd)
    out = F.scaled_dot_product_attention(q, keys, values, enable_gqa=True)  # (B, H, 1, hd)
    return attn.o_proj(out.transpose(1, 2).reshape(B, 1, heads * hd))  # (B, 1, d)


def _mla_step(attn, x, cos, sin, cache: DecodeCache, position: int, absorbed: bool, w_uk=None, w_uv=None):
    """MLA (DeepSeek-V2 decoupled form). Naive: expand every cached latent into per-group keys and values, then
    attend. Absorbed: fold W_UK into the query and W_UV into the output and attend over the latent itself."""
    # b batch, h head, s query pos, d nope dim, e value dim, c latent
    mla = attn.mla
    B = x.shape[0]  # batch
    r, dr, dn, hd = mla.latent_rank, mla.rope_dims, mla.nope_dims, mla.head_dim
    q = attn.q_proj(x).view(B, 1, mla.heads, hd).transpose(1, 2)  # (B, H, 1, hd)
    q_nope, q_pe = q.split([dn, dr], dim=-1)  # (B, H, 1, dn), (B, H, 1, dr)
    cos_pe, sin_pe = cos[..., attn.rope_columns], sin[..., attn.rope_columns]  # (B, 1, dr)
    q_pe = rotate(q_pe, cos_pe, sin_pe)  # (B, H, 1, dr)
    latent_and_pe = attn.wkv_a(x)[:, None]  # (B, 1, 1, r + dr)
    k_pe = rotate(latent_and_pe[..., r:], cos_pe, sin_pe)  # (B, 1, 1, dr)
    cache.keys[:, :, position, :r] = latent_and_pe[:, :, 0, :r]
    cache.keys[:, :, position, r:] = k_pe[:, :, 0]
    cached = cache.keys[:, :, : position + 1]  # (B, 1, S, r + dr)
    S = position + 1  # key positions
    if absorbed:
        q_latent = torch.einsum("bhsd,hdc->bhsc", q_nope, w_uk)  # (B, H, 1, r)
        query = torch.cat([q_latent, q_pe], dim=-1).transpose(1, 2)  # (B, 1, H, r + dr)
        # One key head (the latent) serves every query head, and a decoding token sees every cached key: the H
        # heads become H query rows of one head, so nothing is expanded per head (DeepSeek attends this way).
        # The values are the latent: passing the whole cached row (latent | RoPE key) keeps key and value widths
        # equal, so SDPA may use its fused kernel; the last dr output columns are then dropped.
        out_latent = F.scaled_dot_product_attention(query, cached, cached, scale=attn.scaling)[..., :r]  # (B, 1, H, r)
        out = torch.einsum("bshc,hec->bhse", out_latent, w_uv)  # (B, H, 1, hd)
    else:
        kv = attn.wkv_b(cached[:, 0, :, :r]).view(B, S, mla.kv_heads, dn + hd)  # (B, S, kv, dn + hd)
        k_nope, v = kv.transpose(1, 2).split([dn, hd], dim=-1)  # (B, kv, S, dn), (B, kv, S, hd)
        k = torch.cat([k_nope, cached[..., r:].expand(B, mla.kv_heads, S, dr)], dim=-1)  # (B, kv, S, hd)
        query = torch.cat([q_nope, q_pe], dim=-1)  # (B, H, 1, hd)
        out = F.scaled_dot_product_attention(query, k, v, enable_gqa=True, scale=attn.scaling)  # (B, H, 1, hd)
    return attn.o_proj(out.transpose(1, 2).reshape(B, 1, mla.heads * hd))  # (B, 1, d)


def _decode_caches(model, context: int, batch: int, generator: torch.Generator) -> list[DecodeCache]:
    """One cache per layer for `context` cached tokens plus the one being decoded, made on the model's device."""
    caches = []
    for layer in model.model.layers:
        attn = layer.self_attn
        like = dict(device=attn.q_proj.weight.device, dtype=attn.q_proj.weight.dtype, generator=generator)
        if hasattr(attn, "mla"):
            width = attn.mla.latent_rank + attn.mla.rope_dims
            caches.append(DecodeCache(torch.randn(batch, 1, context + 1, width, **like), None))  # (B, 1, S, r+dr)
        else:
            kv_heads = attn.k_proj.weight.shape[0] // attn.head_dim
            shape = (batch, kv_heads, context + 1, attn.head_dim)  # (B, kv, S, hd)
            caches.append(DecodeCache(torch.randn(shape, **like), torch.randn(shape, **like)))
    return caches


def decode_step(model, variant: str, context: int, batch: int, generator: torch.Generator):
    """A decode step of the whole (converted) model with `context` tokens cached, as a function to time, and
    the bytes its cache holds. The step embeds one token per sequence, runs every layer (norm, attention on the
    fast path, MLP) and the LM head; it writes the same position each call, so the context stays `context`."""
    if variant not in DECODE_VARIANTS:
        raise ValueError(f"Unknown variant '{variant}': choose one of {', '.join(DECODE_VARIANTS)}.")
    absorbed = DECODE_VARIANTS[variant].attn_path == "absorb"
    layers = model.model.layers
    up_weights = [  # W_UK (H, dn, r), W_UV (H, hd, r) per layer, made contiguous once, outside the timed step
        tuple(w.contiguous() for w in layer.self_attn.up_weights_per_head()) if absorbed else (None, None)
        for layer in layers
    ]
    device = model.lm_head.weight.device
    caches = _decode_caches(model, context, batch, generator)
    token_ids = torch.zeros(batch, 1, dtype=torch.long, device=device)  # (B, 1)
    position_ids = torch.full((batch, 1), context, device=device)  # (B, 1)

    def step():
        h = model.model.embed_tokens(token_ids)  # (B, 1, d)
        cos, sin = model.model.rotary_emb(h, position_ids)  # (B, 1, hd) each
        for layer, cache, (w_uk, w_uv) in zip(layers, caches, up_weights):
            x = layer.input_layernorm(h)  # (B, 1, d)
            if hasattr(layer.self_attn, "mla"):
                h = h + _mla_step(layer.self_attn, x, cos, sin, cache, context, absorbed, w_uk, w_uv)
            else:
                h = h + _kv_step(layer.self_attn, x, cos, sin, cache, context)
            h = h + layer.mlp(layer.post_attention_layernorm(h))  # (B, 1, d)
        return model.lm_head(model.model.norm(h))  # (B, 1, vocab)

    return step, sum(cache.nbytes(context) for cache in caches)


@torch.inference_mode()
def measure_decode(
    models: dict[str, torch.nn.Module], contexts: Sequence[int], batch: int = 1, repeats: int = 3,
    progress: Progress | None = None,
) -> list[DecodePoint]:
    """Median seconds per decode step of each variant's model (by DECODE_VARIANTS name) at each context.

    The variants take turns, one step each per round, after one warm-up step each: on a shared machine a burst
    of load then slows every variant alike instead of whichever happened to be running."""
    points = []
    for i, context in enumerate(contexts):
        device = next(iter(models.values())).lm_head.weight.device
        generator = torch.Generator(device=device).manual_seed(context)
        steps = {name: decode_step(model, name, context, batch, generator) for name, model in models.items()}
        times: dict[str, list[float]] = {name: [] for name in models}
        for round_ in range(repeats + 1):  # round 0 warms up
            for name, (step, _) in steps.items():
                _synchronise(device)
                started = time.perf_counter()
                step()
                _synchronise(device)
                if round_ > 0:
                    times[name].append(time.perf_counter() - started)
        for name, (_, cache_bytes) in steps.items():
            seconds = statistics.median(times[name])
            points.append(DecodePoint(name, context, seconds, batch / seconds, cache_bytes))
        del steps
        if progress:
            speeds = ", ".join(f"{p.variant} {p.tokens_per_s:,.1f}" for p in points[-len(models):])
            progress((i + 1) / len(contexts), f"decode at {context:,} tokens cached (tokens/s): {speeds}")
    return points


# ---------------------------------------------------------------------------------------------------------
# A whole run
# ---------------------------------------------------------------------------------------------------------


def run_scaling(
    loaded: LoadedModel,
    lengths: Sequence[int],
    contexts: Sequence[int],
    decode_batch: int = 1,
    repeats: int = 3,
    max_materialised_bytes: int = 3 * 2**30,
    progress: Progress | None = None,
) -> ScalingResults:
    """Prefill at each length, then decode for every variant at each context; slopes fitted on the upper half
    of the lengths (at short lengths fixed per-call costs hide the growth)."""
    progress = progress or (lambda fraction, message: None)
    config = loaded.config
    info = run_info(loaded.device, loaded.dtype)
    shape = dict(layers=config.num_hidden_layers, heads=config.num_attention_heads,
                 kv_heads=config.num_key_value_heads, head_dim=loaded.model.model.layers[0].self_attn.head_dim,
                 hidden=config.hidden_size)
    results = ScalingResults(
        info=info, model=loaded.entry.key, shape=shape,
        parameters=sum(p.numel() for p in loaded.model.parameters()), decode_batch=decode_batch, repeats=repeats,
    )
    stages = 2 * len(lengths) + 1  # progress: decoding takes about as long as prefill
    for i, tokens in enumerate(lengths):
        progress(i / stages, f"prefill: {tokens:,} tokens")
        results.prefill.append(measure_prefill(loaded, tokens, repeats, max_materialised_bytes))

    fitted = list(lengths[max(0, len(lengths) // 2 - 1):])  # the upper half, at least two points
    results.fit_range = (fitted[0], fitted[-1])
    for what, slopes in (("time", results.slopes), ("memory", results.memory_slopes)):
        all_lengths, series = results.prefill_series(what)
        for name, values in series.items():
            chosen = [value for length, value in zip(all_lengths, values) if length >= fitted[0]]
            if sum(not math.isnan(value) for value in chosen) >= 2:
                slopes[name] = round(fit_slope([t for t in all_lengths if t >= fitted[0]], chosen), 3)

    models = {}
    for variant, spec in DECODE_VARIANTS.items():
        progress(len(lengths) / stages, f"decode: converting SmolLM2 to {variant}")
        same = [name for name in models if DECODE_VARIANTS[name].variant == spec.variant]
        models[variant] = models[same[0]] if same else convert(loaded, spec).loaded.model  # MLA paths share one
    results.decode = measure_decode(
        models, contexts, decode_batch, repeats,
        lambda fraction, message: progress((len(lengths) + 1 + fraction * len(lengths)) / stages, message),
    )
    progress(1.0, "done")
    memory_note = (
        "Memory: peak bytes allocated during the call (torch.cuda.max_memory_allocated)." if info.device == "cuda"
        else "Memory on a CPU: bytes of the tensors each path creates, from their shapes: the (1, H, T, T) scores and "
             "probabilities for the materialised path; the output and one log-sum-exp per row for SDPA's fused kernel."
    )
    results.notes = [
        memory_note,
        f"SDPA kernel for causal GQA prefill: {sdpa_kernel(loaded.device, loaded.dtype)}.",
        "Materialised attention is skipped where its T×T tensors would exceed "
        f"{max_materialised_bytes / 2**30:g} GiB.",
        "Decode: the whole model, one step per sequence, caches filled with random values up to the context "
        "(speed does not depend on the values); weights from SmolLM2 converted to each variant.",
        "Absorbed MLA: the heads are query rows of one shared key head (latent | RoPE key, 288 dims), the cached row "
        "doubles as the value so SDPA can use its fused kernel, and the RoPE columns of the output are dropped.",
        "Decode variants take turns step by step (interleaved), so bursts of load on a shared machine hit all alike.",
    ]
    return results


def absorbed_over_naive(results: ScalingResults) -> dict[int, float]:
    """Absorbed MLA tokens/s divided by naive MLA tokens/s, at each context."""
    contexts, series = results.decode_series()
    naive, absorbed = series.get("MLA naive"), series.get("MLA absorbed")
    if naive is None or absorbed is None:
        return {}
    return {c: a / n for c, a, n in zip(contexts, absorbed, naive)}


def speedups_over_mha(results: ScalingResults) -> dict[str, float]:
    """tokens/s of each variant divided by MHA's, at the longest context measured."""
    contexts, series = results.decode_series()
    if "MHA" not in series:
        return {}
    return {name: values[-1] / series["MHA"][-1] for name, values in series.items()}


# ---------------------------------------------------------------------------------------------------------
# Results on disk and the roofline beside them
# ---------------------------------------------------------------------------------------------------------


def save_results(results: ScalingResults, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results.to_dict(), indent=2) + "\n")
    return path


def load_results(path: Path | str) -> ScalingResults:
    return ScalingResults.from_dict(json.loads(Path(path).read_text()))


def committed_results(folder: Path | str = RESULTS_DIR) -> dict[str, ScalingResults]:
    """Every `scaling-<device>.json` in the results folder, by file stem (e.g. "scaling-cpu")."""
    return {path.stem: load_results(path) for path in sorted(Path(folder).glob("scaling-*.json"))}


def default_path(device: str) -> Path:
    return RESULTS_DIR / f"scaling-{device}.json"


def roofline_curves(results: ScalingResults, gpu: GPU) -> dict[str, list[float]]:
    """The decode bound (explorer.roofline.roofline_curve) on `gpu` at the measured contexts, per measured variant,
    for the same model, dtype and batch: tokens/s ≤ bandwidth / (weights + cache read per step)."""
    contexts, _ = results.decode_series()
    shape = results.shape
    base = ModelConfig(
        name=results.model, model_type="llama", attention=classify(shape["kv_heads"], shape["heads"]),
        num_layers=shape["layers"], query_heads=shape["heads"], kv_heads=shape["kv_heads"],
        head_dim=shape["head_dim"], layer_windows=(None,) * shape["layers"],
    )
    layouts = {
        "MHA": kv.convert_layout(base, "mha"),
        "GQA": base,
        "MQA": kv.convert_layout(base, "mqa"),
        "MLA": kv.convert_layout(base, "mla", latent_rank=256, rope_head_dim=32),
    }
    dtype = results.info.dtype if results.info.dtype in DTYPE_BITS else "bf16"
    weight_bytes = results.parameters * DTYPE_BITS[dtype] / 8
    return {name: roofline_curve(layout, gpu, contexts, weight_bytes, results.decode_batch, dtype)
            for name, layout in layouts.items()}


def summary(results: ScalingResults) -> str:
    """Plain words for the figures under a device's charts: slopes, and decode speed-ups at the longest context."""
    low, high = results.fit_range
    slopes = ", ".join(f"{name} {slope:.2f}" for name, slope in results.slopes.items())
    contexts, _ = results.decode_series()
    ratios = ", ".join(f"{name} {ratio:.2f}×" for name, ratio in speedups_over_mha(results).items() if name != "MHA")
    absorbed = absorbed_over_naive(results)
    text = f"Time slopes over {low:,}–{high:,} tokens: {slopes}."
    if contexts:
        text += f" Decode at {contexts[-1]:,} cached tokens, tokens/s relative to MHA: {ratios}."
    if absorbed:
        text += f" Absorbed MLA runs at {absorbed[contexts[-1]]:.2f}× naive MLA's speed there."
    return text
