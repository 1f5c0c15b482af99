"""Measured cost of attention on the current device: prefill time and memory against sequence length, and decode
speed against context for MHA, GQA, MQA and MLA (naive and absorbed), always on the fast path (PyTorch SDPA).

Shapes and weights are SmolLM2's own (30 layers, 9 query heads, head_dim 64); results carry the device, dtype,
library versions and date so that runs from different machines can sit side by side.

Measuring: `prefill` (one layer over T tokens), `decode` (one step of the whole model through the variant lab's
own attention modules) and `run` (a whole run). Results: `results` (the data, its JSON files, the roofline beside
it and the sentences under the charts), which needs no model.
"""

from explorer.scaling.decode import DECODE_VARIANTS, TimingCache, decode_models, decode_step, measure_decode
from explorer.scaling.prefill import measure_prefill, sdpa_kernel
from explorer.scaling.results import (
    DECODE_NAMES,
    PREFILL_SERIES,
    RESULTS_DIR,
    DecodePoint,
    PrefillPoint,
    RunInfo,
    ScalingResults,
    absorbed_over_naive,
    committed_results,
    default_path,
    fit_slope,
    load_results,
    roofline_curves,
    save_results,
    speedups_over_mha,
    summary,
)
from explorer.scaling.run import first_layers, length_grid, run_info, run_scaling
from explorer.timing import median_seconds

__all__ = [
    "DECODE_NAMES", "DECODE_VARIANTS", "PREFILL_SERIES", "RESULTS_DIR", "DecodePoint", "PrefillPoint", "RunInfo",
    "ScalingResults", "TimingCache", "absorbed_over_naive", "committed_results", "decode_models", "decode_step",
    "default_path", "first_layers", "fit_slope", "length_grid", "load_results", "measure_decode", "measure_prefill",
    "median_seconds", "roofline_curves", "run_info", "run_scaling", "save_results", "sdpa_kernel",
    "speedups_over_mha", "summary",
]
