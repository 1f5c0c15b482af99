"""The variant lab headless: a shared link converts the model (SmolLM2 or the MiniLM encoder), measures it and
explains a collapse."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from explorer.catalogue import CATALOGUE
from explorer.charts.variants import encoder_frontier_figure, frontier_figure, similarity_heatmap
from explorer.lab import ABSORB_GAP_LABEL, RESULTS, choices_for, frontier_points, holds_up, spec_from_view, verdict
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


def test_a_decoupled_link_names_the_absorbed_gap_and_shows_what_the_shared_rope_key_loses():
    app = open_lab({"text": "The giant ate the apple because it was hungry.", "variant": "mla", "form": "decoupled",
                    "latent_rank": "256", "rope_dims": "32", "svd": "plain"})
    assert not app.exception, [e.value for e in app.exception]
    metrics = {m.label: m.value for m in app.metric}
    assert float(metrics[ABSORB_GAP_LABEL]) < 1e-9  # per-layer attention outputs, float64: the same function
    assert not any("logit" in label for label in metrics)
    energy = figures(app)["Energy kept per layer: the latent, and the one RoPE key shared by every head"]
    latent, rope_key = (array(trace["y"]) for trace in energy["data"])
    assert len(latent) == len(rope_key) == 30 and latent.min() > 0.9  # rank 256 of 288 keeps nearly everything
    assert 0.2 < rope_key.mean() < 0.5  # measured 0.33: three KV heads' RoPE keys averaged into one
    sentence = next(c.value for c in app.caption if "shared key, which keeps" in c.value)
    assert f"{rope_key.mean():.1%}" in sentence


def test_impossible_settings_fall_back_with_a_sentence():
    spec, notices = spec_from_view("gqa", 4, None, None, "mean", "naive", "data", SMOLLM2)
    assert spec.kv_heads == 3 and "choose 1, 3 or 9 KV heads" in notices[0]
    spec, notices = spec_from_view("mla", None, 5000, 31, "mean", "decoupled", "data", SMOLLM2)
    assert spec.latent_rank == 128 and spec.rope_dims == 32 and "even rope_dims" in notices[0]


def test_verdicts_name_what_happened_and_come_from_the_interval():
    assert "collapsed" in verdict(VariantSpec("mqa"), 20_000.0, 42.0, (400.0, 560.0))
    mla = VariantSpec("mla", latent_rank=384)
    assert "Within 5%" in verdict(mla, 42.5, 42.0, (1.004, 1.02)) and holds_up((1.004, 1.02))
    # the same point estimate, a wider interval: no claim either way
    unsure = verdict(mla, 42.5, 42.0, (0.97, 1.08))
    assert "Can't tell at this size" in unsure and "straddles 1.05" in unsure and not holds_up((0.97, 1.08))
    assert verdict(mla, 46.0, 42.0, (1.07, 1.12)) is None and not holds_up((1.07, 1.12))
    assert "needs training" in verdict(VariantSpec("mla", form="decoupled"), 400.0, 42.0, (8.0, 11.0))
    assert "collapsed" not in (verdict(VariantSpec("mqa"), 600.0, 42.0, (9.0, 20.0)) or "")  # 10x not certain


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
    assert [trace.name for trace in figure.data] == ["gqa / mqa", "mla (naive)", "your choice", "off-scale (above x4)"]
    off_scale = figure.data[-1]  # the collapsed MQA sits on the top edge, its true perplexity in its hover
    assert list(off_scale.y) == [4 * 42.0] and off_scale.customdata[0][0] == "mqa kv=1 mean"
    assert 10 ** figure.layout.yaxis.range[1] == pytest.approx(4 * 42.0)  # the axis stops at 4x the original
    assert "x1 (42.0)" in figure.layout.yaxis.ticktext and "x2" in figure.layout.yaxis.ticktext
    assert [round(a.y, 3) for a in figure.layout.annotations] == [1.623, 1.644]  # log10 on the log axis, not 42.0
    assert figure.data[0].error_y.array is None  # points without intervals draw no bars
    with pytest.raises(ValueError, match="positive"):
        frontier_figure([{"label": "x", "values": 0, "perplexity": 1.0}], 42.0)


def test_frontier_draws_each_interval_as_an_error_bar():
    points = [{"label": "mqa kv=1 mean", "values": 128, "perplexity": 20000.0, "low": 18000.0, "high": 23000.0},
              {"label": "mla naive r=256 data", "values": 256, "perplexity": 44.0, "low": 43.0, "high": 45.5}]
    current = {"label": "mla naive r=192 data", "values": 192, "perplexity": 51.0, "low": 40.0, "high": 66.0}
    figure = frontier_figure(points, 42.0, current)
    bars = {trace.name: trace.error_y for trace in figure.data}
    assert list(bars["gqa / mqa"].array) == [3000.0] and list(bars["gqa / mqa"].arrayminus) == [2000.0]
    assert list(bars["mla (naive)"].array) == [1.5] and list(bars["your choice"].arrayminus) == [11.0]
    with pytest.raises(ValueError, match="inside its interval"):
        frontier_figure([{**points[1], "low": 45.0}], 42.0)
    with pytest.raises(ValueError, match="both bounds"):
        frontier_figure([{"label": "x", "values": 8, "perplexity": 50.0, "low": 40.0}], 42.0)


MINILM = AttentionShape(num_layers=6, heads=12, kv_heads=12, head_dim=32, model_name="all-MiniLM-L6-v2")


def test_minilm_link_shows_encoder_metrics_and_its_frontier():
    app = open_lab({"model": "minilm", "variant": "mla", "latent_rank": "192"})
    assert not app.exception
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["KV values / token / layer"] == "192"
    assert 0.9 < float(metrics["Embedding cosine"]) <= 1.0  # committed report: 0.983 on 8+ documents
    assert "Similarity rank correlation" in metrics and "Hidden-state relative error" in metrics
    assert "Perplexity" not in metrics and "Top-1 agreement" not in metrics
    assert any("An encoder keeps no cache" in c.value and "192" in c.value for c in app.caption)
    specs = figures(app)
    assert "mla naive r=192 data: layer 0, head 0" in specs
    frontier = specs["Quality against K/V size (upper left is better)"]
    names = [trace.get("name") for trace in frontier["data"]]
    assert "mla (naive)" in names and names[-1] == "your choice"
    assert any("pick a decoder such as SmolLM2" in i.value for i in app.info)
    assert not [b for b in app.button if b.label.startswith("Uptrain")]


def test_a_decoupled_link_on_minilm_falls_back_with_a_notice():
    app = open_lab({"model": "minilm", "variant": "mla", "form": "decoupled", "latent_rank": "192"})
    assert not app.exception
    assert any("learned absolute positions" in w.value and "Showing the naive form" in w.value for w in app.warning)
    assert "mla naive r=192 data: layer 0, head 0" in figures(app)
    assert "form" not in app.query_params  # the share link now says what is shown: the naive form (the default)


def test_families_without_rope_get_the_naive_form_and_mean_or_first_merges():
    choices = choices_for("BERT", "all-MiniLM-L6-v2")
    spec, notices = spec_from_view("mqa", None, None, None, "aligned", "naive", "data", MINILM, choices)
    assert spec.merge == "mean" and "Showing mean-pooling" in notices[0]
    spec, notices = spec_from_view("mla", None, 192, 32, "mean", "decoupled", "data", MINILM, choices)
    assert spec.form == "naive" and spec.attn_path == "naive" and "naive form" in notices[0]
    assert choices_for("Llama", "SmolLM2").forms == ("naive", "decoupled")
    assert choices_for("Gemma-3", "Gemma-3-270M").merges == ("mean", "first")


def test_encoder_reports_give_cosine_points_and_readings():
    report = json.loads((RESULTS / "variants-minilm-cpu.json").read_text())
    points = frontier_points(report)
    assert points[0] == {"label": "original", "values": 768.0, "embedding_cosine": 1.0, "low": 1.0, "high": 1.0}
    assert all(p["low"] <= p["embedding_cosine"] <= p["high"] for p in points)
    figure = encoder_frontier_figure(points, {"label": "mla naive r=96 data", "values": 96, "embedding_cosine": 0.9})
    assert figure.data[-1].name == "your choice" and figure.layout.yaxis.title.text.startswith("embedding cosine")
    assert "perplexity" in frontier_points(json.loads((RESULTS / "variants-cpu.json").read_text()))[0]
    assert "works like the original" in verdict(VariantSpec("mla", latent_rank=384), 0.999, 1.0, (0.998, 0.9995),
                                                "encoder")
    assert "never seen" in verdict(VariantSpec("mqa"), 0.38, 1.0, (0.3, 0.45), "encoder")
    assert "Can't tell" in verdict(VariantSpec("mla", latent_rank=96), 0.991, 1.0, (0.985, 0.995), "encoder")
    assert holds_up((0.991, 0.998), "encoder") and not holds_up((0.985, 0.995), "encoder")
    with pytest.raises(ValueError, match="cosine"):
        encoder_frontier_figure([{"label": "x", "values": 64, "embedding_cosine": 1.5}])


@pytest.mark.skipif(not CATALOGUE["gemma3"].is_installed(), reason="Gemma-3-270M is an optional package")
def test_gemma3_offers_mean_or_first_merges_and_keeps_uptraining():
    app = open_lab({"model": "gemma3", "variant": "mqa", "merge": "aligned"})
    assert not app.exception
    assert any("normalises each key head" in w.value and "Showing mean-pooling" in w.value for w in app.warning)
    assert {m.label: m.value for m in app.metric}["KV values / token / layer"] == "512"  # MQA already: unchanged
    assert any(c.value.startswith("Runs of 32 steps") for c in app.caption)  # the uptrain estimate, for Gemma-3


def test_committed_comparisons_read_in_plain_words_and_the_frontier_keeps_its_own_yardstick():
    from explorer.lab import comparison_sentence, frontier_caption, frontier_original

    comparison = {"claim": "MLA beats MQA/GQA at equal cache", "a": "mla naive r=128 data", "b": "mqa kv=1 aligned",
                  "measure": "perplexity of a / perplexity of b (paired over the same blocks)", "value": 0.343,
                  "ci": [0.325, 0.363], "verdict": "yes"}
    assert comparison_sentence(comparison).startswith("MLA beats MQA/GQA at equal cache? Yes: mla naive r=128 data")
    assert "Can't tell at this size" in comparison_sentence({**comparison, "ci": [0.9, 1.1], "verdict": "can't tell "
                                                                                                      "at this size"})
    report = {"eval_tokens": 8192, "variants": [{"label": "original", "perplexity": 30.2}]}
    assert frontier_original(report, 42.6) == 30.2 and frontier_original(None, 42.6) == 42.6

    class Measured:
        tokens = 510

    caption = frontier_caption(report, Measured(), "decoder", 42.6)
    assert "8,192 held-out tokens" in caption and "510 tokens" in caption and "scores 42.6" in caption
