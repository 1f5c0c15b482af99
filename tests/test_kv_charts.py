"""KV-cache charts: built from the real numbers of explorer.kv and explorer.roofline, checked trace by trace; bad input is a sentence."""

import math

import pytest

from explorer.charts.kv import GIB, cache_size_figure, roofline_figure
from explorer.config import read_config
from explorer.hardware import gpu_memory_lines, gpu_named
from explorer.kv import variant_layouts
from explorer.params import estimate_parameters
from explorer.roofline import (
    context_grid,
    variant_cache_curves,
    variant_longest_fits,
    variant_roofline_curves,
)


@pytest.fixture(scope="module")
def llama():
    layouts = variant_layouts(read_config("llama-3-8b"))
    return layouts, estimate_parameters("llama-3-8b").weight_bytes("bf16")


def test_context_grid_runs_from_one_token_to_a_million_and_keeps_windows():
    grid = context_grid(2**20, points=81, include=[4096, 3000])
    assert grid[0] == 1 and grid[-1] == 2**20 and 4096 in grid and 3000 in grid
    assert all(later > earlier for earlier, later in zip(grid, grid[1:]))


def test_memory_lines_merge_gpus_of_one_size():
    lines = gpu_memory_lines()  # what a framework can allocate, not the vendor's decimal GB
    assert list(lines) == ["23.6 GiB: RTX 4090", "45.0 GiB: L40S", "79.1 GiB: A100 80GB SXM, H100 SXM",
                           "139.8 GiB: H200"]
    # "80 GB" GPUs share a line at the least either lets a framework allocate, not the 80 GiB the label suggests
    assert lines["79.1 GiB: A100 80GB SXM, H100 SXM"] == int(79.11 * GIB) < 80 * GIB


def test_cache_size_figure(llama):
    layouts, weights = llama
    contexts = context_grid(2**20)
    lines = gpu_memory_lines()
    fits = variant_longest_fits(layouts, lines, weights)
    figure = cache_size_figure(contexts, variant_cache_curves(layouts, contexts), weights, lines, fits, log_x=True)
    curves = [trace for trace in figure.data if trace.mode == "lines"]
    assert [trace.name for trace in curves] == [
        "MHA (32 KV heads)", "GQA (8 KV heads), as built", "MLA (512 + 64)", "MQA (1 KV head)"
    ]
    gqa = curves[1]
    assert gqa.y[0] == pytest.approx((weights + 128 * 1024) / GIB)  # one token: weights + 128 KiB
    assert figure.layout.xaxis.type == "log"
    horizontal = sorted(shape.y0 for shape in figure.layout.shapes)
    assert horizontal == pytest.approx(sorted([weights / GIB, 23.65, 44.99, 79.11, 139.81]))
    texts = [annotation.text for annotation in figure.layout.annotations]
    assert "139.8 GiB: H200" in texts and any(text.startswith("weights 15.0 GiB") for text in texts)
    markers = [trace for trace in figure.data if trace.mode == "markers+text"]
    drawn = {(series, memory): tokens for series, memory, tokens in fits if tokens <= contexts[-1]}
    assert len(markers) == len(drawn)
    marker = next(m for m in markers if m.name == "GQA (8 KV heads), as built fits 79.1 GiB: A100 80GB SXM, H100 SXM")
    assert marker.x[0] == drawn[("GQA (8 KV heads), as built", "79.1 GiB: A100 80GB SXM, H100 SXM")]
    assert marker.y[0] == pytest.approx(79.11)


def test_roofline_figure_stops_where_memory_runs_out(llama):
    layouts, weights = llama
    contexts = context_grid(2**20)
    curves = variant_roofline_curves(layouts, gpu_named("H100 SXM"), contexts, weights, batch=8)
    figure = roofline_figure(contexts, curves, "H100 SXM")
    mha = next(trace for trace in figure.data if trace.name == "MHA (32 KV heads)")
    assert mha.y[0] == pytest.approx(8 * 3350e9 / (weights + 8 * 512 * 1024))
    assert mha.y[-1] is None  # 8 x 1M tokens of MHA cache do not fit in 80 GB
    assert figure.layout.yaxis.type == "log" and "H100 SXM" in figure.layout.title.text


def test_chart_inputs_are_checked_with_sentences():
    with pytest.raises(ValueError, match="at least one context length"):
        cache_size_figure([], {"a": []})
    with pytest.raises(ValueError, match="increase from left to right"):
        cache_size_figure([1, 1], {"a": [0, 0]})
    with pytest.raises(ValueError, match="log axis cannot show a context of 0"):
        cache_size_figure([0, 10], {"a": [0, 1]})
    with pytest.raises(ValueError, match="'a' has 1 cache-bytes values for 2 context lengths"):
        cache_size_figure([1, 2], {"a": [1]})
    with pytest.raises(ValueError, match="finite numbers of 0 or more"):
        cache_size_figure([1, 2], {"a": [1, math.nan]})
    with pytest.raises(ValueError, match="names a series or memory line not drawn"):
        cache_size_figure([1, 2], {"a": [1, 2]}, memory_lines={"24 GB": 24 * GIB}, longest_fits=[("b", "24 GB", 1)])
    with pytest.raises(ValueError, match="Name the GPU"):
        roofline_figure([1, 2], {"a": [1.0, math.nan]}, " ")
    assert roofline_figure([0, 2], {"a": [1.0, math.nan]}, "H200", log_x=False).data[0].y == (1.0, None)


def _label_heights(figure):
    """(label y, line y, text) of each memory-line label: a label lifted off its line points back with an arrow."""
    return sorted((a.ay if a.showarrow else a.y, a.y, a.text) for a in figure.layout.annotations if "GiB" in a.text
                  and not a.text.startswith("weights"))


@pytest.mark.parametrize("weights_gib, extra", [
    (500, {}),  # DeepSeek-V3's scale: four lines crowd at the bottom of a ~700 GiB axis
    (15, {"a": 20, "b": 21, "c": 22, "d": 40, "e": 41}),  # lines crowd at the bottom and in the middle
    (150, {"a": 170, "b": 171, "c": 172}),  # and at the top, where a label pushed up would leave the axis
    (0.25, {}),  # SmolLM2: one line on the axis, the others above it (they must not push its label down)
])
def test_memory_line_labels_do_not_overlap(llama, weights_gib, extra):
    layouts, _ = llama
    contexts = context_grid(2**14)
    lines = {**gpu_memory_lines(), **{f"{size} GiB: {name}": size * GIB for name, size in extra.items()}}
    as_built = [layout for layout in layouts if not layout.converted]
    figure = cache_size_figure(contexts, variant_cache_curves(as_built, contexts), weights_gib * GIB, lines)
    top = figure.layout.yaxis.range[1]
    labelled = _label_heights(figure)
    drawn = sorted(size / GIB for size in lines.values() if size / GIB <= top)
    assert [line for _, line, _ in labelled] == pytest.approx(drawn)  # each label's arrow ends on its line
    heights = [label for label, _, _ in labelled]
    assert all(later - earlier >= 0.055 * top - 1e-9 for earlier, later in zip(heights, heights[1:]))
    assert all(0 <= height <= top for height in heights)
    lowest_gap = min((b - a for a, b in zip(drawn, drawn[1:])), default=top)
    if lowest_gap >= 0.055 * top:  # lines far enough apart keep their labels on them, with no arrow
        assert heights == pytest.approx(drawn)
