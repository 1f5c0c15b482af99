"""Variant lab: convert a model's attention (SmolLM2, Gemma-3, GPT-2 or all-MiniLM-L6-v2) to MHA, GQA, MQA or MLA
and see what changes and what it costs."""

import pandas as pd
import streamlit as st

from explorer import committed, export, lab, published, ui, uptrain, uptrain_report
from explorer.charts.attention import head_heatmap
from explorer.charts.damage import damage_scatter
from explorer.charts.rope import layer_share_heatmap, pair_share_heatmap
from explorer.charts.variants import (
    encoder_frontier_figure, energy_bars, frontier_figure, loss_curves, similarity_heatmap,
)
from explorer.damage import checks_sentence
from explorer.rope_shares import decoupled_pairs, kept_sentence
from explorer.stats import group_similarity, pattern_similarity
from explorer.variants import attention_shape

ui.text_box()
state = ui.view_state()
ui.show_notices()
st.title("Variant lab: MHA, GQA, MQA and MLA on a real model")
chosen = ui.lab_model()
if chosen is None:
    st.stop()
model_key, original, family = chosen
encoder = original.kind == "encoder"
shape = attention_shape(original.config, original.entry.label)
st.caption(f"{original.entry.description} Every number below is measured on the converted model.")

choices = lab.choices_for(family.name, original.entry.label)
settings = ui.variant_controls(shape, choices)  # (variant, kv_heads, latent_rank, rope_dims, merge, form, svd)
methods = ui.conversion_methods(settings[0], settings[5], family.name)
spec, notices = lab.spec_from_view(*settings, shape, choices, methods)
ui.show_notices(notices)
conversion = ui.get_conversion(model_key, spec)
if conversion is None:
    st.stop()
quality, ref = ui.variant_quality(model_key, spec)
values = lab.cached_values(conversion.spec, shape)  # the ranks it chose, when chosen by sensitivity
original_values = shape.kv_values_per_layer

cache, *quality_columns, seconds = st.columns(5)
cache.metric("KV values / token / layer", f"{values:.0f}", f"{values / original_values - 1:+.0%} vs original",
             delta_color="inverse")
for column, (label, value, change, interval) in zip(quality_columns, lab.quality_metrics(quality, ref, original.kind)):
    column.metric(label, value, change, delta_color="inverse")
    column.caption(interval)
seconds.metric("Conversion", f"{conversion.seconds:.1f} s")
st.caption(lab.quality_note(original.entry, quality, original.kind))
measured_values, _ = ui.measured_kv(model_key, spec, state.text)
st.caption(lab.measured_sentence(measured_values, values, encoder))
score, original_score = lab.score(quality, original.kind), (1.0 if encoder else ref.perplexity)
interval = lab.score_interval(quality, original.kind)
if (reading := lab.verdict(spec, score, original_score, interval, original.kind)) is not None:
    (st.success if lab.holds_up(interval, original.kind) else st.warning)(reading)

st.subheader("The same head, before and after")
run = ui.get_run(model_key, state.text)
converted_run = ui.variant_run(model_key, spec, state.text)
layer, head = ui.layer_and_head(run.num_layers, run.num_heads)
before, after = st.columns(2)
with before:
    ui.chart(head_heatmap(run.attentions[layer, head], run.tokens, f"Original: layer {layer}, head {head}"),
             key="lab-original", numbers=export.heads(run.attentions[layer, head], run.tokens, model=model_key,
                                                      variant="original", layer=layer, head=head))
with after:
    wrap = ":" if len(spec.label()) <= 32 else "<br>"  # a long recipe gets its own line above the head
    ui.chart(head_heatmap(converted_run.attentions[layer, head], run.tokens,
                          f"{spec.label()}{wrap} layer {layer}, head {head}"), key="lab-converted",
             numbers=export.heads(converted_run.attentions[layer, head], run.tokens, model=model_key,
                                  variant=spec.label(), layer=layer, head=head))

st.subheader("Heads that share a KV head")
kv_heads = lab.kv_groups(spec, shape)
similarity = pattern_similarity(converted_run.attentions[layer])
with ui.beside("mqa_gqa"):
    if kv_heads < shape.heads:
        title = f"How alike the heads of layer {layer} look (orange: heads sharing one of {kv_heads} KV heads)"
    else:
        title = f"How alike the heads of layer {layer} look (every head has its own keys and values)"
    head_labels = [f"H{h}" for h in range(len(similarity))]
    ui.chart(similarity_heatmap(similarity, kv_heads, title), key="groups",
             numbers=export.LabelledArray(similarity, {"head": head_labels, "other head": head_labels},
                                          "pattern similarity", {"layer": layer, "kv_heads": kv_heads}))
    if kv_heads < shape.heads:
        groups = group_similarity(similarity, kv_heads)
        st.caption("Mean similarity between heads of the same group: "
                   + ", ".join(f"KV{g} {s:.2f}" for g, s in enumerate(groups))
                   + ". Sharing keys and values pulls a group's patterns together; queries still differ.")

if spec.variant == "mla":
    st.subheader("MLA inside")
    with ui.beside("mla"):
        rope = spec.rope_dims if spec.form == "decoupled" else 0
        st.markdown(f"Each token {'computes' if encoder else 'caches'} a **{spec.latent_rank}-wide latent**" +
                    (f" plus a **{rope}-wide RoPE key** shared by all heads" if rope else "") +
                    f", instead of {original_values} key and value numbers. "
                    + lab.absorb_note(spec, family.rope(original.model, 0) is not None, choices))
        energy = lab.energy_series(conversion)
        ui.chart(energy_bars(conversion.energy_kept, conversion.latent_ranks,
                             rope_key_kept=conversion.rope_key_energy_kept), key="energy",
                 numbers=export.series("layer", [f"L{i}" for i in range(len(conversion.energy_kept))], energy))
        if spec.form == "decoupled":
            st.caption(lab.rope_key_sentence(conversion))
            gap = ui.absorb_gap(model_key, spec, state.text)
            st.metric(lab.ABSORB_GAP_LABEL, f"{gap:.1e}", help=lab.ABSORB_GAP_HELP)

st.subheader("The frontier: quality against cache size")
report = lab.committed_report(model_key)
points = lab.frontier_points(report) if report else []
current = lab.current_point(spec.label(), values, quality, original.kind)
if encoder:
    ui.chart(encoder_frontier_figure(points, current), key="frontier",
             numbers=export.Table(points, {"current": current, "eval_tokens": report and report["eval_tokens"]}))
else:
    yardstick = lab.frontier_original(report, ref.perplexity)
    ui.chart(frontier_figure(points, yardstick, current), key="frontier",
             numbers=export.Table(points, {"current": current, "reference_perplexity": yardstick,
                                           "eval_tokens": report and report["eval_tokens"]}))
st.caption(lab.frontier_caption(report, quality, original.kind, None if encoder else ref.perplexity))
if not points:
    st.caption(f"No committed measurements of {original.entry.label} yet: `python -m explorer variants` makes them.")
if comparisons := (report or {}).get("comparisons"):
    st.markdown("**Paired comparisons** of the committed measurements, each decided from its 95% interval:\n"
                + "\n".join(f"- {lab.comparison_sentence(comparison)}" for comparison in comparisons))

st.subheader("Uptrain this variant")
if encoder:
    st.info("Uptraining trains next-token prediction; pick a decoder such as SmolLM2.")
    ui.share_link()
    st.stop()
ui.committed_uptraining()
with ui.beside("uptrain"):
    training = ui.uptrain_controls()
    pair = ui.uptrained_pair(model_key, spec, training)
if pair is not None:
    trained, control = pair
    after = ui.uptrained_quality(model_key, spec, training)
    control_after = ui.uptrained_quality(model_key, uptrain.CONTROL, training)
    rows = uptrain_report.quality_rows(lab.identity(ref), quality, after, control_after)
    st.dataframe(pd.DataFrame(rows), hide_index=True, column_config={
        "model": "Model",
        "perplexity": st.column_config.NumberColumn("Perplexity", format="%.1f"),
        "perplexity_ci_low": st.column_config.NumberColumn("95% low", format="%.1f"),
        "perplexity_ci_high": st.column_config.NumberColumn("95% high", format="%.1f"),
        "kl_nats": st.column_config.NumberColumn("KL from original (nats)", format="%.3f"),
        "kl_ci_low": st.column_config.NumberColumn("95% low", format="%.3f"),
        "kl_ci_high": st.column_config.NumberColumn("95% high", format="%.3f"),
        "top1_agreement": st.column_config.NumberColumn("Top-1 agreement", format="percent"),
        "top1_agreement_ci_low": st.column_config.NumberColumn("95% low", format="percent"),
        "top1_agreement_ci_high": st.column_config.NumberColumn("95% high", format="percent"),
        "eval_tokens": st.column_config.NumberColumn("Held-out tokens"),
    })
    ui.downloads("uptraining", {"csv": export.table_csv(rows), "json": export.table_json(rows)})
    st.markdown(uptrain_report.reading(spec, training, quality, after, control_after))
    curves = {spec.label(): trained.record.losses, "control": control.record.losses}
    tokens_per_step = training.sequence_tokens * training.batch_sequences
    ui.chart(loss_curves(curves, tokens_per_step), key="uptrain-loss",
             numbers=export.series("tokens", [(i + 1) * tokens_per_step for i in range(training.steps)], curves))
    st.caption(f"Trained {trained.record.trained_parameters:,} weights for {trained.record.seconds:.0f} s on "
               f"{trained.record.device} ({trained.record.precision})"
               + ("; loaded from the user cache." if trained.from_cache else "."))
    uptrained_run = ui.uptrained_run(model_key, spec, training, state.text)
    before_column, after_column = st.columns(2)
    with before_column:
        ui.chart(head_heatmap(converted_run.attentions[layer, head], run.tokens,
                              f"Converted, no training: layer {layer}, head {head}"), key="uptrain-before",
                 numbers=export.heads(converted_run.attentions[layer, head], run.tokens, variant=spec.label(),
                                      layer=layer, head=head))
    with after_column:
        ui.chart(head_heatmap(uptrained_run.attentions[layer, head], run.tokens,
                              f"After {training.tokens:,} tokens of uptraining"), key="uptrain-after",
                 numbers=export.heads(uptrained_run.attentions[layer, head], run.tokens, variant=spec.label(),
                                      uptrain_tokens=training.tokens, layer=layer, head=head))

st.subheader("Which rotary frequencies carry q·k")
st.caption("For each head of the original model, the share of |q·k| that each rotary pair carries: the mean "
           "|contribution| of the pair over every (query, key) pair the head may attend to, divided by the sum over "
           "pairs. Pair 0 turns fastest.")
if (shares := ui.rope_shares(model_key, ui.rope_source(), state.text)) is not None:
    kept = conversion.rope_pairs or decoupled_pairs(run.num_layers, spec.rope_dims)  # the pairs it chose, if any
    ui.chart(pair_share_heatmap(shares.shares[layer], shares.wavelengths[layer], kept[layer],
                                f"Layer {layer}: share of |q·k| per rotary pair, by head"), key="rope-layer",
             numbers=export.LabelledArray(shares.shares[layer], {"head": [f"H{h}" for h in range(run.num_heads)],
                                          "pair": [f"P{p}" for p in range(shares.shares.shape[-1])]},
                                          "share of |q·k|", {"layer": layer, "kept_pairs": kept[layer],
                                                             "text": shares.source, "tokens": shares.num_tokens}))
    mean_shares = shares.shares.mean(axis=1)  # (L, P): the mean over each layer's heads
    ui.chart(layer_share_heatmap(mean_shares, shares.wavelengths, kept, "Every layer: share of |q·k| per rotary "
                                 "pair, mean over heads"), key="rope-layers",
             numbers=export.LabelledArray(mean_shares, {"layer": [f"L{i}" for i in range(len(mean_shares))],
                                          "pair": [f"P{p}" for p in range(mean_shares.shape[-1])]},
                                          "share of |q·k|, mean over heads", {"kept_pairs": kept,
                                                                              "text": shares.source}))
    st.caption(kept_sentence(shares, kept, spec.rope_dims, spec.form == "decoupled"))

st.subheader("Which heads the conversion hurts")
st.caption("Every head, by how far its attention moved on the text (Jensen-Shannon divergence between original and "
           "converted rows, mean over queries) and by what its change alone costs the loss (first-order estimate). "
           "Click a head to see it before and after.")
if spec.variant == "original":
    st.info("Choose a variant above to see which heads it changes.")
elif (damage := ui.damage(model_key, spec, state.text, run, converted_run)) is not None:
    ui.chart(damage_scatter(damage.js, damage.loss_effect, f"{spec.label()}: every head, attention moved against "
                            "loss effect", selected=(layer, head)), key="damage",
             numbers=export.Table(damage.ranked("js", top=damage.js.size), {"variant": spec.label(),
                                                                            "tokens": damage.num_tokens}),
             on_select=lambda: ui.select_head_on_click("damage"))
    ranked = damage.ranked(ui.damage_order())
    st.dataframe(pd.DataFrame(ranked).drop(columns=["layer", "head_index"]), hide_index=True, column_config={
        "rank": "Rank", "head": "Head",
        "js_bits": st.column_config.NumberColumn("Attention moved (JS, bits)", format="%.3f"),
        "loss_estimate_nats": st.column_config.NumberColumn("Loss effect, estimate (nats)", format="%+.4f"),
        "loss_patched_nats": st.column_config.NumberColumn("Loss effect, patched (nats)", format="%+.4f"),
    })
    st.caption(checks_sentence(damage))
    before, after = st.columns(2)
    with before:
        ui.chart(head_heatmap(run.attentions[layer, head], run.tokens, f"Before: layer {layer}, head {head}"),
                 key="damage-original", numbers=export.heads(run.attentions[layer, head], run.tokens,
                                                             variant="original", layer=layer, head=head))
    with after:
        ui.chart(head_heatmap(converted_run.attentions[layer, head], run.tokens, f"After: layer {layer}, head {head}"),
                 key="damage-converted", numbers=export.heads(converted_run.attentions[layer, head], run.tokens,
                                                              variant=spec.label(), layer=layer, head=head))

st.subheader("Published conversions, beside ours")
st.caption("What papers report, with where it is printed; they measure task scores after training on other models, "
           "we measure perplexity on news prose, so the two tables share no axis.")
st.dataframe(pd.DataFrame(published.PUBLISHED), hide_index=True,
             column_order=["paper", "setting", "kv_reduction", "figure", "training", "metric"], column_config={"paper": "Paper", "setting": "Setting", "figure": "Published figure", "metric": "Metric",
                            "kv_reduction": st.column_config.NumberColumn("KV cut", format="percent"),
                            "training": "Training"})
st.markdown("\n".join(f"- **{paper}**: {source}. {checked}" for paper, source, checked in published.sources()))
ours = published.our_rows(report, committed.uptrain_rows())
st.markdown(f"**Ours**, from the committed results of {original.entry.label}: {published.OUR_METRIC} on "
            f"{(report or {}).get('eval_tokens', 0):,} tokens, a different metric, and no training unless the row "
            "says so.")
st.dataframe(pd.DataFrame(ours), hide_index=True, column_order=[
    "compares_with", "kv_values_per_token_per_layer", "kv_reduction", "perplexity", "perplexity_ci_low",
    "perplexity_ci_high", "training", "variant"], column_config={
    "compares_with": "Compares with", "variant": "Our variant", "training": "Training",
    "kv_values_per_token_per_layer": st.column_config.NumberColumn("KV values / token / layer", format="%.0f"),
    "kv_reduction": st.column_config.NumberColumn("KV cut", format="percent"),
    "perplexity": st.column_config.NumberColumn("Perplexity", format="%.1f"),
    "perplexity_ci_low": st.column_config.NumberColumn("95% low", format="%.1f"),
    "perplexity_ci_high": st.column_config.NumberColumn("95% high", format="%.1f")})
ui.downloads("published", {"csv": export.table_csv([*published.PUBLISHED, *ours]),
                           "json": export.table_json([*published.PUBLISHED, *ours])})
ui.share_link()
