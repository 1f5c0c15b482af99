"""The numbers behind each chart as files people can keep: CSV for spreadsheets, JSON for code.

Every exported matrix carries its token labels; rows are queries and columns keys, as on screen.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import pandas as pd


def labelled(tokens: Sequence[str]) -> list[str]:
    """Token labels made unique by position ("#3 the"), so repeated tokens stay apart in a file too."""
    return [f"#{i} {token}" for i, token in enumerate(tokens)]


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


def png_export_available() -> bool:
    """Server-side PNG export needs a Chromium-family browser on this machine (plotly renders through it)."""
    import shutil

    return any(shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome", "chrome"))


def figure_png(figure, width: int = 1200, height: int | None = None, scale: float = 2.0) -> bytes:
    """A figure as PNG bytes, rendered on the server (a few seconds): for papers and slides."""
    if not png_export_available():
        raise RuntimeError("PNG export on the server needs Chromium: install it (apt-get install chromium), "
                           "or use the camera button on the chart.")
    return figure.to_image(format="png", width=width, height=height or figure.layout.height or 500, scale=scale)
