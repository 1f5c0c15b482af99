"""A whole scaling run: where it runs (device, versions, load), prefill at each length with fitted slopes, then
decode for every variant at each context, gathered into `ScalingResults`."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import math
import os
import platform
from pathlib import Path
from typing import Callable, Sequence

import torch
import transformers

from explorer import kv
from explorer.loading import LoadedModel
from explorer.scaling.decode import decode_models, measure_decode
from explorer.scaling.prefill import measure_prefill, sdpa_kernel
from explorer.scaling.results import RunInfo, ScalingResults, fit_slope

Progress = Callable[[float, str], None]  # (fraction done in [0, 1], what is happening)


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


def length_grid(max_tokens: int, min_tokens: int = 128) -> list[int]:
    """Powers of two from `min_tokens` to `max_tokens`: 128, 256, ..., 8192."""
    if min_tokens < 1 or max_tokens < min_tokens:
        raise ValueError("Choose a longest length of at least the shortest, and a shortest of at least 1 token.")
    lengths = [min_tokens]
    while lengths[-1] * 2 <= max_tokens:
        lengths.append(lengths[-1] * 2)
    return lengths


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

    progress(len(lengths) / stages, "decode: converting SmolLM2 to each variant")
    models = decode_models(loaded)
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
        "(speed does not depend on the values); weights from SmolLM2 converted to each variant, attention by the "
        "variant lab's own modules (explorer.variants) on PyTorch's fused kernel (SDPA).",
        "Absorbed MLA: the heads are query rows of one shared key head (latent | RoPE key, 288 dims), the cached row "
        "doubles as the value so SDPA can use its fused kernel, and the RoPE columns of the output are dropped.",
        "Decode variants take turns step by step (interleaved), so bursts of load on a shared machine hit all alike.",
    ]
    return results
