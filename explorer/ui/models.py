"""Cached models and runs: one loaded model per key and one pass per (model, text), shared read-only by every
session, with progress, memory guard and messages on the page."""

from __future__ import annotations

import numpy as np
import streamlit as st

from explorer import guard, preload
from explorer.catalogue import entry_for
from explorer.loading import (
    LoadedModel,
    ModelLoadError,
    load_model,
    needs_conversion,
    prepare_weights,
)
from explorer.run import (
    MAX_TOKENS,
    AttentionOverview,
    AttentionRun,
    CrossAttentionRun,
    fill_with_prose,
    layer_attention,
    overview_attention,
    run_attention,
    run_cross_attention,
)
from explorer.settings import read_settings
from explorer.untrained import UNTRAINED_KEY, tiny_encoder_decoder

OTHER_MODEL = "other"  # picker choice for a hub id or local folder


@st.cache_resource(show_spinner=False, max_entries=4)
def _cached_model(key: str) -> LoadedModel:
    """One loaded model per key, shared read-only by every session: the one the launcher preloaded, if any."""
    return preload.model(key) or load_model(key)


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
    loaded = get_model(key)
    if loaded is None:
        return None
    max_tokens = min(max_tokens, read_settings().max_input_tokens)
    run = _guarded(loaded, text, max_tokens, "all_layers", lambda: _cached_run(key, text, max_tokens))
    if run is None:
        return None
    if run.truncated:
        st.warning(f"The text is longer than {max_tokens} tokens; only the first {max_tokens} are shown.")
    return run


def _guarded(loaded: LoadedModel, text: str, max_tokens: int, keeps: str, compute):
    """`compute()` once the memory guard admits the run; None, with the reason on the page, when it is refused
    (too big for this server) or cannot run (empty text, too long for the model)."""
    try:
        with guard.admit_text(loaded, text, max_tokens, keeps=keeps):
            return compute()
    except guard.MemoryLimitError as error:
        st.warning(str(error))
    except ValueError as error:
        st.info(str(error))
    return None


CONTEXT_LENGTHS = [0, 256, 512, 1024, 2048]  # 0: the text as typed; else the text filled up with news prose


ZOOM_TOKENS = 64  # widest region drawn token by token (hover labels for every cell grow with its square)


@st.cache_resource(show_spinner=False, max_entries=4)
def _cached_overview(key: str, text: str, max_tokens: int) -> AttentionOverview:
    """One reduced pass per (model, text, length): pooled tiles and summaries, full weights only when small.
    The launcher's preload has run the default text already."""
    return preload.overview(key, text, max_tokens) or overview_attention(_cached_model(key), text, max_tokens)


@st.cache_resource(show_spinner=False, max_entries=8)
def _cached_layer(key: str, text: str, num_tokens: int, layer: int, _overview: AttentionOverview) -> np.ndarray:
    """One layer's full weights (H, T, T), kept from the pass or recomputed by a pass that stops after it.

    Cached by (model, text, token count, layer); the overview itself is not hashed (its arrays are large).
    """
    return layer_attention(_cached_model(key), _overview, layer)


def get_overview(key: str, text: str, context: int) -> AttentionOverview | None:
    """The reduced run of `text` (filled to `context` tokens when > 0); None, with a message, when it cannot run."""
    loaded = get_model(key)
    if loaded is None:
        return None
    if context and text.strip():
        text, max_tokens = fill_with_prose(text, context), context
    else:
        max_tokens = MAX_TOKENS
    max_tokens = min(max_tokens, read_settings().max_input_tokens)
    with st.spinner(f"Running {max_tokens if context else 'your'} tokens through the model"):
        overview = _guarded(loaded, text, max_tokens, "one_layer", lambda: _cached_overview(key, text, max_tokens))
    if overview is None:
        return None
    if overview.truncated and not context:
        st.warning(f"The text is longer than {max_tokens} tokens; only the first {max_tokens} are shown.")
    return overview


def get_layer(key: str, overview: AttentionOverview, layer: int) -> np.ndarray:
    """(H, T, T) float32: every head of `layer` in full."""
    with st.spinner(f"Computing layer {layer} in full"):
        return _cached_layer(key, overview.text, len(overview.tokens), layer, overview)


@st.cache_resource(show_spinner=False, max_entries=1)
def _cached_untrained() -> LoadedModel:
    return tiny_encoder_decoder()


@st.cache_resource(show_spinner=False, max_entries=8)
def _cached_cross_run(key: str, source: str, target: str) -> CrossAttentionRun:
    model = _cached_untrained() if key == UNTRAINED_KEY else _cached_model(key)
    return run_cross_attention(model, source, target)


def get_encoder_decoder(key: str) -> LoadedModel | None:
    """The tiny untrained model, or a hub encoder-decoder; None, with the reason, when it cannot load."""
    if key == UNTRAINED_KEY:
        with st.spinner("Building the tiny untrained model"):
            return _cached_untrained()
    return get_model(key)


def get_cross_run(key: str, source: str, target: str) -> CrossAttentionRun | None:
    """All three kinds of attention for (source, target); None, with a message, when they cannot be computed."""
    try:
        with st.spinner("Running the encoder and the decoder"):
            run = _cached_cross_run(key, source, target)
    except ValueError as error:
        st.info(str(error))
        return None
    if run.truncated:
        st.warning("The text is longer than 128 tokens; only the first 128 go through the encoder.")
    return run
