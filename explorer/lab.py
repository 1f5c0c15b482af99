"""The variant lab's choices and verdicts: URL settings -> a checked VariantSpec, committed frontier points,
and plain-words readings of the measured quality, for decoders (perplexity) and encoders (embedding cosine).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from explorer.config import classify
from explorer.paths import RESULTS_DIR
from explorer.quality import BLOCK_TOKENS, CANT_TELL, below, identity, precision_note  # noqa: F401 (identity: views)
from explorer.variants import AttentionShape, VariantSpec
from explorer.variants.spec import cache_values_per_token, check_mla, target_kv_heads

RESULTS = RESULTS_DIR
COLLAPSE_FACTOR = 10.0  # perplexity this many times the original's: the model no longer writes English
CLOSE_COSINE = 0.99  # an encoder variant whose embeddings keep this cosine with the original's is as good as it
DRIFT_COSINE = 0.9  # below this mean cosine the embeddings have moved enough to reorder search results
MERGES = ("mean", "first", "aligned")
FORMS = ("naive", "decoupled")


@dataclass(frozen=True)
class LabChoices:
    """The MLA forms and KV-head merges the lab offers for one model family, and why when some are missing."""

    forms: tuple[str, ...] = FORMS  # MLA forms: naive, and decoupled RoPE where the family has RoPE to split
    merges: tuple[str, ...] = MERGES  # how a group's KV heads become one
    why: str = ""  # a sentence saying why the others are not offered ("" when everything is)


ALL_CHOICES = LabChoices()


def choices_for(family_name: str, label: str) -> LabChoices:
    """What the lab offers for a family (`explorer.variants.families.Family.name`): everything for Llama; the
    naive form and mean or first merges for the others, whose keys cannot be split or rotated around RoPE."""
    if family_name == "Llama":
        return ALL_CHOICES
    if family_name == "Gemma-3":
        reason = "normalises each key head before RoPE, so a key can neither be split into a RoPE part nor rotated"
    else:
        reason = "uses learned absolute positions, so there is no RoPE to decouple or to align keys under"
    return LabChoices(("naive",), ("mean", "first"),
                      f"{label} {reason}: the lab offers the naive MLA form and mean or first merges.")


def offered(variant: str, form: str, merge: str, choices: LabChoices) -> tuple[str, str, list[str]]:
    """(form, merge) brought within what the family offers, with a notice for each setting that was replaced."""
    notices = []
    if form not in choices.forms:
        if variant == "mla":
            notices.append(f"{choices.why} Showing the naive form.")
        form = "naive"
    if merge not in choices.merges:
        if variant in ("gqa", "mqa"):
            notices.append(f"{choices.why} Showing mean-pooling.")
        merge = "mean"
    return form, merge, notices


def spec_from_view(
    variant: str, kv_heads: int | None, latent_rank: int | None, rope_dims: int | None, merge: str, form: str,
    svd: str, shape: AttentionShape, choices: LabChoices = ALL_CHOICES, methods: dict | None = None,
) -> tuple[VariantSpec, list[str]]:
    """A VariantSpec for the lab's settings, checked against the model and what its family offers; impossible
    settings fall back, with a notice that says what to choose instead."""
    form, merge, notices = offered(variant, form, merge, choices)
    methods = methods or {}
    refit = {"refit": methods["refit"]} if "refit" in methods else {}
    if variant == "gqa":
        try:
            target_kv_heads(VariantSpec("gqa", kv_heads=kv_heads), shape)
        except ValueError as error:
            notices.append(f"{error} Showing {shape.kv_heads}.")
            kv_heads = shape.kv_heads
        return VariantSpec("gqa", kv_heads=kv_heads, merge=merge, **refit), notices
    if variant in ("mqa", "mha", "original"):
        return VariantSpec(variant, merge=merge, **(refit if variant == "mqa" else {})), notices
    spec = VariantSpec(
        "mla", form=form, latent_rank=latent_rank or 128, rope_dims=rope_dims if rope_dims is not None else 32,
        svd=svd, merge=merge, attn_path="absorb" if form == "decoupled" else "naive", **methods,
    )
    try:
        check_mla(spec, shape)
    except ValueError as error:
        fallback = VariantSpec("mla", form=form, svd=svd, merge=merge, latent_rank=128,
                               rope_dims=32, attn_path=spec.attn_path, **methods)
        notices.append(f"{error} Showing latent rank {fallback.latent_rank}, rope_dims {fallback.rope_dims}.")
        spec = fallback
    return spec, notices


def committed_report(model_key: str, device: str = "cpu") -> dict | None:
    """The committed `python -m explorer variants` report for a model, if one was run and saved, with the rows of
    `variants --set refined` when those were measured on the same held-out tokens."""
    path = RESULTS / f"variants-{model_key}-{device}.json"
    if not path.exists():
        path = RESULTS / f"variants-{device}.json"
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    if report.get("model") != model_key:
        return None
    refined = RESULTS / f"variants-refined-{device}.json"  # `variants --set refined`: same prose, same tokens
    if refined.exists() and (extra := json.loads(refined.read_text())).get("model") == model_key \
            and extra.get("eval_tokens") == report.get("eval_tokens") and not extra.get("unfinished"):
        known = {row["label"] for row in report["variants"]}
        report = {**report, "variants": report["variants"] + [row for row in extra["variants"]
                                                              if row["label"] not in known]}
    return report


def frontier_points(report: dict) -> list[dict]:
    """One point per measured variant of a report, for the frontier chart: {"label", "values", "perplexity",
    "low", "high"} for a decoder, {"label", "values", "embedding_cosine", "low", "high"} for an encoder (which
    has no LM head to score); low and high bound the 95% interval (absent from reports made before intervals)."""
    score = "embedding_cosine" if report.get("kind") == "encoder" else "perplexity"
    points = []
    for row in report["variants"]:
        point = {"label": row["label"], "values": row["kv_values_per_token_per_layer"]["measured"], score: row[score]}
        if f"{score}_ci" in row:
            point["low"], point["high"] = row[f"{score}_ci"]
        points.append(point)
    return points


WITHIN = 1.05  # a decoder variant "holds up" when its perplexity is within 5% of the original's


def holds_up(interval: tuple[float, float], kind: str = "decoder") -> bool:
    """Whether a variant is as good as the original, judged from an interval, never the point estimate: the
    paired 95% interval of perplexity / original's wholly within 5% (decoder), or of the mean embedding cosine
    wholly at 0.99 or above (encoder)."""
    return interval[0] >= CLOSE_COSINE if kind == "encoder" else below(interval, WITHIN) == "yes"


def verdict(spec: VariantSpec, score: float, original_score: float, interval: tuple[float, float],
            kind: str = "decoder") -> str | None:
    """A plain-words reading of a measured quality, when there is something to say, decided from the interval.
    `score` is the perplexity of a decoder (`original_score`: the original's; `interval`: the paired 95% interval
    of their ratio) or the mean embedding cosine of an encoder (`interval`: its 95% interval)."""
    if kind == "encoder":
        return _encoder_verdict(spec, score, interval)
    perplexity, original_perplexity = score, original_score
    low, high = interval
    bounds = f"the paired 95% interval of the ratio to the original is {low:,.3g}–{high:,.3g}"
    if spec.variant in ("mqa", "gqa") and low > COLLAPSE_FACTOR:
        return (
            f"Perplexity went from {original_perplexity:.1f} to {perplexity:,.0f} ({bounds}): the model collapsed. "
            "Its heads were trained to read their own keys and values; averaging them into fewer KV heads gives "
            "every query head keys it has never seen, and nothing retrains the queries to match. The GQA paper "
            "(Ainslie et al., 2023) recovers quality with a short uptraining (about 5% of the original "
            "pre-training); the aligned merge rotates each head's keys into a shared basis first, which loses far less."
        )
    if spec.variant == "mla" and spec.form == "decoupled" and low > 1.5:
        return (
            f"Perplexity went from {original_perplexity:.1f} to {perplexity:,.1f} ({bounds}). The DeepSeek form "
            "keeps RoPE on only a few dimensions and shares one RoPE key across all heads, so each head loses its "
            "own position-dependent key; that is what lets the up-projection be absorbed into the query, and it "
            "needs training to work (MHA2MLA, Ji et al., 2025, fine-tunes on a small share of the pre-training data)."
        )
    within = below(interval, WITHIN)
    if within == "yes":
        return (f"Within 5% of the original perplexity ({original_perplexity:.1f} → {perplexity:.1f}; {bounds}, "
                "wholly under 1.05), with no training.")
    if within == CANT_TELL:
        return (f"Within 5% of the original perplexity? Can't tell at this size: {original_perplexity:.1f} → "
                f"{perplexity:.1f}, and {bounds}, which straddles 1.05. More held-out tokens would decide "
                "(`python -m explorer variants` scores 8,192).")
    return None


def _encoder_verdict(spec: VariantSpec, cosine: float, interval: tuple[float, float]) -> str | None:
    low, high = interval
    bounds = f"95% interval {low:.3f}–{high:.3f}"
    if low >= CLOSE_COSINE:
        return (f"Sentence embeddings keep a cosine of {cosine:.3f} ({bounds}) with the original's, with no "
                "training: for search and clustering this variant works like the original.")
    if high < DRIFT_COSINE and spec.variant in ("gqa", "mqa"):
        return (f"Sentence embeddings moved to a cosine of {cosine:.2f} ({bounds}) with the original's. Every head "
                "was trained to read its own keys and values; sharing them gives the queries keys they have never "
                "seen. MLA at the same cache keeps far more, because its latent is the keys' and values' own main "
                "directions.")
    if high < DRIFT_COSINE:
        return (f"Sentence embeddings moved to a cosine of {cosine:.2f} ({bounds}) with the original's: the latent "
                "is too narrow for this encoder's keys and values; a wider latent keeps more.")
    if high >= CLOSE_COSINE:
        return (f"As good as the original (a cosine of 0.99 or more)? Can't tell at this size: {cosine:.3f}, "
                f"{bounds}, which straddles 0.99.")
    return None


def comparison_sentence(comparison: dict) -> str:
    """One paired comparison of a committed report (`explorer.variants.report.comparisons`) in plain words."""
    answer = {"yes": "Yes", "no": "No"}.get(comparison["verdict"], "Can't tell at this size")
    low, high = comparison["ci"]
    if comparison["measure"].startswith("perplexity"):
        measured = f"perplexity ratio {comparison['value']:.3g} (95% interval {low:.3g}–{high:.3g}, paired)"
    else:
        measured = f"cosine difference {comparison['value']:+.4f} (95% interval {low:+.4f} to {high:+.4f}, paired)"
    claim = comparison["claim"][0].upper() + comparison["claim"][1:]  # "MLA beats MQA", not "Mla beats mqa"
    return f"{claim}? {answer}: {comparison['a']} against {comparison['b']}, {measured}."


def cached_values(spec: VariantSpec, shape: AttentionShape) -> float:
    """KV values cached per token, averaged over layers (the formula the measured cache is tested against)."""
    values = cache_values_per_token(spec, shape)
    return sum(values) / len(values)


def absorb_note(spec: VariantSpec, rope: bool, choices: LabChoices = ALL_CHOICES) -> str:
    """Whether the MLA up-projection can be absorbed into the query for this form and family, in a sentence."""
    if spec.form == "decoupled":
        return ("The decoupled form keeps RoPE on a separate shared key, so the key up-projection folds into the "
                "query (absorbed path): decoding reads the latent directly.")
    if rope:
        return ("In the naive form RoPE comes after the up-projection, so it cannot be absorbed into the query: "
                "decoding must re-expand every past key."
                + (" The decoupled form removes that step." if "decoupled" in choices.forms else ""))
    return ("Without RoPE nothing stands between the key up-projection and the query, so it could be absorbed; "
            "this lab runs the naive path, which gives the same numbers.")


ABSORB_GAP_LABEL = "Absorbed vs naive path: largest difference of any layer's attention output (float64)"
ABSORB_GAP_HELP = ("Each MLA layer runs both paths in float64 on the inputs it sees for your text; this is the "
                   "largest absolute difference between their attention outputs (after the output projection), "
                   "over every layer, token and dimension. Float64 rounding leaves about 1e-13; anything that small "
                   "means the two paths compute the same function.")


def energy_series(conversion) -> dict[str, list[float]]:
    """The exported numbers beside the energy chart: per layer, what the latent keeps, its width, and in the
    decoupled form what the one shared RoPE key keeps of the KV heads' RoPE keys."""
    series = {"latent energy kept": list(conversion.energy_kept), "latent rank": list(conversion.latent_ranks)}
    if conversion.rope_key_energy_kept is not None:
        series["shared RoPE key energy kept"] = list(conversion.rope_key_energy_kept)
    return series


def rope_key_sentence(conversion) -> str:
    """What the decoupled form loses outside the latent, in a sentence: its RoPE dims become one shared key."""
    kept = conversion.rope_key_energy_kept
    latent = sum(conversion.energy_kept) / len(conversion.energy_kept)
    if not kept:
        return "No dims keep RoPE (rope_dims 0): every key dim sits in the latent, and the keys lose their positions."
    worst = min(range(len(kept)), key=kept.__getitem__)
    return (f"The latent holds the values and the keys' dims without RoPE ({latent:.1%} of their energy kept on "
            f"average). The RoPE dims are not in it: every KV head's RoPE key becomes one shared key, which keeps "
            f"{sum(kept) / len(kept):.1%} of their energy on average (least: {kept[worst]:.1%}, layer {worst}).")


def kv_groups(spec: VariantSpec, shape: AttentionShape) -> int:
    """How many groups of query heads share keys and values: the KV heads (MLA: every head has its own)."""
    return shape.heads if spec.variant == "mla" else target_kv_heads(spec, shape)


def quality_metrics(quality, ref, kind: str = "decoder") -> list[tuple[str, str, str | None, str]]:
    """(label, value, change against the original, 95% interval) of each quality metric the lab shows: perplexity,
    KL and top-1 agreement for a decoder (`Quality` against a `Reference`); for an encoder (`EncoderQuality`), how
    close its sentence embeddings, their similarity order and its hidden states stay."""
    if kind == "encoder":
        cosine, error = quality.embedding_cosine_ci, quality.hidden_relative_error_ci
        return [
            ("Embedding cosine", f"{quality.embedding_cosine:.4f}", None,
             f"95%: {cosine[0]:.4f}–{cosine[1]:.4f} over {quality.texts} documents"),
            ("Similarity rank correlation", f"{quality.similarity_rank_correlation:.4f}", None,
             f"over the {quality.texts * (quality.texts - 1) // 2} document pairs (no interval: pairs share documents)"),
            ("Hidden-state relative error", f"{quality.hidden_relative_error:.2%}", None,
             f"95%: {error[0]:.2%}–{error[1]:.2%}"),
        ]
    perplexity, ratio = quality.perplexity_ci, quality.perplexity_ratio_ci
    kl, top1 = quality.kl_ci, quality.top1_agreement_ci
    return [
        ("Perplexity", f"{quality.perplexity:,.1f}", f"{quality.perplexity / ref.perplexity - 1:+.1%}",
         f"95%: {perplexity[0]:,.1f}–{perplexity[1]:,.1f}; vs original ×{ratio[0]:,.3g}–{ratio[1]:,.3g} (paired)"),
        ("KL from original (nats)", f"{quality.kl:.3f}", None, f"95%: {kl[0]:.3f}–{kl[1]:.3f}"),
        ("Top-1 agreement", f"{quality.top1_agreement:.1%}", None, f"95%: {top1[0]:.1%}–{top1[1]:.1%}"),
    ]


def score(quality, kind: str = "decoder") -> float:
    """The number the frontier and the verdict read: perplexity (decoder) or mean embedding cosine (encoder)."""
    return quality.embedding_cosine if kind == "encoder" else quality.perplexity


def score_interval(quality, kind: str = "decoder") -> tuple[float, float]:
    """The interval the verdict reads: the paired 95% interval of perplexity / the original's (decoder), or the
    95% interval of the mean embedding cosine (encoder)."""
    return tuple(quality.embedding_cosine_ci if kind == "encoder" else quality.perplexity_ratio_ci)


def original_layout(shape: AttentionShape) -> str:
    """MHA, GQA or MQA: how the original model shares its keys and values (`explorer.config.classify`)."""
    return classify(shape.kv_heads, shape.heads).upper()


def measured_sentence(values: float, formula: float, encoder: bool) -> str:
    """What the weighed K/V tensors say, beside the formula behind the first metric."""
    agrees = "as the formula says" if round(values, 3) == round(formula, 3) else f"the formula says {formula:.0f}"
    if encoder:
        return (f"An encoder keeps no cache: it computes keys and values for all tokens at once and drops them. "
                f"Weighed in a pass over your text, each layer computes {values:.0f} K/V values per token, {agrees}; "
                "that is what a cache would hold.")
    return f"Weighed from the cache tensors of a pass over your text: {values:.0f} values per token and layer, {agrees}."


def current_point(label: str, values: float, quality, kind: str = "decoder") -> dict:
    """The frontier's star: the variant measured now, with its 95% interval."""
    score = "embedding_cosine" if kind == "encoder" else "perplexity"
    low, high = quality.embedding_cosine_ci if kind == "encoder" else quality.perplexity_ci
    return {"label": label, "values": values, score: getattr(quality, score), "low": low, "high": high}


def quality_note(entry, quality, kind: str = "decoder") -> str:
    """How many held-out tokens the figures above rest on, what the intervals are, and what the weights are."""
    if kind == "encoder":
        size = (f"Measured now on {quality.texts} held-out news documents ({quality.tokens:,} tokens); 95% intervals "
                "from a bootstrap over documents.")
    else:
        size = (f"Measured now on {quality.tokens:,} held-out next-token predictions of news prose; 95% intervals "
                f"from a bootstrap over blocks of {BLOCK_TOKENS}, the ratio to the original paired (both models "
                "scored on the same blocks).")
    note = precision_note(entry)
    return f"{size} {note}" if note else size


def frontier_original(report: dict | None, live_perplexity: float) -> float:
    """The original's perplexity the frontier's lines mark: the committed report's (the markers' own yardstick,
    on its many tokens) when there is one, else the one measured now."""
    original = next((row for row in (report or {}).get("variants", []) if row["label"] == "original"), None)
    return original["perplexity"] if original and "perplexity" in original else live_perplexity


def frontier_caption(report: dict | None, quality, kind: str = "decoder", live_original: float | None = None) -> str:
    """What the frontier's markers, lines and bars are, with the evaluation size behind them."""
    mine = f"{quality.texts} documents" if kind == "encoder" else f"{quality.tokens:,} tokens"
    if report is None:
        return f"The star is your choice, measured now on {mine}; its bar is the 95% interval."
    unit = "held-out tokens" if kind != "encoder" else f"tokens of {report.get('eval_texts', 0)} held-out documents"
    lines = ""
    if live_original is not None:
        lines = (f" The lines mark the original on the committed tokens ({frontier_original(report, live_original):.1f}"
                 f"); on the {mine} measured now it scores {live_original:.1f}, so read the star against that.")
    return (f"Each marker is a variant converted and measured by `python -m explorer variants` on "
            f"{report['eval_tokens']:,} {unit} (committed results); the star is your choice, measured now on "
            f"{mine}. Bars are 95% intervals: where two bars overlap, the paired comparisons below decide.{lines}")
