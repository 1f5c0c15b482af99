"""Home: the tokens of a text and where every head of a real model attends."""

import streamlit as st

from explorer import ui
from explorer.charts.attention import head_grid, head_heatmap, layer_head_overview, mask_heatmap

ui.text_box()
model_key = ui.model_picker()
state = ui.view_state()
ui.show_notices()

st.title("Where does the model look?")
run = ui.get_run(model_key, state.text)
if run is None:
    st.stop()
model = ui.get_model(model_key)
st.caption(f"{model.entry.description} Running on {model.device.type}.")

st.subheader(f"{len(run.tokens)} tokens, as the model sees them")
ui.token_strip(run.tokens)

layer, head = ui.layer_and_head(run.num_layers, run.num_heads)
window = run.layer_windows[layer]
st.caption(
    "Each small square is one head: **row = query** (the token looking), **column = key** (the token looked at); "
    "darker means more attention, and every row sums to 1."
)
kv_heads = getattr(model.config, "num_key_value_heads", None)
ui.chart(head_grid(run.attentions[layer], run.tokens, f"Layer {layer}: all {run.num_heads} heads", kv_heads), key="grid")

weights_column, mask_column = st.columns(2)
with weights_column:
    ui.chart(head_heatmap(run.attentions[layer, head], run.tokens, f"Layer {layer}, head {head}"), key="head")
with mask_column:
    if run.kind == "encoder":
        mask_title = "Mask: none (an encoder lets every token see every token)"
    elif window is not None and window < len(run.tokens):
        mask_title = f"Mask: causal, sliding window of {window} tokens"
    else:
        mask_title = "Mask: causal (a token sees only itself and earlier tokens)"
        if window is not None:
            mask_title += f"; window {window} > text"
    ui.chart(mask_heatmap(run.masks[layer], run.tokens, mask_title), key="mask")

st.subheader("Overview: every layer and head")
st.caption(
    "Rows are heads, columns are layers (L0 is nearest the input); each tile is one head's weights as above. "
    "A dark first column in a tile is an *attention sink*: a head with nothing useful to do parks its weight "
    "on the first token."
)
ui.chart(layer_head_overview(run.attentions, run.tokens), key="overview")
