"""Attention pictures: pure functions from probability arrays and token labels to plotly figures.

Axes are integer positions labelled with tokens (a categorical axis would merge repeated tokens), rows are
queries (the token that looks) and columns are keys (the token looked at).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.colors import get_colorscale

from explorer.charts.figure import figure_from
from explorer.summaries import (  # pooling lives with the other reductions; charts re-export it
    block_edges,
    pool,
)

COLOURS = get_colorscale("Blues")  # sequential: white = no attention, dark blue = all of it
MASK_COLOURS = [[0.0, "#e5e7eb"], [1.0, "#15803d"]]  # grey = blocked, green = may attend
CELL_GAP = 1  # empty cells between tiles of a mosaic
LOG_FLOOR = -4  # the log colour scale starts at a weight of 1e-4; smaller weights (and masked zeros) look white


def _check_square(weights: np.ndarray, tokens: list[str], what: str) -> None:
    if weights.ndim < 2 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(f"{what} must be square over (query, key); got shape {weights.shape}.")
    if weights.shape[-1] != len(tokens):
        raise ValueError(f"{what} covers {weights.shape[-1]} tokens but {len(tokens)} token labels were given.")


def _check_shape(weights: np.ndarray, query_tokens: list[str], key_tokens: list[str] | None, what: str) -> None:
    """Square over one token list, or (queries, keys) over two (cross-attention: decoder × encoder tokens)."""
    if key_tokens is None:
        _check_square(weights, query_tokens, what)
    elif weights.ndim < 2 or weights.shape[-2:] != (len(query_tokens), len(key_tokens)):
        raise ValueError(
            f"{what} have shape {weights.shape} but {len(query_tokens)} query and {len(key_tokens)} key labels "
            "were given; the last two axes must be (query, key)."
        )


def colour_scale(weights: np.ndarray, log_scale: bool) -> dict:
    """Heatmap colour settings for weights in [0, 1]: linear, or log10 so that small weights become visible.

    Plotly has no log colour axis, so the log scale draws log10(weight), clipped at 1e-4, with a colour bar
    labelled in weights.
    """
    if not log_scale:
        return dict(z=weights, zmin=0.0, zmax=1.0, colorscale=COLOURS,
                    colorbar=dict(title=dict(text="weight"), thickness=12))
    with np.errstate(divide="ignore"):
        z = np.maximum(np.log10(weights), LOG_FLOOR).astype(np.float32)  # NaN gaps stay NaN
    ticks = list(range(LOG_FLOOR, 1))
    return dict(
        z=z, zmin=LOG_FLOOR, zmax=0.0, colorscale=COLOURS,
        colorbar=dict(title=dict(text="weight"), thickness=12, tickvals=ticks,
                      ticktext=[f"{10.0**t:g}" for t in ticks]),
    )


def _margin(title: str, right: int = 10) -> dict:
    """Room above the plot for the title (each "<br>" adds a line) and the key axis drawn on top; `right` leaves
    room for the last key label, which leans right (plotly hides a label that would overflow the figure)."""
    return dict(l=10, r=right, t=125 + 20 * title.count("<br>"), b=10)


def wrapped_title(text: str) -> dict:
    """A title pinned to the figure's top-left corner, so that it is never clipped and sits just above its plot."""
    return dict(text=text, x=0, xref="paper", xanchor="left", y=1, yref="container", yanchor="top",
                pad=dict(t=8 + 10 * text.count("<br>")), font=dict(size=14))  # plotly anchors a long title low


def lean_room(tokens: list[str]) -> int:
    """Pixels right of the plot that the last key label needs when labels lean at -45 degrees on top."""
    longest = max((len(t) for t in tokens[-3:]), default=1)
    return 10 + int(5 * min(longest, 16))


def _weight_hover(log_scale: bool) -> str:
    return "log₁₀ weight %{z:.2f}" if log_scale else "weight %{z:.3f}"


def token_axis(tokens: list[str], max_ticks: int = 40, first: int = 0) -> dict:
    """Integer axis labelled by token; thinned when there are too many to read. `first`: position of tokens[0]."""
    step = max(1, int(np.ceil(len(tokens) / max_ticks)))
    positions = list(range(0, len(tokens), step))
    return dict(tickmode="array", tickvals=[first + i for i in positions], ticktext=[tokens[i] for i in positions])


def head_heatmap(
    weights: np.ndarray,
    tokens: list[str],
    title: str,
    height: int = 460,
    *,
    key_tokens: list[str] | None = None,
    first_query: int = 0,
    first_key: int = 0,
    log_scale: bool = False,
) -> go.Figure:
    """One head: weights (Tq, Tk), hover shows query token, key token and weight.

    Square over `tokens` for self-attention; with `key_tokens`, rows are `tokens` (queries) and columns
    `key_tokens` (cross-attention). `first_query`/`first_key` place a zoomed region at its true positions.
    """
    _check_shape(weights, tokens, key_tokens, "The head's weights")
    key_tokens = tokens if key_tokens is None else key_tokens
    query_labels = np.array([f"#{first_query + i} {t}" for i, t in enumerate(tokens)], dtype=object)
    key_labels = np.array([f"#{first_key + i} {t}" for i, t in enumerate(key_tokens)], dtype=object)
    hover = np.stack(np.broadcast_arrays(query_labels[:, None], key_labels[None, :]), axis=-1)  # (Tq, Tk, 2)
    heatmap = dict(
        type="heatmap",
        x=first_key + np.arange(len(key_tokens)),
        y=first_query + np.arange(len(tokens)),
        customdata=hover,
        hovertemplate="query %{customdata[0]}<br>key %{customdata[1]}<br>" + _weight_hover(log_scale)
        + "<extra></extra>",
        **colour_scale(weights, log_scale),
    )
    return figure_from([heatmap], dict(
        title=wrapped_title(title), height=height, margin=_margin(title),
        # Fewer labels across than down: rotated labels need more room than stacked ones.
        xaxis=dict(title=dict(text="key (attended to)"), side="top", tickangle=-45,
                   **token_axis(key_tokens, 24, first_key)),
        yaxis=dict(title=dict(text="query (attending)"), autorange="reversed", **token_axis(tokens, first=first_query)),
    ))


def pooled_heatmap(
    weights: np.ndarray, title: str, cells: int = 128, zoom: tuple[int, int] | None = None,
    height: int = 460, log_scale: bool = False,
) -> go.Figure:
    """One head over a long input, weights (T, T), pooled into at most `cells` blocks per side.

    Each block sits at its first token's position, so the axes read in tokens; `zoom` = (first, end)
    outlines in red the region drawn in full beside it. Hover shows positions only, to keep the payload small.
    """
    if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
        raise ValueError(f"One head's weights must be square over (query, key); got shape {weights.shape}.")
    starts = block_edges(weights.shape[0], cells)[:-1]
    heatmap = dict(
        type="heatmap", x=starts, y=starts,
        hovertemplate="queries from #%{y}<br>keys from #%{x}<br>" + _weight_hover(log_scale) + "<extra></extra>",
        **colour_scale(pool(weights, cells), log_scale),
    )
    shapes = []
    if zoom is not None:
        first, end = zoom
        shapes.append(dict(type="rect", x0=first - 0.5, x1=end - 0.5, y0=first - 0.5, y1=end - 0.5,
                           line=dict(color="#dc2626", width=2)))
    return figure_from([heatmap], dict(
        title=wrapped_title(title), height=height, margin=_margin(title), shapes=shapes,
        xaxis=dict(title=dict(text="key position (token)"), side="top"),
        yaxis=dict(title=dict(text="query position (token)"), autorange="reversed"),
    ))


def mask_title(kind: str, window: int | None, num_tokens: int) -> str:
    """What the mask of a layer is, in words, for the title of its picture."""
    if kind == "encoder":
        return "Mask: none<br>every token sees every token"
    if window is not None and window < num_tokens:
        return f"Mask: causal<br>sliding window of {window} tokens"
    return "Mask: causal<br>a token sees itself and<br>earlier tokens only"


def mask_heatmap(
    allowed: np.ndarray, tokens: list[str], title: str, height: int = 460, *, first: int = 0
) -> go.Figure:
    """The attention mask (T, T): green where a query may attend to a key, grey where it is blocked.

    `first`: the position of tokens[0], when the mask of a zoomed region is drawn.
    """
    _check_square(allowed, tokens, "The mask")
    positions = first + np.arange(len(tokens))
    heatmap = dict(
        type="heatmap", z=allowed.astype(np.int8), x=positions, y=positions, zmin=0, zmax=1,
        colorscale=MASK_COLOURS, showscale=False, xgap=1, ygap=1,
        hovertemplate="query #%{y}<br>key #%{x}<br>allowed %{z}<extra></extra>",
    )
    return figure_from([heatmap], dict(
        title=wrapped_title(title), height=height, margin=_margin(title, lean_room(tokens)),
        xaxis=dict(title=dict(text="key"), side="top", tickangle=-45, **token_axis(tokens, 24, first)),
        yaxis=dict(title=dict(text="query"), autorange="reversed", **token_axis(tokens, first=first)),
    ))


def mosaic(tiles: np.ndarray) -> np.ndarray:
    """(R, C, a, b) tiles -> one (R*(a+gap), C*(b+gap)) array with NaN gaps, to draw as a single heatmap."""
    rows, cols, a, b = tiles.shape
    canvas = np.full((rows * (a + CELL_GAP), cols * (b + CELL_GAP)), np.nan, dtype=np.float32)
    for r in range(rows):
        for c in range(cols):
            top, left = r * (a + CELL_GAP), c * (b + CELL_GAP)
            canvas[top : top + a, left : left + b] = tiles[r, c]
    return canvas[:-CELL_GAP, :-CELL_GAP]


def head_grid(
    weights: np.ndarray,
    tokens: list[str],
    title: str,
    kv_heads: int | None = None,
    columns: int = 6,
    *,
    key_tokens: list[str] | None = None,
    max_cells: int | None = None,
    log_scale: bool = False,
    selected: int | None = None,
) -> go.Figure:
    """Every head of one layer, weights (H, Tq, Tk), as small heatmaps labelled H0, H1, ...; clicking a tile
    selects its head (see `_picker`), and the `selected` head is outlined in red.

    With `kv_heads` < H (GQA/MQA), each label also names the KV head its group shares. With `key_tokens`
    the tiles are rectangular (cross-attention). With `max_cells`, longer self-attention is pooled into
    blocks and hover shows only the weight (token pairs per cell would multiply the payload).
    """
    _check_shape(weights, tokens, key_tokens, "The layer's weights")
    pooled = key_tokens is None and max_cells is not None and len(tokens) > max_cells
    if pooled:
        weights = pool(weights, max_cells)  # (H, n, n)
    num_heads, num_queries, num_keys = weights.shape
    if kv_heads is not None and (kv_heads < 1 or num_heads % kv_heads):
        raise ValueError(f"{num_heads} query heads cannot share {kv_heads} KV heads evenly.")
    group = num_heads // kv_heads if kv_heads else 1
    columns = min(columns, num_heads)
    rows = int(np.ceil(num_heads / columns))
    padded = np.full((rows * columns, num_queries, num_keys), np.nan, dtype=np.float32)
    padded[:num_heads] = weights
    canvas = mosaic(padded.reshape(rows, columns, num_queries, num_keys))
    row_stride, column_stride = num_queries + CELL_GAP, num_keys + CELL_GAP
    head_of = lambda r, c: r * columns + c  # noqa: E731
    tiles = [(r, c) for r in range(rows) for c in range(columns) if head_of(r, c) < num_heads]
    if pooled:
        hover = dict(hovertemplate=_weight_hover(log_scale) + "<extra></extra>")
    else:
        hover = dict(customdata=_mosaic_hover(canvas.shape, (row_stride, column_stride), tokens,
                                              key_tokens or tokens, lambda r, c: f"head {head_of(r, c)}"))
    picker = _picker([c * column_stride + (num_keys - 1) / 2 for r, c in tiles],
                     [r * row_stride + (num_queries - 1) / 2 for r, c in tiles], [[head_of(r, c)] for r, c in tiles])
    shapes = []
    if selected is not None and 0 <= selected < num_heads:
        shapes.append(_outline((selected % columns) * column_stride, (selected // columns) * row_stride,
                               num_keys, num_queries))
    # Each head's name inside its tile's top-right corner (empty under a causal mask), so none overlaps a neighbour.
    names = [dict(x=c * column_stride + num_keys - 0.5, y=r * row_stride - 0.5, xanchor="right", yanchor="top",
                  text=f"H{head_of(r, c)}" + (f" · KV{head_of(r, c) // group}" if group > 1 else ""),
                  showarrow=False, font=dict(size=11, color="#111827"), bgcolor="rgba(255,255,255,0.75)")
             for r, c in tiles]
    return _mosaic_figure(canvas, title, 80 + int(150 * rows * max(1.0, num_queries / num_keys)), log_scale,
                          hover, picker, shapes, annotations=names,
                          xaxis=dict(showticklabels=False, ticks=""), yaxis=dict(showticklabels=False, ticks=""))


def layer_head_overview(
    attentions: np.ndarray, tokens: list[str], max_cells: int = 24, log_scale: bool = False,
    selected: tuple[int, int] | None = None,
) -> go.Figure:
    """Every head (rows) in every layer (columns), attentions (L, H, T, T), pooled to max_cells per side.

    Clicking a tile selects its (layer, head); the `selected` (layer, head) is outlined in red.

    Already pooled input (`AttentionOverview.pooled`, with one label per block) is drawn as it is.
    """
    _check_square(attentions, tokens, "The attention")
    num_layers, num_heads, num_tokens, _ = attentions.shape
    tiles = pool(attentions, max_cells).transpose(1, 0, 2, 3)  # (H, L, n, n): one row per head
    cells = tiles.shape[-1]
    canvas = mosaic(tiles)
    stride = cells + CELL_GAP
    centre = (cells - 1) / 2
    step = int(np.ceil(num_layers / 16))  # at most 16 layer labels, so they stay level and readable
    picker = _picker([c * stride + centre for r in range(num_heads) for c in range(num_layers)],
                     [r * stride + centre for r in range(num_heads) for c in range(num_layers)],
                     [[c, r] for r in range(num_heads) for c in range(num_layers)])
    shapes = []
    if selected is not None and 0 <= selected[0] < num_layers and 0 <= selected[1] < num_heads:
        shapes.append(_outline(selected[0] * stride, selected[1] * stride, cells, cells))
    # No per-cell hover text: it would multiply the payload; the axes name each tile's layer and head.
    return _mosaic_figure(
        canvas, "All heads × layers", 90 + 46 * num_heads, log_scale,
        dict(hovertemplate=_weight_hover(log_scale) + "<extra></extra>"), picker, shapes,
        xaxis=dict(tickmode="array", tickvals=[c * stride + centre for c in range(0, num_layers, step)],
                   ticktext=[f"L{c}" for c in range(0, num_layers, step)], tickangle=0),
        yaxis=dict(tickmode="array", tickvals=[r * stride + centre for r in range(num_heads)],
                   ticktext=[f"H{r}" for r in range(num_heads)]),
    )


def _outline(left: int, top: int, width: int, height: int) -> dict:
    """A red frame around one tile of a mosaic: the head that is selected."""
    return dict(type="rect", x0=left - 0.5, x1=left + width - 0.5, y0=top - 0.5, y1=top + height - 0.5,
                line=dict(color="#dc2626", width=2))


def _picker(x: list[float], y: list[float], ids: list[list[int]]) -> dict:
    """Invisible points at the tiles' centres, one per head, so that a click on a tile selects that head.

    A heatmap cannot be selected in plotly; a scatter point can, and its `customdata` says which head it is:
    [head] in a layer's grid, [layer, head] in the overview. Hovering near a centre names the head. `customdata`
    stays a plain list: as a typed array, a clicked point's customdata reaches the server as {"0": .., "1": ..}.
    """
    count = len(ids)
    name = "L%{customdata[0]} H%{customdata[1]}" if len(ids[0]) == 2 else "H%{customdata[0]}"
    return dict(
        type="scatter", x=np.asarray(x[:count], dtype=np.float32), y=np.asarray(y[:count], dtype=np.float32),
        customdata=ids, mode="markers", showlegend=False, name="heads",
        marker=dict(size=22, symbol="square", opacity=0, color="#1d4ed8"),
        selected=dict(marker=dict(opacity=0)), unselected=dict(marker=dict(opacity=0)),
        hovertemplate=name + ": click to select<extra></extra>",
    )


def _mosaic_figure(canvas: np.ndarray, title: str, height: int, log_scale: bool, hover: dict, picker: dict,
                   shapes: list[dict], annotations: list[dict] = (), *, xaxis: dict, yaxis: dict) -> go.Figure:
    """A mosaic (one heatmap of tiles with NaN gaps) under the head `picker`; `hover`: the heatmap's hover."""
    heatmap = {"type": "heatmap", "hoverongaps": False,
               "hovertemplate": "%{customdata}<br>" + _weight_hover(log_scale) + "<extra></extra>",
               **colour_scale(canvas, log_scale), **hover}
    rows, columns = canvas.shape
    # No fixed aspect ratio: tiles stretch to fill the figure, so no empty band opens above or below them.
    return figure_from([heatmap, picker], dict(
        title=wrapped_title(title), height=height, margin=dict(l=10, r=10, t=60, b=10), plot_bgcolor="white",
        clickmode="event+select", dragmode=False, hovermode="closest", shapes=shapes, annotations=list(annotations),
        yaxis=dict(range=[rows - 0.5, -0.5], showgrid=False, zeroline=False, **yaxis),  # row 0 on top
        xaxis=dict(range=[-0.5, columns - 0.5], showgrid=False, zeroline=False, **xaxis),
    ))


def _mosaic_hover(
    shape, strides: tuple[int, int], query_tokens: list[str], key_tokens: list[str], tile_name
) -> np.ndarray:
    """Hover text for each mosaic cell: which tile, which query and key tokens."""
    queries = np.array([f"#{i} {t}" for i, t in enumerate(query_tokens)], dtype=object)
    keys = np.array([f"#{i} {t}" for i, t in enumerate(key_tokens)], dtype=object)
    pair = "query " + queries[:, None] + "<br>key " + keys[None, :]  # (Tq, Tk)
    row_stride, column_stride = strides
    hover = np.full(shape, "", dtype=object)
    for r in range(0, shape[0], row_stride):
        for c in range(0, shape[1], column_stride):
            name = tile_name(r // row_stride, c // column_stride)
            hover[r : r + len(queries), c : c + len(keys)] = name + "<br>" + pair
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
    figure.update_xaxes(tickangle=-45, **token_axis(tokens))
    return figure


def summary_heatmap(
    values: np.ndarray, title: str, unit: str, colours: str = "Viridis", zmax: float | None = None
) -> go.Figure:
    """One number per head, values (L, H), as a small heatmap: layers across, heads down."""
    if values.ndim != 2:
        raise ValueError(f"Expected one value per (layer, head); got shape {values.shape}.")
    num_layers, num_heads = values.shape
    heatmap = dict(
        type="heatmap", z=values.T, x=np.arange(num_layers), y=np.arange(num_heads),  # (H, L): one row per head
        zmin=0.0, zmax=zmax, colorscale=get_colorscale(colours), colorbar=dict(title=dict(text=unit), thickness=10),
        hovertemplate="layer %{x}, head %{y}<br>%{z:.2f} " + unit + "<extra></extra>",
    )
    return figure_from([heatmap], dict(
        title=wrapped_title(title), height=110 + 18 * num_heads, margin=dict(l=10, r=10, t=40, b=10),
        xaxis=dict(title=dict(text="layer"), dtick=1 if num_layers <= 16 else 2 if num_layers <= 40 else 5),
        yaxis=dict(title=dict(text="head"), autorange="reversed", dtick=1),
    ))
