"""The GPU run, prepared as one command: every GPU measurement of the project in at most 8 minutes on one H200.

Run: `.venv/bin/python -m bench.gpu` (on a machine with a CUDA GPU). Four sections, each with its own time budget
and each writing its JSON to `bench/results/` the moment it finishes, so a run cut short keeps what it did:

- prefill: one SmolLM2 layer from 128 to 32k tokens; attention materialised (the eager kernel), SDPA as PyTorch
  chooses, and SDPA forced to each backend this torch offers (math, memory-efficient, FlashAttention, cuDNN)
  -> `prefill-cuda.json`, and `scaling-cuda.json` for the Scaling page (with the batch-16 decode below);
- decode: tokens/s of the whole model per variant (original GQA, MHA, MQA, MLA naive and absorbed) at 1k, 8k and
  32k cached tokens, batch 1 and 16, beside the memory roofline of that GPU -> `decode-cuda.json`;
- uptrain: MQA (mean and aligned) and the DeepSeek form at half the cache (latent 160 + RoPE key 32, aligned,
  decoupled), each beside the control, at 2-8M training tokens, scored on 8,192 held-out tokens
  -> `uptrain-mqa-cuda.json`, `uptrain-mqa-aligned-cuda.json`, `uptrain-mla-cuda.json`;
- app: the attention page and the variant lab rendered headless on CUDA (bf16), their numbers compared with the
  same pages on the CPU (fp32) -> `app-cuda.json`.

The whole run is planned for 450 s, model loading included: prefill 45 s, decode 75 s, the app 60 s, and uptraining
whatever those leave (about 4-5 minutes). A section that runs out of its budget stops between points, writes what
it measured and says so ("complete": false and a note); one that fails is written down with its error and the
next one runs. `--sections` picks sections; `--output-dir` writes elsewhere. `--device cpu --quick` runs the same
code at tiny sizes (two layers, short contexts, a hundred training tokens): the test suite does, so the command
cannot rot while no GPU is at hand; its files are tagged `cpu-quick` and never go to bench/results.

Budget of the uptraining, estimated before any GPU time was spent: a training step of SmolLM2 (135M parameters)
costs about 6 x 135M = 0.8 GFLOP per token; an H200 offers ~990 TFLOP/s in dense bf16, of which a model this
small (576 wide) uses perhaps 5-10% at 32 x 256 tokens per step: 60k-120k tokens/s, so 2M tokens take 15-35 s a
run and the four runs (three variants and one shared control) fit in the section's 4-5 minutes at 2-4M tokens.
The run measures the real speed first (a forward pass, three per step, with a margin) and picks 8M, 4M or 2M
tokens, the largest that fits; below 2M it says so.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from explorer import hardware, scaling, uptrain, uptrain_report
from explorer.attention import repeat_kv
from explorer.loading import LoadedModel, load_model
from explorer.variants import VariantSpec

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SECTIONS = ("prefill", "decode", "uptrain", "app")
ROOFLINE_GPU = "H200"  # the GPU whose roofline is drawn when the device is not one of explorer.kv's GPUs

# The uptraining runs: the same conversions as the committed CPU runs (bench/results/uptrain-*-cpu.json).
# In order of what matters most if time runs short: MQA, then the DeepSeek form, then aligned MQA.
UPTRAIN_RUNS: dict[str, VariantSpec] = {
    "mqa": VariantSpec("mqa", merge="mean"),
    "mla": VariantSpec("mla", merge="aligned", form="decoupled", latent_rank=160, rope_dims=32, svd="data",
                       attn_path="absorb"),  # the DeepSeek form at half the cache: 160 + 32 of 384 values
    "mqa-aligned": VariantSpec("mqa", merge="aligned"),
}

# The pages rendered on the device and on the CPU, and the tolerance their numbers must agree within.
APP_PAGES = {
    # the last layer of SmolLM2 (29): bf16 rounding has gone through every layer by then
    "attention": ("views/attention.py", {"text": "The giant ate the apple because it was hungry", "layer": "29"}),
    "variant lab": ("views/variant_lab.py", {"variant": "mha", "layer": "29"}),
}
FIGURE_TOLERANCE = 0.05  # max |difference| of a chart's values, as a share of its largest value (bf16: ~3 digits)
METRIC_TOLERANCE = 0.05  # relative difference of a metric (perplexity, KL, agreement), plus 0.01 absolute
TIMED_METRICS = ("Conversion",)  # metrics that are durations: they differ by design
EXACT_METRICS = ("KV values / token / layer",)  # counts from the configuration: equal on every device


@dataclass(frozen=True)
class Plan:
    """Sizes and time budgets of one run: the GPU's, or the dry run's tiny ones (`quick`)."""

    total_s: float  # seconds for the whole run, model loading included; uptraining takes what the others leave
    budgets: dict[str, float]  # seconds per section other than uptraining
    lengths: list[int]  # prefill lengths
    prefill_repeats: int
    max_materialised_bytes: int  # materialised attention is skipped above this
    contexts: list[int]  # decode contexts
    batches: list[int]  # decode batch sizes
    decode_repeats: int
    layers: int | None  # keep only the first N layers (None: all)
    uptrain_token_choices: list[int]  # largest first; the first that fits the budget is used
    uptrain_batch: int  # sequences per optimiser step
    sequence_tokens: int  # tokens per training sequence
    calibration_tokens: int  # calibration prose for the aligned merge and the data-aware latent
    eval_tokens: int  # held-out tokens scored after uptraining

    @classmethod
    def for_run(cls, quick: bool, device: torch.device) -> Plan:
        if quick:
            return cls(total_s=1500, budgets={"prefill": 60, "decode": 120, "app": 300}, lengths=[32, 64],
                       prefill_repeats=1, max_materialised_bytes=2**30, contexts=[32, 64], batches=[1, 2],
                       decode_repeats=1, layers=2, uptrain_token_choices=[128], uptrain_batch=1, sequence_tokens=64,
                       calibration_tokens=256, eval_tokens=256)
        big = device.type == "cuda"
        return cls(total_s=450, budgets={"prefill": 45, "decode": 75, "app": 60},  # 30 s under the 8 minutes
                   lengths=scaling.length_grid(32768 if big else 4096), prefill_repeats=3,
                   max_materialised_bytes=(24 if big else 3) * 2**30, contexts=[1024, 8192, 32768], batches=[1, 16],
                   decode_repeats=5 if big else 2, layers=None, uptrain_token_choices=[8 * 2**20, 4 * 2**20, 2 * 2**20],
                   uptrain_batch=32 if big else 1, sequence_tokens=256, calibration_tokens=2048, eval_tokens=8192)


class Budget:
    """A section's clock: how long it has run, and whether the next piece of work still fits."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def allows(self, estimate: float = 0.0) -> bool:
        return self.elapsed() + estimate <= self.seconds


class OutOfTime(Exception):
    """Raised inside a long step (an uptraining run) when its section's budget is spent."""


@dataclass
class Section:
    """What one section writes: its figures, whether it finished, and what it left out and why."""

    name: str
    budget: Budget
    data: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    complete: bool = True

    def out_of_time(self, what: str) -> None:
        self.complete = False
        self.notes.append(f"Out of the {self.budget.seconds:g} s budget after {self.budget.elapsed():.0f} s: {what}.")


class Run:
    """One invocation: the device, the model, the plan, and where the files go."""

    def __init__(self, device: str, quick: bool, output_dir: Path, budget_scale: float = 1.0):
        self.started = time.perf_counter()
        self.quick = quick
        self.loaded: LoadedModel = load_model("smollm2", device=device)
        if quick:
            self.loaded = scaling.first_layers(self.loaded, 2)
        self.device, self.dtype = self.loaded.device, self.loaded.dtype
        plan = Plan.for_run(quick, self.device)
        self.plan = dataclasses.replace(plan, total_s=plan.total_s * budget_scale, budgets={
            name: seconds * budget_scale for name, seconds in plan.budgets.items()})
        self.sections = list(SECTIONS)  # the sections this run will do (main sets them)
        self.tag = self.device.type + ("-quick" if quick else "")
        self.output_dir = output_dir
        self.info = scaling.run_info(self.device, self.dtype)
        self.scaling = scaling.ScalingResults(  # the Scaling page's file, filled by prefill and decode
            info=self.info, model=self.loaded.entry.key, shape=_shape(self.loaded),
            parameters=sum(p.numel() for p in self.loaded.model.parameters()),
            decode_batch=max(self.plan.batches), repeats=self.plan.prefill_repeats,
        )

    def uptrain_budget(self) -> float:
        """Seconds left for uptraining: the run's total, less what has run and the later sections' budgets."""
        later = sum(self.plan.budgets[name] for name in self.sections[self.sections.index("uptrain") + 1:])
        return max(0.0, self.plan.total_s - (time.perf_counter() - self.started) - later)

    def path(self, stem: str) -> Path:
        return self.output_dir / f"{stem}-{self.tag}.json"

    def write(self, section: Section, stem: str | None = None, data: dict | None = None) -> Path:
        payload = {
            "section": section.name,
            "info": dataclasses.asdict(self.info),
            "quick": self.quick,
            "budget_s": section.budget.seconds,
            "seconds": round(section.budget.elapsed(), 2),
            "complete": section.complete,
            "notes": section.notes,
            **(section.data if data is None else data),
        }
        return _write_json(self.path(stem or section.name), payload)


# ---------------------------------------------------------------------------------------------------------
# Prefill
# ---------------------------------------------------------------------------------------------------------


def sdpa_backends(device: torch.device, dtype: torch.dtype) -> dict[str, object]:
    """The SDPA backends this torch runs on `device` for causal prefill at SmolLM2's shape, by name; the others
    by name with the reason they refuse (e.g. no FlashAttention on a CPU build, or cuDNN missing)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    named = {"SDPA math": "MATH", "SDPA memory-efficient": "EFFICIENT_ATTENTION",
             "SDPA FlashAttention": "FLASH_ATTENTION", "SDPA cuDNN": "CUDNN_ATTENTION"}
    q = torch.randn(1, 9, 64, 64, device=device, dtype=dtype)  # (1, H, T, hd)
    offered: dict[str, object] = {}
    for name, member in named.items():
        backend = getattr(SDPBackend, member, None)
        if backend is None:
            offered[name] = "not in this torch"
            continue
        try:
            with sdpa_kernel(backend), torch.inference_mode():
                F.scaled_dot_product_attention(q, q, q, is_causal=True)
            offered[name] = backend
        except (RuntimeError, NotImplementedError, ValueError) as error:
            offered[name] = str(error).splitlines()[0][:160] or type(error).__name__
    return offered


@torch.inference_mode()
def kernel_seconds(backend, heads: int, kv_heads: int, head_dim: int, tokens: int, device: torch.device,
                   dtype: torch.dtype, repeats: int) -> float:
    """Median seconds of causal attention over `tokens` tokens with one SDPA backend forced; K/V heads repeated
    to the query heads first, so every backend runs the same problem (not all take grouped K/V)."""
    from torch.nn.attention import sdpa_kernel

    generator = torch.Generator(device="cpu").manual_seed(tokens)
    q = torch.randn(1, heads, tokens, head_dim, generator=generator).to(device, dtype)  # (1, H, T, hd)
    k = torch.randn(1, kv_heads, tokens, head_dim, generator=generator).to(device, dtype)  # (1, kv, T, hd)
    v = torch.randn(1, kv_heads, tokens, head_dim, generator=generator).to(device, dtype)  # (1, kv, T, hd)
    k, v = repeat_kv(k, heads // kv_heads), repeat_kv(v, heads // kv_heads)  # (1, H, T, hd) each

    def run():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (1, H, T, hd)

    return scaling.median_seconds(run, device, repeats)


def run_prefill(run: Run) -> Section:
    section = Section("prefill", Budget(run.plan.budgets["prefill"]))
    plan, shape = run.plan, run.scaling.shape
    backends = sdpa_backends(run.device, run.dtype)
    usable = {name: backend for name, backend in backends.items() if not isinstance(backend, str)}
    kernels: dict[str, list[float | None]] = {"eager (materialised)": [], "SDPA (PyTorch's choice)": [],
                                              **{name: [] for name in usable}}
    last_seconds = 0.0
    for tokens in plan.lengths:
        if not section.budget.allows(4 * last_seconds):  # the next length costs up to 4x the last (T²)
            section.out_of_time(f"lengths from {tokens:,} tokens on were not measured")
            break
        started = time.perf_counter()
        try:
            point = scaling.measure_prefill(run.loaded, tokens, plan.prefill_repeats, plan.max_materialised_bytes)
        except torch.OutOfMemoryError:  # the materialised T×T tensors: measure the rest without them
            _free(run.device)
            section.notes.append(f"At {tokens:,} tokens materialised attention ran out of memory; skipped there.")
            point = scaling.measure_prefill(run.loaded, tokens, plan.prefill_repeats, 0)
        run.scaling.prefill.append(point)
        kernels["eager (materialised)"].append(point.attention_materialised_s)
        kernels["SDPA (PyTorch's choice)"].append(point.attention_sdpa_s)
        for name, backend in usable.items():
            # the math backend keeps float32 scores and probabilities: (1, H, T, T) twice
            if name == "SDPA math" and 2 * shape["heads"] * tokens**2 * 4 > plan.max_materialised_bytes:
                kernels[name].append(None)
                continue
            try:
                kernels[name].append(kernel_seconds(backend, shape["heads"], shape["kv_heads"], shape["head_dim"],
                                                    tokens, run.device, run.dtype, plan.prefill_repeats))
            except RuntimeError as error:  # out of memory, or a kernel that refuses this length
                _free(run.device)
                kernels[name].append(None)
                section.notes.append(f"{name} failed at {tokens:,} tokens: {str(error).splitlines()[0][:160]}")
        last_seconds = time.perf_counter() - started
    lengths = [point.tokens for point in run.scaling.prefill]
    _fit_scaling_slopes(run.scaling)
    section.data = {
        "lengths": lengths,
        "kernel_seconds": kernels,
        "kernel_slopes": {name: _slope(lengths, values) for name, values in kernels.items()},
        "sdpa_choice": scaling.sdpa_kernel(run.device, run.dtype),
        "backends_refused": {name: reason for name, reason in backends.items() if isinstance(reason, str)},
        "points": [dataclasses.asdict(point) for point in run.scaling.prefill],
    }
    section.notes.append("Kernel times: causal attention of one layer at SmolLM2's shape (9 heads, head dim 64), "
                         "batch 1; forced backends get K/V repeated to 9 heads; median of "
                         f"{plan.prefill_repeats} after a warm-up; eager and math are skipped (null) where their "
                         f"T×T tensors would pass {plan.max_materialised_bytes / 2**30:g} GiB.")
    run.write(section)
    _write_scaling(run)
    return section


def _fit_scaling_slopes(results: scaling.ScalingResults) -> None:
    """Log-log slopes over the upper half of the measured lengths, as `scaling.run_scaling` fits them."""
    lengths = [point.tokens for point in results.prefill]
    if len(lengths) < 2:
        return
    fitted = lengths[max(0, len(lengths) // 2 - 1):]
    results.fit_range = (fitted[0], fitted[-1])
    for what, slopes in (("time", results.slopes), ("memory", results.memory_slopes)):
        _, series = results.prefill_series(what)
        for name, values in series.items():
            slope = _slope(fitted, values[-len(fitted):])
            if slope is not None:
                slopes[name] = slope


def _slope(lengths: list[int], values: list[float | None]) -> float | None:
    pairs = [(t, v) for t, v in zip(lengths, values) if v is not None and not math.isnan(v) and v > 0]
    if len({t for t, _ in pairs}) < 2:
        return None
    return round(scaling.fit_slope([t for t, _ in pairs], [v for _, v in pairs]), 3)


# ---------------------------------------------------------------------------------------------------------
# Decode
# ---------------------------------------------------------------------------------------------------------


def roofline_gpu(device_name: str) -> hardware.GPU:
    """The GPU of explorer.kv whose name appears in the device's (e.g. "H200" in "NVIDIA H200"), else the H200
    this run is prepared for (a CPU dry run draws that GPU's roofline)."""
    for gpu in hardware.GPUS:
        if gpu.name.split()[0] in device_name:
            return gpu
    return hardware.gpu_named(ROOFLINE_GPU)


def run_decode(run: Run) -> Section:
    section = Section("decode", Budget(run.plan.budgets["decode"]))
    plan = run.plan
    models = scaling.decode_models(run.loaded)
    gpu = roofline_gpu(run.info.device_name)
    by_batch: dict[int, scaling.ScalingResults] = {}
    done = True
    for batch in sorted(plan.batches, reverse=True):  # the larger batch first: it is the Scaling page's
        results = by_batch[batch] = dataclasses.replace(run.scaling, decode_batch=batch, prefill=[], decode=[])
        for context in plan.contexts:
            if not section.budget.allows():
                section.out_of_time(f"batch {batch} from {context:,} cached tokens on was not measured")
                done = False
                break
            try:
                results.decode += scaling.measure_decode(models, [context], batch, plan.decode_repeats)
            except torch.OutOfMemoryError:
                section.notes.append(f"Batch {batch} at {context:,} cached tokens did not fit in memory.")
                torch.cuda.empty_cache()
        if not done:
            break
    section.data = {"gpu": dataclasses.asdict(gpu), "batches": {}}
    for batch, results in sorted(by_batch.items()):
        contexts, speeds = results.decode_series()
        if not contexts:
            continue
        bounds = scaling.roofline_curves(results, gpu)
        cache = {(p.variant, p.context): p.cache_bytes for p in results.decode}
        section.data["batches"][str(batch)] = {
            "contexts": contexts,
            "tokens_per_s": speeds,
            "cache_bytes": {name: [cache.get((name, c)) for c in contexts] for name in speeds},
            "roofline_tokens_per_s": bounds,
            "share_of_roofline": {name: [s / b if b and not math.isnan(b) else None
                                         for s, b in zip(values, bounds[_roofline_key(name)])]
                                  for name, values in speeds.items()},
            "over_mha_at_longest": scaling.speedups_over_mha(results),
            "absorbed_over_naive": {str(c): r for c, r in scaling.absorbed_over_naive(results).items()},
        }
    section.notes.append(f"Roofline: {gpu.name} ({gpu.source}); bound = bandwidth / (weights + cache read per "
                         "step), for the same model, dtype and batch (explorer.roofline.roofline_curve).")
    run.write(section)
    main_batch = max(by_batch) if by_batch else None
    if main_batch is not None:
        run.scaling.decode = by_batch[main_batch].decode
        run.scaling.decode_batch = main_batch
        _write_scaling(run)
    del models
    _free(run.device)
    return section


def _roofline_key(variant: str) -> str:
    """The roofline curve of a decode variant: both MLA paths read the same cache."""
    return {"GQA": "GQA", "MHA": "MHA", "MQA": "MQA"}.get(variant, "MLA")


def _write_scaling(run: Run) -> Path | None:
    """`scaling-<tag>.json` as the Scaling page reads it (explorer.scaling.ScalingResults); nothing while it would
    be empty."""
    results = run.scaling
    if not results.prefill and not results.decode:
        return None
    kernel = scaling.sdpa_kernel(run.device, run.dtype)
    memory = ("Memory: peak bytes allocated during the call (torch.cuda.max_memory_allocated)."
              if run.device.type == "cuda" else "Memory on a CPU: bytes of the tensors each path creates, from their "
              "shapes.")
    results.notes = [
        memory,
        f"SDPA kernel for causal GQA prefill: {kernel}.",
        f"Decode: the whole model, batch {results.decode_batch}, caches filled with random values up to the context.",
        (f"Written by `python -m bench.gpu`{' --quick (tiny sizes: not a measurement to read)' if run.quick else ''}; "
         "per-kernel prefill times and batch-1 decode are in prefill-/decode- files beside it."),
    ]
    return scaling.save_results(results, run.path("scaling"))


def _shape(loaded: LoadedModel) -> dict[str, int]:
    config = loaded.config
    return {"layers": config.num_hidden_layers, "heads": config.num_attention_heads,
            "kv_heads": config.num_key_value_heads, "head_dim": loaded.model.model.layers[0].self_attn.head_dim,
            "hidden": config.hidden_size}


# ---------------------------------------------------------------------------------------------------------
# Uptraining
# ---------------------------------------------------------------------------------------------------------


def choose_tokens(run: Run, budget_s: float) -> tuple[int, float]:
    """The largest training budget of the plan whose runs (one per variant and one shared control) fit in
    `budget_s`, from a measured forward pass (three per step) with a margin for evaluation and conversion;
    and the predicted training tokens/s. Below the smallest choice: the largest power of two that fits."""
    plan = run.plan
    probe = _settings(plan, plan.sequence_tokens * plan.uptrain_batch)
    seconds_per_token = 1.5 * uptrain.estimate_seconds(run.loaded, probe, runs=1) / probe.tokens
    runs = len(UPTRAIN_RUNS) + 1
    usable = 0.55 * budget_s  # the rest: conversions, calibration, and 12 evaluations of 8,192 tokens (CPU-side)
    for tokens in plan.uptrain_token_choices:
        if runs * tokens * seconds_per_token <= usable:
            return tokens, 1 / seconds_per_token
    fitting = usable / (runs * seconds_per_token)
    step = plan.sequence_tokens * plan.uptrain_batch
    return max(step, 2 ** int(math.log2(max(fitting, step)))), 1 / seconds_per_token


def _settings(plan: Plan, tokens: int) -> uptrain.UptrainSettings:
    return uptrain.UptrainSettings(tokens=tokens, sequence_tokens=plan.sequence_tokens,
                                   batch_sequences=plan.uptrain_batch)


def run_uptrain(run: Run) -> list[Section]:
    """Every uptraining run beside the control, one file each, written as each finishes."""
    budget = Budget(run.uptrain_budget())
    plan = run.plan
    tokens, predicted = choose_tokens(run, budget.seconds)
    settings = _settings(plan, tokens)
    root = Path(tempfile.mkdtemp(prefix="uptrained-")) if run.quick else None  # quick: never the user's cache
    sections = []
    try:
        for name, spec in UPTRAIN_RUNS.items():
            spec = dataclasses.replace(spec, calibration_tokens=plan.calibration_tokens)
            section = Section("uptrain", budget)
            section.notes.append(
                f"{tokens:,} training tokens (batch {plan.uptrain_batch} x {plan.sequence_tokens}), chosen from a "
                f"predicted {predicted:,.0f} training tokens/s on this device" + (
                    "; below the 2M the papers' budgets start at." if tokens < 2 * 2**20 and not run.quick else "."))
            if not budget.allows():
                section.out_of_time(f"{name} was not trained")
                section.data = {"run": name, "variant": spec.label()}
                sections.append(section)
                run.write(section, f"uptrain-{name}")
                continue

            def progress(which: str, step: uptrain.Step) -> None:
                if not budget.allows():
                    raise OutOfTime(f"{which} stopped at step {step.step} of {step.steps}")

            try:
                report = uptrain_report.uptrain_report(run.loaded, spec, settings, eval_tokens=plan.eval_tokens,
                                                control=True, progress=progress, root=root)
                section.data = {"run": name, **report}
                epochs = report["variant_record"]["epochs"]
                if epochs > 2:
                    section.notes.append(
                        f"The training text (the first half of the news prose) is short: {tokens:,} tokens pass over "
                        f"it {epochs:.0f} times, so the held-out perplexities also show how far repeating it carries.")
                section.data["training_tokens_per_s"] = {
                    which: report[f"{which}_record"]["tokens_seen"] / report[f"{which}_record"]["seconds"]
                    for which in ("variant", "control") if not report[f"{which}_record"]["from_cache"]}
            except OutOfTime as stopped:
                section.out_of_time(str(stopped))
                section.data = {"run": name, "variant": spec.label()}
            except Exception as error:  # noqa: BLE001 (one failing run must not cost the others their GPU time)
                section.complete = False
                section.data = {"run": name, "variant": spec.label(), "error": f"{type(error).__name__}: {error}"}
                _free(run.device)
            run.write(section, f"uptrain-{name}")
            sections.append(section)
    finally:
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
    _free(run.device)
    return sections


# ---------------------------------------------------------------------------------------------------------
# The app on the device
# ---------------------------------------------------------------------------------------------------------


def page_numbers(device: str) -> dict[str, dict]:
    """Render each page of APP_PAGES headless with the models on `device`; its metrics and chart values."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    previous = os.environ.get("ATTENTION_EXPLORER_DEVICE")
    os.environ["ATTENTION_EXPLORER_DEVICE"] = device
    st.cache_resource.clear()  # cached models were loaded on the other device
    st.cache_data.clear()
    pages = {}
    try:
        for name, (page, query) in APP_PAGES.items():
            started = time.perf_counter()
            app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
            app.query_params.update(query)
            app.run()
            if page != "views/attention.py":
                app.switch_page(page).run()
            if app.exception:
                raise RuntimeError(f"The {name} page failed on {device}: {app.exception[0].message}")
            pages[name] = {
                "seconds": time.perf_counter() - started,
                "metrics": {m.label: m.value for m in app.metric},
                "figures": _figure_values(app),
            }
    finally:
        if previous is None:
            os.environ.pop("ATTENTION_EXPLORER_DEVICE", None)
        else:
            os.environ["ATTENTION_EXPLORER_DEVICE"] = previous
        st.cache_resource.clear()
        st.cache_data.clear()
    return pages


def _figure_values(app) -> dict[str, list[float]]:
    """Every heatmap's values on the page, flattened, by figure title and trace."""
    values = {}
    for i, element in enumerate(app.get("plotly_chart")):
        spec = json.loads(element.proto.spec)
        title = spec["layout"].get("title", {}).get("text", f"chart {i}")
        for j, trace in enumerate(spec.get("data", [])):
            if trace.get("type") == "heatmap" and "z" in trace:
                values[f"{title} [{j}]"] = [float(x) for x in _plotly_array(trace["z"]).ravel()]
    return values


def _plotly_array(value):
    import numpy as np

    if isinstance(value, dict) and "bdata" in value:  # plotly >= 6: base64 bytes, a dtype and a shape
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).astype(float)
    return np.asarray(value, dtype=float)


def _number(text: str) -> float | None:
    try:
        return float(str(text).replace(",", "").replace("%", "").strip())
    except ValueError:
        return None


def compare_pages(device_pages: dict, cpu_pages: dict) -> list[dict]:
    """Every metric and chart the two renders share, with its difference and whether it is within tolerance."""
    import numpy as np

    rows = []
    for page, numbers in device_pages.items():
        reference = cpu_pages.get(page, {})
        for label, value in numbers["metrics"].items():
            ours, theirs = _number(value), _number(reference.get("metrics", {}).get(label))
            if label in TIMED_METRICS or ours is None or theirs is None:
                continue
            difference = abs(ours - theirs)
            allowed = 0.0 if label in EXACT_METRICS else METRIC_TOLERANCE * max(abs(ours), abs(theirs)) + 0.01
            rows.append({"page": page, "what": f"metric: {label}", "device": ours, "cpu": theirs,
                         "difference": difference, "allowed": allowed, "within": difference <= allowed})
        for title, values in numbers["figures"].items():
            other = reference.get("figures", {}).get(title)
            if other is None or len(other) != len(values):
                continue
            ours, theirs = np.nan_to_num(np.asarray(values)), np.nan_to_num(np.asarray(other))
            difference = float(np.abs(ours - theirs).max()) if len(ours) else 0.0
            allowed = FIGURE_TOLERANCE * max(float(np.abs(theirs).max()) if len(theirs) else 0.0, 1e-12)
            rows.append({"page": page, "what": f"chart: {title}", "device": None, "cpu": None,
                         "difference": difference, "allowed": allowed, "within": difference <= allowed})
    return rows


def run_app(run: Run) -> Section:
    section = Section("app", Budget(run.plan.budgets["app"]))
    device_pages = page_numbers(run.device.type)
    if run.device.type == "cpu":
        cpu_pages = device_pages
        section.notes.append("The device is the CPU: its render is its own reference (a dry run of the comparison).")
    elif section.budget.allows(sum(page["seconds"] for page in device_pages.values())):
        cpu_pages = page_numbers("cpu")
    else:
        cpu_pages = {}
        section.out_of_time("the CPU reference render was skipped")
    comparisons = compare_pages(device_pages, cpu_pages)
    section.data = {
        "pages": {name: {"seconds": page["seconds"], "metrics": page["metrics"], "charts": len(page["figures"]),
                         "cpu_metrics": cpu_pages.get(name, {}).get("metrics")}
                  for name, page in device_pages.items()},
        "tolerance": {"charts": f"max |difference| <= {FIGURE_TOLERANCE:.0%} of the chart's largest CPU value",
                      "metrics": f"|difference| <= {METRIC_TOLERANCE:.0%} of the larger value + 0.01",
                      "exact": ", ".join(EXACT_METRICS),
                      "skipped": "durations (" + ", ".join(TIMED_METRICS) + ")"},
        "comparisons": comparisons,
        "all_within": bool(comparisons) and all(row["within"] for row in comparisons),
    }
    run.write(section)
    return section


# ---------------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------------


def summary_line(section: Section) -> str:
    """One line per section for the console."""
    data, state = section.data, "" if section.complete else " (incomplete)"
    head = f"{section.name:<8} {section.budget.elapsed():6.1f} s{state}: "
    if "error" in data:
        return head + f"{data.get('run', 'the section')} failed: {data['error']}"
    if section.name == "prefill":
        slopes = ", ".join(f"{k} {v:.2f}" for k, v in data["kernel_slopes"].items() if v is not None)
        lengths = data["lengths"]
        return head + (f"{lengths[0]:,}-{lengths[-1]:,} tokens, time slopes {slopes}; SDPA chose "
                       f"{data['sdpa_choice']}" if lengths else "nothing measured")
    if section.name == "decode":
        parts = []
        for batch, figures in data["batches"].items():
            ratios = figures["over_mha_at_longest"]
            parts.append(f"batch {batch} at {figures['contexts'][-1]:,}: MQA/MHA {ratios.get('MQA', math.nan):.2f}x, "
                         f"MLA absorbed/MHA {ratios.get('MLA absorbed', math.nan):.2f}x")
        return head + ("; ".join(parts) or "nothing measured")
    if section.name == "uptrain":
        if "variant_after" not in data:
            return head + f"{data.get('run')}: not finished"
        return head + (f"{data['run']} ({data['settings']['tokens']:,} tokens): perplexity "
                       f"{_with_interval(data['variant_after'])} vs control {_with_interval(data['control_after'])} "
                       f"({data['after_vs_control']:.2f}x), {data['eval_tokens']:,} eval tokens")
    if section.name == "app":
        failed = [row["what"] for row in data["comparisons"] if not row["within"]]
        return head + (f"{len(data['comparisons'])} numbers compared with the CPU, "
                       + ("all within tolerance" if data["all_within"] else f"outside tolerance: {failed}"))
    return head


def _with_interval(quality: dict) -> str:
    """A perplexity with its interval when the evaluation gives one (a `perplexity_ci` pair)."""
    interval = quality.get("perplexity_ci")
    text = f"{quality['perplexity']:,.1f}"
    return text + (f" [{interval[0]:,.1f}, {interval[1]:,.1f}]" if interval else "")


def _write_json(path: Path, payload: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    temporary.replace(path)  # a reader never sees half a file
    return path


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda (the default when a GPU is present) or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and budgets: a dry run of the same code")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="which sections to run (default: all, in this order)")
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help="multiply every section's time budget (0.5 on a slower GPU keeps the run short)")
    parser.add_argument("--output-dir", default=None,
                        help="where the JSON files go (default: bench/results for a CUDA run; required otherwise)")
    args = parser.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("No CUDA GPU is visible to torch here; run on a GPU machine, or try `--device cpu --quick`.")
    if args.budget_scale < 0:
        parser.error("Give a budget scale of 0 or more (1 is the planned 8 minutes on an H200).")
    if args.output_dir is None and (args.device != "cuda" or args.quick):
        parser.error("A CPU or quick run would overwrite the committed results: give --output-dir (a scratch "
                     "folder), e.g. `--output-dir /tmp/gpu-dry-run`.")
    return args


def main(argv: list[str] | None = None) -> dict[str, list[Section]]:
    args = parse_args(argv)
    started = time.perf_counter()
    output_dir = Path(args.output_dir) if args.output_dir else RESULTS
    run = Run(args.device, args.quick, output_dir, args.budget_scale)
    run.sections = [name for name in SECTIONS if name in args.sections]
    print(f"bench.gpu on {run.info.device_name} ({run.info.dtype}), sections {', '.join(args.sections)}, "
          f"budgets {', '.join(f'{s} {run.plan.budgets.get(s, 0):g} s' for s in args.sections if s != 'uptrain')}"
          f"{', uptrain the rest' if 'uptrain' in args.sections else ''} of {run.plan.total_s:g} s; "
          f"model ready in {time.perf_counter() - started:.0f} s; writing to {output_dir}", flush=True)
    done: dict[str, list[Section]] = {}
    runners = {"prefill": lambda: [run_prefill(run)], "decode": lambda: [run_decode(run)],
               "uptrain": lambda: run_uptrain(run), "app": lambda: [run_app(run)]}
    for name in run.sections:
        budget = Budget(0.0)
        try:
            done[name] = runners[name]()
        except Exception as error:  # noqa: BLE001 (one failing section must not cost the later ones their GPU time)
            failed = Section(name, budget, {"error": f"{type(error).__name__}: {error}"}, complete=False)
            failed.notes.append(traceback.format_exc(limit=-4))
            run.write(failed, f"{name}-error")
            done[name] = [failed]
            _free(run.device)
        for section in done[name]:
            print(summary_line(section), flush=True)
    print(f"total {time.perf_counter() - started:.0f} s; files in {output_dir}", flush=True)
    return done


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
