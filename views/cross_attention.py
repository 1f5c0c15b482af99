"""Cross-attention: an encoder-decoder reads the text with its encoder and writes with its decoder, whose
queries look back at the encoder's tokens. Offline it shows a tiny model with random weights, labelled so."""

import streamlit as st

from explorer import export, ui
from explorer.charts.attention import head_grid, head_heatmap
from explorer.untrained import UNTRAINED_NOTE, is_untrained

ui.text_box()
model_key = ui.encoder_decoder_picker()
state = ui.view_state()
st.title("Cross-attention: the decoder reads the encoder")
model = ui.get_encoder_decoder(model_key)
if model is None:
    st.stop()
untrained = is_untrained(model)
if untrained:
    st.warning(f"**{model.name}.** Its weights are random, so the patterns below are noise: they show the *shapes* "
               "of the three kinds of attention, not what a trained model learns. Online, choose a Hugging Face "
               "id in the sidebar, such as Helsinki-NLP/opus-mt-en-de (English to German).")
st.caption(model.entry.description)
target = st.text_input("Decoder text", value=state.text if untrained else "", key=f"target-{model_key}",
                       help="What the decoder reads, one token at a time. Leave it empty to let the model write.")
run = ui.get_cross_run(model_key, state.text, target)
if run is None:
    st.stop()
note = f"<br>{UNTRAINED_NOTE}" if untrained else ""

st.markdown("**Encoder reads:**")
ui.token_strip(run.source_tokens)
st.markdown("**Decoder reads**" + (" (the model's own output):" if run.generated else ":"))
ui.token_strip(run.target_tokens)

left, middle, right = st.columns(3)
encoder_layer = left.slider("Encoder layer", 0, run.encoder.shape[0] - 1, run.encoder.shape[0] - 1)
decoder_layer = middle.slider("Decoder layer", 0, run.decoder.shape[0] - 1, run.decoder.shape[0] - 1)
head = right.selectbox("Head", range(run.cross.shape[1]), format_func=lambda h: f"H{h}")

encoder_column, decoder_column, cross_column = st.columns(3)
with encoder_column:
    ui.chart(head_heatmap(run.encoder[encoder_layer, head], run.source_tokens,
                          f"Encoder self-attention<br>layer {encoder_layer}, head {head}{note}"), key="encoder")
    st.caption("No mask: every input token sees every other.")
with decoder_column:
    ui.chart(head_heatmap(run.decoder[decoder_layer, head], run.target_tokens,
                          f"Decoder causal self-attention<br>layer {decoder_layer}, head {head}{note}"), key="decoder")
    st.caption("Causal: each output token sees only itself and the tokens before it.")
with cross_column:
    ui.chart(head_heatmap(run.cross[decoder_layer, head], run.target_tokens,
                          f"Cross-attention<br>layer {decoder_layer}, head {head}{note}", key_tokens=run.source_tokens),
             key="cross")
    st.caption("Rows: decoder tokens (queries). Columns: encoder tokens (keys). Nothing is masked.")
ui.downloads(f"cross-attention-L{decoder_layer}H{head}",
             {"csv": export.attention_csv(run.cross[decoder_layer, head], run.target_tokens, run.source_tokens)})

with ui.beside("self_causal"):
    ui.chart(head_grid(run.cross[decoder_layer], run.target_tokens, f"Cross-attention, decoder layer {decoder_layer}: "
                       f"all heads{note}", columns=2, key_tokens=run.source_tokens), key="cross-grid")
ui.share_link()
