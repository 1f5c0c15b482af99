"""The variant lab's cached computations and controls: conversions, quality, measured K/V, the variant picker."""

from __future__ import annotations

import streamlit as st
import torch

from explorer import guard, kv, lab
from explorer.catalogue import CATALOGUE, DEFAULT_MODEL
from explorer.config import VARIANTS, ModelConfig, read_config
from explorer.loading import (
    LoadedModel,
)
from explorer.quality import (
    EncoderQuality,
    EncoderReference,
    Quality,
    Reference,
    compare,
    compare_encoder,
    encoder_evaluation_ids,
    encoder_identity,
    encoder_reference,
    evaluation_ids,
    identity,
    reference,
)
from explorer.run import (
    MAX_TOKENS,
    AttentionRun,
    run_attention,
)
from explorer.settings import read_settings
from explorer.ui.models import _cached_model, get_model
from explorer.ui.url import set_view, show_notices, view_state
from explorer.ui.widgets import model_picker
from explorer.variants import (
    AttentionShape,
    Calibration,
    Conversion,
    VariantSpec,
    calibrate,
    computed_kv,
    convert,
    family_of,
    measured_cache,
)
from explorer.variants.families import Family
from explorer.variants.report import absorbed_vs_naive
from explorer.variants.spec import cached_layout


@st.cache_resource(show_spinner=False, max_entries=2)
def _cached_calibration(key: str, tokens: int) -> Calibration:
    """Input statistics of the original model on calibration prose (never the evaluation prose)."""
    return calibrate(_cached_model(key), tokens)


@st.cache_resource(show_spinner=False, max_entries=4)
def _cached_conversion(key: str, spec: VariantSpec) -> Conversion:
    """One converted copy per (model, variant settings), shared read-only; the original is never touched."""
    calibration = _cached_calibration(key, spec.calibration_tokens) if spec.uses_calibration() else None
    return convert(_cached_model(key), spec, calibration)


@st.cache_resource(show_spinner=False, max_entries=3)
def _cached_reference(key: str) -> Reference | EncoderReference:
    """The original model's outputs on the evaluation prose, the yardstick for every variant: a decoder's logits
    on 512 tokens, an encoder's hidden states on eight whole documents."""
    loaded = _cached_model(key)
    if loaded.kind == "encoder":
        return encoder_reference(loaded.model, encoder_evaluation_ids(loaded.tokenizer, texts=LAB_ENCODER_TEXTS))
    return reference(loaded.model, evaluation_ids(loaded.tokenizer, LAB_EVAL_CHUNKS, LAB_EVAL_CHUNK_TOKENS))


@st.cache_resource(show_spinner=False, max_entries=64)
def _cached_quality(key: str, spec: VariantSpec) -> Quality | EncoderQuality:
    model = _cached_conversion(key, spec).loaded.model
    if _cached_model(key).kind == "encoder":
        return compare_encoder(model, _cached_reference(key))
    return compare(model, _cached_reference(key))


@st.cache_resource(show_spinner=False, max_entries=16)
def _cached_variant_run(key: str, spec: VariantSpec, text: str) -> AttentionRun:
    return run_attention(_cached_conversion(key, spec).loaded, text, min(MAX_TOKENS, read_settings().max_input_tokens))


@st.cache_resource(show_spinner=False, max_entries=16)
def _cached_absorb_gap(key: str, spec: VariantSpec, text: str) -> float:
    loaded = _cached_conversion(key, spec).loaded
    input_ids = torch.tensor([loaded.tokenizer(text)["input_ids"][:64]])  # (1, T)
    return absorbed_vs_naive(loaded.model, input_ids)


LAB_EVAL_CHUNKS, LAB_EVAL_CHUNK_TOKENS = 2, 256  # 512 held-out tokens, as in the committed variants report


LAB_ENCODER_TEXTS = 8  # held-out documents an encoder variant is compared on (at most 128 tokens each)


def get_conversion(key: str, spec: VariantSpec) -> Conversion | None:
    """The converted model (converted once, shared); None with a message when the settings cannot work."""
    try:
        slow = spec.rank_allocation == "sensitivity" or spec.refit != "none"
        with st.spinner(f"Converting to {spec.label()} ({'a minute or more' if slow else 'a few seconds'}, once)"):
            return _cached_conversion(key, spec)
    except ValueError as error:
        st.error(str(error))
        return None


def variant_quality(key: str, spec: VariantSpec) -> tuple[Quality | EncoderQuality, Reference | EncoderReference]:
    """A variant against the original on held-out news prose: perplexity, KL and top-1 agreement on 512 tokens
    (decoder), or how close the sentence embeddings stay on eight documents (encoder)."""
    with st.spinner("Measuring quality on held-out news prose"):
        ref = _cached_reference(key)
        if spec.variant != "original":
            return _cached_quality(key, spec), ref
        # the yardstick itself: identical outputs by definition
        return (encoder_identity(ref) if isinstance(ref, EncoderReference) else identity(ref)), ref


def variant_run(key: str, spec: VariantSpec, text: str) -> AttentionRun:
    """The converted model's attention on `text` (cut to the same tokens as the original's run)."""
    loaded = _cached_conversion(key, spec).loaded
    with guard.admit_text(loaded, text, min(MAX_TOKENS, read_settings().max_input_tokens)):
        return _cached_variant_run(key, spec, text)


def absorb_gap(key: str, spec: VariantSpec, text: str) -> float:
    """The largest |difference| between the absorbed and naive paths' attention outputs, over every MLA layer of
    a decoupled model, in float64 (per layer, not the logits: see `absorbed_vs_naive`)."""
    with st.spinner("Running both MLA paths in float64"):
        return _cached_absorb_gap(key, spec, text)


MEASURED_VARIANTS = (
    VariantSpec("original"),
    VariantSpec("mha"),
    VariantSpec("mqa"),
    VariantSpec("mla", latent_rank=128, svd="plain"),
)


@st.cache_data(show_spinner="Running the model in each variant and weighing its cache", max_entries=8)
def measured_caches(tokens: int, key: str = "smollm2") -> list[dict]:
    """Measured vs formula cache bytes of a model in several variants (real forward passes), by
    `explorer.kv.measured_table`: a decoder's cache tensors, or the K/V tensors an encoder computes."""
    loaded = _cached_model(key)
    base = read_config(loaded.config, loaded.entry.label)
    if not base.is_decoder:
        tokens = min(tokens, loaded.config.max_position_embeddings)
    models = []
    for spec in MEASURED_VARIANTS:
        model = _cached_conversion(key, spec).loaded.model
        layers = () if base.is_decoder else family_of(loaded.config).attention_modules(model)
        models.append(kv.Measurable(spec.label(), model, cached_layout(spec, base), layers))
    return kv.measured_table(models, tokens)


@st.cache_resource(show_spinner=False, max_entries=16)
def _cached_kv_weighed(key: str, spec: VariantSpec, text: str) -> tuple[list[int], list[int]]:
    loaded = _cached_conversion(key, spec).loaded
    input_ids = torch.tensor([loaded.tokenizer(text)["input_ids"][:64]])  # (1, T)
    if loaded.kind == "encoder":
        return computed_kv(loaded.model, family_of(loaded.config).attention_modules(loaded.model), input_ids)
    return measured_cache(loaded.model, input_ids)


def measured_kv(key: str, spec: VariantSpec, text: str) -> tuple[float, float]:
    """(values, bytes) per token and layer that the converted model really keeps for `text` (first 64 tokens):
    a decoder's cache tensors, or the K/V tensors an encoder computes (it keeps no cache), averaged over layers."""
    with st.spinner("Weighing the K/V tensors"):
        values, sizes = _cached_kv_weighed(key, spec, text)
    return sum(values) / len(values), sum(sizes) / len(sizes)


def lab_model() -> tuple[str, LoadedModel, Family] | None:
    """The variant lab's model, from the sidebar picker (the `model` the attention page shares), with the family
    adapter that converts it. A model whose attention cannot be converted falls back to SmolLM2 with a notice;
    None, with the reason on the page, when the model cannot load (not installed, offline)."""
    key = model_picker()
    loaded = get_model(key)
    if loaded is None:
        return None
    try:
        return key, loaded, family_of(loaded.config, loaded.entry.label)
    except ValueError as error:
        if key == DEFAULT_MODEL:
            raise
        notice = f"{error} Showing {CATALOGUE[DEFAULT_MODEL].label}."
        st.session_state["notices"] = [*st.session_state.get("notices", []), notice]
        set_view(model=DEFAULT_MODEL)
        st.rerun()


def lab_variant_layout(base: ModelConfig) -> ModelConfig | None:
    """The layout the variant lab's current choice caches (from the URL state), or None for the original."""
    state = view_state()
    if state.variant == "original" or state.model != "smollm2":  # the lab converts another model: not this one
        return None
    spec, _ = lab.spec_from_view(state.variant, state.kv_heads, state.latent_rank, state.rope_dims,
                                 state.merge, state.form, state.svd, AttentionShape.of(base))
    return cached_layout(spec, base)


def variant_controls(shape, choices: lab.LabChoices = lab.ALL_CHOICES) -> tuple:
    """Variant and its settings, kept in the URL: (variant, kv_heads, latent_rank, rope_dims, merge, form, svd).

    Only the MLA forms and merges the model's family supports are offered (`choices`); a link asking for
    another gets a notice and the first one offered.
    """
    state = view_state()
    variant = st.segmented_control(
        "Attention variant", list(VARIANTS), default=state.variant,
        format_func=lambda v: f"Original ({lab.original_layout(shape)})" if v == "original" else v.upper(),
    ) or state.variant
    kv_heads, latent_rank, rope_dims = state.kv_heads, state.latent_rank, state.rope_dims
    form, merge, notices = lab.offered(variant, state.form, state.merge, choices)
    show_notices(notices)
    svd = state.svd
    left, middle, right = st.columns(3)
    merges = {name: label for name, label in (("mean", "mean-pool (GQA paper)"), ("first", "keep the first head"),
                                              ("aligned", "aligned merge")) if name in choices.merges}
    if variant == "gqa":
        choices = [n for n in range(1, shape.heads + 1) if shape.heads % n == 0]
        if kv_heads is not None and kv_heads not in choices:
            show_notices(lab.spec_from_view("gqa", kv_heads, None, None, merge, form, svd, shape)[1])
            kv_heads = shape.kv_heads
        kv_heads = left.select_slider("KV heads", choices, value=kv_heads or shape.kv_heads)
    if variant in ("gqa", "mqa"):
        merge = middle.radio("Merge a group by", list(merges), index=list(merges).index(merge), format_func=merges.get)
    if variant == "mla":
        full = 2 * shape.kv_heads * shape.head_dim
        latent_rank = left.slider("Latent rank (values cached per token and layer)", 16, full,
                                  latent_rank if latent_rank and latent_rank <= full else 128, step=16)
        forms = list(choices.forms)
        form = middle.radio("Form", forms, index=forms.index(form),
                            format_func={"naive": "naive: RoPE after the up-projection" if "decoupled" in forms
                                         else "naive: keys and values from the latent",
                                         "decoupled": "decoupled RoPE (DeepSeek-V2), absorbed"}.get)
        if len(forms) == 1:
            middle.caption(choices.why)
        svd = right.radio("Latent from", ["data", "plain"], index=["data", "plain"].index(svd),
                          format_func={"data": "K/V outputs on calibration text", "plain": "the weights (plain SVD)"}.get)
        if form == "decoupled":
            rope_dims = left.select_slider("RoPE dims (shared key)", [8, 16, 32, 48, 64],
                                           value=rope_dims if rope_dims in (8, 16, 32, 48, 64) else 32)
            merge = middle.radio("Merge RoPE keys by", ["mean", "aligned"],
                                 index=1 if merge == "aligned" else 0, format_func=merges.get)
    set_view(variant=variant, kv_heads=kv_heads, latent_rank=latent_rank, rope_dims=rope_dims,
             merge=merge, form=form, svd=svd)
    return variant, kv_heads, latent_rank, rope_dims, merge, form, svd


def conversion_methods(variant: str, form: str, family_name: str) -> dict[str, str]:
    """The training-free refinements of a conversion (MLA's weighting, rank allocation and RoPE pairs; the output
    refit for any converted variant), kept in the URL; returned as VariantSpec fields."""
    state = view_state()
    methods = {"weighting": state.weighting, "value_weight": float(state.value_weight),
               "rank_allocation": state.ranks, "rope_pairs": state.rope_pairs, "refit": state.refit}
    if variant in ("original", "mha"):
        return {}
    with st.expander("Training-free refinements (calibration prose only, never the evaluation prose)",
                     expanded=any(value not in ("none", "uniform", "highest", 1.0) for value in methods.values())):
        left, middle, right = st.columns(3)
        if variant == "mla":
            methods["weighting"] = left.radio(
                "Weigh K/V before the SVD", ["none", "query-output"], index=["none", "query-output"].index(state.weighting),
                format_func={"none": "no: raw K/V outputs",
                             "query-output": "keys by their queries, values by W_O"}.get)
            methods["value_weight"] = float(left.select_slider(
                "Weight of values in the latent", ["0.25", "0.5", "1"], value=state.value_weight,
                help="After V is scaled to K's energy: below 1 the latent keeps more of the keys, whose errors move "
                     "every attention weight."))
            methods["rank_allocation"] = middle.radio(
                "Latent rank per layer", ["uniform", "sensitivity"], index=["uniform", "sensitivity"].index(state.ranks),
                format_func={"uniform": "the same in every layer",
                             "sensitivity": "by measured sensitivity (same total; 1-3 min the first time)"}.get)
            if form == "decoupled":
                pairs = ["highest", "norm", "rotation"]
                methods["rope_pairs"] = right.radio(
                    "RoPE pairs kept", pairs, index=pairs.index(state.rope_pairs),
                    format_func={"highest": "highest frequencies", "norm": "largest ‖q‖·‖k‖ (MHA2MLA)",
                                 "rotation": "largest ‖q‖·‖k‖ × how far they turn"}.get)
        if family_name != "BERT":
            methods["refit"] = left.radio(
                "Output projection", ["none", "output"], index=["none", "output"].index(state.refit),
                format_func={"none": "as converted", "output": "refitted by least squares to the original's heads"}.get)
    if variant != "mla" or form != "decoupled":
        methods["rope_pairs"] = "highest"
    if variant != "mla":
        methods.update(weighting="none", value_weight=1.0, rank_allocation="uniform")
    set_view(weighting=methods["weighting"], value_weight=f"{methods['value_weight']:g}",
             ranks=methods["rank_allocation"], rope_pairs=methods["rope_pairs"], refit=methods["refit"])
    return methods
