"""What a scaling run records, and what is read from it: the results' data (run, prefill and decode points),
their JSON files in bench/results, the GPU roofline drawn beside them, and the sentences under the charts.

Measuring lives in `explorer.scaling.prefill`, `explorer.scaling.decode` and `explorer.scaling.run`; nothing
here needs a model, so the page can show committed results without loading one.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from explorer import kv
from explorer.config import ModelConfig, classify
from explorer.dtypes import DTYPE_BITS
from explorer.hardware import GPU
from explorer.roofline import roofline_curve
from explorer.paths import RESULTS_DIR  # committed results (bench/results, or their installed copy)


# The decode variants a run times, in the order of the charts: keys of `explorer.scaling.decode.DECODE_VARIANTS`
# and of the committed results' decode points.
DECODE_NAMES = ("MHA", "GQA", "MQA", "MLA naive", "MLA absorbed")

PREFILL_SERIES = ("attention, materialised", "attention, SDPA", "rest of the layer", "full layer, SDPA")


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

    variant: str  # one of DECODE_NAMES
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
