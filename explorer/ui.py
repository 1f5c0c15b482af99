"""The one module that talks to streamlit: cached models and runs, shared widgets, the URL.

Pages call these helpers and stay thin; nothing else in `explorer` imports streamlit.
"""

from __future__ import annotations

import html
import urllib.parse
from dataclasses import replace
from functools import partial

import numpy as np
import streamlit as st
import torch

from explorer import export, guard, kv, lab
from explorer.catalogue import CATALOGUE, DEFAULT_MODEL, entry_for, is_local_path
from explorer.charts.variants import loss_curves
from explorer.explain import explanation
from explorer.loading import (
    LoadedModel,
    ModelLoadError,
    check_allowed,
    load_model,
    needs_conversion,
    prepare_weights,
)
from explorer.quality import (
    EncoderQuality,
    EncoderReference,
    Quality,
    Reference,
    compare,
    compare_encoder,
    encoder_evaluation_ids,
    encoder_reference,
    evaluation_ids,
    reference,
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
from explorer.state import (
    VARIANTS, ViewState, choose_token, clamp_head, clamp_layer, clamp_to_model, parse_query, to_query,
)
from explorer.untrained import ENTRY as UNTRAINED_ENTRY
from explorer.untrained import UNTRAINED_KEY, tiny_encoder_decoder
from explorer.uptrain import CONTROL, Step, Uptrained, UptrainSettings, estimate_seconds, is_saved, uptrain
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
from explorer.variants.spec import attention_shape, cache_values_per_token

OTHER_MODEL = "other"  # picker choice for a hub id or local folder


@st.cache_resource(show_spinner=False, max_entries=4)
def _cached_model(key: str) -> LoadedModel:
    """One loaded model per key, shared read-only by every session."""
    return load_model(key)


@st.cache_resource(show_spinner=False, max_entries=16)
def _cached_run(key: str, text: str, max_tokens: int) -> AttentionRun:
    """One forward pass per (model, text), shared read-only (arrays are large: never copied)."""
    return run_attention(_cached_model(key), text, max_tokens)


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
        with st.spinner(f"Converting to {spec.label()} (a few seconds, once)"):
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
        if isinstance(ref, EncoderReference):
            tokens = sum(int(ids.numel()) for ids in ref.inputs)
            return EncoderQuality(1.0, 1.0, 1.0, 0.0, 0.0, len(ref.inputs), tokens, ref.seconds), ref
        return Quality(ref.perplexity, 0.0, 1.0, 0.0, int(ref.input_ids[:, 1:].numel()), ref.seconds), ref


def variant_run(key: str, spec: VariantSpec, text: str) -> AttentionRun:
    """The converted model's attention on `text` (cut to the same tokens as the original's run)."""
    loaded = _cached_conversion(key, spec).loaded
    with guard.admit_text(loaded, text, min(MAX_TOKENS, read_settings().max_input_tokens)):
        return _cached_variant_run(key, spec, text)


def absorb_gap(key: str, spec: VariantSpec, text: str) -> float:
    """Max |logit difference| between the absorbed and naive paths of a decoupled MLA model, in float64."""
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
    """Measured vs formula cache bytes of a model in several variants (real forward passes).

    An encoder keeps no cache: its rows weigh the K/V tensors each layer computes for `tokens` tokens in one
    pass, which is what a cache would hold for them.
    """
    loaded = _cached_model(key)
    if loaded.kind == "encoder":
        return _computed_kv_table(key, tokens)
    base = kv.attention_layout(loaded.config, loaded.entry.label)
    models = [
        (spec.label(), _cached_conversion(key, spec).loaded, kv.layout_for_variant(base, spec))
        for spec in MEASURED_VARIANTS
    ]
    return kv.measured_table(models, tokens)


def _computed_kv_table(key: str, tokens: int) -> list[dict]:
    """measured_caches' rows for an encoder: the K/V tensors computed in one pass, beside the formula."""
    loaded = _cached_model(key)
    shape = attention_shape(loaded.config, loaded.entry.label)
    input_ids = torch.randint(1000, loaded.tokenizer.vocab_size, (1, min(tokens, loaded.config.max_position_embeddings)),
                              generator=torch.Generator().manual_seed(0))  # (1, T): any ids weigh the same
    rows = []
    for spec in MEASURED_VARIANTS:
        model = _cached_conversion(key, spec).loaded.model
        values, sizes = computed_kv(model, family_of(loaded.config).attention_modules(model), input_ids)
        formula = cache_values_per_token(spec, shape)
        rows.append({
            "variant": spec.label(),
            "values / token / layer": sum(formula) / len(formula),
            "computed values / token / layer": sum(values) / len(values),
            "computed bytes / token": sum(sizes),
            "measured / formula": round(sum(values) / sum(formula), 4),
            "note": "an encoder keeps no cache: these are the K/V tensors it computes, what a cache would hold",
        })
    return rows


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


def keep_widget(key: str, value) -> None:
    """Give a keyed widget its value from the view on first use, and keep it across page switches.

    Re-assigning a widget's own value marks it as set by the app, which Streamlit keeps when the user moves to
    another page and back; without it the widget would return to its default.
    """
    st.session_state[key] = st.session_state.get(key, value)


def text_box() -> str:
    """The input text, in the sidebar; every page shows it and they share its value."""
    keep_widget("text_box", view_state().text)
    text = st.sidebar.text_area("Text", key="text_box", height=120, help="Press Ctrl+Enter to run it.")
    return set_view(text=text).text


def model_picker() -> str:
    """Pick a catalogue model, or type a hub id / local folder; returns the model key.

    A hosted server offers only the models it allows, and no free-typed id.
    """
    state = view_state()
    allowed = read_settings()
    options = [key for key in CATALOGUE if allowed.allows_model(key)]
    if not allowed.hosted and allowed.allowed_models is None:
        options.append(OTHER_MODEL)
    if state.model in options:
        current = state.model
    elif OTHER_MODEL in options:
        current = OTHER_MODEL
    else:  # a link asked for a model this server does not serve: say so, then show one it does
        try:
            check_allowed(state.model, allowed)
        except ModelLoadError as error:
            st.error(f"{error} Showing {CATALOGUE[options[0]].label}.")
        current = options[0]
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


def gpu_picker(label: str, default: str = "H200"):
    """A GPU from the table in `explorer.kv`, or None for "none" (offered when it is the default); in the URL."""
    names = (["none"] if default == "none" else []) + [gpu.name for gpu in kv.GPUS]
    wanted = view_state().gpu or default
    if wanted not in names:
        show_notices([f"Unknown GPU '{wanted}' in the link; choose one of {', '.join(names)}."])
        wanted = default
    name = st.selectbox(label, names, index=names.index(wanted))
    set_view(gpu=None if name == default else name)
    return None if name == "none" else kv.gpu_named(name)


YOUR_CONFIG = "your own config"


def config_picker(column, references: dict[str, dict]) -> tuple[str, dict]:
    """A reference model, or your own config (pasted config.json, a file path, or a hub id when online)."""
    state = view_state()
    options = [*references, YOUR_CONFIG]
    chosen = column.selectbox(
        "Model", options, index=options.index(state.config if state.config in references else YOUR_CONFIG),
        format_func=lambda name: name if name == YOUR_CONFIG else
        f"{name} ({references[name].get('_source', '').split(' ')[0]})",
    )
    if chosen != YOUR_CONFIG:
        set_view(config=chosen)
        return chosen, references[chosen]
    typed = st.text_area(
        "Paste a config.json, or type a Hugging Face id or a config.json path",
        value="" if state.config in references else state.config, height=120,
        help="Hub ids need the network; remote code never runs. A pasted config is not kept in the share link.",
    ).strip()
    if not typed:
        st.info("Paste a model's config.json (or type its hub id) to see its KV cache.")
        st.stop()
    if not read_settings().allow_local_paths and not typed.startswith("{") and is_local_path(typed):
        st.error("This hosted demo does not read files from its disk; paste the config.json instead.")
        st.stop()
    try:
        config = kv.load_config(typed)
    except (ValueError, OSError) as error:
        st.error(str(error))
        st.stop()
    pasted = typed.startswith("{")
    set_view(config=state.config if pasted else typed[:200])
    return ("pasted config" if pasted else typed), config


def lab_variant_layout(base: kv.AttentionLayout) -> kv.AttentionLayout | None:
    """The layout the variant lab's current choice caches (from the URL state), or None for the original."""
    state = view_state()
    if state.variant == "original" or state.model != "smollm2":  # the lab converts another model: not this one
        return None
    shape = AttentionShape(base.num_layers, base.query_heads, base.kv_heads, base.head_dim, "SmolLM2")
    spec, _ = lab.spec_from_view(state.variant, state.kv_heads, state.latent_rank, state.rope_dims,
                                 state.merge, state.form, state.svd, shape)
    return kv.layout_for_variant(base, spec)


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


def token_strip(tokens: list[str]) -> None:
    """The tokens as the model sees them, numbered, as escaped HTML chips."""
    chips = "".join(
        f'<span style="display:inline-block;margin:2px;padding:2px 6px;border-radius:4px;'
        f'background:#eef2ff;font-family:monospace"><sub style="color:#6b7280">{i}</sub> {html.escape(t)}</span>'
        for i, t in enumerate(tokens)
    )
    st.markdown(f"<div>{chips}</div>", unsafe_allow_html=True)


def chart(figure, key: str, numbers: export.LabelledArray | export.Table | None = None) -> None:
    """A plotly chart with its exports beneath it: PNG (the chart's camera button in the browser, and a 2x render
    on the server where Chromium is installed), and `numbers`, the numbers behind it, as CSV and JSON.

    Every file is made only when its button is clicked (a server-side PNG takes a few seconds), never on a rerun.
    """
    title = figure.layout.title.text or ""
    name = export.file_stem(title, key)
    st.plotly_chart(
        figure,
        key=key,
        config={"displaylogo": False, "toImageButtonOptions": {"format": "png", "filename": name, "scale": 2}},
    )
    files = {}
    if export.png_export_available():
        files["png"] = (partial(export.figure_png, figure), "image/png", "A 2x PNG rendered on the server for papers "
                        "and slides (a few seconds). The camera button on the chart saves what you see.")
    if numbers is not None:
        files["csv"] = (numbers.csv, "text/csv", "The numbers behind the chart, with their labels, for a spreadsheet.")
        files["json"] = (numbers.json, "application/json", "The numbers behind the chart, with their labels and "
                         "what the view was, for code.")
    if not files:
        return
    row = st.container(horizontal=True, gap="small", key=f"exports-{key}")
    for extension, (make, mime, about) in files.items():
        row.download_button(extension.upper(), make, file_name=f"{name}.{extension}", mime=mime, help=about,
                            key=f"{extension}-{key}", on_click="ignore", type="tertiary",
                            icon=":material/download:")


def downloads(name: str, files: dict[str, str]) -> None:
    """Download buttons in a row, one per format: {"csv": text, "json": text}."""
    mime = {"csv": "text/csv", "json": "application/json"}
    for column, (extension, data) in zip(st.columns(len(files) + 3), files.items()):
        column.download_button(
            f"⬇ {extension.upper()}", data, file_name=f"{name}.{extension}", mime=mime[extension], key=f"dl-{name}-{extension}"
        )


def layer_slider(field: str, label: str, num_layers: int, model: str, container=st) -> int:
    """A layer of one model, kept in the URL as `field` (None there: the last layer), clamped with a notice."""
    layer, notices = clamp_layer(getattr(view_state(), field), num_layers, model)
    show_notices(notices)
    if num_layers > 1:
        layer = container.slider(label, 0, num_layers - 1, layer, key=field)
    set_view(**{field: None if layer == num_layers - 1 else layer})
    return layer


def head_picker(field: str, label: str, num_heads: int, model: str, container=st) -> int:
    """A head of one model, kept in the URL as `field`, clamped with a notice."""
    head, notices = clamp_head(getattr(view_state(), field), num_heads, model)
    show_notices(notices)
    head = container.selectbox(label, range(num_heads), index=head, key=field, format_func=lambda h: f"H{h}")
    set_view(**{field: head})
    return head


def token_to_follow(label: str, tokens: list[str]) -> str:
    """One of `tokens` to follow, kept in the URL as `follow`; a linked token not among them gets a notice."""
    wanted, notices = choose_token(view_state().follow, tokens)
    show_notices(notices)
    chosen = st.selectbox(label, tokens, index=tokens.index(wanted), key="follow")
    default, _ = choose_token(None, tokens)
    set_view(follow=None if chosen == default else chosen)
    return chosen


def switch(label: str, field: str, **options) -> bool:
    """An on/off toggle kept in the URL as `field`."""
    on = st.toggle(label, value=getattr(view_state(), field), key=field, **options)
    set_view(**{field: on})
    return on


def number_slider(label: str, field: str, low: int, high: int, step: int = 1) -> int:
    """A whole-number slider kept in the URL as `field`."""
    value = st.slider(label, low, high, getattr(view_state(), field), step=step, key=field)
    set_view(**{field: value})
    return value


def share_link() -> None:
    """The link that reopens this exact view, with a copy button, at the foot of the sidebar."""
    base = (st.context.url or "").split("?")[0]
    query = urllib.parse.urlencode(to_query(view_state()))
    st.sidebar.caption("Share this view: copy the link")
    st.sidebar.code(f"{base}?{query}" if query else base, language=None, wrap_lines=True)


# --- Long inputs, encoder-decoder models and explanations ------------------------------------------------------

CONTEXT_LENGTHS = [0, 256, 512, 1024, 2048]  # 0: the text as typed; else the text filled up with news prose
ZOOM_TOKENS = 64  # widest region drawn token by token (hover labels for every cell grow with its square)


@st.cache_resource(show_spinner=False, max_entries=4)
def _cached_overview(key: str, text: str, max_tokens: int) -> AttentionOverview:
    """One reduced pass per (model, text, length): pooled tiles and summaries, full weights only when small."""
    return overview_attention(_cached_model(key), text, max_tokens)


@st.cache_resource(show_spinner=False, max_entries=8)
def _cached_layer(key: str, text: str, num_tokens: int, layer: int, _overview: AttentionOverview) -> np.ndarray:
    """One layer's full weights (H, T, T), kept from the pass or recomputed by a pass that stops after it.

    Cached by (model, text, token count, layer); the overview itself is not hashed (its arrays are large).
    """
    return layer_attention(_cached_model(key), _overview, layer)


def context_length() -> int:
    """Sidebar choice: the text as typed (0) or a context of N tokens, the text followed by real news prose."""
    offered = [n for n in CONTEXT_LENGTHS if n <= read_settings().max_input_tokens]
    context = view_state().context
    if context not in offered:
        show_notices([f"A context of {context} tokens is not offered here; choose one of "
                      f"{', '.join(map(str, offered[1:])) or 'none'}. Showing your text only."])
        context = 0
    keep_widget("context_length", context)
    chosen = st.sidebar.selectbox(
        "Context length",
        offered,
        key="context_length",
        format_func=lambda n: "Your text only" if n == 0 else f"{n} tokens: your text, then news prose",
        help="Long contexts fill up with news articles (the Lee corpus that ships with gensim).",
    )
    return set_view(context=chosen).context


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


def zoom_region(num_tokens: int) -> tuple[int, int]:
    """The tokens drawn one by one: all of them for a short text, else a region of at most ZOOM_TOKENS."""
    if num_tokens <= ZOOM_TOKENS:
        return 0, num_tokens
    first, end = view_state().zoom or (0, ZOOM_TOKENS)
    first, end = min(first, num_tokens - 1), min(end, num_tokens)
    keep_widget("zoom", (first, end))
    first, end = st.slider(
        f"Zoom: tokens drawn one by one (at most {ZOOM_TOKENS})", 0, num_tokens, key="zoom"
    )
    if end - first > ZOOM_TOKENS:
        st.caption(f"The region is cut to {ZOOM_TOKENS} tokens from {first}; the pooled picture shows the rest.")
        end = first + ZOOM_TOKENS
    end = max(end, first + 1)
    set_view(zoom=(first, end) if (first, end) != (0, ZOOM_TOKENS) else None)
    return first, end


def log_scale() -> bool:
    """A toggle for a log colour scale, which makes the many small weights of long inputs visible."""
    keep_widget("log_scale", view_state().log_colours)
    on = st.toggle("Log colour scale", key="log_scale", help="Colours follow log10(weight) from 0.0001 to 1.")
    return set_view(log_colours=on).log_colours


def explain(name: str) -> None:
    """The plain-words explanation `name`, in a bordered box (put it in the column beside its chart)."""
    st.container(border=True).markdown(explanation(name))


def beside(name: str, widths: tuple[int, int] = (2, 1)):
    """Two columns: returns the wide one for a chart, writes explanation `name` in the narrow one."""
    chart_column, text_column = st.columns(widths)
    with text_column:
        explain(name)
    return chart_column


@st.cache_resource(show_spinner=False, max_entries=1)
def _cached_untrained() -> LoadedModel:
    return tiny_encoder_decoder()


@st.cache_resource(show_spinner=False, max_entries=8)
def _cached_cross_run(key: str, source: str, target: str) -> CrossAttentionRun:
    model = _cached_untrained() if key == UNTRAINED_KEY else _cached_model(key)
    return run_cross_attention(model, source, target)


def encoder_decoder_picker() -> str:
    """Sidebar: the offline tiny model (random weights) or any hub encoder-decoder id, kept in the URL as
    `encoder_decoder`; returns its key.

    A hosted server offers only the tiny model: it loads no model it was not set up to serve.
    """
    wanted = view_state().encoder_decoder
    if read_settings().hosted:
        if wanted != UNTRAINED_KEY:
            show_notices([f"This hosted demo serves no encoder-decoder but {UNTRAINED_ENTRY.label}; "
                          f"'{wanted[:80]}' runs where the explorer runs on your own machine."])
        st.sidebar.caption(f"Encoder-decoder: {UNTRAINED_ENTRY.label} (this hosted demo serves no other).")
        return set_view(encoder_decoder=UNTRAINED_KEY).encoder_decoder
    options = [UNTRAINED_KEY, OTHER_MODEL]
    choice = st.sidebar.selectbox(
        "Encoder-decoder model", options, index=0 if wanted == UNTRAINED_KEY else 1, key="encoder_decoder",
        format_func=lambda key: UNTRAINED_ENTRY.label + " (offline)" if key == UNTRAINED_KEY else "A Hugging Face id",
    )
    if choice == UNTRAINED_KEY:
        return set_view(encoder_decoder=UNTRAINED_KEY).encoder_decoder
    typed = st.sidebar.text_input(
        "Encoder-decoder id", "Helsinki-NLP/opus-mt-en-de" if wanted == UNTRAINED_KEY else wanted,
        key="encoder_decoder_id", help="T5, BART or Marian models; safetensors only, no remote code; needs the network.",
    ).strip()
    if not typed:
        st.info("Type a Hugging Face encoder-decoder id in the sidebar, such as google-t5/t5-small.")
        st.stop()
    return set_view(encoder_decoder=typed[:200]).encoder_decoder


def decoder_text(key: str, default: str) -> str:
    """The text the decoder reads (empty: it writes its own), kept in the URL as `target` when it is not `default`.

    Until someone types in it, it follows `default` (the input text, for the tiny model) as that changes.
    """
    widget, last_default = f"target-{key}", f"target-{key}-default"
    if widget not in st.session_state:
        wanted = view_state().target
        st.session_state[widget] = default if wanted is None else wanted
    elif st.session_state[widget] == st.session_state.get(last_default):
        st.session_state[widget] = default
    st.session_state[last_default] = default
    typed = st.text_input("Decoder text", key=widget,
                          help="What the decoder reads, one token at a time. Leave it empty to let the model write.")
    set_view(target=None if typed == default else typed)
    return typed


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


# --- Uptraining -------------------------------------------------------------------------------------------------

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
