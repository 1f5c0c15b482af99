"""Attention charts: shapes, token labels, repeated tokens, validation and payload size."""

import json

import numpy as np
import pytest

from explorer.charts.attention import head_grid, head_heatmap, layer_head_overview, mask_heatmap, mosaic, pool

TOKENS = ["the", "cat", "saw", "the", "dog"]


def random_attention(layers, heads, tokens, seed=0):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(tokens), size=(layers, heads, tokens)).astype(np.float32)


def test_head_heatmap_keeps_repeated_tokens_apart():
    weights = random_attention(1, 1, 5)[0, 0]
    figure = head_heatmap(weights, TOKENS, "one head")
    assert list(figure.layout.xaxis.tickvals) == [0, 1, 2, 3, 4]
    assert list(figure.layout.xaxis.ticktext) == TOKENS  # "the" twice, two columns
    assert np.asarray(figure.data[0].z).shape == (5, 5)
    assert figure.data[0].customdata[3][0][0] == "#3 the"  # hover names the query token by position


def test_charts_refuse_mismatched_labels_with_a_sentence():
    with pytest.raises(ValueError, match="5 tokens but 3 token labels"):
        head_heatmap(np.eye(5), TOKENS[:3], "x")
    with pytest.raises(ValueError, match="square"):
        mask_heatmap(np.ones((5, 4), dtype=bool), TOKENS, "x")
    with pytest.raises(ValueError, match="cannot share 4 KV heads"):
        head_grid(random_attention(1, 9, 5)[0], TOKENS, "x", kv_heads=4)


def test_head_grid_draws_every_head_and_names_kv_groups():
    figure = head_grid(random_attention(1, 9, 5)[0], TOKENS, "layer", kv_heads=3)
    labels = [a.text for a in figure.layout.annotations]
    assert labels[:4] == ["H0 · KV0", "H1 · KV0", "H2 · KV0", "H3 · KV1"] and len(labels) == 9
    canvas = np.asarray(figure.data[0].z, dtype=float)
    assert np.isclose(np.nansum(canvas), 9 * 5)  # every head's rows sum to 1


def test_mosaic_places_tiles_with_gaps():
    tiles = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    canvas = mosaic(tiles)
    assert canvas.shape == (2 * 3 - 1, 3 * 3 - 1)
    np.testing.assert_array_equal(canvas[3:5, 6:8], tiles[1, 2])
    assert np.isnan(canvas[2]).all()


def test_pool_keeps_rows_summing_to_one():
    weights = random_attention(1, 1, 100)[0, 0]
    pooled = pool(weights, 10)
    assert pooled.shape == (10, 10)
    np.testing.assert_allclose(pooled.sum(-1), 1.0, rtol=1e-5)


def test_overview_stays_small_at_256_tokens():
    attentions = random_attention(30, 9, 256)
    figure = layer_head_overview(attentions, [f"t{i}" for i in range(256)])
    payload = len(json.dumps(figure.to_plotly_json(), default=str))
    figure_json = figure.to_json()
    assert len(figure_json) < 2_000_000, len(figure_json)
    assert [t for t in figure.layout.xaxis.ticktext][:2] == ["L0", "L1"] and len(figure.layout.yaxis.ticktext) == 9
    assert payload > 0
