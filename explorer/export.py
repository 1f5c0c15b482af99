"""The numbers behind each chart as files people can keep: CSV for spreadsheets, JSON for code.

Every exported matrix carries its token labels; rows are queries and columns keys, as on screen.
"""

from __future__ import annotations

import functools
import html
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

# pandas at import time, not on first use: plotly imports it lazily from whichever session's thread builds the
# first figure, and two sessions importing it at once get a half-initialised module ('pandas has no attribute
# Series'). Imported here, it loads once, under the import of this module.
import pandas as pd

from explorer.summaries import block_edges, block_labels, pool


def labelled(tokens: Sequence[str], first: int = 0) -> list[str]:
    """Token labels made unique by position ("#3 the"), so repeated tokens stay apart in a file too; `first` is the
    position of the first token given (a zoomed region)."""
    return [f"#{first + i} {token}" for i, token in enumerate(tokens)]


@dataclass(frozen=True)
class LabelledArray:
    """The numbers behind a chart: an array with a label for every position on every axis, as CSV or JSON.

    A matrix (two axes) is written as spreadsheets like it: one row per label of the first axis, one column per
    label of the second. More axes are written long: one column per axis, one row per number.
    """

    values: np.ndarray  # any shape; bool masks are written 1 and 0
    axes: dict[str, Sequence[str]]  # axis name -> one label per position, in the order of the array's axes
    value: str = "weight"  # what the numbers are (with their unit)
    about: dict = field(default_factory=dict)  # what the view was: model, layer, text...

    def __post_init__(self):
        lengths = tuple(len(labels) for labels in self.axes.values())
        if np.shape(self.values) != lengths:
            raise ValueError(f"The numbers have shape {np.shape(self.values)} but the labels of "
                             f"{', '.join(self.axes)} have lengths {lengths}.")

    def _numbers(self) -> np.ndarray:
        values = np.asarray(self.values)
        return values.astype(np.int8) if values.dtype == bool else values.astype(np.float64)

    def csv(self) -> str:

        names, labels = list(self.axes), list(self.axes.values())
        values = self._numbers()
        if values.ndim == 2:
            frame = pd.DataFrame(values, index=labels[0], columns=labels[1])
            return frame.to_csv(index_label=f"{names[0]} \\ {names[1]}", float_format="%.6g")
        index = pd.MultiIndex.from_product(labels, names=names)
        return pd.DataFrame({self.value: values.reshape(-1)}, index=index).to_csv(float_format="%.6g")

    def json(self) -> str:
        payload = {**self.about, "axes": {name: list(labels) for name, labels in self.axes.items()},
                   "shape": list(self.axes), self.value: _rounded(self._numbers()).tolist()}
        return json.dumps(payload, ensure_ascii=False, allow_nan=False, default=str)


@dataclass(frozen=True)
class Table:
    """The numbers behind a chart as rows (one dict each), as CSV or JSON."""

    rows: Sequence[dict]
    about: dict = field(default_factory=dict)  # what the view was: model, dtype, batch...

    def csv(self) -> str:
        return table_csv(self.rows)

    def json(self) -> str:
        return table_json(self.rows, **self.about)


def heads(weights: np.ndarray, tokens: Sequence[str], cells: int | None = None, first: int = 0,
          key_tokens: Sequence[str] | None = None, **about) -> LabelledArray:
    """Weights (H, Tq, Tk) or one head's (Tq, Tk) with their token labels; with `cells`, a square input longer
    than `cells` tokens is pooled into blocks as its chart draws it (labels "#32–63")."""
    queries = keys = labelled(tokens, first)
    if key_tokens is not None:
        keys = labelled(key_tokens)
    elif cells is not None and len(tokens) > cells:
        weights = pool(weights, cells)
        queries = keys = block_labels(list(tokens), block_edges(len(tokens), cells))  # whole inputs only: first is 0
    axes = {"query": queries, "key": keys}
    if weights.ndim == 3:
        axes = {"head": [f"H{h}" for h in range(weights.shape[0])], **axes}
    return LabelledArray(weights, axes, "weight", about)


def query_row(weights: np.ndarray, tokens: Sequence[str], query: int, **about) -> LabelledArray:
    """Where one query token looks: its weights (T,) over the key tokens."""
    return LabelledArray(weights, {"key": labelled(tokens)}, "weight", {**about, "query": labelled(tokens)[query]})


def mask(allowed: np.ndarray, tokens: Sequence[str], first: int = 0, **about) -> LabelledArray:
    """An attention mask (Tq, Tk) of booleans, written 1 where a query may attend to a key."""
    labels = labelled(tokens, first)
    return LabelledArray(allowed, {"query": labels, "key": labels}, "allowed", about)


def per_head(values: np.ndarray, value: str, **about) -> LabelledArray:
    """One number per (layer, head), values (L, H), such as each head's entropy."""
    layers, heads_ = values.shape
    return LabelledArray(values, {"layer": [f"L{l}" for l in range(layers)], "head": [f"H{h}" for h in range(heads_)]},
                         value, about)


def overview(pooled: np.ndarray, block_labels_: Sequence[str], **about) -> LabelledArray:
    """Every head of every layer, pooled weights (L, H, n, n), with one label per block of tokens."""
    layers, heads_ = pooled.shape[:2]
    axes = {"layer": [f"L{l}" for l in range(layers)], "head": [f"H{h}" for h in range(heads_)],
            "query": list(block_labels_), "key": list(block_labels_)}
    return LabelledArray(pooled, axes, "weight", about)


def series(x_name: str, xs: Sequence, curves: dict[str, Sequence], **about) -> Table:
    """Curves sharing one x axis as a table: a row per x, a column per curve (empty where a curve stops)."""
    for name, ys in curves.items():
        if len(ys) != len(xs):
            raise ValueError(f"The curve '{name}' has {len(ys)} points but there are {len(xs)} values of {x_name}.")
    rows = [{x_name: x, **{name: _plain(ys[i]) for name, ys in curves.items()}} for i, x in enumerate(xs)]
    return Table(rows, about)


def file_stem(title: str, fallback: str = "chart") -> str:
    """A file name from a chart title: "Layer 3, head 7<br>tokens 0–63" -> "layer-3-head-7-tokens-0-63"."""
    text = html.unescape(re.sub(r"<[^>]+>", " ", title or "")).lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:80].strip("-") or fallback


def _rounded(values: np.ndarray):
    """Six decimals, with None (JSON null) for values that are not numbers."""
    rounded = np.round(values, 6).astype(object)
    rounded[~np.isfinite(values)] = None
    return rounded


def _plain(value):
    """A table cell: numpy scalars as Python numbers, NaN as empty."""
    if value is None:
        return None
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and not np.isfinite(value) else value


def attention_csv(weights: np.ndarray, query_tokens: Sequence[str], key_tokens: Sequence[str] | None = None) -> str:
    """One head's weights (Tq, Tk) as CSV: a header of key tokens, one row per query token."""

    key_tokens = query_tokens if key_tokens is None else key_tokens
    if weights.shape != (len(query_tokens), len(key_tokens)):
        raise ValueError(
            f"The weights have shape {weights.shape} but {len(query_tokens)} query and {len(key_tokens)} key "
            "labels were given."
        )
    frame = pd.DataFrame(weights, index=labelled(query_tokens), columns=labelled(key_tokens))
    return frame.to_csv(index_label="query \\ key", float_format="%.6g")


def attention_json(weights: np.ndarray, tokens: Sequence[str], **about) -> str:
    """One layer's weights (H, T, T) with their tokens and whatever describes the view (model, text, layer)."""
    if weights.ndim != 3 or weights.shape[1:] != (len(tokens), len(tokens)):
        raise ValueError(f"Expected (heads, {len(tokens)}, {len(tokens)}) weights; got shape {weights.shape}.")
    payload = {
        **about,
        "tokens": list(tokens),
        "shape": ["head", "query", "key"],
        "weights": np.round(weights.astype(np.float64), 6).tolist(),
    }
    return json.dumps(payload, ensure_ascii=False)


def table_csv(rows: Sequence[dict]) -> str:
    """A table (one dict per row) as CSV."""

    return pd.DataFrame(list(rows)).to_csv(index=False)


def table_json(rows: Sequence[dict], **about) -> str:
    """A table (one dict per row) as JSON, with whatever describes it."""
    return json.dumps({**about, "rows": list(rows)}, ensure_ascii=False, default=str)


@functools.cache  # looked up once per process: every chart on every rerun asks
def png_export_available() -> bool:
    """Server-side image export (PNG, SVG, PDF) needs a Chromium-family browser on this machine: plotly's kaleido
    renders through it."""
    import shutil

    return any(shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome", "chrome"))


def _check_renderer(what: str) -> None:
    if not png_export_available():
        raise RuntimeError(f"{what} export needs Chromium on this machine: install it (apt-get install chromium), "
                           "or use the camera button on the chart for a PNG of what is on screen.")


_RENDERING = threading.Lock()  # kaleido's shared browser answers one caller at a time


def _render(figure, **options) -> bytes:
    """A figure through plotly's kaleido, in one headless Chromium started on first use and kept (a figure then
    takes about a second instead of three); sessions take turns, as its replies are not matched to callers."""
    import warnings

    import kaleido

    with _RENDERING, warnings.catch_warnings():
        # plotly passes its HTTP headers with every figure; the shared browser already has kaleido's defaults
        warnings.filterwarnings("ignore", "The kopts argument is ignored", UserWarning)
        kaleido.start_sync_server(silence_warnings=True)  # does nothing when it is already running
        return for_files(figure).to_image(**options)


STREAMLIT_PLACEHOLDER = "#000001"  # the first colour of Streamlit's plotly template, which its page replaces


def for_files(figure):
    """The figure, or a copy in plotly's white template when it carries Streamlit's. Importing streamlit makes
    that template every figure's default (in the app, and in any process that imports it): its colours are
    placeholders that only Streamlit's page fills in, and its axes make no room for their labels, so a file
    rendered from it would cut the token labels off. Labels and data stay the same."""
    import plotly.graph_objects as go

    colorway = figure.layout.template.layout.colorway or ()
    if STREAMLIT_PLACEHOLDER not in colorway[:1]:
        return figure
    return go.Figure(figure).update_layout(template="plotly_white")


def figure_png(figure, width: int = 1200, height: int | None = None, scale: float = 2.0) -> bytes:
    """A figure as PNG bytes, rendered on the server (a few seconds): for papers and slides."""
    _check_renderer("PNG")
    return _render(figure, format="png", width=width, height=height or figure.layout.height or 500, scale=scale)


# Publication widths in inches: one column of a two-column paper, and the full width of its page.
PAPER_WIDTHS: dict[str, float] = {"column": 3.5, "page": 7.0}
CSS_PIXELS_PER_INCH = 96  # plotly lays a figure out in CSS pixels; a PDF has 72 points per inch (672 px -> 504 pt)
VECTOR_MIME = {"svg": "image/svg+xml", "pdf": "application/pdf"}


def figure_vector(figure, format: Literal["svg", "pdf"] = "pdf", size: str | float = "page",
                  height: int | None = None) -> bytes:
    """A figure as SVG or PDF bytes for a paper, rendered by plotly's kaleido (a few seconds).

    `size` is a width: "column" (3.5 in), "page" (7 in) or a number of inches. The height is the figure's own
    (in CSS pixels, as on screen) unless given. The figure is drawn as on screen, the same titles, token labels
    and colour bar: text stays text (searchable and editable in the SVG; the PDF embeds the subset of the font
    it uses), axes and lines are vectors, and a heatmap's cells are one embedded image, as plotly draws them.
    """
    if format not in VECTOR_MIME:
        raise ValueError(f"Vector export writes svg or pdf, not {format!r}.")
    inches = PAPER_WIDTHS.get(size) if isinstance(size, str) else float(size)
    if inches is None or not inches > 0:
        raise ValueError(f"Choose a width of 'column' (3.5 in), 'page' (7 in) or a positive number of inches, "
                         f"not {size!r}.")
    _check_renderer(format.upper())
    width = round(inches * CSS_PIXELS_PER_INCH)
    return _render(figure, format=format, width=width, height=height or figure.layout.height or 500)
