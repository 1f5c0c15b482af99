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
    BLOCK_TOKENS,
    ENCODER_MAX_TOKENS,
    EVAL_TOKENS,
    LEVEL,
    RESAMPLES,
    below,
    better,
    bootstrap,
    compare,
    compare_encoder,
    document_ids,
    encoder_identity,
    encoder_reference,
    evaluation_ids,
    identity,
    precision_note,
    ratio,
    ratio_interval,
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

# The headline rows first (the original, every MQA merge, MLA at 256/192/128 values, the exact MHA), so a run
# cut short on a busy machine still holds them (`--output` is rewritten after every row).
REPORT_SPECS: tuple[VariantSpec, ...] = (
    VariantSpec("original"),
    VariantSpec("mqa", merge="mean"),
    VariantSpec("mqa", merge="first"),
    VariantSpec("mqa", merge="aligned"),
    *(VariantSpec("mla", latent_rank=rank, svd="data") for rank in (256, 192, 128)),
    VariantSpec("mha"),
    *(VariantSpec("mla", latent_rank=rank, svd="data") for rank in (384, 64)),
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


# The training-free refinements at half of SmolLM2's cache (192 values per token and layer), each beside the
# conversion it refines, then the best recipe at a third and two thirds of the cache for the frontier.
_QO = {"svd": "data", "weighting": "query-output"}
_BEST = {**_QO, "value_weight": 0.25, "refit": "output"}
_DEEPSEEK = {"form": "decoupled", "latent_rank": 160, "rope_dims": 32, "merge": "aligned", "attn_path": "absorb"}
REFINED_SPECS: tuple[VariantSpec, ...] = (
    VariantSpec("original"),
    VariantSpec("mla", latent_rank=192, **_QO),
    VariantSpec("mla", latent_rank=192, value_weight=0.25, **_QO),
    VariantSpec("mla", latent_rank=192, **_BEST),
    VariantSpec("mla", **_DEEPSEEK),
    VariantSpec("mla", rope_pairs="rotation", **_DEEPSEEK),
    VariantSpec("mla", rope_pairs="rotation", weighting="query-output", value_weight=0.25, refit="output", **_DEEPSEEK),
    VariantSpec("mla", refit="output", **_DEEPSEEK),
    VariantSpec("mla", rope_pairs="norm", **_DEEPSEEK),
    VariantSpec("mla", latent_rank=192, rank_allocation="sensitivity", **_BEST),
    VariantSpec("mla", latent_rank=256, **_BEST),
    VariantSpec("mla", latent_rank=128, **_BEST),
)
SPEC_SETS = {"report": None, "refined": REFINED_SPECS}  # what `python -m explorer variants --set` measures


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
    loaded, specs=None, eval_tokens: int = EVAL_TOKENS, chunk_tokens: int = 256, progress=None, rows=None
) -> dict:
    """Convert, measure and evaluate each spec; returns a JSON-ready dict. `progress(label)` hears each row, and
    `rows`, when given, is the list the rows are appended to as they are measured (so a long run can save them).

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
    rows = [] if rows is None else rows
    for spec in specs:
        conversion = convert(loaded, spec, calibration)
        spec = conversion.spec  # with its per-layer ranks when they were allocated by sensitivity
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
            interval = row["embedding_cosine_ci"] if encoder else row["perplexity_ci"]
            progress(f"{row['label']}: {score} [{interval[0]:.4g}, {interval[1]:.4g}], "
                     f"{row['conversion_seconds']:.1f} s to convert")
        del conversion, model
    report = {
        "model": loaded.entry.key,
        "model_type": loaded.config.model_type,
        "kind": loaded.kind,
        "device": str(loaded.device),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "eval_tokens": eval_count,
        "eval_prose": "second half of gensim lee_background.cor",
        "intervals": _intervals_note(encoder),
        "weights": precision_note(loaded.entry),
        "calibration_tokens": calibration.tokens,
        "calibration_prose": "first half of gensim lee_background.cor",
        "calibration_seconds": calibration.seconds,
        "reference_seconds": ref.seconds,
        "shape": dataclasses.asdict(shape),
        "variants": rows,
        "comparisons": comparisons(rows, encoder),
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
    """Perplexity, KL, top-1 agreement and the perplexity against the original's, each with its 95% interval
    (paired for the ratio), the largest logit difference, the verdict "within 5%", and the per-block numbers
    behind the intervals (so any two rows can be compared, paired, from the file alone)."""
    quality = identity(ref) if spec.variant == "original" else compare(model, ref)
    return {
        "perplexity": quality.perplexity, "perplexity_ci": list(quality.perplexity_ci),
        "kl": quality.kl, "kl_ci": list(quality.kl_ci),
        "top1_agreement": quality.top1_agreement, "top1_agreement_ci": list(quality.top1_agreement_ci),
        "perplexity_vs_original": quality.perplexity_ratio,
        "perplexity_vs_original_ci": list(quality.perplexity_ratio_ci),
        "within_5_percent": below(quality.perplexity_ratio_ci, WITHIN),
        "max_logit_diff": quality.max_logit_diff, "eval_seconds": quality.seconds,
        "blocks": quality.blocks,
    }


def _encoder_quality(model, ref, spec: VariantSpec) -> dict:
    """The `EncoderQuality` fields against the original (the original compared with itself scores 1 and 0), with
    the per-document cosines that paired comparisons resample."""
    quality = encoder_identity(ref) if spec.variant == "original" else compare_encoder(model, ref)
    row = dataclasses.asdict(quality)
    row["eval_seconds"] = row.pop("seconds")
    row["embedding_cosine_ci"] = list(row["embedding_cosine_ci"])
    row["hidden_relative_error_ci"] = list(row["hidden_relative_error_ci"])
    row["documents"] = {"tokens": [int(ids.numel()) for ids in ref.inputs],
                        "embedding_cosine": [round(c, 9) for c in quality.document_cosines]}
    del row["texts"], row["tokens"], row["document_cosines"]
    return row


WITHIN = 1.05  # "holds up": perplexity within 5% of the original's


def comparisons(rows: list[dict], encoder: bool = False) -> list[dict]:
    """Paired comparisons between rows measured on the same text: mean-pooling against keeping the first head,
    the aligned merge against mean-pooling, MLA against MQA/GQA at the same cache, data-aware against plain SVD.

    Each says which is better (`a` beats `b`) as yes, no or "can't tell at this size", from the interval of
    the ratio of perplexities (decoders) or the difference of embedding cosines (encoders), never from the
    point estimate alone.
    """
    by_label = {row["label"]: row for row in rows}
    pairs = []
    for row in rows:
        spec = row["spec"]
        if spec["variant"] in ("gqa", "mqa") and spec["merge"] in ("mean", "aligned"):
            other = "first" if spec["merge"] == "mean" else "mean"
            rival = _find(rows, variant=spec["variant"], kv_heads=spec["kv_heads"], merge=other)
            if rival is not None:
                claim = ("mean-pooling beats keeping the first head" if other == "first"
                         else "the aligned merge beats mean-pooling")
                pairs.append((claim, row, rival))
        if spec["variant"] == "mla" and spec["form"] == "naive" and spec["svd"] == "data" \
                and spec.get("weighting", "none") == "none" and spec.get("balance_kv", True):
            values = row["kv_values_per_token_per_layer"]["measured"]
            for rival in rows:
                if rival["spec"]["variant"] in ("gqa", "mqa") and rival["spec"]["merge"] != "first" \
                        and rival["kv_values_per_token_per_layer"]["measured"] == values:
                    pairs.append(("MLA beats MQA/GQA at equal cache", row, rival))
            plain = _find(rows, variant="mla", form="naive", svd="plain", latent_rank=spec["latent_rank"])
            if plain is not None:
                pairs.append(("the data-aware latent beats plain SVD at the same rank", row, plain))
    return [_paired(claim, a, b, encoder) for claim, a, b in pairs if a["label"] in by_label]


def _find(rows: list[dict], **fields) -> dict | None:
    return next((row for row in rows if all(row["spec"].get(k) == v for k, v in fields.items())), None)


def _paired(claim: str, a: dict, b: dict, encoder: bool) -> dict:
    """One comparison: the paired interval and its verdict."""
    if encoder:  # higher cosine is better: a beats b when cos(a) - cos(b) > 0
        difference = [x - y for x, y in zip(a["documents"]["embedding_cosine"], b["documents"]["embedding_cosine"])]
        value = sum(difference) / len(difference)
        low, high = bootstrap(difference)
        verdict = better((low, high), 0.0, lower_is_better=False)
        measure = "mean embedding cosine of a minus that of b (paired over documents)"
    else:  # lower perplexity is better: a beats b when ppl(a) / ppl(b) < 1
        value = ratio(a["blocks"], b["blocks"])
        low, high = ratio_interval(a["blocks"], b["blocks"])
        verdict = better((low, high), 1.0)
        measure = "perplexity of a / perplexity of b (paired over the same blocks)"
    return {"claim": claim, "a": a["label"], "b": b["label"], "measure": measure, "value": value,
            "ci": [low, high], "verdict": verdict}


def _intervals_note(encoder: bool) -> str:
    unit = "document" if encoder else f"block of {BLOCK_TOKENS} consecutive next-token predictions (within one sequence)"
    return (f"{LEVEL:.0%} percentile-bootstrap intervals, {RESAMPLES} resamples (seed 0), one {unit} per draw; "
            "ratios and differences between two rows are paired: both scored on the same text, resampled together")


def _mean(values: list[int]) -> float:
    return sum(values) / len(values)
