"""The lab's uptraining section: budget and scope controls, saved runs, training with live progress."""

from __future__ import annotations

import streamlit as st
import torch

from explorer.charts.variants import loss_curves
from explorer.quality import (
    Quality,
    compare,
)
from explorer.run import (
    MAX_TOKENS,
    AttentionRun,
    run_attention,
)
from explorer.settings import read_settings
from explorer.ui.lab import _cached_calibration, _cached_reference
from explorer.ui.models import _cached_model
from explorer.ui.url import keep_widget, set_view, view_state
from explorer.uptrain import CONTROL, Step, Uptrained, UptrainSettings, estimate_seconds, is_saved, uptrain
from explorer.variants import (
    VariantSpec,
)

UPTRAIN_BUDGETS = (2_048, 8_192, 32_768, 131_072)  # training tokens offered on a CPU (~120 tokens/s for SmolLM2)


UPTRAIN_GPU_BUDGETS = (*UPTRAIN_BUDGETS, 524_288, 2_097_152)  # and on a GPU; the host may allow fewer


UPTRAIN_DEFAULT_BUDGET = 8_192


@st.cache_resource(show_spinner=False, max_entries=4)
def _cached_uptrained(key: str, spec: VariantSpec, settings: UptrainSettings) -> Uptrained:
    """One uptrained copy per (model, variant, training settings), read from the user cache once trained."""
    calibration = _cached_calibration(key, spec.calibration_tokens) if spec.uses_calibration() else None
    return uptrain(_cached_model(key), spec, settings, calibration)


@st.cache_resource(show_spinner=False, max_entries=16)
def _cached_uptrained_quality(key: str, spec: VariantSpec, settings: UptrainSettings) -> Quality:
    return compare(_cached_uptrained(key, spec, settings).loaded.model, _cached_reference(key))


@st.cache_resource(show_spinner=False, max_entries=8)
def _cached_uptrained_run(key: str, spec: VariantSpec, settings: UptrainSettings, text: str) -> AttentionRun:
    loaded = _cached_uptrained(key, spec, settings).loaded
    return run_attention(loaded, text, min(MAX_TOKENS, read_settings().max_input_tokens))


@st.cache_data(show_spinner=False, max_entries=8)
def _estimated_seconds(key: str, settings: UptrainSettings) -> float:
    return estimate_seconds(_cached_model(key), settings, runs=2)


def uptrain_controls() -> UptrainSettings:
    """The training budget and what learns, kept in the URL; the host's limit caps the budget."""
    offered = UPTRAIN_GPU_BUDGETS if torch.cuda.is_available() else UPTRAIN_BUDGETS
    budgets = [tokens for tokens in offered if tokens <= read_settings().max_uptrain_tokens]
    default = UPTRAIN_DEFAULT_BUDGET if UPTRAIN_DEFAULT_BUDGET in budgets else budgets[0]
    state = view_state()
    if state.uptrain_tokens is not None and state.uptrain_tokens not in budgets:
        st.info(f"The link asks for {state.uptrain_tokens:,} training tokens; this server offers "
                f"{', '.join(f'{b:,}' for b in budgets)}. Showing {default:,}.")
        set_view(uptrain_tokens=None)
    keep_widget("uptrain-tokens", view_state().uptrain_tokens or default)
    keep_widget("uptrain-scope", state.uptrain_scope)
    budget_column, scope_column = st.columns(2)
    tokens = budget_column.select_slider("Training tokens", budgets, format_func=lambda n: f"{n:,}",
                                         key="uptrain-tokens")
    scope = scope_column.radio("What learns", ("attention", "all"), horizontal=True, key="uptrain-scope",
                               format_func={"attention": "attention weights", "all": "the whole model"}.get)
    set_view(uptrain_tokens=None if tokens == default else tokens, uptrain_scope=scope)
    return UptrainSettings(tokens=tokens, scope=scope)


def uptrained_pair(key: str, spec: VariantSpec, settings: UptrainSettings) -> tuple[Uptrained, Uptrained] | None:
    """The uptrained variant and its control: loaded when saved, else trained after a click, with live progress.

    None until the user starts a run that is not saved yet.
    """
    loaded = _cached_model(key)
    runs = {spec.label(): spec, "control": CONTROL}
    unsaved = {name: run for name, run in runs.items() if not is_saved(loaded, run, settings)}
    if unsaved:
        seconds = _estimated_seconds(key, settings) * len(unsaved) / 2
        st.caption(
            f"Runs of {settings.steps} steps ({settings.tokens:,} tokens each): {' and '.join(unsaved)}. "
            f"Estimated **{_duration(seconds)}** on this {loaded.device.type.upper()} (three times a measured "
            "forward pass per step). Results are saved and reload in seconds."
        )
        if not st.button("Uptrain this variant and the control", key="uptrain-start", type="primary"):
            return None
        _train_with_progress(key, unsaved, settings)
    try:
        with st.spinner("Loading the saved runs"):
            return _cached_uptrained(key, spec, settings), _cached_uptrained(key, CONTROL, settings)
    except ValueError as error:
        st.info(str(error))
        return None


def _train_with_progress(key: str, runs: dict[str, VariantSpec], settings: UptrainSettings) -> None:
    """Train and save each run, drawing a progress bar and the loss curves as the steps come in."""
    loaded = _cached_model(key)
    bar, curve = st.empty(), st.empty()
    losses: dict[str, list[float]] = {}
    tokens_per_step = settings.sequence_tokens * settings.batch_sequences
    try:
        for name, run in runs.items():
            def progress(step: Step, name=name) -> None:
                losses.setdefault(name, []).append(step.loss)
                bar.progress(step.step / step.steps,
                             text=f"{name}: step {step.step} of {step.steps}, loss {step.loss:.3f}, {step.seconds:.0f} s")
                curve.plotly_chart(loss_curves(losses, tokens_per_step))

            calibration = _cached_calibration(key, run.calibration_tokens) if run.uses_calibration() else None
            uptrain(loaded, run, settings, calibration, progress)
    finally:
        bar.empty()
        curve.empty()


def uptrained_quality(key: str, spec: VariantSpec, settings: UptrainSettings) -> Quality:
    with st.spinner("Scoring on held-out prose"):
        return _cached_uptrained_quality(key, spec, settings)


def uptrained_run(key: str, spec: VariantSpec, settings: UptrainSettings, text: str) -> AttentionRun:
    return _cached_uptrained_run(key, spec, settings, text)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
