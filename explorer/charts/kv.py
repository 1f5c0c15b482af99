"""KV-cache pictures: pure functions from context lengths and byte counts (or tokens/s) to plotly figures.

Memory is drawn in GiB (2^30 bytes); GPU lines are what a framework can allocate (explorer.hardware). The numbers
come from explorer.kv and explorer.roofline.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import plotly.graph_objects as go

GIB = 2**30
WEIGHTS_COLOUR = "#6b7280"  # grey: the weights are the floor every curve starts from
MEMORY_COLOUR = "#b91c1c"  # red: a GPU's memory is the ceiling


def _check_contexts(context_lengths: Sequence[int], log_x: bool) -> list[int]:
    contexts = list(context_lengths)
    if not contexts:
        raise ValueError("Give at least one context length to draw.")
    if any(later <= earlier for earlier, later in zip(contexts, contexts[1:])):
        raise ValueError("Context lengths must increase from left to right.")
    if log_x and contexts[0] <= 0:
        raise ValueError("A log axis cannot show a context of 0 tokens: start at 1 or use a linear axis.")
    return contexts


def _check_series(series: Mapping[str, Sequence[float]], length: int, what: str, allow_nan: bool) -> None:
    if not series:
        raise ValueError(f"Give at least one {what} series to draw.")
    for label, values in series.items():
        if len(values) != length:
            raise ValueError(f"'{label}' has {len(values)} {what} values for {length} context lengths.")
        for value in values:
            if math.isnan(value) and allow_nan:
                continue
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"'{label}' has a {what} value of {value}: use finite numbers of 0 or more.")


def _token_text(tokens: int) -> str:
    """131072 -> '131k', 1048576 -> '1.0M'."""
    if tokens >= 1_000_000:
        return f"{tokens / 1_000_000:.1f}M"
    return f"{tokens / 1000:.0f}k" if tokens >= 10_000 else f"{tokens:,}"


def _label_positions(memory_lines: Mapping[str, float], top_gib: float, gap: float = 0.055) -> dict[str, float]:
    """Where each memory line's label sits (GiB): at its line, moved up just enough to stay `gap` of the axis
    clear of the label below it, and pulled back down (the whole stack) where that would leave the axis. Labels
    away from their line get an arrow to it (`cache_size_figure`)."""
    ordered = sorted(memory_lines.items(), key=lambda item: item[1])
    step = gap * top_gib
    positions = []
    for _, size in ordered:
        y = size / GIB
        positions.append(max(y, positions[-1] + step) if positions else y)
    ceiling = top_gib * (1 - gap / 2)
    for index in range(len(positions) - 1, -1, -1):  # from the top down: no label beyond the axis
        limit = ceiling if index == len(positions) - 1 else positions[index + 1] - step
        positions[index] = min(positions[index], limit)
    return {label: y for (label, _), y in zip(ordered, positions)}


def cache_size_figure(
    context_lengths: Sequence[int],
    cache_bytes: Mapping[str, Sequence[float]],
    weight_bytes: float = 0.0,
    memory_lines: Mapping[str, float] | None = None,
    longest_fits: Sequence[tuple[str, str, int]] = (),
    log_x: bool = True,
    log_y: bool = False,
    title: str = "Memory for weights and KV cache",
    height: int = 480,
) -> go.Figure:
    """Weights + cache (GiB) against context length, one curve per series (e.g. per variant).

    `cache_bytes` maps a series label to cache bytes at each context length; `memory_lines` maps a label
    ("80 GB: H100 SXM") to a memory size in bytes, drawn as a horizontal line; `longest_fits` lists
    (series label, memory label, tokens) points to mark where a curve meets a line (explorer.roofline.longest_context).
    """
    contexts = _check_contexts(context_lengths, log_x)
    _check_series(cache_bytes, len(contexts), "cache-bytes", allow_nan=False)
    memory_lines = dict(memory_lines or {})
    if not math.isfinite(weight_bytes) or weight_bytes < 0:
        raise ValueError(f"The weights take {weight_bytes} bytes: give a finite number of 0 or more.")
    if any(not math.isfinite(size) or size <= 0 for size in memory_lines.values()):
        raise ValueError("Every memory line needs a positive size in bytes.")

    figure = go.Figure()
    for label, values in cache_bytes.items():
        figure.add_trace(
            go.Scatter(
                x=contexts,
                y=[(weight_bytes + value) / GIB for value in values],
                mode="lines",
                name=label,
                hovertemplate=f"{label}<br>%{{x:,}} tokens<br>%{{y:,.2f}} GiB<extra></extra>",
            )
        )
    if weight_bytes > 0:
        figure.add_hline(
            y=weight_bytes / GIB, line=dict(color=WEIGHTS_COLOUR, dash="dot"),
            annotation_text=f"weights {weight_bytes / GIB:,.1f} GiB", annotation_position="bottom left",  # memory labels: right
        )
    tallest = max(weight_bytes + max(values) for values in cache_bytes.values()) if cache_bytes else weight_bytes
    top = max(tallest, min(memory_lines.values(), default=0)) * 1.15 / GIB
    shown = {label: size for label, size in memory_lines.items() if size / GIB <= top}  # lines above: not drawn
    for label, y in _label_positions(shown, top).items():
        line = memory_lines[label] / GIB
        figure.add_hline(y=line, line=dict(color=MEMORY_COLOUR, dash="dash", width=1))
        moved = abs(y - line) > 1e-9 * top
        figure.add_annotation(  # at the right edge, above its line, or lifted with an arrow back to it
            x=1, xref="paper", xanchor="right", y=line, yanchor="bottom", text=label, showarrow=moved,
            ax=-40 if moved else 0, ay=y, axref="pixel", ayref="y", arrowcolor=MEMORY_COLOUR, arrowwidth=1,
            font=dict(color=MEMORY_COLOUR, size=11), bgcolor="rgba(255,255,255,0.85)", name=label,
        )
    for series, memory, tokens in longest_fits:
        if series not in cache_bytes or memory not in memory_lines:
            raise ValueError(f"The fit point ('{series}', '{memory}') names a series or memory line not drawn.")
        if not 0 < tokens <= contexts[-1] or (log_x and tokens < contexts[0]):
            continue  # the weights alone do not fit, or the point lies beyond the drawn contexts
        figure.add_trace(
            go.Scatter(
                x=[tokens], y=[memory_lines[memory] / GIB], mode="markers+text", text=[_token_text(tokens)],
                textposition="bottom right", marker=dict(symbol="x", size=9, color=MEMORY_COLOUR),
                name=f"{series} fits {memory}", showlegend=False,
                hovertemplate=f"{series}<br>longest context in {memory}: {tokens:,} tokens<extra></extra>",
            )
        )
    # the y axis shows the tallest curve and at least the smallest memory line (`top`, above)
    figure.update_layout(
        title=title,
        height=height,
        margin=dict(l=10, r=10, t=60, b=10),
        xaxis=dict(title="context length (tokens per sequence)", type="log" if log_x else "linear"),
        yaxis=dict(
            title="weights + KV cache (GiB)" if weight_bytes > 0 else "KV cache (GiB)",
            type="log" if log_y else "linear",
            range=None if log_y else [0, top],
        ),
        legend=dict(orientation="h", y=-0.2),
    )
    return figure


def roofline_figure(
    context_lengths: Sequence[int],
    tokens_per_second: Mapping[str, Sequence[float]],
    gpu_label: str,
    log_x: bool = True,
    log_y: bool = True,
    height: int = 440,
) -> go.Figure:
    """Decode speed bound (tokens/s) against context length, one curve per variant, for one GPU.

    NaN marks a context where weights and cache do not fit (explorer.roofline.roofline_curve): the curve stops there.
    """
    contexts = _check_contexts(context_lengths, log_x)
    _check_series(tokens_per_second, len(contexts), "tokens-per-second", allow_nan=True)
    if not gpu_label.strip():
        raise ValueError("Name the GPU the roofline is for.")
    figure = go.Figure()
    for label, values in tokens_per_second.items():
        figure.add_trace(
            go.Scatter(
                x=contexts,
                y=[None if math.isnan(value) else value for value in values],
                mode="lines",
                name=label,
                hovertemplate=f"{label}<br>%{{x:,}} tokens<br>at most %{{y:,.1f}} tokens/s<extra></extra>",
            )
        )
    figure.update_layout(
        title=f"Decode speed bound on {gpu_label}: tokens/s ≤ bandwidth / (weights + KV cache read per step)",
        height=height,
        margin=dict(l=10, r=10, t=60, b=10),
        xaxis=dict(title="context length (tokens per sequence)", type="log" if log_x else "linear"),
        yaxis=dict(title="tokens per second (upper bound)", type="log" if log_y else "linear"),
        legend=dict(orientation="h", y=-0.2),
    )
    return figure


def ceilings_figure(
    points: Sequence[int],
    memory: Mapping[str, Sequence[float]],
    compute: Mapping[str, Sequence[float]],
    deployment_label: str,
    height: int = 440,
    against: str = "batch",
    log_x: bool = True,
) -> go.Figure:
    """Both roofline ceilings of decode tokens/s per variant, against batch size (`against="batch"`) or context
    length (`against="context"`): memory (solid) and compute (dotted). The speed is the lower one; a diamond marks
    each point where the bound changes ("compute-bound from batch 256", "memory-bound from context 8,192").
    NaN: the point does not fit on the deployment (the curve stops there)."""
    if against not in ("batch", "context"):
        raise ValueError("Draw the ceilings against 'batch' or 'context'.")
    xs = _check_contexts(points, log_x)
    _check_series(memory, len(xs), "memory-ceiling", allow_nan=True)
    _check_series(compute, len(xs), "compute-ceiling", allow_nan=True)
    if set(memory) != set(compute):
        raise ValueError("Give a memory and a compute ceiling for the same variants.")
    unit = "batch %{x:,}" if against == "batch" else "%{x:,} tokens"
    figure = go.Figure()
    colours = ["#1d4ed8", "#93c5fd", "#dc2626", "#fca5a5", "#059669", "#a16207"]
    for index, label in enumerate(memory):
        colour = colours[index % len(colours)]
        shown = [None if math.isnan(value) else value for value in memory[label]]
        figure.add_trace(go.Scatter(x=xs, y=shown, mode="lines", name=f"{label}: memory", line=dict(color=colour),
                                    hovertemplate=f"{label}<br>{unit}<br>memory allows %{{y:,.0f}} tokens/s"
                                                  "<extra></extra>"))
        figure.add_trace(go.Scatter(x=xs, y=[None if math.isnan(v) else v for v in compute[label]], mode="lines",
                                    name=f"{label}: compute", line=dict(color=colour, dash="dot"), showlegend=False,
                                    hovertemplate=f"{label}<br>{unit}<br>compute allows %{{y:,.0f}} tokens/s"
                                                  "<extra></extra>"))
        previous = "memory"  # decode starts memory-bound unless the first point says otherwise
        for x, m, c in zip(xs, memory[label], compute[label]):
            if math.isnan(m):
                continue
            bound = "compute" if c <= m else "memory"
            if bound != previous:
                figure.add_trace(go.Scatter(
                    x=[x], y=[min(m, c)], mode="markers", marker=dict(symbol="diamond", size=10, color=colour),
                    showlegend=False, name=f"{label}: {bound}-bound from {against} {x:,}",
                    hovertemplate=f"{label}<br>{bound}-bound from {against} {x:,}<extra></extra>"))
            previous = bound
    title = "batch (sequences decoded together)" if against == "batch" else "context length (tokens per sequence)"
    figure.update_layout(
        title=f"Decode ceilings on {deployment_label} against {against}: memory (solid) and compute (dotted)",
        height=height, margin=dict(l=10, r=10, t=60, b=10),
        xaxis=dict(title=title, type="log" if log_x else "linear"),
        yaxis=dict(title="tokens per second, whole batch (upper bound)", type="log"),
        legend=dict(orientation="h", y=-0.2),
    )
    return figure
