"""Charts of the variant lab: the quality-vs-cache frontier, how alike heads are, what the MLA latent keeps."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import plotly.graph_objects as go

FAMILY_COLOURS = {
    "original": "#111827",
    "mha": "#6b7280",
    "gqa / mqa": "#2563eb",
    "mla (naive)": "#16a34a",
    "mla (decoupled RoPE)": "#dc2626",
}


def family(label: str) -> str:
    """Group a variant label ("mqa kv=1 mean", "mla naive r=128 data") into a legend family."""
    if label.startswith(("gqa", "mqa")):
        return "gqa / mqa"
    if label.startswith("mla"):
        return "mla (decoupled RoPE)" if "decoupled" in label else "mla (naive)"
    return label.split()[0]


def frontier_figure(
    points: Sequence[dict], original_perplexity: float, current: dict | None = None, height: int = 460
) -> go.Figure:
    """Perplexity (log) against KV values cached per token and layer, one marker per measured variant, with its
    95% interval as an error bar.

    Each point is {"label", "values", "perplexity"} and, for the error bar, "low" and "high" (the interval's
    bounds); `current` (same keys) is drawn as a star on top.
    """
    if original_perplexity <= 0:
        raise ValueError("The original perplexity must be positive.")
    for point in [*points, *([current] if current else [])]:
        if point["values"] <= 0 or not point["perplexity"] > 0:
            raise ValueError(f"The point '{point['label']}' needs positive cache values and perplexity.")
        _check_interval(point, "perplexity")
    figure = go.Figure()
    for name, colour in FAMILY_COLOURS.items():
        members = [p for p in points if family(p["label"]) == name]
        if not members:
            continue
        figure.add_trace(
            go.Scatter(
                x=[p["values"] for p in members],
                y=[p["perplexity"] for p in members],
                mode="markers",
                name=name,
                marker=dict(color=colour, size=10, opacity=0.8),
                error_y=_error_bars(members, "perplexity", colour),
                customdata=[[p["label"], *_bounds(p)] for p in members],
                hovertemplate="%{customdata[0]}<br>%{x} values/token/layer<br>perplexity %{y:,.1f}"
                              "<br>95%: %{customdata[1]:,.1f}–%{customdata[2]:,.1f}<extra></extra>",
            )
        )
    if current:
        figure.add_trace(
            go.Scatter(
                x=[current["values"]], y=[current["perplexity"]], mode="markers+text", name="your choice",
                text=[current["label"]], textposition="top center",
                marker=dict(symbol="star", size=20, color="#f59e0b", line=dict(color="#111827", width=1)),
                error_y=_error_bars([current], "perplexity", "#f59e0b"),
                hovertemplate=f"{current['label']}<br>%{{x}} values/token/layer<br>perplexity %{{y:,.1f}}"
                              + ("<br>95%: {:,.1f}–{:,.1f}".format(*_bounds(current)) if "low" in current else "")
                              + "<extra></extra>",
            )
        )
    # Lines with their labels as separate annotations: on a log axis an annotation's y is log10 of the value,
    # which add_hline's own annotation_text does not apply (it put "original 42.6" at 10^42).
    for y, colour, dash, text, anchor in ((original_perplexity, "#111827", "dot", f"original {original_perplexity:.1f}",
                                           "top"), (original_perplexity * 1.05, "#16a34a", "dash", "+5%", "bottom")):
        figure.add_hline(y=y, line=dict(color=colour, dash=dash, width=1 if dash == "dash" else 2))
        figure.add_annotation(x=0, xref="paper", xanchor="left", y=math.log10(y), yref="y", yanchor=anchor,
                              text=text, showarrow=False, font=dict(color=colour))
    figure.update_layout(
        title="Quality against cache size (lower left is better)", height=height,
        margin=dict(l=10, r=10, t=50, b=10), legend=dict(orientation="h", y=-0.2),
        xaxis=dict(title="KV values cached per token per layer", type="log"),
        yaxis=dict(title="perplexity on held-out news prose", type="log"),
    )
    relative_axis(figure, original_perplexity)
    return figure


RATIO_TICKS = (1.0, 1.25, 1.5, 2.0, 3.0, 4.0)  # perplexity / original, where the y axis has ticks
CEILING = 4.0  # the y axis stops at this many times the original; worse variants are marked off-scale


def _label(row) -> str:
    """A point's label from its customdata: the label itself, or the first of [label, low, high]."""
    return row if isinstance(row, str) else row[0]


def relative_axis(figure: go.Figure, original_perplexity: float, ceiling: float = CEILING) -> go.Figure:
    """Clip the frontier's log y axis to [0.85x, `ceiling`x] the original perplexity, ticked as ratios ("x1.5"),
    so the region that matters (within 2x of the original) is legible; a variant above the ceiling (a collapsed
    conversion, 10^3-10^5 x) is drawn as a triangle on the top edge whose hover gives its true perplexity.
    """
    low, high = 0.85 * original_perplexity, ceiling * original_perplexity
    off = [(x, y, name) for trace in figure.data if trace.type == "scatter" and trace.y is not None
           for x, y, name in zip(trace.x, trace.y, trace.customdata if trace.customdata is not None
                                 else trace.text or [trace.name] * len(trace.y)) if y > high]
    if off:
        figure.add_trace(go.Scatter(
            x=[x for x, _, _ in off], y=[high] * len(off), mode="markers", name=f"off-scale (above x{ceiling:g})",
            marker=dict(symbol="triangle-up", size=12, color="#9ca3af", line=dict(color="#111827", width=1)),
            customdata=[[_label(name), y, y / original_perplexity] for _, y, name in off], cliponaxis=False,
            hovertemplate="%{customdata[0]}<br>%{x} values/token/layer<br>perplexity %{customdata[1]:,.0f} "
                          "(x%{customdata[2]:,.0f} the original): off the scale<extra></extra>",
        ))
    ticks = [r for r in RATIO_TICKS if r <= ceiling]
    figure.update_yaxes(
        title="perplexity, relative to the original", range=[math.log10(low), math.log10(high)],
        tickvals=[r * original_perplexity for r in ticks],
        ticktext=[f"x{r:g}" + (f" ({original_perplexity:.1f})" if r == 1 else "") for r in ticks],
    )
    return figure


def _check_interval(point: dict, score: str) -> None:
    if ("low" in point) != ("high" in point):
        raise ValueError(f"The point '{point['label']}' needs both bounds of its interval, low and high.")
    slack = 1e-9 * abs(point[score])  # the bounds come from resampled means: allow rounding, nothing more
    if "low" in point and not point["low"] - slack <= point[score] <= point["high"] + slack:
        raise ValueError(f"The point '{point['label']}': its {score} must lie inside its interval (low to high).")


def _bounds(point: dict) -> tuple[float, float]:
    return point.get("low", float("nan")), point.get("high", float("nan"))


def _error_bars(points: Sequence[dict], score: str, colour: str) -> dict | None:
    """Asymmetric error bars from each point's interval (none when no point carries one)."""
    if not any("low" in p for p in points):
        return None
    return dict(
        type="data", symmetric=False, color=colour, thickness=1.5, width=4,
        array=[p["high"] - p[score] if "high" in p else 0 for p in points],
        arrayminus=[p[score] - p["low"] if "low" in p else 0 for p in points],
    )


def encoder_frontier_figure(points: Sequence[dict], current: dict | None = None, height: int = 460) -> go.Figure:
    """Embedding cosine with the original (higher is better) against K/V values per token and layer, one marker
    per measured encoder variant with its 95% interval as an error bar. Each point is {"label", "values",
    "embedding_cosine"} and optionally "low" and "high"; `current` (same keys) is drawn as a star on top. An
    encoder keeps no cache: the values are what a cache would hold."""
    everything = [*points, *([current] if current else [])]
    for point in everything:
        if point["values"] <= 0 or not -1 <= point["embedding_cosine"] <= 1:
            raise ValueError(f"The point '{point['label']}' needs positive values and a cosine from -1 to 1.")
        _check_interval(point, "embedding_cosine")
    figure = go.Figure()
    hover = "<br>%{x} values/token/layer<br>embedding cosine %{y:.4f}<extra></extra>"
    for name, colour in FAMILY_COLOURS.items():
        members = [p for p in points if family(p["label"]) == name]
        if members:
            figure.add_trace(go.Scatter(
                x=[p["values"] for p in members], y=[p["embedding_cosine"] for p in members], mode="markers",
                name=name, marker=dict(color=colour, size=10, opacity=0.8),
                error_y=_error_bars(members, "embedding_cosine", colour),
                customdata=[p["label"] for p in members], hovertemplate="%{customdata}" + hover,
            ))
    if current:
        figure.add_trace(go.Scatter(
            x=[current["values"]], y=[current["embedding_cosine"]], mode="markers+text", name="your choice",
            text=[current["label"]], textposition="bottom center",
            marker=dict(symbol="star", size=20, color="#f59e0b", line=dict(color="#111827", width=1)),
            error_y=_error_bars([current], "embedding_cosine", "#f59e0b"), hovertemplate=current["label"] + hover,
        ))
    figure.add_hline(y=1.0, line=dict(color="#111827", dash="dot"), annotation_text="original 1.0",
                     annotation_position="top left")
    figure.add_hline(y=0.99, line=dict(color="#16a34a", dash="dash", width=1), annotation_text="0.99",
                     annotation_position="bottom left")
    lowest = min([0.0, *(p.get("low", p["embedding_cosine"]) for p in everything)])
    figure.update_layout(
        title="Quality against K/V size (upper left is better)", height=height,
        margin=dict(l=10, r=10, t=50, b=10), legend=dict(orientation="h", y=-0.2),
        xaxis=dict(title="K/V values per token per layer (what a cache would hold)", type="log"),
        yaxis=dict(title="embedding cosine with the original", range=[lowest - 0.02, 1.05]),
    )
    return figure


def similarity_heatmap(similarity: np.ndarray, kv_heads: int, title: str, height: int = 380) -> go.Figure:
    """(H, H) similarity of heads' patterns, with a box around each group of heads sharing a KV head."""
    num_heads = similarity.shape[0]
    if similarity.shape != (num_heads, num_heads):
        raise ValueError(f"Expected a square (heads, heads) matrix; got shape {similarity.shape}.")
    if kv_heads < 1 or num_heads % kv_heads:
        raise ValueError(f"{num_heads} query heads cannot share {kv_heads} KV heads evenly.")
    labels = [f"H{h}" for h in range(num_heads)]
    figure = go.Figure(
        go.Heatmap(
            z=similarity, x=labels, y=labels, zmin=0, zmax=1, colorscale="Purples",
            colorbar=dict(title="cosine", thickness=12),
            hovertemplate="%{y} vs %{x}<br>similarity %{z:.2f}<extra></extra>",
        )
    )
    size = num_heads // kv_heads
    for group in range(kv_heads if size > 1 else 0):
        edge = group * size - 0.5
        figure.add_shape(type="rect", x0=edge, x1=edge + size, y0=edge, y1=edge + size,
                         line=dict(color="#f59e0b", width=3))
    figure.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=50, b=10))
    figure.update_yaxes(autorange="reversed", scaleanchor="x")
    return figure


def energy_bars(
    energy_kept: Sequence[float], latent_ranks: Sequence[int], height: int = 300,
    rope_key_kept: Sequence[float] | None = None,
) -> go.Figure:
    """Per layer: the share of K/V energy the latent keeps (bars), with each layer's latent width in the hover;
    in the decoupled form also the share of the per-head RoPE keys the one shared RoPE key keeps (second bars)."""
    if len(energy_kept) != len(latent_ranks):
        raise ValueError(f"{len(energy_kept)} energies but {len(latent_ranks)} latent ranks were given.")
    if rope_key_kept is not None and len(rope_key_kept) != len(energy_kept):
        raise ValueError(f"{len(rope_key_kept)} RoPE key energies but {len(energy_kept)} layers were given.")
    layers = [f"L{i}" for i in range(len(energy_kept))]
    what = "K/V energy" if rope_key_kept is None else "energy of the values and the keys' non-RoPE dims"
    figure = go.Figure(
        go.Bar(
            x=layers, y=list(energy_kept), customdata=list(latent_ranks), marker_color="#16a34a",
            name="latent",
            hovertemplate="%{x}: the latent keeps %{y:.1%} of the " + what
                          + "<br>latent width %{customdata}<extra></extra>",
        )
    )
    if rope_key_kept is not None:
        figure.add_trace(go.Bar(
            x=layers, y=list(rope_key_kept), marker_color="#7c3aed", name="shared RoPE key",
            hovertemplate="%{x}: the shared RoPE key keeps %{y:.1%} of the KV heads' RoPE keys<extra></extra>",
        ))
    title = "Energy the latent keeps, per layer" if rope_key_kept is None else (
        "Energy kept per layer: the latent, and the one RoPE key shared by every head")
    figure.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=50, b=10), barmode="group",
                         yaxis=dict(title="share of energy kept", range=[0, 1], tickformat=".0%"))
    return figure


def loss_curves(curves: dict[str, Sequence[float]], tokens_per_step: int, height: int = 340) -> go.Figure:
    """Training loss against tokens seen, one line per run ({"mqa kv=1 mean": [losses], "control": [...]})."""
    if tokens_per_step <= 0:
        raise ValueError("Each training step must see at least one token.")
    figure = go.Figure()
    for name, losses in curves.items():
        tokens = [(step + 1) * tokens_per_step for step in range(len(losses))]
        colour = "#111827" if name == "control" else "#dc2626"
        figure.add_trace(go.Scatter(
            x=tokens, y=list(losses), mode="lines+markers" if len(losses) < 40 else "lines", name=name,
            line=dict(color=colour, width=2, dash="dot" if name == "control" else "solid"),
            hovertemplate=f"{name}<br>%{{x:,}} tokens<br>loss %{{y:.3f}}<extra></extra>",
        ))
    figure.update_layout(
        title="Training loss while uptraining", height=height, margin=dict(l=10, r=10, t=50, b=10),
        legend=dict(orientation="h", y=-0.25),
        xaxis=dict(title="training tokens seen"), yaxis=dict(title="next-token loss (nats)"),
    )
    return figure
