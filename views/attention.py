"""Home: the tokens of a text and where every head of a real model attends, from a sentence up to 2048 tokens."""

import streamlit as st

from explorer import export, ui
from explorer.charts.attention import (
    head_grid, head_heatmap, layer_head_overview, mask_heatmap, mask_title, pooled_heatmap, summary_heatmap,
)
from explorer.charts.flow import prediction_bars, rollout_heatmap, token_bars
from explorer.selection import hide_tokens, summed_rows

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
               "looked at); darker means more attention, and every row sums to 1. Click a head "
               "in the grid below to select it.")
log_column, special_column = st.columns(2)
with log_column:
    log = ui.log_scale()
specials = ui.special_tokens(model_key, run)
with special_column:
    hide = ui.hide_special_switch(specials, run.tokens, allowed=num_tokens <= 64)
link = ui.share_link_slot()


@st.fragment
def chosen_layer() -> list[int]:
    """Everything that depends on the layer and head, redrawn alone when they change (the rest of the page stays
    as it is); returns the query tokens chosen here, which the rollout below follows."""
    layer, head = ui.layer_and_head(run.num_layers, run.num_heads)
    weights = ui.get_layer(model_key, run, layer)  # (H, T, T)
    about = {"model": model.entry.key, "layer": layer}  # what the exported numbers describe
    shown_tokens, kept = run.tokens, list(range(num_tokens))
    if hide:  # special tokens dropped, each row renormalised over the keys left
        weights, kept = hide_tokens(weights, specials)  # (H, K, K)
        shown_tokens = [run.tokens[p] for p in kept]
        about["hidden_special_tokens"] = [f"#{p} {run.tokens[p]}" for p in specials]
        st.caption(f"Special tokens hidden ({', '.join(run.tokens[p] for p in specials)}): each row is divided by "
                   "what is left of it, so these are not the model's own weights.")
    kv_heads = getattr(model.config, "num_key_value_heads", None)
    with ui.beside("multi_head"):
        ui.chart(head_grid(weights, shown_tokens, f"Layer {layer}: all {run.num_heads} heads",
                           kv_heads, max_cells=48, log_scale=log, selected=head), key="grid",
                 numbers=export.heads(weights, shown_tokens, cells=48, **about),
                 on_select=lambda: ui.select_head_on_click("grid"))
    num_shown = len(shown_tokens)

    first, end = ui.zoom_region(num_shown)
    zoomed = end - first < num_shown
    if zoomed:
        pooled_column, note_column = st.columns([2, 1])
        with pooled_column:
            ui.chart(pooled_heatmap(weights[head], f"Layer {layer}, head {head}: all {num_tokens} tokens, pooled",
                                    zoom=(first, end), log_scale=log), key="pooled",
                     numbers=export.heads(weights[head], run.tokens, cells=128, **about, head=head))
        note_column.caption(f"All {num_tokens} tokens, averaged in blocks so the picture stays small. The red "
                            f"square is the region drawn token by token below (tokens {first}–{end - 1}); its rows "
                            "need not sum to 1, because the rest of each row lies on keys outside the region.")

    region = f"<br>tokens {first}–{end - 1}" if zoomed else ""
    with ui.beside("self_causal", (3, 1)):
        head_column, mask_column = st.columns(2)
        with head_column:
            ui.chart(head_heatmap(weights[head, first:end, first:end], shown_tokens[first:end],
                                  f"Layer {layer}, head {head}" + region, first_query=first, first_key=first,
                                  log_scale=log), key="head",
                     numbers=export.heads(weights[head, first:end, first:end], shown_tokens[first:end], first=first,
                                          **about, head=head))
        with mask_column:
            allowed = run.mask(layer)[kept][:, kept]  # (K, K)
            ui.chart(ui.unchanging_figure(mask_heatmap, "mask", allowed[first:end, first:end], shown_tokens[first:end],
                                          mask_title(run.kind, run.layer_windows[layer], num_tokens) + region,
                                          first=first),
                     key="mask", numbers=export.mask(allowed[first:end, first:end], shown_tokens[first:end], first,
                                                     **about))

    st.subheader("Where several query tokens look")
    queries = ui.query_tokens(run.tokens)  # a change redraws the whole page: the rollout below follows them
    shown_queries = [kept.index(q) for q in queries if q in kept]
    if shown_queries:
        summed = summed_rows(weights[head], shown_queries)  # (K,)
        summed_column, _ = st.columns([2, 1])
        with summed_column:
            ui.chart(token_bars(summed, shown_tokens, f"Layer {layer}, head {head}: attention of "
                                f"{len(shown_queries)} query token(s), summed", shown_queries, "summed weight"),
                     key="summed",
                     numbers=export.LabelledArray(summed, {"key": export.labelled(shown_tokens)}, "summed weight",
                                                  {**about, "head": head,
                                                   "queries": [f"#{q} {run.tokens[q]}" for q in queries]}))
    else:
        st.info("The chosen query tokens are all special tokens, which are hidden.")
    ui.share_link(link)  # this view's layer and head, also when only this part was redrawn
    return queries


queries = chosen_layer()
query_names = [f"#{q} {run.tokens[q]}" for q in queries]

st.subheader("Across layers: rollout and flow")
with ui.beside("rollout"):
    st.caption(f"Which input tokens the chosen query tokens ({', '.join(query_names)}) draw on, following attention "
               "down through the layers. **Approximations** of information flow (Abnar & Zuidema, 2020): each layer "
               "counts as its heads' mean attention plus the residual connection; values, MLPs and norms are left "
               "out. Each row of the rollout, and the flow, sums to 1.")
    rolled = ui.get_rollout(model_key, run)
    if rolled is not None:
        rollout_rows = rolled[:, queries].mean(axis=1)  # (L, T): after each layer, the chosen tokens' mean row
        ui.chart(ui.unchanging_figure(rollout_heatmap, "rollout", rollout_rows, run.tokens,
                                      "Attention rollout, layer by layer (approximation)"), key="rollout",
                 numbers=export.LabelledArray(rollout_rows, {"after layer": [f"L{l}" for l in range(run.num_layers)],
                                                             "input token": export.labelled(run.tokens)},
                                              "rollout share", {"model": model.entry.key, "queries": query_names,
                                                                "method": "rollout"}))
        flowed = ui.get_flow(model_key, run, queries)
        if flowed is not None:
            ui.chart(ui.unchanging_figure(token_bars, "flow", flowed, run.tokens,
                                          "Attention flow to the last layer (approximation)", queries, "share"), key="flow",
                     numbers=export.LabelledArray(flowed, {"input token": export.labelled(run.tokens)}, "flow share",
                                                  {"model": model.entry.key, "queries": query_names,
                                                   "method": "max-flow", "layer": run.num_layers - 1}))

st.subheader("Switch heads off")
if run.kind == "decoder":
    off = ui.heads_to_switch_off(run.num_layers, run.num_heads)
    if off:
        ablation = ui.get_ablation(model_key, run, off)
        if ablation is not None:
            names = ", ".join(f"L{layer_} H{head_}" for layer_, head_ in off)
            loss_column, top_column = st.columns(2)
            loss_column.metric(f"Loss on the text ({ablation.num_tokens - 1} predictions, nats)",
                               f"{ablation.after.loss:.3f}", f"{ablation.after.loss - ablation.before.loss:+.3f}",
                               delta_color="inverse", help=f"With all heads on: {ablation.before.loss:.3f}.")
            before, after = ablation.next_token_before, ablation.next_token_after
            top_column.metric("Next token, heads off", repr(after), "unchanged" if after == before else f"was {before!r}",
                              delta_color="off")
            ui.chart(ui.unchanging_figure(prediction_bars, "ablation", ablation.candidates, f"Next token with {names} off"),
                     key="ablation",
                     numbers=export.Table(ablation.rows(), {"model": model.entry.key, "heads_off": names,
                                                             "loss_all_heads": ablation.before.loss,
                                                             "loss_heads_off": ablation.after.loss}))
            st.caption("Measured on the real model: each chosen head's output is zeroed before its layer's output "
                       "projection, for this pass only; the model every visitor shares is not changed.")
else:
    st.caption("Head ablation measures the next-token prediction, so it needs a decoder such as SmolLM2.")

st.subheader("Every head in three numbers")
with ui.beside("head_summaries"):
    for key, values, name, unit, colours, zmax, value in (  # one under another: every layer gets its width
        ("entropy", run.summaries.entropy, "Entropy", "bits", "Viridis", None, "entropy (bits)"),
        ("sink", run.summaries.first_token, "Weight on the first token", "share", "Reds", 1.0,
         "weight on the first token"),
        ("distance", run.summaries.distance, "Mean distance", "tokens", "Greens", None, "mean distance (tokens)"),
    ):
        ui.chart(ui.unchanging_figure(summary_heatmap, key, values, name, unit, colours, zmax), key=key,
                 numbers=export.per_head(values, value, model=model.entry.key))

st.subheader("Overview: every layer and head")
with ui.beside("quadratic_cost"):
    st.caption("Rows are heads, columns are layers (L0 is nearest the input); each tile is one head's weights, "
               f"pooled into at most {run.pooled.shape[-1]} blocks a side. A dark first column in a tile is an "
               f"*attention sink*. Click a tile to select its layer and head.")
    ui.chart(ui.unchanging_figure(layer_head_overview, "overview", run.pooled, run.block_labels, log_scale=log),
             key="overview",
             numbers=export.overview(run.pooled, run.block_labels, model=model.entry.key),
             on_select=lambda: ui.select_head_on_click("overview"))
ui.share_link(link)
