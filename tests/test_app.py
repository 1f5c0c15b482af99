"""The app headless (AppTest): every page runs, draws the right heatmaps, and restores a shared link."""

import pytest
from streamlit.testing.v1 import AppTest

from tests.specs import array, figures

APP = "../app.py"


@pytest.fixture
def app():
    return AppTest.from_file(APP, default_timeout=180)


def test_home_draws_every_head_of_the_layer(app):
    app.run()
    assert not app.exception
    specs = figures(app)
    head = specs["Layer 0, head 0"]
    assert head["layout"]["xaxis"]["ticktext"] == ["The", "giant", "ate", "the", "apple", "because", "it", "was", "hungry"]
    assert array(head["data"][0]["z"]).shape == (9, 9)
    assert "Layer 0: all 9 heads" in specs
    assert array(specs["All heads × layers"]["data"][0]["z"]).shape == (9 * 10 - 1, 30 * 10 - 1)  # 9 heads × 30 layers of 9×9 tiles


def test_changing_layer_and_head_updates_charts_and_url(app):
    app.run()
    app.slider[0].set_value(12).run()
    app.get("button_group")[0].set_value(4).run()
    assert not app.exception
    assert "Layer 12, head 4" in figures(app)
    assert app.query_params["layer"] == "12" and app.query_params["head"] == "4"


def test_a_shared_link_restores_the_view(app):
    app.query_params.update({"text": "the cat saw the dog", "model": "minilm", "layer": "3", "head": "7"})
    app.run()
    assert not app.exception
    head = figures(app)["Layer 3, head 7"]
    assert head["layout"]["xaxis"]["ticktext"] == ["[CLS]", "the", "cat", "saw", "the", "dog", "[SEP]"]
    assert app.sidebar.text_area[0].value == "the cat saw the dog"


def test_a_bad_link_shows_notices_not_a_traceback(app):
    app.query_params.update({"model": "<script>", "layer": "99", "head": "banana"})
    app.run()
    assert not app.exception
    warnings = " ".join(w.value for w in app.warning)
    assert "Unknown model" in warnings and "30 layers" in warnings and "whole number" in warnings
    assert "Layer 29, head 0" in figures(app)


def test_empty_text_asks_for_a_sentence(app):
    app.run()
    app.sidebar.text_area[0].set_value("   ").run()
    assert not app.exception
    assert any("type a sentence" in i.value for i in app.info)


def test_self_vs_causal_page(app):
    app.run()
    app.switch_page("views/self_vs_causal.py").run()
    assert not app.exception
    shares = [m.value for m in app.metric]
    assert shares[1] == "0.0%" and float(shares[0].rstrip("%")) > 1.0  # decoder sees no future; encoder does
    assert len(app.get("plotly_chart")) == 6
    bars = figures(app)["Where 'it' looks, layer 5"]
    assert bars["layout"]["xaxis"]["ticktext"][0] == "[CLS]"


def test_the_share_link_carries_the_view(app):
    app.query_params.update({"text": "the cat saw the dog", "model": "minilm"})
    app.run()
    next(s for s in app.slider if s.label == "Layer").set_value(4).run()
    link = app.sidebar.code[0].value
    assert "text=the+cat+saw+the+dog" in link and "model=minilm" in link and "layer=4" in link
