"""Exports carry the numbers behind the charts, with token labels that keep repeated tokens apart."""

import io
import json

import numpy as np
import pandas as pd
import pytest

from explorer.export import (
    LabelledArray, attention_csv, attention_json, file_stem, heads, mask, overview, per_head, query_row, series, table_csv,
    table_json,
)


def test_attention_csv_round_trips_with_labels():
    weights = np.array([[1.0, 0.0, 0.0], [0.25, 0.75, 0.0], [0.1, 0.2, 0.7]])
    frame = pd.read_csv(io.StringIO(attention_csv(weights, ["the", "cat", "the"])), index_col=0)
    assert list(frame.columns) == ["#0 the", "#1 cat", "#2 the"]
    assert list(frame.index) == ["#0 the", "#1 cat", "#2 the"]
    np.testing.assert_allclose(frame.to_numpy(), weights)


def test_cross_attention_csv_has_separate_query_and_key_labels():
    frame = pd.read_csv(io.StringIO(attention_csv(np.full((2, 3), 1 / 3), ["a", "b"], ["x", "y", "z"])), index_col=0)
    assert frame.shape == (2, 3) and list(frame.columns) == ["#0 x", "#1 y", "#2 z"]


def test_attention_json_keeps_heads_and_context(smollm2):
    from explorer.run import run_attention

    run = run_attention(smollm2, "the cat saw the dog")
    payload = json.loads(attention_json(run.attentions[4], run.tokens, model="smollm2", layer=4))
    assert payload["model"] == "smollm2" and payload["layer"] == 4
    assert payload["tokens"] == run.tokens
    weights = np.array(payload["weights"])
    assert weights.shape == (9, len(run.tokens), len(run.tokens))
    np.testing.assert_allclose(weights, run.attentions[4], atol=1e-6)


def test_mismatched_labels_are_refused():
    with pytest.raises(ValueError, match="2 query and 2 key labels"):
        attention_csv(np.eye(3), ["a", "b"])


def test_tables_export_as_csv_and_json():
    rows = [{"variant": "MHA", "KiB / token": 67.5}, {"variant": "MQA", "KiB / token": 7.5}]
    assert pd.read_csv(io.StringIO(table_csv(rows)))["KiB / token"].tolist() == [67.5, 7.5]
    assert json.loads(table_json(rows, dtype="bf16")) == {"dtype": "bf16", "rows": rows}


def test_server_side_png_is_a_real_png():
    import plotly.graph_objects as go

    from explorer.export import figure_png, png_export_available

    if not png_export_available():
        pytest.skip("needs Chromium, which the README's test command installs")
    png = figure_png(go.Figure(go.Heatmap(z=[[0.1, 0.9], [0.5, 0.5]])), width=300, height=200, scale=1)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 300 and int.from_bytes(png[20:24], "big") == 200  # IHDR size


def test_a_matrix_exports_as_a_labelled_grid_and_json_with_what_the_view_was():
    weights = np.array([[1.0, 0.0], [0.4, 0.6]])
    numbers = heads(weights, ["the", "cat"], first=5, model="smollm2", layer=3, head=7)
    frame = pd.read_csv(io.StringIO(numbers.csv()), index_col=0)
    assert list(frame.index) == list(frame.columns) == ["#5 the", "#6 cat"]  # positions of a zoomed region
    np.testing.assert_allclose(frame.to_numpy(), weights)
    payload = json.loads(numbers.json())
    assert payload["model"] == "smollm2" and payload["layer"] == 3 and payload["head"] == 7
    assert payload["axes"] == {"query": ["#5 the", "#6 cat"], "key": ["#5 the", "#6 cat"]}
    assert payload["weight"] == weights.tolist()


def test_every_head_of_a_layer_exports_long_with_one_row_per_weight():
    weights = np.random.default_rng(0).dirichlet(np.ones(3), size=(2, 3))  # (H=2, Tq=3, Tk=3)
    frame = pd.read_csv(io.StringIO(heads(weights, ["a", "b", "a"]).csv()))
    assert list(frame.columns) == ["head", "query", "key", "weight"] and len(frame) == 18
    row = frame[(frame["head"] == "H1") & (frame["query"] == "#2 a") & (frame["key"] == "#0 a")]
    assert row["weight"].item() == pytest.approx(weights[1, 2, 0], abs=1e-6)


def test_long_inputs_export_the_blocks_their_chart_draws():
    tokens = [f"t{i}" for i in range(100)]
    weights = np.tile(np.eye(100) * 0.5 + 0.005, (9, 1, 1))  # (9, 100, 100), rows sum to 1
    numbers = heads(weights, tokens, cells=48)
    assert numbers.values.shape == (9, 48, 48)
    assert numbers.axes["query"][:2] == ["#0–1", "#2–3"] and numbers.axes["query"][-1] == "#97–99"
    np.testing.assert_allclose(numbers.values.sum(-1), 1.0, rtol=1e-6)  # a block's rows still sum to 1
    assert heads(weights[0, :40, :40], tokens[:40], cells=48).axes["key"][39] == "#39 t39"  # short inputs stay per token


def test_cross_attention_exports_decoder_queries_against_encoder_keys():
    numbers = heads(np.full((2, 3), 1 / 3), ["<s>", "Der"], key_tokens=["The", "giant", "</s>"])
    frame = pd.read_csv(io.StringIO(numbers.csv()), index_col=0)
    assert list(frame.index) == ["#0 <s>", "#1 Der"] and list(frame.columns) == ["#0 The", "#1 giant", "#2 </s>"]


def test_masks_summaries_rows_and_overviews_export_with_their_labels():
    allowed = np.tril(np.ones((3, 3), dtype=bool))
    assert pd.read_csv(io.StringIO(mask(allowed, ["a", "b", "c"]).csv()), index_col=0).to_numpy().tolist() == \
        [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    entropy = per_head(np.arange(6.0).reshape(3, 2), "entropy (bits)")  # (L=3, H=2)
    assert json.loads(entropy.json())["entropy (bits)"][2] == [4.0, 5.0]
    row = query_row(np.array([0.2, 0.8]), ["it", "was"], 1, layer=5)
    assert json.loads(row.json())["query"] == "#1 was"
    assert pd.read_csv(io.StringIO(row.csv()))["weight"].tolist() == [0.2, 0.8]
    everything = overview(np.zeros((30, 9, 2, 2)), ["#0–3", "#4–8"])
    assert len(pd.read_csv(io.StringIO(everything.csv()))) == 30 * 9 * 4


def test_curves_export_one_row_per_x_and_missing_points_stay_empty():
    table = series("tokens", [128, 256], {"MHA": [1.0, 2.0], "MQA": [0.5, float("nan")]}, unit="seconds")
    frame = pd.read_csv(io.StringIO(table.csv()))
    assert list(frame.columns) == ["tokens", "MHA", "MQA"] and np.isnan(frame["MQA"][1])
    payload = json.loads(table.json())
    assert payload["unit"] == "seconds" and payload["rows"][1] == {"tokens": 256, "MHA": 2.0, "MQA": None}
    with pytest.raises(ValueError, match="'MHA' has 1 points but there are 2 values of tokens"):
        series("tokens", [128, 256], {"MHA": [1.0]})


def test_labels_that_do_not_fit_the_numbers_are_refused():
    with pytest.raises(ValueError, match=r"shape \(2, 2\) but the labels of query, key have lengths \(2, 3\)"):
        LabelledArray(np.eye(2), {"query": ["a", "b"], "key": ["a", "b", "c"]})


def test_file_names_come_from_chart_titles():
    assert file_stem("Layer 3, head 7<br>tokens 0–63") == "layer-3-head-7-tokens-0-63"
    assert file_stem("Where 'it' looks, layer 5") == "where-it-looks-layer-5"
    assert file_stem("", "kv-curve") == "kv-curve"
