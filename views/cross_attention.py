"""Cross-attention: an encoder-decoder reads its input with its encoder and writes with its decoder, whose
queries look back at the encoder. It opens on Whisper tiny.en, which hears the typed sentence spoken and finds
each word of its transcript in the sound; the tiny untrained T5 (random weights, labelled so) and hub
encoder-decoders remain as other choices."""

import numpy as np
import streamlit as st

from explorer import export, ui
from explorer.charts.attention import head_grid, head_heatmap
from explorer.charts.hearing import attention_over_audio, frames_heatmap, heads_over_audio
from explorer.hearing import word_error_rate
from explorer.untrained import UNTRAINED_NOTE, is_untrained

ui.text_box()
model_key = ui.encoder_decoder_picker()
state = ui.view_state()
ui.show_notices()
st.title("Cross-attention: the decoder reads the encoder")


def whisper_page() -> None:
    """Whisper hears the text: the clip, the transcript, then cross-, encoder and decoder attention over time."""
    model = ui.get_encoder_decoder(model_key)
    if model is None:
        st.stop()
    st.caption(model.entry.description)
    clip = ui.audio_for(state.text)
    if clip is None:
        st.stop()
    run = ui.get_hearing(model_key, clip)
    if run is None:
        st.stop()
    heard = f"**Whisper heard:** {run.transcript}"
    if state.audio == "speech":
        heard += f"  \n(word error rate against the typed text: {word_error_rate(state.text, run.transcript):.0%})"
    st.markdown(heard)
    st.markdown("**Click a word to hear its span** (times read from the cross-attention):")
    ui.word_player(run)

    under = st.segmented_control("Under the attention", ["waveform", "spectrogram"], default=state.under,
                                 key="under") or state.under
    ui.set_view(under=under)
    mel = run.mel if under == "spectrogram" else None
    layers, heads = run.cross.shape[:2]
    left, middle, right = st.columns(3)
    decoder_layer = ui.layer_slider("decoder_layer", "Decoder layer", layers, "The decoder", left)
    head = ui.head_picker("cross_head", "Head", heads, "This model", middle)
    encoder_layer = ui.layer_slider("encoder_layer", "Encoder layer", run.encoder.shape[0], "The encoder", right)
    marked = " (an alignment head)" if (decoder_layer, head) in run.alignment_heads else ""
    times = [f"{(frame + 0.5) * 0.02:.2f}s" for frame in range(run.frames)]
    about = {"model": model_key, "transcript": run.transcript, "audio": clip.source}

    ui.chart(attention_over_audio(run.cross[decoder_layer, head], run.sequence, clip.samples,
                                  f"Cross-attention, decoder layer {decoder_layer}, head {head}{marked}: "
                                  "each decoder token over the sound", mel=mel, words=run.words),
             key="cross-audio", numbers=export.heads(run.cross[decoder_layer, head], run.sequence, key_tokens=times,
                                                     **about, layer=decoder_layer, head=head))
    share = run.cross_real_share[decoder_layer, head]
    st.caption(f"Rows: the decoder's input tokens (queries). Columns: 20 ms encoder frames of the clip. Before "
               f"cutting at the clip's end, this head gave the clip {share.mean():.0%} of its attention on average "
               "(the rest went to the silence that pads the 30 s window); each row is renormalised over the clip.")

    predicted = [*run.tokens, "<|endoftext|>"]  # row i of the alignment matrix is the step that writes token i
    average = np.mean([run.cross[layer, head_, 1:-1] for layer, head_ in run.alignment_heads], axis=0)  # (n + 1, F)
    with ui.beside("alignment"):
        ui.chart(attention_over_audio(average, predicted, clip.samples,
                                      f"The {len(run.alignment_heads)} alignment heads, averaged, with word timings",
                                      mel=mel, words=run.words),
                 key="alignment-average", numbers=export.heads(average, predicted, key_tokens=times, **about,
                                                                heads=str(run.alignment_heads)))
        ui.chart(attention_over_audio(run.alignment, predicted, clip.samples,
                                      "Filtered alignment (normalised per frame, median-filtered) and its time path",
                                      words=run.words, path=run.path, colour_title="score"),
                 key="alignment-path", numbers=export.Table(
                     [{"word": w.text, "start_s": round(w.start, 3), "end_s": round(w.end, 3)} for w in run.words],
                     about))
    alignment = np.stack([run.cross[layer, head_, 1:-1] for layer, head_ in run.alignment_heads])  # (K, n + 1, F)
    ui.chart(heads_over_audio(alignment, run.alignment_heads, predicted,
                              "Each alignment head that config.json names (rows: the token being written)"),
             key="alignment-heads", numbers=export.LabelledArray(
                 alignment, {"head": [f"L{layer}H{h}" for layer, h in run.alignment_heads], "query": predicted,
                             "key": times}, "weight", about))

    encoder_column, decoder_column = st.columns(2)
    with encoder_column:
        ui.chart(frames_heatmap(run.encoder[encoder_layer, head].astype(np.float32),
                                f"Encoder self-attention over the sound<br>layer {encoder_layer}, head {head}"),
                 key="encoder-frames", numbers=export.heads(run.encoder[encoder_layer, head].astype(np.float32), times,
                                                            **about, layer=encoder_layer, head=head))
        st.caption("No mask: every 20 ms frame sees every other (cut here to the clip's frames).")
    with decoder_column:
        ui.chart(head_heatmap(run.decoder[decoder_layer, head], run.sequence,
                              f"Decoder causal self-attention<br>layer {decoder_layer}, head {head}"), key="decoder-text",
                 numbers=export.heads(run.decoder[decoder_layer, head], run.sequence, **about, layer=decoder_layer))
        st.caption("Causal: each token of the transcript sees only itself and the tokens before it.")
    ui.share_link()


if ui.is_whisper(model_key):
    whisper_page()
    st.stop()

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
