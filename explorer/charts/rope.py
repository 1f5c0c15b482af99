"""Charts of the RoPE frequency view: each head's share of |q·k| per rotary pair, the pairs a form keeps outlined."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

KEPT_COLOUR = "#dc2626"  # outline of the pairs that keep RoPE


def _runs(pairs: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive runs of pair indices, as (first, last): [0, 1, 2, 7] -> [(0, 2), (7, 7)]."""
    runs: list[tuple[int, int]] = []
    for p in sorted(set(pairs)):
        if runs and p == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], p)
        else:
            runs.append((p, p))
    return runs


def _blocks(kept: Sequence[Sequence[int]]) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """Consecutive rows that keep the same pairs, as (first row, last row, runs of pairs): one outline each."""
    blocks: list[tuple[int, int, list[tuple[int, int]]]] = []
    for row, pairs in enumerate(kept):
        runs = _runs(pairs)
        if blocks and blocks[-1][2] == runs:
            blocks[-1] = (blocks[-1][0], row, runs)
        else:
            blocks.append((row, row, runs))
    return blocks


def _check_kept(kept: Sequence[Sequence[int]], rows: int, pairs: int) -> None:
    if len(kept) != rows:
        raise ValueError(f"Give the kept pairs of each of the {rows} rows; got {len(kept)}.")
    if any(not 0 <= p < pairs for row in kept for p in row):
        raise ValueError(f"Kept pairs must be numbered 0 to {pairs - 1}.")


def _share_heatmap(shares: np.ndarray, row_labels: list[str], wavelengths: np.ndarray, kept: Sequence[Sequence[int]],
                   title: str, row_name: str) -> go.Figure:
    rows, pairs = shares.shape
    if len(row_labels) != rows or wavelengths.shape != shares.shape:
        raise ValueError(f"Label each of the {rows} rows and give a wavelength for every one of the {rows}x{pairs} "
                         "cells.")
    _check_kept(kept, rows, pairs)
    kept_mask = np.zeros(shares.shape, dtype=bool)
    for row, row_pairs in enumerate(kept):
        kept_mask[row, list(row_pairs)] = True
    hover = np.dstack([np.broadcast_to(np.array(row_labels)[:, None], shares.shape),
                       np.round(wavelengths, 1).astype(str), np.where(kept_mask, "keeps RoPE", "loses RoPE")])
    figure = go.Figure(go.Heatmap(
        z=shares * 100, x=list(range(pairs)), y=list(range(rows)), colorscale="Viridis", zmin=0,
        colorbar=dict(title="% of |q·k|", thickness=12), customdata=hover,
        hovertemplate="%{customdata[0]}, pair %{x}<br>one turn every %{customdata[1]} tokens<br>"
                      "%{z:.1f}% of |q·k| (%{customdata[2]})<extra></extra>",
    ))
    for top, bottom, runs in _blocks(kept):
        for first, last in runs:
            figure.add_shape(type="rect", x0=first - 0.5, x1=last + 0.5, y0=top - 0.5, y1=bottom + 0.5,
                             line=dict(color=KEPT_COLOUR, width=2), fillcolor="rgba(0,0,0,0)")
    figure.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=dict(color=KEPT_COLOUR, width=2),
                                name="pairs the decoupled form keeps RoPE on"))
    figure.update_layout(
        title=dict(text=title, x=0, xanchor="left", font=dict(size=14)), height=max(260, 60 + 16 * rows),
        margin=dict(l=10, r=10, t=40, b=10), plot_bgcolor="white", showlegend=True,
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1, xanchor="right"),
        xaxis=dict(title="rotary pair (0 = highest frequency)", dtick=4 if pairs > 16 else 1,
                   range=[-0.5, pairs - 0.5]),
        yaxis=dict(title=row_name, tickvals=list(range(rows)), ticktext=row_labels, autorange="reversed",
                   range=[-0.5, rows - 0.5]),
    )
    return figure


def pair_share_heatmap(shares: np.ndarray, wavelengths: np.ndarray, kept: Sequence[int], title: str) -> go.Figure:
    """One layer: shares (H, P) of |q·k| per head and pair (rows sum to 1), wavelengths (P,) in tokens, and the
    pairs the decoupled form keeps (outlined in red)."""
    heads = shares.shape[0]
    return _share_heatmap(shares, [f"H{h}" for h in range(heads)], np.broadcast_to(wavelengths, shares.shape),
                          [list(kept)] * heads, title, "head")


def layer_share_heatmap(shares: np.ndarray, wavelengths: np.ndarray, kept: Sequence[Sequence[int]],
                        title: str) -> go.Figure:
    """Every layer: shares (L, P), the mean over a layer's heads; wavelengths (L, P); kept pairs per layer."""
    return _share_heatmap(shares, [f"L{layer}" for layer in range(shares.shape[0])], wavelengths, kept, title,
                          "layer")
