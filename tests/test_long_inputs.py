"""Long inputs on SmolLM2 with real news prose: the reduced pass, per-head summaries, one layer recomputed on
demand, and the home page's payload (measured from the figure data it sends) within 2 MB up to 1024 tokens."""

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from explorer.charts.attention import colour_scale, pooled_heatmap
from explorer.prose import prose
from explorer.run import fill_with_prose, layer_attention, overview_attention, run_attention
from explorer.summaries import block_edges, pool, summarise_layer
from tests.specs import array, figures

SENTENCE = "The giant ate the apple because it was hungry"
PAYLOAD_BUDGET = 2_000_000  # bytes of plotly JSON the whole home page may send


@pytest.fixture(scope="module")
def long_overview(smollm2):
    """256 tokens of news prose with nothing kept, so every layer must be recomputed on demand."""
    return overview_attention(smollm2, fill_with_prose(SENTENCE, 256), max_tokens=256, keep_bytes=0)


def page_payload(app) -> dict[str, int]:
    """Bytes of each plotly figure spec on the page, by title."""
    return {title: len(json.dumps(spec)) for title, spec in figures(app).items()}


def test_prose_fills_the_context_after_the_text(smollm2):
    text = fill_with_prose(SENTENCE, 1024)
    assert text.startswith(SENTENCE + "\n\n") and text[len(SENTENCE) + 2 :] in prose("evaluation")
    assert len(smollm2.tokenizer(text)["input_ids"]) > 1024  # enough to fill it; the run cuts it


def test_reduced_pass_keeps_pooled_tiles_and_summaries(long_overview):
    run = long_overview
    assert len(run.tokens) == 256 and run.tokens[:2] == ["The", "giant"] and run.truncated
    assert run.kept is None  # nothing of size (L, H, T, T) is held
    assert run.pooled.shape == (30, 9, 24, 24) and len(run.block_labels) == 24
    np.testing.assert_allclose(run.pooled.sum(-1), 1.0, atol=1e-4)  # pooled rows still sum to 1
    for values in (run.summaries.entropy, run.summaries.first_token, run.summaries.distance):
        assert values.shape == (30, 9)
    assert (run.summaries.entropy >= 0).all() and (run.summaries.entropy <= np.log2(256)).all()
    assert (run.summaries.distance >= 0).all() and (run.summaries.distance <= 255).all()
    # Measured on SmolLM2: the first two layers hardly look at token 0; from layer 12 on it holds about half of
    # the weight, and some heads park nearly all of it there (attention sinks).
    sinks = run.summaries.first_token
    assert sinks[:2].max() < 0.1 and sinks[12:].mean() > 0.4 and sinks.max() > 0.9


def test_one_layer_recomputed_matches_the_reduced_pass(smollm2, long_overview):
    weights = layer_attention(smollm2, long_overview, 7)  # a pass that stops after layer 7
    assert weights.shape == (9, 256, 256) and weights.dtype == np.float32
    assert np.all(np.triu(weights, k=1) == 0.0)  # causal
    np.testing.assert_allclose(pool(weights, 24), long_overview.pooled[7], atol=1e-5)
    entropy, first_token, distance = summarise_layer(weights)
    np.testing.assert_allclose(entropy, long_overview.summaries.entropy[7], rtol=1e-5)
    np.testing.assert_allclose(distance, long_overview.summaries.distance[7], rtol=1e-5)
    with pytest.raises(ValueError, match="choose a layer from 0 to 29"):
        layer_attention(smollm2, long_overview, 30)


def test_short_text_keeps_every_layer_equal_to_a_plain_run(smollm2):
    overview = overview_attention(smollm2, SENTENCE)
    plain = run_attention(smollm2, SENTENCE)
    assert overview.tokens == plain.tokens and overview.kept is not None
    np.testing.assert_allclose(layer_attention(smollm2, overview, 3), plain.attentions[3], atol=1e-3)  # float16 copy
    assert np.array_equal(overview.mask(3), plain.masks[3])


def test_a_context_longer_than_the_model_reads_is_refused_with_a_sentence(minilm):
    with pytest.raises(ValueError, match="reads at most 512 tokens; choose a context of 512 tokens or fewer"):
        overview_attention(minilm, fill_with_prose(SENTENCE, 1024), max_tokens=1024)


def test_summaries_of_known_patterns():
    one_hot = np.zeros((1, 4, 4), dtype=np.float32)
    one_hot[0, np.arange(4), 0] = 1.0  # every query looks at token 0: a perfect sink
    entropy, first_token, distance = summarise_layer(one_hot)
    assert entropy[0] == 0.0 and first_token[0] == 1.0 and distance[0] == pytest.approx((0 + 1 + 2 + 3) / 4)
    uniform = np.full((1, 4, 8), 1 / 8, dtype=np.float32)  # 4 queries, the last 4 of 8 positions
    assert summarise_layer(uniform)[0][0] == pytest.approx(3.0)  # log2(8) bits
    with pytest.raises(ValueError, match="heads, query, key"):
        summarise_layer(np.ones((4, 4)))


def test_log_colour_scale_and_pooled_head():
    weights = np.array([[1.0, 0.0], [0.999, 0.001]], dtype=np.float32)
    scaled = colour_scale(weights, log_scale=True)
    np.testing.assert_allclose(scaled["z"], [[0.0, -4.0], [np.log10(0.999), -3.0]], atol=1e-6)
    assert scaled["colorbar"]["ticktext"][0] == "0.0001" and scaled["zmax"] == 0.0
    figure = pooled_heatmap(np.tril(np.ones((300, 300))) / np.arange(1, 301)[:, None], "head", cells=100, zoom=(10, 40))
    assert np.asarray(figure.data[0].z).shape == (100, 100)
    assert list(figure.data[0].x[:2]) == list(block_edges(300, 100)[:2])  # cells sit at token positions
    assert figure.layout.shapes[0].x0 == 9.5 and figure.layout.shapes[0].x1 == 39.5


def test_home_page_at_256_tokens_stays_within_the_payload_budget():
    app = AppTest.from_file("../app.py", default_timeout=600)
    app.run()
    app.sidebar.selectbox(key="context_length").set_value(256).run()
    assert not app.exception
    sizes = page_payload(app)
    assert sizes["All heads × layers"] < 1_000_000, sizes
    assert sum(sizes.values()) < PAYLOAD_BUDGET, sizes
    specs = figures(app)
    zoom = specs["Layer 0, head 0<br>tokens 0–63"]
    assert array(zoom["data"][0]["z"]).shape == (64, 64) and zoom["data"][0]["customdata"][0][1] == ["#0 The", "#1 giant"]
    assert array(specs["Layer 0, head 0: all 256 tokens, pooled"]["data"][0]["z"]).shape == (128, 128)
    assert array(specs["All heads × layers"]["data"][0]["z"]).shape == (9 * 25 - 1, 30 * 25 - 1)
    assert array(specs["Weight on the first token"]["data"][0]["z"]).shape == (9, 30)

    app.slider(key="zoom").set_value((100, 164)).run()
    app.toggle(key="log_scale").set_value(True).run()
    assert not app.exception
    zoom = figures(app)["Layer 0, head 0<br>tokens 100–163"]
    assert array(zoom["data"][0]["y"])[0] == 100 and zoom["data"][0]["zmin"] == -4  # true positions, log colours
    assert any("Why several heads?" in m.value for m in app.markdown)  # the words beside the picture


def test_home_page_at_1024_tokens_works_and_stays_small():
    app = AppTest.from_file("../app.py", default_timeout=600)
    app.run()
    app.sidebar.selectbox(key="context_length").set_value(1024).run()
    app.slider[0].set_value(3).run()  # a layer recomputed on demand, by a pass that stops after it
    assert not app.exception
    sizes = page_payload(app)
    assert "Layer 3, head 0: all 1024 tokens, pooled" in sizes
    assert sum(sizes.values()) < PAYLOAD_BUDGET, sizes


def test_a_link_restores_context_zoom_and_log_colours():
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file("../app.py", default_timeout=600)
    app.query_params.update({"context": "256", "zoom": "100-140", "log_colours": "1", "layer": "2", "head": "1"})
    app.run()
    assert not app.exception
    assert app.sidebar.selectbox(key="context_length").value == 256
    assert app.slider(key="zoom").value == (100, 140)
    assert app.toggle(key="log_scale").value is True
    assert any("tokens 100–139" in title for title in figures(app))
