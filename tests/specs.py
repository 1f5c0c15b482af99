"""Read plotly figures back from a headless streamlit app (AppTest)."""

from __future__ import annotations

import base64
import json

import numpy as np


def figures(at) -> dict[str, dict]:
    """The plotly specs on the page, by figure title."""
    specs = [json.loads(element.proto.spec) for element in at.get("plotly_chart")]
    return {spec["layout"].get("title", {}).get("text", f"untitled {i}"): spec for i, spec in enumerate(specs)}


def array(value) -> np.ndarray:
    """A plotly array: plain lists, or since plotly 6 `{"dtype", "bdata" (base64), "shape": "r, c"}`."""
    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = [int(n) for n in str(value.get("shape", len(flat))).split(",")]
        return flat.reshape(shape)
    return np.asarray(value, dtype=float)
