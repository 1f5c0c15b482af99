"""Self vs causal: one sentence through an encoder and a decoder, to show what the causal mask changes."""

import streamlit as st

from explorer import ui
from explorer.charts.attention import head_heatmap, mask_heatmap
from explorer.stats import future_attention_share

ui.text_box()
state = ui.view_state()
ui.show_notices()
st.title("Self-attention vs causal attention")
st.markdown(
    "An **encoder** (all-MiniLM-L6-v2, a BERT) lets every token attend to every other token, before and after "
    "it. A **decoder** (SmolLM2) predicts the next token, so each token may attend only to itself and earlier "
    "tokens: the upper triangle is masked to exactly zero."
)

columns = st.columns(2)
for column, model_key in zip(columns, ["minilm", "smollm2"]):
    with column:
        run = ui.get_run(model_key, state.text)
        if run is None:
            continue
        model = ui.get_model(model_key)
        st.subheader(model.entry.label)
        layer = st.slider("Layer", 0, run.num_layers - 1, run.num_layers - 1, key=f"{model_key}-layer")
        head = st.selectbox("Head", range(run.num_heads), key=f"{model_key}-head", format_func=lambda h: f"H{h}")
        share = future_attention_share(run.attentions[layer])
        st.metric("Attention on later tokens (this layer, mean over heads)", f"{share:.1%}")
        ui.chart(head_heatmap(run.attentions[layer, head], run.tokens, f"Layer {layer}, head {head}"),
                 key=f"{model_key}-weights")
        ui.chart(mask_heatmap(run.masks[layer], run.tokens, "Mask"), key=f"{model_key}-mask")
