"""Generation pictures: pure functions from attention rows, cache sizes and seconds to plotly figures.

The numbers come from explorer.generate; nothing here touches a model.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

MIB = 2**20
FORMULA_DASH = "dash"
PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0891b2")  # first variant, second, original, others
MARKS = (4_096, 32_768, 131_072)  # context lengths where the variants' separation is read off


def attention_rows_figure(
    rows: Sequence[np.ndarray], key_labels: Sequence[str], query_labels: Sequence[str], title: str,
    columns: int = 3, height: int | None = None,
) -> go.Figure:
    """One heatmap per head: row i is the attention of the query that chose generated token i over every position
    cached then, so the picture grows by one row (and one column) per step.

    `rows[i]` is (H, S_i) with S_i growing; `key_labels` names the positions (prompt then generated tokens, at least
    max S_i of them), `query_labels` the chosen tokens (one per row). Positions not yet cached are left blank.
    """
    if not rows:
        raise ValueError("Give at least one step's attention row to draw.")
    if len(query_labels) != len(rows):
        raise ValueError(f"{len(rows)} attention rows need {len(rows)} token labels, not {len(query_labels)}.")
    heads = rows[0].shape[0]
    if any(row.ndim != 2 or row.shape[0] != heads for row in rows):
        raise ValueError("Every attention row must be (heads, positions) with the same number of heads.")
    width = max(row.shape[1] for row in rows)
    if len(key_labels) < width:
        raise ValueError(f"The rows cover {width} positions but only {len(key_labels)} position labels were given.")
    grid = np.full((heads, len(rows), width), np.nan, dtype=np.float32)  # (H, N, S): blank where not cached yet
    for i, row in enumerate(rows):
        grid[:, i, : row.shape[1]] = row
    columns = min(columns, heads)
    lines = math.ceil(heads / columns)
    figure = make_subplots(rows=lines, cols=columns, subplot_titles=[f"head {h}" for h in range(heads)],
                           horizontal_spacing=0.03, vertical_spacing=0.08 / max(lines - 1, 1) + 0.04)
    x_ticks = _ticks(list(key_labels[:width]))
    y_ticks = _ticks(list(query_labels))
    named = len(rows) * width <= 20_000  # hover names every cell of small pictures; large ones give positions
    hover = ({"customdata": np.array([[f"{q} → {k}" for k in key_labels[:width]] for q in query_labels], dtype=object),
              "hovertemplate": "%{customdata}<br>weight %{z:.3f}<extra></extra>"} if named else
             {"hovertemplate": "step %{y} → position %{x}<br>weight %{z:.3f}<extra></extra>"})
    for h in range(heads):
        figure.add_trace(
            go.Heatmap(z=grid[h], x=list(range(width)), y=list(range(len(rows))), coloraxis="coloraxis", **hover),
            row=h // columns + 1, col=h % columns + 1,
        )
    # token names on the first column's rows only (hover names every cell); positions along the bottom row
    figure.update_xaxes(showticklabels=False)
    figure.update_xaxes(showticklabels=True, tickvals=x_ticks[0], ticktext=x_ticks[1], tickangle=-60, tickfont_size=8,
                        row=lines)
    figure.update_yaxes(autorange="reversed", showticklabels=False)
    figure.update_yaxes(showticklabels=True, tickvals=y_ticks[0], ticktext=y_ticks[1], tickfont_size=8, col=1)
    figure.update_layout(
        title=title, coloraxis={"colorscale": "Blues", "cmin": 0, "cmax": 1, "colorbar": {"title": "weight"}},
        height=height or 170 * lines + 120, margin={"t": 70, "b": 40, "l": 40, "r": 20},
    )
    return figure


def _ticks(labels: list[str], most: int = 16) -> tuple[list[int], list[str]]:
    """Integer tick positions and their labels, thinned to at most `most` (repeated tokens stay apart)."""
    every = max(1, math.ceil(len(labels) / most))
    positions = list(range(0, len(labels), every))
    return positions, [labels[i] for i in positions]


def cache_growth_figure(
    measured: Mapping[str, tuple[Sequence[int], Sequence[int]]],
    formula: Mapping[str, tuple[Sequence[int], Sequence[int]]],
    title: str = "KV cache while generating: weighed (points) against the formula (dashed)",
    height: int = 380,
) -> go.Figure:
    """Cache bytes after each step, weighed from the cache tensors, with the formula line of each variant.

    Both map a label to (cached tokens, bytes) after each step: `measured` weighed, `formula` computed. A label may
    have a formula only (the original's line when only a variant runs).
    """
    if not formula:
        raise ValueError("Give at least one variant's formula to draw.")
    for label, (tokens, sizes) in [*measured.items(), *formula.items()]:
        if len(tokens) != len(sizes):
            raise ValueError(f"'{label}' has {len(tokens)} token counts for {len(sizes)} cache sizes.")
    for label in measured:
        if label not in formula:
            raise ValueError(f"'{label}' was measured but has no formula line.")
    figure = go.Figure()
    for i, (label, (tokens, sizes)) in enumerate(formula.items()):
        colour = PALETTE[i % len(PALETTE)]
        figure.add_trace(go.Scatter(
            x=list(tokens), y=[size / MIB for size in sizes], mode="lines", name=f"{label}: formula",
            line={"color": colour, "dash": FORMULA_DASH, "width": 2},
            hovertemplate="%{x} tokens cached: %{y:.3f} MiB by the formula<extra>" + label + "</extra>",
        ))
        if label in measured and len(measured[label][0]):
            tokens, sizes = measured[label]
            figure.add_trace(go.Scatter(
                x=list(tokens), y=[size / MIB for size in sizes], mode="markers", name=f"{label}: weighed",
                marker={"color": colour, "size": 7},  # points on the dashed formula line where they agree
                hovertemplate="%{x} tokens cached: %{y:.3f} MiB weighed<extra>" + label + "</extra>",
            ))
    figure.update_layout(title=title, height=height, xaxis_title="tokens in the cache", yaxis_title="MiB",
                         legend={"orientation": "h", "y": -0.25}, margin={"t": 60, "b": 40})
    return figure


def context_figure(
    lengths: Sequence[int],
    formula: Mapping[str, Sequence[float]],
    measured: Mapping[str, tuple[Sequence[int], Sequence[int]]],
    measured_up_to: int,
    title: str = "Past the steps run: the cache measured up to a budget, the formula beyond",
    height: int = 420,
) -> go.Figure:
    """Cache against context length on log axes: weighed points up to `measured_up_to` tokens (markers), the formula
    (`formula`: label -> bytes at each length) dashed; the sizes at 4k, 32k and 128k are written where the axis
    reaches them."""
    contexts = list(lengths)
    if not contexts or contexts[0] < 1 or any(b <= a for a, b in zip(contexts, contexts[1:])):
        raise ValueError("Give increasing context lengths of 1 token or more.")
    if not formula:
        raise ValueError("Give at least one variant's formula to draw.")
    figure = go.Figure()
    for i, (label, sizes) in enumerate(formula.items()):
        if len(sizes) != len(contexts):
            raise ValueError(f"'{label}' has {len(sizes)} cache sizes for {len(contexts)} context lengths.")
        colour = PALETTE[i % len(PALETTE)]
        at = dict(zip(contexts, sizes))
        figure.add_trace(go.Scatter(
            x=contexts, y=[size / MIB for size in sizes], mode="lines", name=f"{label}: formula",
            line={"color": colour, "dash": FORMULA_DASH}, hovertemplate="%{x:,} tokens: %{y:,.1f} MiB by the formula"
            "<extra>" + label + "</extra>",
        ))
        if label in measured and len(measured[label][0]):
            tokens, sizes = measured[label]
            figure.add_trace(go.Scatter(
                x=list(tokens), y=[size / MIB for size in sizes], mode="markers", name=f"{label}: weighed",
                marker={"color": colour, "size": 8, "symbol": "circle"},
                hovertemplate="%{x:,} tokens: %{y:,.2f} MiB weighed<extra>" + label + "</extra>",
            ))
        for mark in MARKS:
            if mark in at and at[mark] > 0:
                figure.add_annotation(x=math.log10(mark), y=math.log10(at[mark] / MIB),
                                      text=_mib_text(at[mark]), showarrow=False, xanchor="left",
                                      font={"color": colour, "size": 10}, xshift=4)
    figure.add_vrect(x0=contexts[0], x1=max(measured_up_to, contexts[0]), fillcolor="#16a34a", opacity=0.07,
                     line_width=0, annotation_text=f"measured ≤ {measured_up_to:,} tokens",
                     annotation_position="top left")
    if measured_up_to < contexts[-1]:
        figure.add_annotation(x=math.log10(contexts[-1]), y=1.0, yref="paper", text="formula beyond", showarrow=False,
                              xanchor="right", font={"size": 11, "color": "#6b7280"})
    for mark in MARKS:
        if contexts[0] <= mark <= contexts[-1]:
            figure.add_vline(x=mark, line={"color": "#9ca3af", "width": 1, "dash": "dot"})
    figure.update_layout(title=title, height=height, legend={"orientation": "h", "y": -0.25}, margin={"t": 60},
                         xaxis={"type": "log", "title": "context length (tokens)"},
                         yaxis={"type": "log", "title": "KV cache (MiB)"})
    return figure


def _mib_text(size: float) -> str:
    return f"{size / 2**30:,.2f} GiB" if size >= 2**30 else f"{size / MIB:,.1f} MiB"


def kl_figure(kl: Sequence[float], first_divergence: int | None, labels: tuple[str, str], height: int = 300) -> go.Figure:
    """Per-step KL(first || second) of the next-token distributions, with the first differing token marked."""
    values = list(kl)
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError("KL values must be finite numbers of 0 or more.")
    figure = go.Figure(go.Bar(x=list(range(len(values))), y=values, marker_color=PALETTE[1],
                              hovertemplate="step %{x}: %{y:.3f} nats<extra></extra>"))
    if first_divergence is not None:
        figure.add_vline(x=first_divergence, line={"color": "#b91c1c", "dash": "dash"},
                         annotation_text=f"first different token: step {first_divergence}")
    figure.update_layout(title=f"KL({labels[0]} ‖ {labels[1]}) per step, on {labels[0]}'s context", height=height,
                         xaxis_title="step", yaxis_title="nats", margin={"t": 60})
    return figure


def step_time_figure(seconds: Mapping[str, Sequence[float]], height: int = 260) -> go.Figure:
    """Seconds per decode step of each variant (the prefill is left out: it reads the whole prompt at once)."""
    if not seconds:
        raise ValueError("Give at least one variant's step times to draw.")
    figure = go.Figure()
    for i, (label, values) in enumerate(seconds.items()):
        figure.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=[v * 1000 for v in values], mode="lines",
                                    name=label, line={"color": PALETTE[i % len(PALETTE)]},
                                    hovertemplate="decode step %{x}: %{y:.0f} ms<extra>" + label + "</extra>"))
    figure.update_layout(title="Milliseconds per decode step", height=height, xaxis_title="decode step",
                         yaxis_title="ms", legend={"orientation": "h", "y": -0.3}, margin={"t": 50})
    return figure
