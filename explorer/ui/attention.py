"""The attention page's own controls and cached computations: clicking a head selects it, query tokens to
follow, special tokens hidden, rollout and flow, heads switched off. Each choice is kept in the URL."""

from __future__ import annotations

import numpy as np
import streamlit as st

from explorer.ablation import AblationResult, ablate_heads
from explorer.rollout import MAX_FLOW_TOKENS, flow, rollout
from explorer.run import AttentionOverview
from explorer.selection import special_positions
from explorer.ui.models import _cached_model, _guarded
from explorer.ui.url import keep_widget, set_view, show_notices, view_state


def select_head_on_click(chart_key: str) -> None:
    """Callback of a grid or overview chart: the clicked tile's head (and layer, in the overview) becomes the view's.

    The tiles carry invisible points whose `customdata` is [head] (a layer's grid) or [layer, head] (overview).
    """
    points = st.session_state[chart_key]["selection"]["points"]
    if not points:
        return
    picked = points[0].get("customdata")
    if isinstance(picked, dict):  # a typed array arrives as {"0": .., "1": ..}
        picked = [picked[k] for k in sorted(picked, key=int)]
    if not picked:
        return
    if len(picked) == 2:
        set_view(layer=int(picked[0]), head=int(picked[1]))
    else:
        set_view(head=int(picked[0]))


@st.cache_resource(show_spinner=False, max_entries=64)
def unchanging_figure(_build, name: str, *args, **options):
    """`_build(*args, **options)`, built once per (name, arguments) and shared read-only: for the charts that do
    not change when the layer or head does (summaries, rollout, flow, overview), so that such a change only
    rebuilds the charts of that layer and head (plotly takes ~10-100 ms to build a figure)."""
    return _build(*args, **options)


def special_tokens(key: str, overview: AttentionOverview) -> list[int]:
    """Positions of the text's special tokens (BOS, CLS, SEP...) for model `key`."""
    tokenizer = _cached_model(key).tokenizer
    return special_positions(overview.token_ids, set(getattr(tokenizer, "all_special_ids", []) or []))


def hide_special_switch(specials: list[int], tokens: list[str], allowed: bool) -> bool:
    """A toggle that drops special tokens and renormalises each row over the rest; says which tokens go."""
    keep_widget("hide_special", view_state().hide_special)
    names = ", ".join(dict.fromkeys(tokens[p] for p in specials)) or "none in this text"
    on = st.toggle(
        "Hide special tokens, rows renormalised", key="hide_special", disabled=not specials or not allowed,
        help=f"Drops the special tokens ({names}) from rows and columns of the grid, the head and its mask, and "
             "divides each row by what is left, so rows sum to 1 again. The weights shown are then not the "
             "model's own: they say where a token looks among the ordinary tokens."
             + ("" if allowed else " Offered for texts drawn token by token (64 tokens or fewer)."),
    )
    return set_view(hide_special=on).hide_special and bool(specials) and allowed


def query_tokens(tokens: list[str]) -> list[int]:
    """Several query tokens, or a span, whose attention is summed; kept in the URL as `queries` (default: the last).
    A change reruns the whole app, also when the picker sits in a fragment."""
    wanted = view_state().queries
    last = [len(tokens) - 1]
    chosen = [q for q in (wanted or last) if q < len(tokens)]
    if wanted and len(chosen) < len(wanted):
        show_notices([f"The link's query tokens beyond #{len(tokens) - 1} are not in this text; they are left out."])
    kept = [q for q in st.session_state.get("queries", chosen or last) if q < len(tokens)]  # the text may have changed
    st.session_state["queries"] = kept or last
    picked = st.multiselect(
        "Query tokens (several, or a span): where do they look, together?", list(range(len(tokens))),
        key="queries", format_func=lambda p: f"#{p} {tokens[p]}", on_change=_queries_changed,
        help="The weights of the chosen rows are added up: n tokens hand out n in all.",
    )
    picked = sorted(picked) or last
    set_view(queries=None if picked == last else tuple(picked))
    if st.session_state.pop("queries_changed", False):  # picked inside the page's layer fragment, but the rollout
        st.rerun(scope="app")  # and flow further down follow the query tokens too: redraw the whole page
    return picked


def _queries_changed() -> None:
    st.session_state["queries_changed"] = True


def heads_to_switch_off(num_layers: int, num_heads: int) -> list[tuple[int, int]]:
    """Heads to ablate, as (layer, head), kept in the URL as `ablate`."""
    wanted = view_state().ablate
    valid = [(layer, head) for layer, head in wanted if layer < num_layers and head < num_heads]
    if len(valid) < len(wanted):
        show_notices([f"This model has {num_layers} layers of {num_heads} heads; heads of the link beyond them are "
                      "left out of the ablation."])
    kept = [(layer, head) for layer, head in st.session_state.get("ablate", valid) if layer < num_layers and head < num_heads]
    st.session_state["ablate"] = kept  # the model may have changed
    options = [(layer, head) for layer in range(num_layers) for head in range(num_heads)]
    picked = st.multiselect("Heads to switch off", options, key="ablate", format_func=lambda p: f"L{p[0]} H{p[1]}",
                            placeholder="Choose heads, such as the one you are looking at")
    set_view(ablate=tuple(sorted(picked)))
    return sorted(picked)


@st.cache_resource(show_spinner=False, max_entries=8)
def _cached_rollout(key: str, text: str, num_tokens: int, _overview: AttentionOverview) -> np.ndarray:
    return rollout(_overview.kept)  # (L, T, T)


@st.cache_resource(show_spinner=False, max_entries=32)
def _cached_flow(key: str, text: str, num_tokens: int, query: int, _overview: AttentionOverview):
    return flow(_overview.kept, query)  # (T,) into the last layer


def get_rollout(key: str, overview: AttentionOverview) -> np.ndarray | None:
    """(L, T, T) rollout of every layer, when every layer's weights were kept (inputs up to 512 tokens)."""
    if overview.kept is None:
        st.info("Rollout needs every layer's weights, which are kept for texts up to 512 tokens; choose a shorter "
                "context to see it.")
        return None
    with st.spinner("Rolling attention out across the layers"):
        return _cached_rollout(key, overview.text, len(overview.tokens), overview)


def get_flow(key: str, overview: AttentionOverview, queries: list[int]) -> np.ndarray | None:
    """(T,) attention flow from each input token into the chosen query tokens after the last layer (the mean of
    their shares), for short texts; computed once per token, so changing layer or head costs nothing."""
    if overview.kept is None or len(overview.tokens) > MAX_FLOW_TOKENS:
        st.caption(f"Attention flow is computed for texts of up to {MAX_FLOW_TOKENS} tokens (one max-flow problem "
                   "per token); the rollout above is its cheaper cousin.")
        return None
    with st.spinner("Solving attention flow"):
        shares = [_cached_flow(key, overview.text, len(overview.tokens), q, overview) for q in queries]
    return np.mean(shares, axis=0)


@st.cache_resource(show_spinner=False, max_entries=16)
def _cached_ablation(key: str, text: str, max_tokens: int, heads: tuple[tuple[int, int], ...]) -> AblationResult:
    return ablate_heads(_cached_model(key), text, list(heads), max_tokens)


def get_ablation(key: str, overview: AttentionOverview, heads: list[tuple[int, int]]) -> AblationResult | None:
    """The next-token prediction and loss of the text with and without `heads`; None, with a reason, when it cannot
    run (an encoder has no next token)."""
    loaded = _cached_model(key)
    max_tokens = len(overview.token_ids)
    with st.spinner("Running the text again with those heads off"):
        return _guarded(loaded, overview.text, max_tokens, "one_layer",
                        lambda: _cached_ablation(key, overview.text, max_tokens, tuple(heads)))
