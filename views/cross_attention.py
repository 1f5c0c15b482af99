"""Cross-attention: an encoder-decoder reads the text with its encoder and writes with its decoder, whose
queries look back at the encoder's tokens. Offline it shows a tiny model with random weights, labelled so."""

import streamlit as st

from explorer import export, ui
from explorer.charts.attention import head_grid, head_heatmap
from explorer.untrained import UNTRAINED_NOTE, is_untrained

ui.text_box()
model_key = ui.encoder_decoder_picker()
state = ui.view_state()
ui.show_notices()
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
target = ui.decoder_text(model_key, default=state.text if untrained else "")
run = ui.get_cross_run(model_key, state.text, target)
if run is None:
    st.stop()
note = f"<br>{UNTRAINED_NOTE}" if untrained else ""

st.markdown("**Encoder reads:**")
ui.token_strip(run.source_tokens)
st.markdown("**Decoder reads**" + (" (the model's own output):" if run.generated else ":"))
ui.token_strip(run.target_tokens)

left, middle, right = st.columns(3)
encoder_layer = ui.layer_slider("encoder_layer", "Encoder layer", run.encoder.shape[0], "The encoder", left)
decoder_layer = ui.layer_slider("decoder_layer", "Decoder layer", run.decoder.shape[0], "The decoder", middle)
head = ui.head_picker("cross_head", "Head", run.cross.shape[1], "This model", right)
about = {"model": model_key, "untrained": untrained, "head": head}  # what the exported numbers describe

encoder_column, decoder_column, cross_column = st.columns(3)
with encoder_column:
    ui.chart(head_heatmap(run.encoder[encoder_layer, head], run.source_tokens,
                          f"Encoder self-attention<br>layer {encoder_layer}, head {head}{note}"), key="encoder",
             numbers=export.heads(run.encoder[encoder_layer, head], run.source_tokens, **about, layer=encoder_layer))
    st.caption("No mask: every input token sees every other.")
with decoder_column:
    ui.chart(head_heatmap(run.decoder[decoder_layer, head], run.target_tokens,
                          f"Decoder causal self-attention<br>layer {decoder_layer}, head {head}{note}"), key="decoder",
             numbers=export.heads(run.decoder[decoder_layer, head], run.target_tokens, **about, layer=decoder_layer))
    st.caption("Causal: each output token sees only itself and the tokens before it.")
with cross_column:
    ui.chart(head_heatmap(run.cross[decoder_layer, head], run.target_tokens,
                          f"Cross-attention<br>layer {decoder_layer}, head {head}{note}", key_tokens=run.source_tokens),
             key="cross", numbers=export.heads(run.cross[decoder_layer, head], run.target_tokens,
                                               key_tokens=run.source_tokens, **about, layer=decoder_layer))
    st.caption("Rows: decoder tokens (queries). Columns: encoder tokens (keys). Nothing is masked.")

with ui.beside("self_causal"):
    ui.chart(head_grid(run.cross[decoder_layer], run.target_tokens, f"Cross-attention, decoder layer {decoder_layer}: "
                       f"all heads{note}", columns=2, key_tokens=run.source_tokens), key="cross-grid",
             numbers=export.heads(run.cross[decoder_layer], run.target_tokens, key_tokens=run.source_tokens,
                                  model=model_key, untrained=untrained, layer=decoder_layer))
ui.share_link()
