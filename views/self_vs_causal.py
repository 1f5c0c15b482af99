"""Self vs causal: one sentence through an encoder and a decoder, to show what the causal mask changes."""

import streamlit as st

from explorer import export, ui
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
    query_word = ui.token_to_follow(
        "Follow one token: where does it look in each model (mean over the layer's heads)?", words
    )

for column, (model_key, run) in zip(st.columns(2), runs.items()):
    with column:
        model = ui.get_model(model_key)
        label = model.entry.label
        st.subheader(label)
        layer = ui.layer_slider(f"{model_key}_layer", "Layer", run.num_layers, label)
        head = ui.head_picker(f"{model_key}_head", "Head", run.num_heads, label)
        share = future_attention_share(run.attentions[layer])
        st.metric("Attention on later tokens (this layer, mean over heads)", f"{share:.1%}")
        about = {"model": model_key, "text": state.text, "layer": layer}
        if words:
            query = run.tokens.index(query_word)
            row = run.attentions[layer, :, query].mean(axis=0)  # (T,) mean over heads
            ui.chart(query_bars(row, run.tokens, query, f"Where '{query_word}' looks, layer {layer}"),
                     key=f"{model_key}-query", numbers=export.query_row(row, run.tokens, query, **about, heads="mean"))
        ui.chart(head_heatmap(run.attentions[layer, head], run.tokens, f"Layer {layer}, head {head}"),
                 key=f"{model_key}-weights", numbers=export.heads(run.attentions[layer, head], run.tokens, **about,
                                                                   head=head))
        ui.chart(mask_heatmap(run.masks[layer], run.tokens, "Mask"), key=f"{model_key}-mask",
                 numbers=export.mask(run.masks[layer], run.tokens, **about))
ui.share_link()
