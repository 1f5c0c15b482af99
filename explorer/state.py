"""The view's state in the URL: the only place that parses query parameters.

Parsing never raises: a value that cannot be used is replaced by a sensible default and a notice says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Mapping

from explorer.catalogue import CATALOGUE, DEFAULT_MODEL

DEFAULT_TEXT = "The giant ate the apple because it was hungry"
MAX_TEXT_CHARS = 20_000  # longer text in a URL is cut; models see at most their token limit anyway


@dataclass(frozen=True)
class ViewState:
    """What a shared link restores."""

    text: str = DEFAULT_TEXT  # the input text
    model: str = DEFAULT_MODEL  # catalogue key, hub id or local folder
    layer: int = 0  # layer shown in detail
    head: int = 0  # head enlarged


def parse_query(params: Mapping[str, str], allow_any_model: bool = True) -> tuple[ViewState, list[str]]:
    """ViewState from URL query parameters, with a notice for every value that was replaced."""
    notices: list[str] = []
    state = ViewState()
    text = params.get("text")
    if text is not None:
        if not text.strip():
            notices.append("The link's text was empty, so the example sentence is shown.")
        elif len(text) > MAX_TEXT_CHARS:
            notices.append(f"The link's text was cut to its first {MAX_TEXT_CHARS:,} characters.")
            state = replace(state, text=text[:MAX_TEXT_CHARS])
        else:
            state = replace(state, text=text)
    model = params.get("model")
    if model is not None:
        if model in CATALOGUE or (allow_any_model and _looks_like_model_id(model)):
            state = replace(state, model=model)
        else:
            notices.append(f"Unknown model '{model[:80]}' in the link; showing {CATALOGUE[DEFAULT_MODEL].label}.")
    for name in ("layer", "head"):
        raw = params.get(name)
        if raw is None:
            continue
        try:
            value = int(raw)
            if value < 0:
                raise ValueError
            state = replace(state, **{name: value})
        except ValueError:
            notices.append(f"The link's {name} '{raw[:20]}' is not a whole number ≥ 0; showing {name} 0.")
    return state, notices


def clamp_to_model(state: ViewState, num_layers: int, num_heads: int) -> tuple[ViewState, list[str]]:
    """Bring layer and head into the loaded model's range, saying what changed."""
    notices = []
    if state.layer >= num_layers:
        notices.append(f"This model has {num_layers} layers (0-{num_layers - 1}); showing layer {num_layers - 1}.")
        state = replace(state, layer=num_layers - 1)
    if state.head >= num_heads:
        notices.append(f"This model has {num_heads} heads per layer (0-{num_heads - 1}); showing head 0.")
        state = replace(state, head=0)
    return state, notices


def to_query(state: ViewState) -> dict[str, str]:
    """Query parameters for a share link: only the values that differ from the defaults."""
    default = ViewState()
    return {
        f.name: str(getattr(state, f.name))
        for f in fields(state)
        if getattr(state, f.name) != getattr(default, f.name)
    }


def as_dict(state: ViewState) -> dict:
    return asdict(state)


def _looks_like_model_id(value: str) -> bool:
    """A hub id ("owner/name") or a folder path; nothing with spaces or control characters."""
    return 0 < len(value) <= 200 and value.isprintable() and " " not in value and ("/" in value)
