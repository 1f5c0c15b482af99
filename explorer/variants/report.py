"""Measure a list of variants of one model: cache sizes (measured and by formula), quality and conversion time.

This is what `python -m explorer variants` prints; every figure comes from a real conversion and forward pass.
Decoders are scored by perplexity, KL and top-1 agreement; encoders, which have no LM head, by how close their
mean-pooled sentence embeddings stay (`explorer.quality.EncoderQuality`).
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from explorer.quality import (
    ENCODER_MAX_TOKENS,
    compare,
    compare_encoder,
    document_ids,
    encoder_reference,
    evaluation_ids,
    reference,
)
from explorer.kv import computed_kv, measured_cache
from explorer.variants.calibrate import calibrate
from explorer.variants.convert import convert
from explorer.variants.families import family_of
from explorer.variants.mla import MultiHeadLatentAttention
from explorer.variants.spec import (
    AttentionShape,
    VariantSpec,
    attention_shape,
    cache_bytes_per_token,
    cache_values_per_token,
)

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


def report_specs(shape: AttentionShape, model_type: str) -> tuple[VariantSpec, ...]:
    """The variants worth measuring for a model: SmolLM2's full list, or one sized to another model's heads.

    Every family gets MHA (or the original when it is MHA), mean-pooled and first-head GQA/MQA, and naive MLA
    by data-aware and plain SVD from full rank (exact) down to an eighth of the original K/V values and to
    the cache of one KV head (MQA's).
    """
    if model_type == "llama" and (shape.heads, shape.kv_heads) == (9, 3):
        return REPORT_SPECS
    specs = [VariantSpec("original")]
    if shape.kv_heads < shape.heads:
        specs.append(VariantSpec("mha"))
    middle = [n for n in range(2, shape.heads) if shape.heads % n == 0 and n != shape.kv_heads]
    for kv_heads in sorted(set(middle[:1] + middle[-1:])):  # the widest and narrowest GQA between MHA and MQA
        merges = ("mean",) if kv_heads > shape.kv_heads else ("mean", "first")
        specs += [VariantSpec("gqa", kv_heads=kv_heads, merge=merge) for merge in merges]
    if shape.kv_heads > 1:
        specs += [VariantSpec("mqa", merge="mean"), VariantSpec("mqa", merge="first")]
    full = 2 * shape.kv_heads * shape.head_dim  # K/V values per token and layer before conversion
    mqa_cache = 2 * shape.head_dim  # the cache of one KV head, to set MLA beside MQA
    ranks = sorted({full, full // 2, full // 4, full // 8, mqa_cache}, reverse=True)
    specs += [VariantSpec("mla", latent_rank=rank, svd="data") for rank in ranks]
    specs += [VariantSpec("mla", latent_rank=rank, svd="plain") for rank in (full // 2, full // 4)]
    return tuple(specs)


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
    loaded, specs=None, eval_tokens: int = 1024, chunk_tokens: int = 256, progress=None
) -> dict:
    """Convert, measure and evaluate each spec; returns a JSON-ready dict. `progress(label)` hears each row.

    `specs` defaults to `report_specs` for the model. Encoders are evaluated on whole documents of the
    evaluation prose (about `eval_tokens` tokens, at least four documents), decoders on chunks of it.
    """
    shape = attention_shape(loaded.config, loaded.entry.label)
    family = family_of(loaded.config, loaded.entry.label)
    specs = specs or report_specs(shape, loaded.config.model_type)
    encoder = loaded.kind == "encoder"
    if encoder:
        # whole documents, about `eval_tokens` tokens, at least four (so pairwise similarities can be ranked)
        inputs = document_ids(loaded.tokenizer, "evaluation", total_tokens=max(eval_tokens, 4 * ENCODER_MAX_TOKENS))
        ref = encoder_reference(loaded.model, inputs)
        probe = inputs[0]  # (1, T): the document whose K/V tensors are weighed
        eval_count = sum(row.numel() for row in inputs)
    else:
        input_ids = evaluation_ids(loaded.tokenizer, max(1, eval_tokens // chunk_tokens), chunk_tokens)  # (N, T)
        ref = reference(loaded.model, input_ids)
        probe = input_ids[:1, :32]  # (1, 32)
        eval_count = int(input_ids.numel())
    calibration = calibrate(loaded, max(spec.calibration_tokens for spec in specs))
    bytes_per_value = torch.finfo(loaded.dtype).bits // 8
    rows = []
    for spec in specs:
        conversion = convert(loaded, spec, calibration)
        model = conversion.loaded.model
        if encoder:
            measured_values, measured_bytes = computed_kv(model, family.attention_modules(model), probe)
        else:
            measured_values, measured_bytes = measured_cache(model, probe)
        formula_values = cache_values_per_token(spec, shape)
        formula_bytes = cache_bytes_per_token(spec, shape, bytes_per_value)
        row = {
            "label": spec.label(),
            "spec": dataclasses.asdict(spec),
            "kv_values_per_token_per_layer": {"measured": _mean(measured_values), "formula": _mean(formula_values)},
            "kv_bytes_per_token_per_layer": {"measured": _mean(measured_bytes), "formula": _mean(formula_bytes)},
            "measured_equals_formula": measured_values == formula_values and measured_bytes == formula_bytes,
            "cache_vs_original": sum(measured_values) / (shape.kv_values_per_layer * shape.num_layers),
            "conversion_seconds": conversion.seconds,
        }
        row.update(_encoder_quality(model, ref, spec) if encoder else _decoder_quality(model, ref, spec))
        if spec.variant == "mla":
            row["latent_ranks"] = conversion.latent_ranks
            row["energy_kept_mean"] = sum(conversion.energy_kept) / len(conversion.energy_kept)
            if spec.form == "decoupled" and spec.attn_path == "absorb":
                row["absorbed_vs_naive_max_diff_float64"] = absorbed_vs_naive(model, input_ids[:1, :64])
        rows.append(row)
        if progress is not None:
            score = f"cosine {row['embedding_cosine']:.4f}" if encoder else f"perplexity {row['perplexity']:.1f}"
            progress(f"{row['label']}: {score}, {row['conversion_seconds']:.1f} s to convert")
        del conversion, model
    report = {
        "model": loaded.entry.key,
        "model_type": loaded.config.model_type,
        "kind": loaded.kind,
        "device": str(loaded.device),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "eval_tokens": eval_count,
        "eval_prose": "second half of gensim lee_background.cor",
        "calibration_tokens": calibration.tokens,
        "calibration_prose": "first half of gensim lee_background.cor",
        "calibration_seconds": calibration.seconds,
        "reference_seconds": ref.seconds,
        "shape": dataclasses.asdict(shape),
        "variants": rows,
    }
    if encoder:
        report["eval_texts"] = len(inputs)
        report["kv_measured_from"] = (
            "the K/V tensors each layer computes for one evaluation document: an encoder keeps no cache across "
            "steps, so this is what a cache would hold for those tokens"
        )
    else:
        report["kv_measured_from"] = "the cache tensors of a forward pass with use_cache=True, per cached token"
    return report


def _decoder_quality(model, ref, spec: VariantSpec) -> dict:
    """Perplexity, KL, top-1 agreement and largest logit difference against the original."""
    if spec.variant == "original":
        return {"perplexity": ref.perplexity, "kl": 0.0, "top1_agreement": 1.0, "max_logit_diff": 0.0,
                "eval_seconds": ref.seconds}
    quality = compare(model, ref)
    return {"perplexity": quality.perplexity, "kl": quality.kl, "top1_agreement": quality.top1_agreement,
            "max_logit_diff": quality.max_logit_diff, "eval_seconds": quality.seconds}


def _encoder_quality(model, ref, spec: VariantSpec) -> dict:
    """The `EncoderQuality` fields against the original (the original compared with itself scores 1 and 0)."""
    quality = compare_encoder(model, ref)
    row = dataclasses.asdict(quality)
    row["eval_seconds"] = row.pop("seconds")
    del row["texts"], row["tokens"]
    return row


def _mean(values: list[int]) -> float:
    return sum(values) / len(values)
