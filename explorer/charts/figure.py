"""Plotly figures from plain trace and layout dicts, for the charts that must redraw fast."""

from __future__ import annotations

import plotly.graph_objects as go


def figure_from(data: list[dict], layout: dict) -> go.Figure:
    """A figure of `data` (trace dicts, each naming its "type") and `layout`, taken as they are.

    Plotly checks every property it is given against its schema as it builds a figure; for a heatmap, its axes and
    annotations that takes 10-15 ms, most of what a layer or head change costs on the attention page. The charts
    that change redraws are built here without those checks, and the tests check each of them against the schema
    (`tests/test_charts_attention.py`). Later changes to the figure (`update_layout`...) are checked as usual.
    """
    return go.Figure({"data": data, "layout": layout}, _validate=False)
