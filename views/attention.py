"""Home: the tokens of a text and where every head of a real model attends, from a sentence up to 2048 tokens."""

import streamlit as st

from explorer import export, ui
from explorer.charts.attention import (
    head_grid, head_heatmap, layer_head_overview, mask_heatmap, mask_title, pooled_heatmap, summary_heatmap,
)

ui.text_box()
context = ui.context_length()
model_key = ui.model_picker()
state = ui.view_state()
ui.show_notices()

st.title("Where does the model look?")
run = ui.get_overview(model_key, state.text, context)
if run is None:
    st.stop()
model = ui.get_model(model_key)
num_tokens = len(run.tokens)
with ui.beside("qkv"):
    st.caption(f"{model.entry.description} Running on {model.device.type}.")
    with st.expander(f"{num_tokens} tokens, as the model sees them", expanded=num_tokens <= 64):
        ui.token_strip(run.tokens)
    st.caption("Each square below is a head: **row = query** (the token looking), **column = key** (the token "
               "looked at); darker means more attention, and every row sums to 1.")
layer, head = ui.layer_and_head(run.num_layers, run.num_heads)
log = ui.log_scale()

weights = ui.get_layer(model_key, run, layer)  # (H, T, T)
about = {"model": model.entry.key, "layer": layer}  # what the exported numbers describe
kv_heads = getattr(model.config, "num_key_value_heads", None)
with ui.beside("multi_head"):
    ui.chart(head_grid(weights, run.tokens, f"Layer {layer}: all {run.num_heads} heads", kv_heads,
                       max_cells=48, log_scale=log), key="grid",
             numbers=export.heads(weights, run.tokens, cells=48, **about))

first, end = ui.zoom_region(num_tokens)
zoomed = end - first < num_tokens
if zoomed:
    pooled_column, note_column = st.columns([2, 1])
    with pooled_column:
        ui.chart(pooled_heatmap(weights[head], f"Layer {layer}, head {head}: all {num_tokens} tokens, pooled",
                                zoom=(first, end), log_scale=log), key="pooled",
                 numbers=export.heads(weights[head], run.tokens, cells=128, **about, head=head))
    note_column.caption(f"All {num_tokens} tokens, averaged in blocks so the picture stays small. The red square "
                        f"is the region drawn token by token below (tokens {first}–{end - 1}); its rows need not "
                        "sum to 1, because the rest of each row lies on keys outside the region.")

region = f"<br>tokens {first}–{end - 1}" if zoomed else ""
with ui.beside("self_causal", (3, 1)):
    head_column, mask_column = st.columns(2)
    with head_column:
        ui.chart(head_heatmap(weights[head, first:end, first:end], run.tokens[first:end], f"Layer {layer}, head {head}"
                              + region, first_query=first, first_key=first, log_scale=log), key="head",
                 numbers=export.heads(weights[head, first:end, first:end], run.tokens[first:end], first=first,
                                      **about, head=head))
    with mask_column:
        ui.chart(mask_heatmap(run.mask(layer)[first:end, first:end], run.tokens[first:end],
                              mask_title(run.kind, run.layer_windows[layer], num_tokens) + region, first=first),
                 key="mask", numbers=export.mask(run.mask(layer)[first:end, first:end], run.tokens[first:end], first,
                                                 **about))

st.subheader("Every head in three numbers")
with ui.beside("head_summaries"):
    entropy, sink, distance = st.columns(3)
    with entropy:
        ui.chart(summary_heatmap(run.summaries.entropy, "Entropy", "bits"), key="entropy",
                 numbers=export.per_head(run.summaries.entropy, "entropy (bits)", model=model.entry.key))
    with sink:
        ui.chart(summary_heatmap(run.summaries.first_token, "Weight on the first token", "share", "Reds", 1.0),
                 key="sink", numbers=export.per_head(run.summaries.first_token, "weight on the first token",
                                                     model=model.entry.key))
    with distance:
        ui.chart(summary_heatmap(run.summaries.distance, "Mean distance", "tokens", "Greens"), key="distance",
                 numbers=export.per_head(run.summaries.distance, "mean distance (tokens)", model=model.entry.key))

st.subheader("Overview: every layer and head")
with ui.beside("quadratic_cost"):
    st.caption("Rows are heads, columns are layers (L0 is nearest the input); each tile is one head's weights, "
               f"pooled into at most {run.pooled.shape[-1]} blocks a side. A dark first column in a tile is an "
               "*attention sink*.")
    ui.chart(layer_head_overview(run.pooled, run.block_labels, log_scale=log), key="overview",
             numbers=export.overview(run.pooled, run.block_labels, model=model.entry.key))
ui.share_link()
