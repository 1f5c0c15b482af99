"""Cross-attention on a tiny randomly initialised T5 built here (offline): shapes, masks, labels, the page."""

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from explorer.charts.attention import head_grid, head_heatmap
from explorer.loading import load_model
from explorer.run import overview_attention, run_cross_attention
from explorer.untrained import UNTRAINED_NOTE, is_untrained, tiny_encoder_decoder
from tests.specs import array, figures

SOURCE = "The giant ate the apple because it was hungry"


@pytest.fixture(scope="module")
def tiny():
    return tiny_encoder_decoder(seed=0)


def test_three_kinds_of_attention_have_their_shapes(tiny):
    run = run_cross_attention(tiny, SOURCE, "the giant was hungry")
    S, T = len(run.source_tokens), len(run.target_tokens)
    assert run.source_tokens == ["[CLS]", "the", "giant", "ate", "the", "apple", "because", "it", "was", "hungry", "[SEP]"]
    assert run.target_tokens == ["[PAD]", "[CLS]", "the", "giant", "was", "hungry", "[SEP]"]  # start token first
    assert run.encoder.shape == (2, 4, S, S)  # (layers, heads, query, key)
    assert run.decoder.shape == (2, 4, T, T)
    assert run.cross.shape == (2, 4, T, S)  # decoder queries × encoder keys
    for weights in (run.encoder, run.decoder, run.cross):
        np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(run.decoder, k=1) == 0.0)  # the decoder is causal
    later = np.triu(np.ones((S, S), dtype=bool), k=1)
    assert run.encoder[..., later].min() > 0.0 and run.cross.min() > 0.0  # encoder and cross see everything
    assert not run.generated


def test_without_decoder_text_the_model_writes_its_own(tiny):
    run = run_cross_attention(tiny, SOURCE, "", max_new_tokens=5)
    assert run.generated and len(run.target_tokens) == 6  # start token + 5 greedy tokens
    assert run.cross.shape[-2:] == (6, len(run.source_tokens))


def test_the_tiny_model_is_labelled_untrained(tiny):
    assert is_untrained(tiny) and UNTRAINED_NOTE == "untrained (random weights)"
    assert UNTRAINED_NOTE in tiny.name and tiny.kind == "encoder-decoder"


def test_models_without_cross_attention_are_refused_with_a_sentence(tiny, minilm):
    with pytest.raises(ValueError, match="no cross-attention: choose an encoder-decoder"):
        run_cross_attention(minilm, SOURCE)
    with pytest.raises(ValueError, match="Cross-attention page"):
        overview_attention(tiny, SOURCE)


def test_rectangular_charts_label_queries_and_keys_apart():
    weights = np.full((2, 3, 5), 0.2, dtype=np.float32)  # 2 heads, 3 decoder tokens, 5 encoder tokens
    queries, keys = ["<s>", "Der", "Riese"], ["The", "giant", "ate", "it", "</s>"]
    figure = head_heatmap(weights[0], queries, "cross", key_tokens=keys)
    assert list(figure.layout.xaxis.ticktext) == keys and list(figure.layout.yaxis.ticktext) == queries
    assert figure.data[0].customdata[2][4].tolist() == ["#2 Riese", "#4 </s>"]
    grid = head_grid(weights, queries, "all heads", key_tokens=keys)
    assert np.asarray(grid.data[0].z).shape == (3, 2 * 6 - 1)  # two 3×5 tiles side by side
    with pytest.raises(ValueError, match="3 query and 4 key labels"):
        head_heatmap(weights[0], queries, "cross", key_tokens=keys[:4])


def test_cross_attention_page_labels_the_untrained_model_everywhere():
    app = AppTest.from_file("../app.py", default_timeout=180)
    app.query_params["encoder_decoder"] = "tiny-t5-untrained"  # the page opens on Whisper; T5 is a choice
    app.run()
    app.switch_page("views/cross_attention.py").run()
    assert not app.exception
    specs = figures(app)
    assert len(specs) == 4 and all(UNTRAINED_NOTE in title for title in specs)
    assert any("untrained (random weights)" in w.value for w in app.warning)
    cross = specs["Cross-attention<br>layer 1, head 0<br>untrained (random weights)"]
    assert array(cross["data"][0]["z"]).shape == (12, 11)  # decoder reads [PAD] + the 11 source tokens
    assert cross["layout"]["xaxis"]["ticktext"][0] == "[CLS]" and cross["layout"]["yaxis"]["ticktext"][0] == "[PAD]"

    app.text_input(key="target-tiny-t5-untrained").set_value("hungry giant").run()
    assert not app.exception
    cross = figures(app)["Cross-attention<br>layer 1, head 0<br>untrained (random weights)"]
    assert cross["layout"]["yaxis"]["ticktext"] == ["[PAD]", "[CLS]", "hungry", "giant", "[SEP]"]


def test_a_saved_encoder_decoder_loads_like_a_hub_model(tiny, tmp_path):
    """The route a hub id takes (config -> AutoModelForSeq2SeqLM, eager attention), tried on a local folder."""
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.kind == "encoder-decoder"
    run = run_cross_attention(loaded, SOURCE, "the giant was hungry")
    reference = run_cross_attention(tiny, SOURCE, "the giant was hungry")
    np.testing.assert_allclose(run.cross, reference.cross, atol=1e-6)  # the same weights, the same pictures
