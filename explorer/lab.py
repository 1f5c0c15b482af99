"""The variant lab's choices and verdicts: URL settings -> a checked VariantSpec, committed frontier points,
and plain-words readings of the measured quality.
"""

from __future__ import annotations

import json
from pathlib import Path

from explorer.variants import AttentionShape, VariantSpec
from explorer.variants.spec import cache_values_per_token, check_mla, target_kv_heads

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"
COLLAPSE_FACTOR = 10.0  # perplexity this many times the original's: the model no longer writes English


def spec_from_view(
    variant: str, kv_heads: int | None, latent_rank: int | None, rope_dims: int | None, merge: str, form: str,
    svd: str, shape: AttentionShape,
) -> tuple[VariantSpec, list[str]]:
    """A VariantSpec for the lab's settings, checked against the model; impossible settings fall back, with a
    notice that says what to choose instead."""
    notices: list[str] = []
    if variant == "gqa":
        try:
            target_kv_heads(VariantSpec("gqa", kv_heads=kv_heads), shape)
        except ValueError as error:
            notices.append(f"{error} Showing {shape.kv_heads}.")
            kv_heads = shape.kv_heads
        return VariantSpec("gqa", kv_heads=kv_heads, merge=merge), notices
    if variant in ("mqa", "mha", "original"):
        return VariantSpec(variant, merge=merge), notices
    spec = VariantSpec(
        "mla", form=form, latent_rank=latent_rank or 128, rope_dims=rope_dims if rope_dims is not None else 32,
        svd=svd, merge=merge, attn_path="absorb" if form == "decoupled" else "naive",
    )
    try:
        check_mla(spec, shape)
    except ValueError as error:
        fallback = VariantSpec("mla", form=form, svd=svd, merge=merge, latent_rank=128,
                               rope_dims=32, attn_path=spec.attn_path)
        notices.append(f"{error} Showing latent rank {fallback.latent_rank}, rope_dims {fallback.rope_dims}.")
        spec = fallback
    return spec, notices


def committed_report(model_key: str, device: str = "cpu") -> dict | None:
    """The committed `python -m explorer variants` report for a model, if one was run and saved."""
    path = RESULTS / f"variants-{model_key}-{device}.json"
    if not path.exists():
        path = RESULTS / f"variants-{device}.json"
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    return report if report.get("model") == model_key else None


def frontier_points(report: dict) -> list[dict]:
    """{"label", "values", "perplexity"} per measured variant of a report, for the frontier chart."""
    return [
        {
            "label": row["label"],
            "values": row["kv_values_per_token_per_layer"]["measured"],
            "perplexity": row["perplexity"],
        }
        for row in report["variants"]
    ]


def verdict(spec: VariantSpec, perplexity: float, original_perplexity: float) -> str | None:
    """A plain-words reading of a measured quality, when there is something to say."""
    ratio = perplexity / original_perplexity
    if spec.variant in ("mqa", "gqa") and ratio > COLLAPSE_FACTOR:
        return (
            f"Perplexity went from {original_perplexity:.1f} to {perplexity:,.0f}: the model collapsed. Its heads "
            "were trained to read their own keys and values; averaging them into fewer KV heads gives every query "
            "head keys it has never seen, and nothing retrains the queries to match. The GQA paper (Ainslie et al., "
            "2023) recovers quality with a short uptraining (about 5% of the original pre-training); the aligned "
            "merge rotates each head's keys into a shared basis first, which loses far less."
        )
    if spec.variant == "mla" and spec.form == "decoupled" and ratio > 1.5:
        return (
            f"Perplexity went from {original_perplexity:.1f} to {perplexity:,.1f}. The DeepSeek form keeps RoPE on "
            "only a few dimensions and shares one RoPE key across all heads, so each head loses its own "
            "position-dependent key; that is what lets the up-projection be absorbed into the query, and it needs "
            "training to work (MHA2MLA, Ji et al., 2025, fine-tunes on a small share of the pre-training data)."
        )
    if ratio <= 1.05:
        return f"Within 5% of the original perplexity ({original_perplexity:.1f} → {perplexity:.1f}), with no training."
    return None


def cached_values(spec: VariantSpec, shape: AttentionShape) -> float:
    """KV values cached per token, averaged over layers (the formula the measured cache is tested against)."""
    values = cache_values_per_token(spec, shape)
    return sum(values) / len(values)


def kv_groups(spec: VariantSpec, shape: AttentionShape) -> int:
    """How many groups of query heads share keys and values: the KV heads (MLA: every head has its own)."""
    return shape.heads if spec.variant == "mla" else target_kv_heads(spec, shape)
