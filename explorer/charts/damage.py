"""Chart of the damage view: every head of a conversion by how far its attention moved and what it costs the loss."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

SELECTED_COLOUR = "#dc2626"


def damage_scatter(js: np.ndarray, loss_effect: np.ndarray, title: str, selected: tuple[int, int] | None = None,
                   labelled: int = 5) -> go.Figure:
    """One point per (layer, head): x the JS divergence of its attention (bits), y its estimated loss effect (nats).

    Points carry [layer, head] as `customdata` (a plain list, so a click reaches the server as a list), so clicking
    one selects that head; the `selected` head is ringed in red and the `labelled` heads with the largest
    |loss effect| are named on the chart. Colour is the layer.
    """
    if js.shape != loss_effect.shape or js.ndim != 2:
        raise ValueError(f"Give one JS divergence and one loss effect per (layer, head): shapes {js.shape} and "
                         f"{loss_effect.shape}.")
    layers, heads = js.shape
    ids = [[layer, head] for layer in range(layers) for head in range(heads)]
    x, y = js.reshape(-1).astype(float), loss_effect.reshape(-1).astype(float)
    figure = go.Figure(go.Scatter(
        x=x.tolist(), y=y.tolist(), mode="markers", customdata=ids, name="heads",
        marker=dict(size=9, color=[layer for layer, _ in ids], colorscale="Cividis", cmin=0, cmax=max(layers - 1, 1),
                    colorbar=dict(title="layer", thickness=12), line=dict(width=0.5, color="white")),
        hovertemplate="L%{customdata[0]} H%{customdata[1]}<br>attention moved: JS %{x:.3f} bits<br>"
                      "loss effect ≈ %{y:+.4f} nats<extra></extra>",
        selected=dict(marker=dict(opacity=1)), unselected=dict(marker=dict(opacity=1)),
    ))
    for flat in np.argsort(-np.abs(loss_effect), axis=None)[:labelled]:
        layer, head = (int(i) for i in np.unravel_index(flat, js.shape))
        figure.add_annotation(x=float(js[layer, head]), y=float(loss_effect[layer, head]), text=f"L{layer} H{head}",
                              showarrow=False, yshift=12, font=dict(size=11))
    if selected is not None and 0 <= selected[0] < layers and 0 <= selected[1] < heads:
        figure.add_trace(go.Scatter(
            x=[float(js[selected])], y=[float(loss_effect[selected])], mode="markers", hoverinfo="skip",
            name=f"shown above: L{selected[0]} H{selected[1]}",
            marker=dict(size=17, color="rgba(0,0,0,0)", line=dict(width=2.5, color=SELECTED_COLOUR)),
        ))
    figure.add_hline(y=0, line=dict(color="#9ca3af", width=1))
    figure.update_layout(
        title=dict(text=title, x=0, xanchor="left", font=dict(size=14)), height=440, plot_bgcolor="white",
        margin=dict(l=10, r=10, t=40, b=10), clickmode="event+select", dragmode=False, hovermode="closest",
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=1, xanchor="right"),
        xaxis=dict(title="attention moved: JS divergence, mean over queries (bits)", gridcolor="#e5e7eb",
                   rangemode="tozero"),
        yaxis=dict(title="loss change if only this head changed (nats, first order)", gridcolor="#e5e7eb"),
    )
    return figure
