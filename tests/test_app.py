"""The app headless (AppTest): every page runs, draws the right heatmaps, and restores a shared link."""

import pytest
from streamlit.testing.v1 import AppTest

from explorer import export
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


def open_page(page: str, query: dict[str, str]) -> AppTest:
    """A shared link to `page`: the session's first run is that page, with the link's parameters."""
    app = AppTest.from_file(APP, default_timeout=300)
    app.query_params.update(query)
    app.switch_page(page)
    app.run()
    return app


def test_a_link_restores_both_columns_and_the_followed_token_of_self_vs_causal():
    app = open_page("views/self_vs_causal.py", {"minilm_layer": "2", "minilm_head": "5", "smollm2_layer": "7",
                                                "smollm2_head": "8", "follow": "apple"})
    assert not app.exception
    assert list(figures(app)) == ["Where 'apple' looks, layer 2", "Layer 2, head 5", "Mask",
                                  "Where 'apple' looks, layer 7", "Layer 7, head 8"]  # both masks are titled "Mask"
    assert app.selectbox(key="follow").value == "apple" and app.slider(key="smollm2_layer").value == 7
    link = app.sidebar.code[0].value
    assert all(part in link for part in ("minilm_layer=2", "minilm_head=5", "smollm2_layer=7", "follow=apple"))


def test_a_bad_self_vs_causal_link_is_corrected_with_notices():
    app = open_page("views/self_vs_causal.py", {"minilm_layer": "9", "smollm2_head": "20", "follow": "zebra"})
    assert not app.exception
    warnings = " ".join(w.value for w in app.warning)
    assert "all-MiniLM-L6-v2 (encoder, MHA) has 6 layers (0-5); showing layer 5." in warnings
    assert "SmolLM2-135M-Instruct (decoder, GQA) has 9 heads per layer" in warnings and "following 'it'" in warnings
    assert "Where 'it' looks, layer 5" in figures(app)


def test_a_link_restores_the_cross_attention_view():
    app = open_page("views/cross_attention.py", {"encoder_decoder": "tiny-t5-untrained", "encoder_layer": "0",
                                                 "decoder_layer": "0", "cross_head": "3", "target": "hungry giant"})
    assert not app.exception
    specs = figures(app)
    assert "Encoder self-attention<br>layer 0, head 3<br>untrained (random weights)" in specs
    cross = specs["Cross-attention<br>layer 0, head 3<br>untrained (random weights)"]
    assert cross["layout"]["yaxis"]["ticktext"] == ["[PAD]", "[CLS]", "hungry", "giant", "[SEP]"]
    link = app.sidebar.code[0].value
    assert "target=hungry+giant" in link and "cross_head=3" in link and "encoder_layer=0" in link

    # an empty decoder text: the model writes
    writes = open_page("views/cross_attention.py", {"encoder_decoder": "tiny-t5-untrained", "target": ""})
    assert any("the model's own output" in text.value for text in writes.markdown)
    assert "target=" in writes.sidebar.code[0].value

    bad = open_page("views/cross_attention.py", {"encoder_decoder": "tiny-t5-untrained", "decoder_layer": "5",
                                                  "cross_head": "4"})
    warnings = " ".join(w.value for w in bad.warning)
    assert "The decoder has 2 layers (0-1); showing layer 1." in warnings and "4 heads per layer" in warnings


def test_a_link_restores_the_kv_page_axis_and_measured_tokens():
    app = open_page("views/kv_cache.py", {"config": "mistral-7b", "log_context": "0", "measure_tokens": "256",
                                          "cache_view": "with-weights"})  # (auto: cache only, 4k window)
    assert not app.exception
    curve = figures(app)["Memory for weights and KV cache"]
    assert curve["layout"]["xaxis"].get("type", "linear") == "linear"
    assert app.toggle(key="log_context").value is False and app.slider(key="measure_tokens").value == 256


def test_a_link_restores_the_scaling_page_roofline():
    app = open_page("views/scaling.py", {"gpu": "H200"})
    assert not app.exception
    decode = next(spec for title, spec in figures(app).items() if title.startswith("Decode"))
    assert any(trace["name"] == "MHA bound, H200" for trace in decode["data"])


DECOUPLED_MLA = {"variant": "mla", "form": "decoupled", "latent_rank": "256", "rope_dims": "32", "svd": "plain"}


@pytest.mark.parametrize("page", ["attention", "self_vs_causal", "cross_attention", "kv_cache", "scaling",
                                  "variant_lab"])
def test_every_chart_offers_the_numbers_behind_it(page):
    query = {"text": "the cat saw the dog", **(DECOUPLED_MLA if page == "variant_lab" else {})}  # every lab chart
    app = open_page(f"views/{page}.py", query)
    assert not app.exception
    charts = [chart.proto.id.split("-", 2)[2] for chart in app.get("plotly_chart")]  # "$$ID-<hash>-<key>"
    buttons = {button.key for button in app.download_button}
    assert charts and all({f"csv-{key}", f"json-{key}"} <= buttons for key in charts), (charts, buttons)
    if export.png_export_available():  # rendered on the server only when clicked
        assert all({f"png-{key}", f"svg-{key}", f"pdf-{key}"} <= buttons for key in charts)
