"""Pictures of what Whisper hears: pure functions from arrays to plotly figures, all on one time axis (seconds).

Cross-attention is drawn as transcript tokens (rows) x audio time (columns), above the waveform or the log-mel
spectrogram of the same clip, so a bright cell sits over the sound it reads. Word timings are drawn as spans
on the waveform.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.charts.attention import COLOURS

FRAME_SECONDS = 0.02  # one encoder frame
MEL_SECONDS = 0.01  # one log-mel frame
WAVE_POINTS = 1200  # the waveform is drawn as the min/max of this many slices
SAMPLE_RATE = 16_000
SPAN_COLOURS = ("rgba(37, 99, 235, 0.13)", "rgba(234, 88, 12, 0.13)")  # alternate word spans on the waveform


def _row_axis(labels: list[str]) -> dict:
    step = max(1, int(np.ceil(len(labels) / 40)))
    positions = list(range(0, len(labels), step))
    return dict(tickmode="array", tickvals=positions, ticktext=[labels[i] for i in positions], autorange="reversed")


def waveform_envelope(samples: np.ndarray, points: int = WAVE_POINTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, lows, highs), each (P,): the clip's min and max over P equal slices, for drawing it cheaply."""
    points = max(1, min(points, len(samples)))
    edges = np.linspace(0, len(samples), points + 1).astype(int)  # (P + 1,)
    lows = np.minimum.reduceat(samples, edges[:-1])  # (P,)
    highs = np.maximum.reduceat(samples, edges[:-1])  # (P,)
    times = (edges[:-1] + edges[1:]) / 2 / SAMPLE_RATE
    return times, lows, highs


def _add_waveform(figure: go.Figure, samples: np.ndarray, row: int, words=None) -> None:
    times, lows, highs = waveform_envelope(samples)
    figure.add_trace(go.Scatter(x=np.concatenate([times, times[::-1]]), y=np.concatenate([highs, lows[::-1]]),
                                fill="toself", mode="lines", line=dict(width=0.5, color="#334155"),
                                fillcolor="rgba(51, 65, 85, 0.6)", hoverinfo="skip", showlegend=False), row=row, col=1)
    for index, word in enumerate(words or []):
        figure.add_vrect(x0=word.start, x1=max(word.end, word.start + FRAME_SECONDS), row=row, col=1, line_width=0,
                         fillcolor=SPAN_COLOURS[index % 2], layer="below")
        figure.add_annotation(x=(word.start + word.end) / 2, y=1.0, text=word.text, showarrow=False, row=row, col=1,
                              yref=f"y{row} domain" if row > 1 else "y domain", yanchor="bottom", font=dict(size=11))
    figure.update_yaxes(title_text="sound", range=[-1.05, 1.05], showticklabels=False, row=row, col=1)


def _add_spectrogram(figure: go.Figure, mel: np.ndarray, row: int) -> None:
    """mel: (bins, T) log-mel features, drawn with time in seconds."""
    times = (np.arange(mel.shape[1]) + 0.5) * MEL_SECONDS
    figure.add_trace(go.Heatmap(z=mel, x=times, y=np.arange(mel.shape[0]), colorscale="Magma", showscale=False,
                                hovertemplate="%{x:.2f} s, mel bin %{y}<extra></extra>"), row=row, col=1)
    figure.update_yaxes(title_text="mel bin", row=row, col=1)


def attention_over_audio(
    weights: np.ndarray,
    labels: list[str],
    samples: np.ndarray,
    title: str,
    *,
    mel: np.ndarray | None = None,
    words=None,
    path: np.ndarray | None = None,
    colour_title: str = "weight",
    height: int | None = None,
) -> go.Figure:
    """Rows of attention over audio time (R, F), above the waveform (or the spectrogram when `mel` is given),
    sharing the time axis. `path` (P, 2) of (row, frame) pairs is drawn over the heatmap; `words` (each with
    text, start, end in seconds) are marked as spans on the waveform."""
    rows, frames = weights.shape
    if rows != len(labels):
        raise ValueError(f"The attention has {rows} rows but {len(labels)} row labels were given.")
    times = (np.arange(frames) + 0.5) * FRAME_SECONDS  # (F,) centre of each encoder frame
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.1)
    scale = dict(zmin=0.0, zmax=float(weights.max()) if weights.max() > 0 else 1.0) if weights.min() >= 0 else {}
    figure.add_trace(go.Heatmap(
        z=weights, x=times, y=np.arange(rows), colorscale=COLOURS, **scale,
        colorbar=dict(title=colour_title, thickness=12, len=0.65, y=0.66),
        customdata=np.array([[label] * frames for label in labels], dtype=object),
        hovertemplate="%{customdata} at %{x:.2f} s: %{z:.3f}<extra></extra>"), row=1, col=1)
    if path is not None and len(path):
        figure.add_trace(go.Scatter(x=(path[:, 1] + 0.5) * FRAME_SECONDS, y=path[:, 0], mode="lines",
                                    line=dict(color="#dc2626", width=2), name="time path", hoverinfo="skip",
                                    showlegend=False), row=1, col=1)
    figure.update_yaxes(_row_axis(labels), row=1, col=1)
    if mel is not None:
        _add_spectrogram(figure, mel, 2)
    else:
        _add_waveform(figure, samples, 2, words)
    figure.update_xaxes(range=[0, frames * FRAME_SECONDS], row=1, col=1)
    figure.update_xaxes(title_text="time (s)", range=[0, frames * FRAME_SECONDS], row=2, col=1)
    figure.update_layout(title=dict(text=title, x=0, font=dict(size=14)), height=height or 260 + 16 * rows,
                         margin=dict(l=10, r=10, t=60 + 18 * title.count("<br>"), b=10))
    return figure


def heads_over_audio(weights: np.ndarray, heads: list[tuple[int, int]], labels: list[str], title: str) -> go.Figure:
    """Small multiples: (K, R, F) attention of K heads, each titled by its (layer, head), over one time axis."""
    count, rows, frames = weights.shape
    columns = 2 if count > 1 else 1
    lines = int(np.ceil(count / columns))
    figure = make_subplots(rows=lines, cols=columns, shared_xaxes=True, shared_yaxes=True,
                           subplot_titles=[f"layer {layer}, head {head}" for layer, head in heads],
                           vertical_spacing=0.12 / max(1, lines - 1) if lines > 1 else 0.1, horizontal_spacing=0.04)
    times = (np.arange(frames) + 0.5) * FRAME_SECONDS
    for index in range(count):
        figure.add_trace(go.Heatmap(z=weights[index], x=times, y=np.arange(rows), colorscale=COLOURS, zmin=0,
                                    zmax=float(weights[index].max()), showscale=False,
                                    hovertemplate="%{x:.2f} s: %{z:.3f}<extra></extra>"),
                         row=index // columns + 1, col=index % columns + 1)
    figure.update_yaxes(_row_axis(labels), tickfont=dict(size=9))
    figure.update_xaxes(title_text="time (s)", row=lines, col=1)
    figure.update_layout(title=dict(text=title, x=0, font=dict(size=14)), height=130 + lines * (60 + 9 * rows),
                         margin=dict(l=10, r=10, t=80, b=10))
    return figure


def frames_heatmap(weights: np.ndarray, title: str, max_frames: int = 300) -> go.Figure:
    """Encoder self-attention over audio frames (F, F), both axes in seconds; pooled (mean over blocks of
    frames, so rows still sum to about 1 per block) when F exceeds `max_frames`."""
    frames = weights.shape[0]
    block = int(np.ceil(frames / max_frames))
    if block > 1:
        cut = frames // block * block
        weights = weights[:cut, :cut].reshape(cut // block, block, cut // block, block).mean(axis=(1, 3)) * block
    times = (np.arange(weights.shape[0]) + 0.5) * FRAME_SECONDS * block
    figure = go.Figure(go.Heatmap(z=weights.astype(np.float32), x=times, y=times, colorscale=COLOURS, zmin=0,
                                  zmax=float(weights.max()), colorbar=dict(title="weight", thickness=12),
                                  hovertemplate="query %{y:.2f} s, key %{x:.2f} s: %{z:.3f}<extra></extra>"))
    figure.update_yaxes(title_text="query time (s)", autorange="reversed")
    figure.update_xaxes(title_text="key time (s)", side="top")
    figure.update_layout(title=dict(text=title, x=0, font=dict(size=14)), height=460,
                         margin=dict(l=10, r=10, t=110 + 18 * title.count("<br>"), b=10))
    return figure
