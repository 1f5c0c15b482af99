"""The variant lab's views of what a conversion hurts: the RoPE frequency view and the damage view, cached, with
their choices kept in the URL."""

from __future__ import annotations

import streamlit as st
import torch

from explorer.damage import Damage, measure_damage
from explorer.rope_shares import RopeShares, measure_shares, prose_ids
from explorer.run import MAX_TOKENS, AttentionRun
from explorer.settings import read_settings
from explorer.ui.lab import _cached_conversion
from explorer.ui.models import _cached_model, _guarded
from explorer.ui.url import set_view, view_state
from explorer.variants import VariantSpec

ROPE_SOURCES = {"prose": "calibration prose (256 tokens)", "text": "the lab's text"}
DAMAGE_ORDERS = {"js": "attention moved (JS)", "loss": "effect on the loss"}


@st.cache_resource(show_spinner=False, max_entries=8)
def _cached_rope_shares(key: str, source: str, text: str) -> RopeShares:
    loaded = _cached_model(key)
    if source == "prose":
        return measure_shares(loaded, prose_ids(loaded), "calibration prose")
    token_ids = loaded.tokenizer(text)["input_ids"][: min(MAX_TOKENS, read_settings().max_input_tokens)]
    return measure_shares(loaded, torch.tensor([token_ids]), "the lab's text")


def rope_source() -> str:
    """Which text the frequency view measures, from a radio kept in the URL as `rope_text`."""
    chosen = st.radio("Measured on", list(ROPE_SOURCES), index=list(ROPE_SOURCES).index(view_state().rope_text),
                      format_func=ROPE_SOURCES.get, horizontal=True, key="rope_text")
    return set_view(rope_text=chosen).rope_text


def rope_shares(key: str, source: str, text: str) -> RopeShares | None:
    """Each head's share of |q·k| per rotary pair of the original model; None, with the reason, when the model has
    no rotary positions or the text is too short."""
    loaded = _cached_model(key)
    if source == "text" and len(loaded.tokenizer(text)["input_ids"]) < 2:
        st.info("The text is one token long: type a sentence, or measure on the calibration prose.")
        return None
    try:
        with st.spinner("Reading q and k of every head"):
            return _cached_rope_shares(key, source, text if source == "text" else "")
    except ValueError as error:
        st.info(str(error))
        return None


@st.cache_resource(show_spinner=False, max_entries=8)
def _cached_damage(key: str, spec: VariantSpec, text: str, _run: AttentionRun, _converted: AttentionRun) -> Damage:
    return measure_damage(_cached_model(key), _cached_conversion(key, spec).loaded, _run.token_ids,
                          _run.attentions, _converted.attentions)


def damage(key: str, spec: VariantSpec, text: str, run: AttentionRun, converted: AttentionRun) -> Damage | None:
    """Every head's attention shift and loss effect for this conversion on the lab's text (the runs of the original
    and the converted model on it); None, with the reason, when it cannot be measured."""
    with st.spinner("Ranking the heads: one forward and backward pass, then a few patched passes"):
        return _guarded(_cached_model(key), text, len(run.token_ids), "all_layers",
                        lambda: _cached_damage(key, spec, text, run, converted))  # a ValueError becomes a notice


def damage_order() -> str:
    """How the damage table is ordered, kept in the URL as `damage_rank`."""
    chosen = st.radio("Rank heads by", list(DAMAGE_ORDERS), index=list(DAMAGE_ORDERS).index(view_state().damage_rank),
                      format_func=DAMAGE_ORDERS.get, horizontal=True, key="damage_rank")
    return set_view(damage_rank=chosen).damage_rank
