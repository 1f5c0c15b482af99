"""Measure a list of variants of one model: cache sizes (measured and by formula), quality and conversion time.

This is what `python -m explorer variants` prints; every figure comes from a real conversion and forward pass.
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from explorer.quality import compare, evaluation_ids, reference
from explorer.variants.cache import measured_cache
from explorer.variants.calibrate import calibrate
from explorer.variants.convert import convert
from explorer.variants.mla import MultiHeadLatentAttention
from explorer.variants.spec import VariantSpec, attention_shape, cache_bytes_per_token, cache_values_per_token

REPORT_SPECS: tuple[VariantSpec, ...] = (
    VariantSpec("original"),
    VariantSpec("mha"),
    VariantSpec("mqa", merge="mean"),
    VariantSpec("mqa", merge="first"),
    VariantSpec("mqa", merge="aligned"),
    *(VariantSpec("mla", latent_rank=rank, svd="data") for rank in (384, 256, 192, 128, 64)),
    VariantSpec("mla", latent_rank=128, svd="data", balance_kv=False),
    *(VariantSpec("mla", latent_rank=rank, svd="data", weighting="query-output") for rank in (256, 192, 128)),
    *(VariantSpec("mla", latent_rank=rank, svd="plain") for rank in (384, 256, 128)),
    *(
        VariantSpec("mla", form="decoupled", latent_rank=288, rope_dims=32, merge=merge, attn_path=path)
        for merge in ("mean", "aligned")
        for path in ("naive", "absorb")
    ),
    VariantSpec("mla", form="decoupled", latent_rank=224, rope_dims=32, merge="aligned", attn_path="absorb"),
    VariantSpec("mla", form="decoupled", latent_rank=160, rope_dims=32, merge="aligned", attn_path="absorb"),
)


@torch.inference_mode()
def absorbed_vs_naive(model, input_ids: torch.Tensor) -> float:
    """Max |output difference| between the absorbed and the naive path of every MLA layer, in float64.

    Each layer runs as a float64 copy on the inputs it really sees in a pass over `input_ids`. Comparing
    whole-model logits would hide the difference: Llama's RMSNorm rounds to float32 between layers.
    """
    seen = []

    def keep(module, args, kwargs):
        seen.append((module, kwargs["hidden_states"], kwargs["position_embeddings"], kwargs.get("attention_mask")))

    layers = [module for module in model.modules() if isinstance(module, MultiHeadLatentAttention)]
    handles = [layer.register_forward_pre_hook(keep, with_kwargs=True) for layer in layers]
    try:
        model(input_ids=input_ids)
    finally:
        for handle in handles:
            handle.remove()
    worst = 0.0
    for module, hidden_states, (cos, sin), mask in seen:
        layer = copy.deepcopy(module).double()
        inputs = dict(
            hidden_states=hidden_states.double(),  # (B, T, d_model)
            position_embeddings=(cos.double(), sin.double()),  # (B, T, hd) each
            attention_mask=None if mask is None else mask.double(),  # (B, 1, T, T)
        )
        layer.mla = dataclasses.replace(layer.mla, attn_path="naive")
        naive, _ = layer(**inputs)  # (B, T, d_model)
        layer.mla = dataclasses.replace(layer.mla, attn_path="absorb")
        absorbed, _ = layer(**inputs)  # (B, T, d_model)
        worst = max(worst, float((naive - absorbed).abs().max()))
    return worst


def variant_report(
    loaded, specs=REPORT_SPECS, eval_tokens: int = 1024, chunk_tokens: int = 256, progress=None
) -> dict:
    """Convert, measure and evaluate each spec; returns a JSON-ready dict. `progress(label)` hears each row."""
    shape = attention_shape(loaded.config, loaded.entry.label)
    input_ids = evaluation_ids(loaded.tokenizer, max(1, eval_tokens // chunk_tokens), chunk_tokens)  # (N, T)
    ref = reference(loaded.model, input_ids)
    calibration = calibrate(loaded, max(spec.calibration_tokens for spec in specs))
    bytes_per_value = torch.finfo(loaded.dtype).bits // 8
    rows = []
    for spec in specs:
        conversion = convert(loaded, spec, calibration)
        model = conversion.loaded.model
        measured_values, measured_bytes = measured_cache(model, input_ids[:1, :32])
        formula_values = cache_values_per_token(spec, shape)
        formula_bytes = cache_bytes_per_token(spec, shape, bytes_per_value)
        quality = compare(model, ref) if spec.variant != "original" else None
        row = {
            "label": spec.label(),
            "spec": dataclasses.asdict(spec),
            "kv_values_per_token_per_layer": {"measured": _mean(measured_values), "formula": _mean(formula_values)},
            "kv_bytes_per_token_per_layer": {"measured": _mean(measured_bytes), "formula": _mean(formula_bytes)},
            "measured_equals_formula": measured_values == formula_values and measured_bytes == formula_bytes,
            "cache_vs_original": sum(measured_values) / (shape.kv_values_per_layer * shape.num_layers),
            "perplexity": quality.perplexity if quality else ref.perplexity,
            "kl": quality.kl if quality else 0.0,
            "top1_agreement": quality.top1_agreement if quality else 1.0,
            "max_logit_diff": quality.max_logit_diff if quality else 0.0,
            "conversion_seconds": conversion.seconds,
            "eval_seconds": quality.seconds if quality else ref.seconds,
        }
        if spec.variant == "mla":
            row["latent_ranks"] = conversion.latent_ranks
            row["energy_kept_mean"] = sum(conversion.energy_kept) / len(conversion.energy_kept)
            if spec.form == "decoupled" and spec.attn_path == "absorb":
                row["absorbed_vs_naive_max_diff_float64"] = absorbed_vs_naive(model, input_ids[:1, :64])
        rows.append(row)
        if progress is not None:
            seconds = row["conversion_seconds"]
            progress(f"{row['label']}: perplexity {row['perplexity']:.1f}, {seconds:.1f} s to convert")
        del conversion, model
    return {
        "model": loaded.entry.key,
        "device": str(loaded.device),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "eval_tokens": int(input_ids.numel()),
        "eval_prose": "second half of gensim lee_background.cor",
        "calibration_tokens": calibration.tokens,
        "calibration_prose": "first half of gensim lee_background.cor",
        "calibration_seconds": calibration.seconds,
        "reference_seconds": ref.seconds,
        "shape": dataclasses.asdict(shape),
        "variants": rows,
    }


def _mean(values: list[int]) -> float:
    return sum(values) / len(values)
