"""The one module that talks to streamlit: cached models and runs, shared widgets, the URL.

Pages call these helpers and stay thin; nothing else in `explorer` imports streamlit.
"""

from __future__ import annotations

import html
from dataclasses import replace

import streamlit as st

from explorer.catalogue import CATALOGUE, entry_for
from explorer.loading import LoadedModel, ModelLoadError, load_model, needs_conversion, prepare_weights
from explorer.run import MAX_TOKENS, AttentionRun, run_attention
from explorer.state import ViewState, clamp_to_model, parse_query, to_query

OTHER_MODEL = "other"  # picker choice for a hub id or local folder


@st.cache_resource(show_spinner=False, max_entries=4)
def _cached_model(key: str) -> LoadedModel:
    """One loaded model per key, shared read-only by every session."""
    return load_model(key)


@st.cache_resource(show_spinner=False, max_entries=16)
def _cached_run(key: str, text: str, max_tokens: int) -> AttentionRun:
    """One forward pass per (model, text), shared read-only (arrays are large: never copied)."""
    return run_attention(_cached_model(key), text, max_tokens)


def get_model(key: str) -> LoadedModel | None:
    """The loaded model, with a progress bar when its first-run conversion is needed; None on failure."""
    entry = entry_for(key)
    try:
        if needs_conversion(entry):
            with st.status(f"Preparing {entry.label}: first run only", expanded=True) as status:
                bar = st.progress(0.0, text="Starting")
                prepare_weights(entry, progress=lambda fraction, message: bar.progress(fraction, text=message))
                status.update(label=f"{entry.label} is ready", state="complete", expanded=False)
        with st.spinner(f"Loading {entry.label}"):
            loaded = _cached_model(key)
    except ModelLoadError as error:
        st.error(str(error))
        return None
    return loaded


def get_run(key: str, text: str, max_tokens: int = MAX_TOKENS) -> AttentionRun | None:
    """The attention of `text` in model `key`, computed once; None (with a message) when it cannot run."""
    if get_model(key) is None:
        return None
    try:
        run = _cached_run(key, text, max_tokens)
    except ValueError as error:
        st.info(str(error))
        return None
    if run.truncated:
        st.warning(f"The text is longer than {max_tokens} tokens; only the first {max_tokens} are shown.")
    return run


def view_state() -> ViewState:
    """This run's view state: read from the URL on a session's first run, then kept by the widgets."""
    if "view" not in st.session_state:
        state, notices = parse_query(st.query_params.to_dict())
        st.session_state["view"] = state
        st.session_state["notices"] = notices
    return st.session_state["view"]


def set_view(**changes) -> ViewState:
    """Update the view state and mirror it in the URL, so a copied link restores this view."""
    state = replace(view_state(), **changes)
    st.session_state["view"] = state
    query = to_query(state)
    for name in set(st.query_params) - set(query):
        del st.query_params[name]
    for name, value in query.items():
        if st.query_params.get(name) != value:
            st.query_params[name] = value
    return state


def show_notices(extra: list[str] = ()) -> None:
    """Notices about corrected link parameters, shown once."""
    for notice in [*st.session_state.pop("notices", []), *extra]:
        st.warning(notice)


def text_box() -> str:
    """The input text, in the sidebar; every page shows it and they share its value."""
    # Re-assigning the value keeps it across a page switch, which would otherwise reset the widget.
    st.session_state["text_box"] = st.session_state.get("text_box", view_state().text)
    text = st.sidebar.text_area("Text", key="text_box", height=120, help="Press Ctrl+Enter to run it.")
    return set_view(text=text).text


def model_picker() -> str:
    """Pick a catalogue model, or type a hub id / local folder; returns the model key."""
    state = view_state()
    options = [*CATALOGUE, OTHER_MODEL]
    current = state.model if state.model in CATALOGUE else OTHER_MODEL
    labels = {key: entry.label + ("" if entry.is_installed() else " (not installed)") for key, entry in CATALOGUE.items()}
    labels[OTHER_MODEL] = "Other: a Hugging Face id or local folder"
    choice = st.sidebar.selectbox("Model", options, index=options.index(current), format_func=labels.get)
    if choice != OTHER_MODEL:
        return set_view(model=choice).model
    typed = st.sidebar.text_input(
        "Model id or folder",
        value="" if state.model in CATALOGUE else state.model,
        placeholder="HuggingFaceTB/SmolLM2-360M",
        help="Loaded with safetensors only; remote code never runs. Needs the network unless it is a folder.",
    ).strip()
    if not typed:
        st.info("Type a Hugging Face model id (owner/name) or a local folder in the sidebar.")
        st.stop()
    return set_view(model=typed).model


def layer_and_head(num_layers: int, num_heads: int) -> tuple[int, int]:
    """Layer slider and head picker, clamped to the model, kept in the URL."""
    state, notices = clamp_to_model(view_state(), num_layers, num_heads)
    show_notices(notices)
    left, right = st.columns([2, 3])
    layer = left.slider("Layer", 0, num_layers - 1, state.layer) if num_layers > 1 else 0
    head = right.segmented_control(
        "Head", list(range(num_heads)), default=state.head, format_func=lambda h: f"H{h}"
    )
    head = state.head if head is None else head
    set_view(layer=layer, head=head)
    return layer, head


def token_strip(tokens: list[str]) -> None:
    """The tokens as the model sees them, numbered, as escaped HTML chips."""
    chips = "".join(
        f'<span style="display:inline-block;margin:2px;padding:2px 6px;border-radius:4px;'
        f'background:#eef2ff;font-family:monospace"><sub style="color:#6b7280">{i}</sub> {html.escape(t)}</span>'
        for i, t in enumerate(tokens)
    )
    st.markdown(f"<div>{chips}</div>", unsafe_allow_html=True)


def chart(figure, key: str | None = None) -> None:
    st.plotly_chart(figure, key=key, config={"displaylogo": False})

