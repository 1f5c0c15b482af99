"""Attention charts: shapes, token labels, repeated tokens, validation and payload size."""

import json

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from explorer.charts.attention import (
    head_grid, head_heatmap, layer_head_overview, mask_heatmap, mask_title, mosaic, pool, pooled_heatmap,
    summary_heatmap,
)
from explorer.charts.flow import rollout_heatmap, token_bars

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
    assert [t for t in figure.layout.xaxis.ticktext][:2] == ["L0", "L2"] and len(figure.layout.yaxis.ticktext) == 9
    assert payload > 0


def test_a_click_on_a_tile_names_its_head_and_the_selected_head_is_outlined():
    grid = head_grid(random_attention(1, 9, 5)[0], TOKENS, "layer", kv_heads=3, selected=4)
    picker = grid.data[1]  # invisible points at the tiles' centres: clicking selects one
    assert [list(c) for c in picker.customdata] == [[h] for h in range(9)]
    assert (picker.x[4], picker.y[4]) == (4 * 6 + 2, 2)  # tile (row 0, column 4) of 5x5 tiles with 1-cell gaps
    assert [(s.x0, s.y0) for s in grid.layout.shapes] == [(4 * 6 - 0.5, -0.5)]
    assert grid.layout.xaxis.ticks == "" and grid.layout.yaxis.ticks == ""  # no dangling tick marks
    overview = layer_head_overview(random_attention(4, 3, 5), TOKENS, selected=(2, 1))
    assert [list(c) for c in overview.data[1].customdata][:5] == [[0, 0], [1, 0], [2, 0], [3, 0], [0, 1]]
    assert overview.layout.clickmode == "event+select" and len(overview.layout.shapes) == 1


def test_mosaics_fill_their_figure():
    grid = head_grid(random_attention(1, 9, 9)[0], [f"t{i}" for i in range(9)], "x")
    assert grid.layout.yaxis.scaleanchor is None  # tiles stretch: no empty band above or below them
    assert list(grid.layout.yaxis.range) == [2 * 10 - 1 - 0.5, -0.5]  # exactly the two rows of tiles


def test_the_mask_leaves_room_for_its_last_key_label_and_its_title_is_wrapped():
    tokens = ["The", "giant", "ate", "the", "apple", "because", "it", "was", "hungry"]
    figure = mask_heatmap(np.tril(np.ones((9, 9), dtype=bool)), tokens, mask_title("decoder", None, 9))
    assert figure.layout.margin.r >= 5 * len("hungry")  # a label leaning right past the plot is not hidden
    assert list(figure.layout.xaxis.ticktext) == tokens
    assert all(len(line) <= 26 for line in figure.layout.title.text.split("<br>"))
    assert figure.layout.title.yref == "container" and figure.layout.title.yanchor == "top"


def test_token_charts_label_every_token():
    tokens = [f"w{i}" for i in range(20)]
    bars = token_bars(np.full(20, 0.05), tokens, "t", highlight=[19])
    assert list(bars.layout.xaxis.ticktext) == tokens and bars.data[0].marker.color[19] != bars.data[0].marker.color[0]
    rolled = rollout_heatmap(np.full((3, 20), 0.05), tokens, "t")
    assert list(rolled.layout.xaxis.ticktext) == tokens
    with pytest.raises(ValueError, match="one value per token"):
        token_bars(np.ones(3), tokens, "t")


def fast_charts():
    """Every chart built without plotly's checks (`figure_from`), in each of its forms."""
    weights = random_attention(1, 9, 9)[0]
    tokens = [f"t{i}" for i in range(9)]
    cross = np.random.default_rng(1).random((4, 3, 5))
    long_head = random_attention(1, 1, 80)[0, 0]
    return {
        "head": head_heatmap(weights[0], tokens, "Layer 0, head 0"),
        "head, zoomed, log": head_heatmap(weights[0, 2:6, 2:6], tokens[2:6], "z<br>tokens 2-5", first_query=2,
                                          first_key=2, log_scale=True),
        "head, cross": head_heatmap(cross[0], tokens[:3], "c", key_tokens=tokens[:5]),
        "pooled, zoom": pooled_heatmap(long_head, "p", cells=16, zoom=(8, 40)),
        "pooled, log": pooled_heatmap(long_head, "p", cells=16, log_scale=True),
        "mask": mask_heatmap(np.tril(np.ones((9, 9), dtype=bool)), tokens, mask_title("decoder", 4, 9), first=3),
        "grid": head_grid(weights, tokens, "g", 3, max_cells=48, selected=4),
        "grid, pooled, log": head_grid(random_attention(1, 4, 60)[0], [f"w{i}" for i in range(60)], "g",
                                       max_cells=16, log_scale=True),
        "grid, cross": head_grid(cross, tokens[:3], "c", key_tokens=tokens[:5]),
        "overview": layer_head_overview(random_attention(3, 4, 9), tokens, selected=(2, 3)),
        "bars": token_bars(weights[0, -1], tokens, "b", highlight=[8], value="summed weight"),
        "rollout": rollout_heatmap(np.full((3, 9), 1 / 9), tokens, "r"),
        "summary": summary_heatmap(np.random.default_rng(2).random((40, 4)), "Entropy", "bits"),
        "summary, capped": summary_heatmap(np.random.default_rng(3).random((3, 4)), "Sink", "share", "Reds", 1.0),
    }


@pytest.mark.parametrize("name", list(fast_charts()))
def test_charts_built_without_plotlys_checks_are_what_plotly_would_build(name):
    """Plotly's own construction checks every property against its schema and normalises what it accepts: a chart
    built without it must pass those checks and come out unchanged by them (an empty list of shapes or annotations
    and no list at all draw the same)."""
    figure = fast_charts()[name]
    checked = go.Figure(figure.to_dict())  # raises on a property plotly does not know or a value it refuses

    def drawn(fig) -> dict:
        spec = json.loads(pio.to_json(fig))
        spec["layout"] = {key: value for key, value in spec["layout"].items() if value != []}
        return spec

    assert drawn(checked) == drawn(figure)
