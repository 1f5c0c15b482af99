"""Variant lab: convert a model's attention (SmolLM2, Gemma-3, GPT-2 or all-MiniLM-L6-v2) to MHA, GQA, MQA or MLA
and see what changes and what it costs."""

import pandas as pd
import streamlit as st

from explorer import export, lab, ui, uptrain, uptrain_report
from explorer.charts.attention import head_heatmap
from explorer.charts.variants import (
    encoder_frontier_figure, energy_bars, frontier_figure, loss_curves, similarity_heatmap,
)
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
    ui.chart(head_heatmap(converted_run.attentions[layer, head], run.tokens,
                          f"{spec.label()}: layer {layer}, head {head}"), key="lab-converted",
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
ui.share_link()
