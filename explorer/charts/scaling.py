"""Scaling pictures: pure functions from measured lengths, times, bytes and tokens/s to plotly figures.

Both axes are logarithmic where growth is the point: on a log-log chart a cost ∝ Tᵏ is a straight line of slope k.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import plotly.graph_objects as go

# One colour per series, the same on every chart and every device column.
COLOURS = {
    "attention, materialised": "#b91c1c",
    "attention, SDPA": "#ea580c",
    "rest of the layer": "#2563eb",
    "full layer, SDPA": "#6b7280",
    "MHA": "#b91c1c",
    "GQA": "#2563eb",
    "MQA": "#16a34a",
    "MLA naive": "#db2777",
    "MLA absorbed": "#7c3aed",
    "MLA": "#7c3aed",
}
UNITS = {"time": ("seconds (median)", "s"), "memory": ("bytes", "B")}


def _check(lengths: Sequence[int], series: Mapping[str, Sequence[float]], what: str) -> list[int]:
    xs = list(lengths)
    if len(xs) < 1:
        raise ValueError("Give at least one length to draw.")
    if any(x <= 0 for x in xs):
        raise ValueError("A log axis cannot show a length of 0 tokens or fewer.")
    if any(later <= earlier for earlier, later in zip(xs, xs[1:])):
        raise ValueError("Lengths must increase from left to right.")
    if not series:
        raise ValueError(f"Give at least one {what} series to draw.")
    for label, values in series.items():
        if len(values) != len(xs):
            raise ValueError(f"'{label}' has {len(values)} {what} values for {len(xs)} lengths.")
        for value in values:
            if value is not None and not math.isnan(value) and (not math.isfinite(value) or value <= 0):
                raise ValueError(f"'{label}' has a {what} value of {value}: a log axis needs positive numbers.")
    return xs


def _points(values: Sequence[float]) -> list[float | None]:
    return [None if value is None or math.isnan(value) else value for value in values]


def scaling_figure(
    lengths: Sequence[int],
    series: Mapping[str, Sequence[float]],
    slopes: Mapping[str, float],
    what: str = "time",
    title: str = "Prefill time against sequence length",
    height: int = 420,
) -> go.Figure:
    """Measured time (seconds) or memory (bytes) against sequence length on log-log axes, one line per series,
    with its fitted slope in the legend ("attention, materialised · slope 1.97"). NaN: not measured there."""
    if what not in UNITS:
        raise ValueError(f"Draw 'time' or 'memory', not '{what}'.")
    xs = _check(lengths, series, what)
    unknown = set(slopes) - set(series)
    if unknown:
        raise ValueError(f"Slopes given for series not drawn: {', '.join(sorted(unknown))}.")
    axis_title, unit = UNITS[what]
    figure = go.Figure()
    for label, values in series.items():
        name = f"{label} · slope {slopes[label]:.2f}" if label in slopes else label
        number = "%{y:.3s}" + unit if what == "memory" else "%{y:.4f} s"
        figure.add_trace(go.Scatter(
            x=xs, y=_points(values), mode="lines+markers", name=name,
            line=dict(color=COLOURS.get(label)), connectgaps=False,
            hovertemplate=f"{label}<br>%{{x:,}} tokens<br>{number}<extra></extra>",
        ))
    figure.update_layout(
        title=title, height=height, margin=dict(l=10, r=10, t=60, b=10),
        xaxis=dict(title="sequence length T (tokens, log)", type="log", tickvals=xs, ticktext=[f"{x:,}" for x in xs]),
        yaxis=dict(title=f"{axis_title} (log)", type="log"),
        legend=dict(orientation="h", y=-0.25),
    )
    return figure


def decode_figure(
    contexts: Sequence[int],
    tokens_per_second: Mapping[str, Sequence[float]],
    roofline: Mapping[str, Sequence[float]] | None = None,
    gpu_label: str | None = None,
    title: str = "Decode speed against context",
    height: int = 420,
) -> go.Figure:
    """Measured decode tokens/s per variant against context length (log-log); with `roofline` (explorer.kv's
    bound per variant on `gpu_label`, NaN where the model does not fit) drawn dashed on the same axes."""
    xs = _check(contexts, tokens_per_second, "tokens-per-second")
    if roofline:
        if not gpu_label or not gpu_label.strip():
            raise ValueError("Name the GPU the roofline is for.")
        for label, values in roofline.items():
            if len(values) != len(xs):
                raise ValueError(f"The '{label}' bound has {len(values)} values for {len(xs)} contexts.")
    figure = go.Figure()
    for label, values in tokens_per_second.items():
        figure.add_trace(go.Scatter(
            x=xs, y=_points(values), mode="lines+markers", name=label, line=dict(color=COLOURS.get(label)),
            hovertemplate=f"{label}<br>%{{x:,}} tokens cached<br>%{{y:,.1f}} tokens/s measured<extra></extra>",
        ))
    for label, values in (roofline or {}).items():
        figure.add_trace(go.Scatter(
            x=xs, y=_points(values), mode="lines", name=f"{label} bound, {gpu_label}",
            line=dict(color=COLOURS.get(label), dash="dash", width=1),
            hovertemplate=f"{label} on {gpu_label}<br>%{{x:,}} tokens<br>at most %{{y:,.0f}} tokens/s<extra></extra>",
        ))
    figure.update_layout(
        title=title, height=height, margin=dict(l=10, r=10, t=60, b=10),
        xaxis=dict(title="tokens already in the cache (log)", type="log", tickvals=xs,
                   ticktext=[f"{x:,}" for x in xs]),
        yaxis=dict(title="tokens per second (log)", type="log"),
        legend=dict(orientation="h", y=-0.25),
    )
    return figure
