"""Exports carry the numbers behind the charts, with token labels that keep repeated tokens apart."""

import io
import json

import numpy as np
import pandas as pd
import pytest

from explorer.export import attention_csv, attention_json, table_csv, table_json


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
