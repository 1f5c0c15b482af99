"""Charts of attention read across tokens and layers: summed query rows, rollout and flow, and the next-token
predictions a head ablation changes. Pure functions from arrays to plotly figures."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.colors import get_colorscale

from explorer.charts.attention import lean_room, token_axis, wrapped_title
from explorer.charts.figure import figure_from


def token_bars(
    values: np.ndarray, tokens: list[str], title: str, highlight: list[int] = (), value: str = "weight",
    height: int = 300,
) -> go.Figure:
    """One number per token, values (T,), as bars over the tokens in order, every token labelled; the
    `highlight` positions (the query tokens themselves) are drawn in orange."""
    if np.shape(values) != (len(tokens),):
        raise ValueError(f"Expected one value per token ({len(tokens)}); got shape {np.shape(values)}.")
    highlighted = set(highlight)
    bars = dict(
        type="bar", x=np.arange(len(tokens)), y=np.asarray(values),
        marker=dict(color=["#f59e0b" if k in highlighted else "#1d4ed8" for k in range(len(tokens))]),
        customdata=[f"#{k} {t}" for k, t in enumerate(tokens)],
        hovertemplate="%{customdata}<br>" + value + " %{y:.3f}<extra></extra>",
    )
    return figure_from([bars], dict(
        title=wrapped_title(title), height=height, yaxis=dict(title=dict(text=value)),
        margin=dict(l=10, r=lean_room(tokens), t=45 + 18 * title.count("<br>"), b=10),
        xaxis=dict(tickangle=-45, **token_axis(tokens, 64)),
    ))


def prediction_bars(candidates: list[tuple[str, float, float]], title: str, height: int = 320) -> go.Figure:
    """Next-token candidates (token, probability before, after) as bars side by side: all heads on, chosen off."""
    labels = [f"#{rank + 1} {token.strip() or repr(token)}" for rank, (token, _, _) in enumerate(candidates)]
    figure = go.Figure([
        go.Bar(x=labels, y=[c[1] for c in candidates], name="all heads on", marker_color="#9ca3af"),
        go.Bar(x=labels, y=[c[2] for c in candidates], name="chosen heads off", marker_color="#dc2626"),
    ])
    figure.update_layout(title=wrapped_title(title), height=height, barmode="group", margin=dict(l=10, r=10, t=50, b=10),
                         yaxis=dict(title="probability of the next token", rangemode="tozero"),
                         legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"))
    return figure


def rollout_heatmap(values: np.ndarray, tokens: list[str], title: str, height: int | None = None) -> go.Figure:
    """Rollout rows layer by layer, values (L, T): after layer l (down), the share drawn from each input token
    (across); every row sums to 1."""
    if values.ndim != 2 or values.shape[1] != len(tokens):
        raise ValueError(f"Expected one row per layer over the {len(tokens)} tokens; got shape {values.shape}.")
    num_layers = values.shape[0]
    heatmap = dict(  # hover by position only: labels per cell would grow L x T
        type="heatmap", z=values, x=np.arange(len(tokens)), y=np.arange(num_layers), zmin=0.0, zmax=1.0,
        colorscale=get_colorscale("Purples"), colorbar=dict(title=dict(text="share"), thickness=10),
        hovertemplate="after layer %{y}<br>from token #%{x}<br>share %{z:.3f}<extra></extra>",
    )
    return figure_from([heatmap], dict(
        title=wrapped_title(title), height=height or 120 + 14 * num_layers,
        margin=dict(l=10, r=lean_room(tokens), t=100, b=10),
        xaxis=dict(title=dict(text="input token"), side="top", tickangle=-45, **token_axis(tokens, 64)),
        yaxis=dict(title=dict(text="after layer"), autorange="reversed", dtick=1 if num_layers <= 32 else 4),
    ))
