"""Self vs causal: one sentence through an encoder and a decoder, to show what the causal mask changes."""

import streamlit as st

from explorer import ui
from explorer.charts.attention import head_heatmap, mask_heatmap, query_bars
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

runs = {key: ui.get_run(key, state.text) for key in ["minilm", "smollm2"]}
if any(run is None for run in runs.values()):
    st.stop()
words = list(dict.fromkeys(t for t in runs["smollm2"].tokens if t in runs["minilm"].tokens))
if words:
    query_word = st.selectbox(
        "Follow one token: where does it look in each model (mean over the layer's heads)?",
        words,
        index=words.index("it") if "it" in words else len(words) - 1,
    )

for column, (model_key, run) in zip(st.columns(2), runs.items()):
    with column:
        model = ui.get_model(model_key)
        st.subheader(model.entry.label)
        layer = st.slider("Layer", 0, run.num_layers - 1, run.num_layers - 1, key=f"{model_key}-layer")
        head = st.selectbox("Head", range(run.num_heads), key=f"{model_key}-head", format_func=lambda h: f"H{h}")
        share = future_attention_share(run.attentions[layer])
        st.metric("Attention on later tokens (this layer, mean over heads)", f"{share:.1%}")
        if words:
            query = run.tokens.index(query_word)
            row = run.attentions[layer, :, query].mean(axis=0)  # (T,) mean over heads
            ui.chart(query_bars(row, run.tokens, query, f"Where '{query_word}' looks, layer {layer}"),
                     key=f"{model_key}-query")
        ui.chart(head_heatmap(run.attentions[layer, head], run.tokens, f"Layer {layer}, head {head}"),
                 key=f"{model_key}-weights")
        ui.chart(mask_heatmap(run.masks[layer], run.tokens, "Mask"), key=f"{model_key}-mask")
ui.share_link()
