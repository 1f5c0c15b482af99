"""The variant lab headless: a shared link converts the model, measures it and explains a collapse."""

import pytest
from streamlit.testing.v1 import AppTest

from explorer.charts.variants import frontier_figure, similarity_heatmap
from explorer.lab import spec_from_view, verdict
from explorer.stats import group_similarity, pattern_similarity
from explorer.variants import AttentionShape, VariantSpec
from tests.specs import array, figures

SMOLLM2 = AttentionShape(num_layers=30, heads=9, kv_heads=3, head_dim=64, model_name="SmolLM2")


def open_lab(query: dict[str, str]) -> AppTest:
    app = AppTest.from_file("../app.py", default_timeout=600)
    app.query_params.update(query)
    app.run()
    app.switch_page("views/variant_lab.py").run()
    return app


def test_mqa_by_mean_pooling_collapses_and_the_page_says_why():
    app = open_lab({"variant": "mqa", "layer": "3", "head": "5"})
    assert not app.exception
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["KV values / token / layer"] == "128"
    assert float(metrics["Perplexity"].replace(",", "")) > 1000  # measured: ~22,000 against ~42
    assert any("collapsed" in w.value for w in app.warning)
    specs = figures(app)
    converted = specs["mqa kv=1 mean: layer 3, head 5"]
    original = specs["Original: layer 3, head 5"]
    assert array(converted["data"][0]["z"]).shape == array(original["data"][0]["z"]).shape == (9, 9)
    assert "orange: heads sharing one of 1 KV heads" in " ".join(specs)


def test_impossible_settings_fall_back_with_a_sentence():
    spec, notices = spec_from_view("gqa", 4, None, None, "mean", "naive", "data", SMOLLM2)
    assert spec.kv_heads == 3 and "choose 1, 3 or 9 KV heads" in notices[0]
    spec, notices = spec_from_view("mla", None, 5000, 31, "mean", "decoupled", "data", SMOLLM2)
    assert spec.latent_rank == 128 and spec.rope_dims == 32 and "even rope_dims" in notices[0]


def test_verdicts_name_what_happened():
    assert "collapsed" in verdict(VariantSpec("mqa"), 20_000.0, 42.0)
    assert "Within 5%" in verdict(VariantSpec("mla", latent_rank=384), 42.5, 42.0)
    assert "needs training" in verdict(VariantSpec("mla", form="decoupled"), 400.0, 42.0)


def test_group_similarity_of_identical_heads_is_one():
    weights = pytest.importorskip("numpy").tile([[[1.0, 0.0], [0.5, 0.5]]], (4, 1, 1))  # 4 identical heads
    similarity = pattern_similarity(weights)
    assert similarity.shape == (4, 4) and abs(similarity - 1).max() < 1e-9
    assert group_similarity(similarity, 2) == [pytest.approx(1.0), pytest.approx(1.0)]
    assert len(similarity_heatmap(similarity, 2, "t").layout.shapes) == 2


def test_frontier_highlights_the_current_choice():
    points = [{"label": "mqa kv=1 mean", "values": 128, "perplexity": 20000.0},
              {"label": "mla naive r=256 data", "values": 256, "perplexity": 44.0}]
    figure = frontier_figure(points, 42.0, {"label": "mla naive r=192 data", "values": 192, "perplexity": 51.0})
    assert [trace.name for trace in figure.data] == ["gqa / mqa", "mla (naive)", "your choice"]
    with pytest.raises(ValueError, match="positive"):
        frontier_figure([{"label": "x", "values": 0, "perplexity": 1.0}], 42.0)
