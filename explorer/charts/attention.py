"""Attention pictures: pure functions from probability arrays and token labels to plotly figures.

Axes are integer positions labelled with tokens (a categorical axis would merge repeated tokens), rows are
queries (the token that looks) and columns are keys (the token looked at).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

COLOURS = "Blues"  # sequential: white = no attention, dark blue = all of it
MASK_COLOURS = [[0.0, "#e5e7eb"], [1.0, "#15803d"]]  # grey = blocked, green = may attend
CELL_GAP = 1  # empty cells between tiles of a mosaic


def _check_square(weights: np.ndarray, tokens: list[str], what: str) -> None:
    if weights.ndim < 2 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(f"{what} must be square over (query, key); got shape {weights.shape}.")
    if weights.shape[-1] != len(tokens):
        raise ValueError(f"{what} covers {weights.shape[-1]} tokens but {len(tokens)} token labels were given.")


def _token_axis(tokens: list[str], max_ticks: int = 40) -> dict:
    """Integer axis labelled by token; thinned when there are too many to read."""
    step = max(1, int(np.ceil(len(tokens) / max_ticks)))
    positions = list(range(0, len(tokens), step))
    return dict(tickmode="array", tickvals=positions, ticktext=[tokens[i] for i in positions])


def head_heatmap(weights: np.ndarray, tokens: list[str], title: str, height: int = 460) -> go.Figure:
    """One head: weights (T, T), hover shows query token, key token and weight."""
    _check_square(weights, tokens, "The head's weights")
    positions = np.arange(len(tokens))
    labels = np.array([f"#{i} {t}" for i, t in enumerate(tokens)], dtype=object)
    hover = np.stack(np.broadcast_arrays(labels[:, None], labels[None, :]), axis=-1)  # (T, T, 2)
    figure = go.Figure(
        go.Heatmap(
            z=weights,
            x=positions,
            y=positions,
            customdata=hover,
            zmin=0.0,
            zmax=1.0,
            colorscale=COLOURS,
            colorbar=dict(title="weight", thickness=12),
            hovertemplate="query %{customdata[0]}<br>key %{customdata[1]}<br>weight %{z:.3f}<extra></extra>",
        )
    )
    figure.update_layout(title=dict(text=title, y=0.98, yanchor="top"), height=height, margin=dict(l=10, r=10, t=100, b=10))
    figure.update_xaxes(title="key (attended to)", side="top", tickangle=-45, **_token_axis(tokens))
    figure.update_yaxes(title="query (attending)", autorange="reversed", **_token_axis(tokens))
    return figure


def mask_heatmap(allowed: np.ndarray, tokens: list[str], title: str, height: int = 460) -> go.Figure:
    """The attention mask (T, T): green where a query may attend to a key, grey where it is blocked."""
    _check_square(allowed, tokens, "The mask")
    positions = np.arange(len(tokens))
    figure = go.Figure(
        go.Heatmap(
            z=allowed.astype(np.int8),
            x=positions,
            y=positions,
            zmin=0,
            zmax=1,
            colorscale=MASK_COLOURS,
            showscale=False,
            xgap=1,
            ygap=1,
            hovertemplate="query #%{y}<br>key #%{x}<br>allowed %{z}<extra></extra>",
        )
    )
    figure.update_layout(title=dict(text=title, y=0.98, yanchor="top"), height=height, margin=dict(l=10, r=10, t=100, b=10))
    figure.update_xaxes(title="key", side="top", tickangle=-45, **_token_axis(tokens))
    figure.update_yaxes(title="query", autorange="reversed", **_token_axis(tokens))
    return figure


def pool(weights: np.ndarray, size: int) -> np.ndarray:
    """(..., T, T) -> (..., size, size) blocks so long inputs stay small; unchanged if T <= size.

    A block holds the attention its queries give (on average) to its keys, so rows still sum to 1.
    """
    num_tokens = weights.shape[-1]
    if num_tokens <= size:
        return weights
    edges = np.linspace(0, num_tokens, size + 1).astype(int)
    rows = np.add.reduceat(weights, edges[:-1], axis=-2) / np.diff(edges)[:, None]  # mean over queries
    return np.add.reduceat(rows, edges[:-1], axis=-1)  # sum over keys


def mosaic(tiles: np.ndarray) -> np.ndarray:
    """(R, C, n, n) tiles -> one (R*(n+gap), C*(n+gap)) array with NaN gaps, to draw as a single heatmap."""
    rows, cols, n, _ = tiles.shape
    stride = n + CELL_GAP
    canvas = np.full((rows * stride, cols * stride), np.nan, dtype=np.float32)
    for r in range(rows):
        for c in range(cols):
            canvas[r * stride : r * stride + n, c * stride : c * stride + n] = tiles[r, c]
    return canvas[:-CELL_GAP, :-CELL_GAP]


def head_grid(
    weights: np.ndarray, tokens: list[str], title: str, kv_heads: int | None = None, columns: int = 6
) -> go.Figure:
    """Every head of one layer, weights (H, T, T), as small heatmaps labelled H0, H1, ...

    With `kv_heads` < H (GQA/MQA), each label also names the KV head its group shares.
    """
    _check_square(weights, tokens, "The layer's weights")
    num_heads, num_tokens, _ = weights.shape
    if kv_heads is not None and (kv_heads < 1 or num_heads % kv_heads):
        raise ValueError(f"{num_heads} query heads cannot share {kv_heads} KV heads evenly.")
    group = num_heads // kv_heads if kv_heads else 1
    columns = min(columns, num_heads)
    rows = int(np.ceil(num_heads / columns))
    padded = np.full((rows * columns, num_tokens, num_tokens), np.nan, dtype=np.float32)
    padded[:num_heads] = weights
    canvas = mosaic(padded.reshape(rows, columns, num_tokens, num_tokens))
    stride = num_tokens + CELL_GAP
    figure = _mosaic_figure(canvas, title, 100 + 165 * rows)
    head_of = lambda r, c: r * columns + c  # noqa: E731
    figure.data[0].customdata = _mosaic_hover(canvas.shape, stride, tokens, lambda r, c: f"head {head_of(r, c)}")
    figure.update_xaxes(showticklabels=False)
    figure.update_yaxes(showticklabels=False)
    figure.update_layout(
        annotations=[
            dict(x=c * stride + (num_tokens - 1) / 2, y=r * stride - 0.6, text=f"H{head_of(r, c)}" + (f" · KV{head_of(r, c) // group}" if group > 1 else ""),
                 showarrow=False, yanchor="bottom", font=dict(size=12))
            for r in range(rows) for c in range(columns) if head_of(r, c) < num_heads
        ]
    )
    return figure


def layer_head_overview(attentions: np.ndarray, tokens: list[str], max_cells: int = 24) -> go.Figure:
    """Every head (rows) in every layer (columns), attentions (L, H, T, T), pooled to max_cells per side."""
    _check_square(attentions, tokens, "The attention")
    num_layers, num_heads, num_tokens, _ = attentions.shape
    tiles = pool(attentions, max_cells).transpose(1, 0, 2, 3)  # (H, L, n, n): one row per head
    cells = tiles.shape[-1]
    canvas = mosaic(tiles)
    stride = cells + CELL_GAP
    figure = _mosaic_figure(canvas, "All heads × layers", 140 + int(1100 * num_heads / num_layers))
    # No per-cell hover text: it would multiply the payload; the axes name each tile's layer and head.
    figure.data[0].hovertemplate = "weight %{z:.3f}<extra></extra>"
    centre = (cells - 1) / 2
    figure.update_xaxes(side="top", tickmode="array", tickvals=[c * stride + centre for c in range(num_layers)],
                        ticktext=[f"L{c}" for c in range(num_layers)])
    figure.update_yaxes(tickmode="array", tickvals=[r * stride + centre for r in range(num_heads)],
                        ticktext=[f"H{r}" for r in range(num_heads)])
    return figure


def _mosaic_figure(canvas: np.ndarray, title: str, height: int) -> go.Figure:
    figure = go.Figure(
        go.Heatmap(
            z=canvas,
            zmin=0.0,
            zmax=1.0,
            colorscale=COLOURS,
            colorbar=dict(title="weight", thickness=12),
            hoverongaps=False,
            hovertemplate="%{customdata}<br>weight %{z:.3f}<extra></extra>",
        )
    )
    figure.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=70, b=10),
                         plot_bgcolor="white")
    figure.update_yaxes(autorange="reversed", scaleanchor="x", showgrid=False, zeroline=False)
    figure.update_xaxes(showgrid=False, zeroline=False, constrain="domain")
    return figure


def _mosaic_hover(shape, stride: int, tokens: list[str], tile_name) -> np.ndarray:
    """Hover text for each mosaic cell: which tile, which query and key tokens."""
    n = len(tokens)
    labels = np.array([f"#{i} {t}" for i, t in enumerate(tokens)], dtype=object)
    pair = "query " + labels[:, None] + "<br>key " + labels[None, :]  # (T, T)
    hover = np.full(shape, "", dtype=object)
    for r in range(0, shape[0], stride):
        for c in range(0, shape[1], stride):
            hover[r : r + n, c : c + n] = tile_name(r // stride, c // stride) + "<br>" + pair
    return hover


def query_bars(weights: np.ndarray, tokens: list[str], query: int, title: str) -> go.Figure:
    """Where one query token looks: its row of weights (T,) as bars over the key tokens, in order."""
    if weights.shape != (len(tokens),):
        raise ValueError(f"Expected one weight per token ({len(tokens)}); got shape {weights.shape}.")
    colours = ["#1d4ed8" if k != query else "#9ca3af" for k in range(len(tokens))]
    figure = go.Figure(
        go.Bar(
            x=np.arange(len(tokens)),
            y=weights,
            marker_color=colours,
            customdata=[f"#{k} {t}" for k, t in enumerate(tokens)],
            hovertemplate="key %{customdata}<br>weight %{y:.3f}<extra></extra>",
        )
    )
    figure.update_layout(title=title, height=280, margin=dict(l=10, r=10, t=40, b=10), yaxis_title="weight")
    figure.update_xaxes(tickangle=-45, **_token_axis(tokens))
    return figure
