"""The shared widgets: text, model, layer and head pickers, sliders and toggles, each kept in the URL."""

from __future__ import annotations

import streamlit as st

from explorer.catalogue import CATALOGUE, WHISPER_MODEL, is_local_path
from explorer.config import load_config
from explorer.hardware import GPUS, gpu_named
from explorer.loading import (
    ModelLoadError,
    check_allowed,
)
from explorer.settings import read_settings
from explorer.state import (
    choose_token,
    clamp_head,
    clamp_layer,
    clamp_to_model,
)
from explorer.ui.models import CONTEXT_LENGTHS, OTHER_MODEL, ZOOM_TOKENS
from explorer.ui.url import keep_widget, set_view, show_notices, view_state
from explorer.untrained import ENTRY as UNTRAINED_ENTRY
from explorer.untrained import UNTRAINED_KEY


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
    options = [key for key, entry in CATALOGUE.items() if entry.kind != "encoder-decoder" and allowed.allows_model(key)]
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
    """Layer slider and head picker, clamped to the model, kept in the URL.

    Both are keyed and set from the view on every run: a keyless widget whose value follows the view would be a
    new widget after every change (remounted in the browser, where the next key press is lost). A click on a chart
    moves them through the view (`select_head_on_click`); moving them moves the view (`_follow_layer_and_head`).
    """
    state, notices = clamp_to_model(view_state(), num_layers, num_heads)
    show_notices(notices)
    st.session_state["layer_slider"], st.session_state["head_buttons"] = state.layer, state.head
    left, right = st.columns([2, 3])
    if num_layers > 1:
        left.slider("Layer", 0, num_layers - 1, key="layer_slider", on_change=_follow_layer_and_head)
    right.segmented_control("Head", list(range(num_heads)), key="head_buttons", format_func=lambda h: f"H{h}",
                            on_change=_follow_layer_and_head)
    set_view(layer=state.layer, head=state.head)  # clamped
    return state.layer, state.head


def _follow_layer_and_head() -> None:
    """The view takes the layer and head just picked (a head clicked off again keeps the one shown)."""
    head = st.session_state.get("head_buttons")
    set_view(layer=st.session_state.get("layer_slider", view_state().layer),
             **({} if head is None else {"head": head}))


def gpu_picker(label: str, default: str = "H200"):
    """A GPU from the table in `explorer.hardware`, or None for "none" (offered when it is the default); in the URL."""
    names = (["none"] if default == "none" else []) + [gpu.name for gpu in GPUS]
    wanted = view_state().gpu or default
    if wanted not in names:
        show_notices([f"Unknown GPU '{wanted}' in the link; choose one of {', '.join(names)}."])
        wanted = default
    name = st.selectbox(label, names, index=names.index(wanted))
    set_view(gpu=None if name == default else name)
    return None if name == "none" else gpu_named(name)


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
        config = load_config(typed)
    except (ValueError, OSError) as error:
        st.error(str(error))
        st.stop()
    pasted = typed.startswith("{")
    set_view(config=state.config if pasted else typed[:200])
    return ("pasted config" if pasted else typed), config


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


def encoder_decoder_picker() -> str:
    """Sidebar: Whisper tiny.en (trained, hears the text spoken), the offline tiny T5 (random weights) or any hub
    encoder-decoder id, kept in the URL as `encoder_decoder`; returns its key.

    A hosted server offers Whisper (when it serves it) and the tiny model: it loads no model it was not set up
    to serve.
    """
    wanted = view_state().encoder_decoder
    settings = read_settings()
    offline = [key for key in (WHISPER_MODEL, UNTRAINED_KEY) if key == UNTRAINED_KEY or settings.allows_model(key)]
    labels = {WHISPER_MODEL: CATALOGUE[WHISPER_MODEL].label + ("" if CATALOGUE[WHISPER_MODEL].is_installed()
                                                                 else " (not installed)"),
              UNTRAINED_KEY: UNTRAINED_ENTRY.label + " (offline)", OTHER_MODEL: "A Hugging Face id"}
    if settings.hosted:
        if wanted not in offline:
            served = " or ".join(labels[key] for key in offline)
            show_notices([f"This hosted demo serves no encoder-decoder but {served}; "
                          f"'{wanted[:80]}' runs where the explorer runs on your own machine."])
            wanted = offline[0]
        choice = st.sidebar.selectbox("Encoder-decoder model", offline, index=offline.index(wanted),
                                      key="encoder_decoder", format_func=labels.get)
        return set_view(encoder_decoder=choice).encoder_decoder
    options = [*offline, OTHER_MODEL]
    choice = st.sidebar.selectbox(
        "Encoder-decoder model", options, index=options.index(wanted) if wanted in options else len(options) - 1,
        key="encoder_decoder", format_func=labels.get,
    )
    if choice != OTHER_MODEL:
        return set_view(encoder_decoder=choice).encoder_decoder
    typed = st.sidebar.text_input(
        "Encoder-decoder id", "Helsinki-NLP/opus-mt-en-de" if wanted in offline else wanted,
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
