"""The view's state in the URL: the only place that parses query parameters.

Parsing never raises: a value that cannot be used is replaced by a sensible default and a notice says so.
Checks that need a loaded model (a layer beyond the last, a KV-head count that does not divide the heads)
happen where the model is known, with the same kind of notice.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from explorer.audio import DEFAULT_SPEED, DEFAULT_VOICE, SPEEDS, VOICES
from explorer.catalogue import CATALOGUE, DEFAULT_MODEL, WHISPER_MODEL
from explorer.config import VARIANTS
from explorer.dtypes import DTYPE_BITS

UNTRAINED_KEY = "tiny-t5-untrained"  # explorer.untrained's key, repeated here so parsing needs no torch

DEFAULT_TEXT = "The giant ate the apple because it was hungry"
MAX_TEXT_CHARS = 20_000  # longer text in a URL is cut; models see at most their token limit anyway
CACHE_DTYPES = tuple(DTYPE_BITS)  # cache and weights dtypes


@dataclass(frozen=True)
class ViewState:
    """Everything a shared link restores; each page reads the fields it shows."""

    # what is run
    text: str = DEFAULT_TEXT  # the input text
    model: str = DEFAULT_MODEL  # catalogue key, hub id or local folder
    # attention view
    layer: int = 0  # layer shown in detail
    head: int = 0  # head enlarged
    context: int = 0  # 0: the text as typed; N: the text filled up to N tokens with news prose
    zoom: tuple[int, int] | None = None  # (first, end) tokens drawn one by one in a long input
    log_colours: bool = False  # colour by log10(weight), to see small weights
    queries: tuple[int, ...] | None = None  # query positions whose attention is summed (None: the last token)
    hide_special: bool = False  # drop BOS/CLS/SEP rows and columns, rows renormalised over the rest
    ablate: tuple[tuple[int, int], ...] = ()  # (layer, head) pairs switched off in the ablation section
    # attention variant (variant lab)
    variant: str = "original"  # original, mha, gqa, mqa or mla
    kv_heads: int | None = None  # GQA: KV heads kept (None: the variant's default)
    latent_rank: int | None = None  # MLA: size of the joint K/V latent per token and layer
    rope_dims: int | None = None  # MLA: dimensions per head that keep RoPE (decoupled key)
    merge: str = "mean"  # GQA/MQA: how a group's KV heads become one (mean, first, aligned)
    form: str = "naive"  # MLA: naive (RoPE after the up-projection) or decoupled (DeepSeek-V2)
    svd: str = "data"  # MLA: latent from the weights (plain) or from K/V outputs on calibration text (data)
    weighting: str = "none"  # MLA: K/V weighted by their queries and the output projection before the SVD
    value_weight: str = "1"  # MLA: V's weight in the joint latent after balancing (1, 0.5 or 0.25)
    ranks: str = "uniform"  # MLA: the same latent rank in every layer, or per layer by measured sensitivity
    rope_pairs: str = "highest"  # decoupled MLA: RoPE pairs kept: highest frequencies, by q/k norm, or by rotation
    refit: str = "none"  # MLA: output projections refitted by least squares on calibration text ("output")
    uptrain_tokens: int | None = None  # uptraining budget in tokens (None: the lab's default budget)
    uptrain_scope: str = "attention"  # what uptraining trains: the attention weights only, or all weights
    # KV-cache explorer
    config: str = "smollm2-135m"  # reference config name, or a hub id / config.json path
    tokens: int = 32_768  # context length per sequence
    batch: int = 1  # sequences held at once
    dtype: str = "bf16"  # cache dtype
    weights_dtype: str = "auto"  # weights dtype, apart from the cache's; auto: the model's own (DeepSeek-V3: fp8)
    gpu: str | None = None  # GPU of the rooflines ("none": no roofline); None: each page's own default
    gpus: int | None = None  # GPUs serving the model (None: the fewest that can serve it)
    parallel: str = "auto"  # tp, dp-attention, or auto (dp-attention for MLA, tp otherwise)
    log_context: bool = True  # context axis of the cache and roofline charts on a log scale
    cache_view: str = "auto"  # cache chart: with the weights, cache only, or auto (cache only when weights dwarf it)
    measure_tokens: int = 128  # tokens run to weigh the real caches (16-512, in steps of 16)
    # self vs causal: one column per model (a layer of None is that model's last layer)
    minilm_layer: int | None = None  # encoder column (all-MiniLM-L6-v2): layer shown
    minilm_head: int = 0  # encoder column: head shown
    smollm2_layer: int | None = None  # decoder column (SmolLM2): layer shown
    smollm2_head: int = 0  # decoder column: head shown
    follow: str | None = None  # the token followed in both models (None: "it", else the last shared token)
    # cross-attention
    encoder_decoder: str = WHISPER_MODEL  # Whisper tiny.en, the offline tiny T5, or a hub id of an encoder-decoder
    target: str | None = None  # decoder text (None: the input text for the tiny model, empty for a hub model)
    encoder_layer: int | None = None  # encoder self-attention layer (None: the last)
    decoder_layer: int | None = None  # decoder self- and cross-attention layer (None: the last)
    cross_head: int = 0  # head shown in all three kinds of attention
    # what Whisper hears (cross-attention page)
    audio: str = "speech"  # speech (the text spoken by espeak-ng), microphone or upload
    voice: str = DEFAULT_VOICE  # espeak-ng voice
    speed: int = DEFAULT_SPEED  # espeak-ng words per minute
    under: str = "waveform"  # drawn under the cross-attention on the same time axis: waveform or spectrogram
    # generate
    steps: int = 32  # tokens generated
    compare: str = "original"  # second variant beside the first: none, original, mha, mqa, gqa-3, mla-192,
    # mla-192-plain or mla-160-rope32 (explorer.generate.compare_spec reads it)
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # sample from the k most likely tokens only (0: all)
    top_p: float = 1.0  # sample from the smallest set of tokens holding this much probability (1: all)
    seed: int = 0  # seeds the sampler
    horizon: int = 131_072  # context length the cache chart extends to (formula beyond what was measured)
    # variant lab, what a conversion hurts (issue 21): the RoPE frequency view and the damage view
    rope_text: str = "prose"  # text the rotary pairs are measured on: calibration prose, or the lab's text
    damage_rank: str = "js"  # damage table order: by attention moved (js) or by |loss effect| (loss)


# name -> (smallest, largest) accepted for whole-number parameters
INT_RANGES: dict[str, tuple[int, int]] = {
    "layer": (0, 1_000),
    "head": (0, 1_000),
    "kv_heads": (1, 1_024),
    "latent_rank": (1, 65_536),
    "rope_dims": (0, 4_096),
    "tokens": (1, 1 << 22),
    "context": (0, 2_048),
    "batch": (1, 4_096),
    "measure_tokens": (16, 512),
    "gpus": (1, 64),
    "minilm_layer": (0, 1_000),
    "minilm_head": (0, 1_000),
    "smollm2_layer": (0, 1_000),
    "smollm2_head": (0, 1_000),
    "encoder_layer": (0, 1_000),
    "decoder_layer": (0, 1_000),
    "cross_head": (0, 1_000),
    "speed": SPEEDS,
    "uptrain_tokens": (1, 1 << 24),  # the lab offers the budgets its settings allow; others get its notice
    "steps": (1, 512),  # hosted servers allow fewer; the generate page says so
    "top_k": (0, 1_000),
    "seed": (0, 2**31 - 1),
    "horizon": (16, 1 << 20),
}
FLOAT_RANGES: dict[str, tuple[float, float]] = {"temperature": (0.0, 5.0), "top_p": (0.01, 1.0)}
COMPARE_PATTERN = re.compile(r"none|original|mha|mqa|gqa-\d{1,4}|mla-\d{1,5}(-plain)?(-rope\d{1,4})?")
INT_STEPS: dict[str, int] = {"measure_tokens": 16}  # whole-number parameters that move in steps
SWITCHES = ("log_colours", "log_context", "hide_special")  # on/off parameters, written 1 or 0
CHOICES: dict[str, tuple[str, ...]] = {
    "variant": VARIANTS,
    "dtype": CACHE_DTYPES,
    "weights_dtype": ("auto", *CACHE_DTYPES),
    "cache_view": ("auto", "with-weights", "cache-only"),
    "parallel": ("auto", "tp", "dp-attention"),
    "merge": ("mean", "first", "aligned"),
    "form": ("naive", "decoupled"),
    "svd": ("plain", "data"),
    "weighting": ("none", "query-output"),
    "value_weight": ("1", "0.5", "0.25"),
    "ranks": ("uniform", "sensitivity"),
    "rope_pairs": ("highest", "norm", "rotation"),
    "refit": ("none", "output"),
    "uptrain_scope": ("attention", "all"),
    "audio": ("speech", "microphone", "upload"),
    "voice": VOICES,
    "under": ("waveform", "spectrogram"),
}
CHOICES.update({"rope_text": ("prose", "text"), "damage_rank": ("js", "loss")})  # the variant lab's frequency and damage views


def parse_query(params: Mapping[str, str]) -> tuple[ViewState, list[str]]:
    """ViewState from URL query parameters, with a notice for every value that was replaced."""
    notices: list[str] = []
    default = ViewState()
    changes: dict[str, object] = {}
    for name, raw in params.items():
        if name == "text":
            if not raw.strip():
                notices.append("The link's text was empty, so the example sentence is shown.")
            elif len(raw) > MAX_TEXT_CHARS:
                notices.append(f"The link's text was cut to its first {MAX_TEXT_CHARS:,} characters.")
                changes["text"] = raw[:MAX_TEXT_CHARS]
            else:
                changes["text"] = raw
        elif name == "target":  # may be empty: the decoder then writes its own text
            if len(raw) > MAX_TEXT_CHARS:
                notices.append(f"The link's decoder text was cut to its first {MAX_TEXT_CHARS:,} characters.")
            changes["target"] = raw[:MAX_TEXT_CHARS]
        elif name == "gpu":
            changes[name] = raw[:40]  # checked against the GPU table by the page that draws it
        elif name == "follow":
            if raw and raw.isprintable() and len(raw) <= 100:
                changes[name] = raw  # checked against the text's tokens by the page that follows it
            else:
                notices.append(f"The link's token to follow '{_shown(raw)}' cannot be a token; following 'it'.")
        elif name in ("model", "config", "encoder_decoder"):
            if _looks_like_model_id(raw) or (name == "model" and raw in CATALOGUE):
                changes[name] = raw
            else:
                fallback = {"model": CATALOGUE[DEFAULT_MODEL].label, "config": default.config,
                            "encoder_decoder": "Whisper tiny.en"}[name]
                notices.append(f"Unknown {name.replace('_', '-')} '{_shown(raw)}' in the link; showing {fallback}.")
        elif name in INT_RANGES:
            low, high = INT_RANGES[name]
            step = INT_STEPS.get(name, 1)
            try:
                value = int(raw)
            except ValueError:
                value = None
            if value is None or not low <= value <= high or (value - low) % step:
                in_steps = f" in steps of {step}" if step > 1 else ""
                notices.append(
                    f"The link's {name} '{_shown(raw)}' is not a whole number from {low} to {high:,}{in_steps}; "
                    f"using {getattr(default, name) if getattr(default, name) is not None else 'the default'}."
                )
            else:
                changes[name] = value
        elif name in FLOAT_RANGES:
            low, high = FLOAT_RANGES[name]
            try:
                number = float(raw)
            except ValueError:
                number = math.nan
            if low <= number <= high:
                changes[name] = number
            else:
                notices.append(f"The link's {name.replace('_', '-')} '{_shown(raw)}' is not a number from {low:g} to "
                               f"{high:g}; using {getattr(default, name):g}.")
        elif name == "compare":
            if COMPARE_PATTERN.fullmatch(raw.lower()):
                changes[name] = raw.lower()
            else:
                notices.append(f"The link's compare '{_shown(raw)}' names no variant (use none, original, mqa, gqa-3, "
                               "mla-192 or mla-160-rope32); comparing with the original.")
        elif name in SWITCHES:
            if raw.lower() in ("1", "true", "0", "false"):
                changes[name] = raw.lower() in ("1", "true")
            else:
                notices.append(f"The link's {name} '{_shown(raw)}' is not 1 or 0; using {int(getattr(default, name))}.")
        elif name == "queries":
            positions = _positions(raw)
            if positions is None:
                notices.append(f"The link's queries '{_shown(raw)}' are not token positions like 3,5-7; "
                               "showing the last token.")
            else:
                changes[name] = positions
        elif name == "ablate":
            pairs = _head_pairs(raw)
            if pairs is None:
                notices.append(f"The link's ablate '{_shown(raw)}' is not a list of layer.head pairs like 3.4,5.1; "
                               "no head is switched off.")
            else:
                changes[name] = pairs
        elif name == "zoom":
            first, _, end = raw.partition("-")
            if first.isdigit() and end.isdigit() and int(first) < int(end) <= 1 << 22:
                changes[name] = (int(first), int(end))
            else:
                notices.append(f"The link's zoom '{_shown(raw)}' is not a token range like 64-128; showing the start.")
        elif name in CHOICES:
            if raw.lower() in CHOICES[name]:
                changes[name] = raw.lower()
            else:
                notices.append(
                    f"The link's {name} '{_shown(raw)}' is not one of {', '.join(CHOICES[name])}; "
                    f"using {getattr(default, name)}."
                )
    return replace(default, **changes), notices


def clamp_to_model(state: ViewState, num_layers: int, num_heads: int) -> tuple[ViewState, list[str]]:
    """Bring layer and head into the loaded model's range, saying what changed."""
    layer, layer_notices = clamp_layer(state.layer, num_layers)
    head, head_notices = clamp_head(state.head, num_heads)
    return replace(state, layer=layer, head=head), layer_notices + head_notices


def clamp_layer(layer: int | None, num_layers: int, model: str = "This model") -> tuple[int, list[str]]:
    """A layer of a model with `num_layers` layers: None and layers beyond the last become the last."""
    last = num_layers - 1
    if layer is None:
        return last, []
    if layer > last:
        return last, [f"{model} has {num_layers} layers (0-{last}); showing layer {last}."]
    return layer, []


def clamp_head(head: int, num_heads: int, model: str = "This model") -> tuple[int, list[str]]:
    """A head of a layer with `num_heads` heads: heads beyond the last become head 0."""
    if head >= num_heads:
        return 0, [f"{model} has {num_heads} heads per layer (0-{num_heads - 1}); showing head 0."]
    return head, []


def choose_token(wanted: str | None, tokens: list[str]) -> tuple[str, list[str]]:
    """The token to follow among `tokens` (not empty): `wanted` when present, else "it", else the last one."""
    fallback = "it" if "it" in tokens else tokens[-1]
    if wanted is None or wanted in tokens:
        return wanted or fallback, []
    return fallback, [f"The link's token to follow '{_shown(wanted)}' is not in both models' tokens of this text; "
                      f"following '{fallback}'."]


def to_query(state: ViewState) -> dict[str, str]:
    """Query parameters for a share link: only the values that differ from the defaults."""
    default = ViewState()
    query = {}
    for f in fields(state):
        value = getattr(state, f.name)
        if value == getattr(default, f.name) or value is None:
            continue
        if f.name == "zoom":
            value = f"{value[0]}-{value[1]}"
        elif f.name == "queries":
            value = ",".join(map(str, value))
        elif f.name == "ablate":
            value = ",".join(f"{layer}.{head}" for layer, head in value)
        elif isinstance(value, bool):
            value = int(value)
        elif isinstance(value, float):
            value = f"{value:g}"
        query[f.name] = str(value)
    return query


MAX_LISTED = 64  # most positions or heads a link may list


def _positions(raw: str) -> tuple[int, ...] | None:
    """"3,5-7" -> (3, 5, 6, 7), sorted and unique; None when it is not such a list (or lists too many)."""
    positions: set[int] = set()
    for part in raw.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            return None
        low, high = int(first), int(last) if dash else int(first)
        if high < low or high >= 1 << 22 or high - low >= MAX_LISTED:
            return None
        positions.update(range(low, high + 1))
    return tuple(sorted(positions)) if 0 < len(positions) <= MAX_LISTED else None


def _head_pairs(raw: str) -> tuple[tuple[int, int], ...] | None:
    """"3.4,5.1" -> ((3, 4), (5, 1)), sorted and unique; None when it is not such a list."""
    pairs: set[tuple[int, int]] = set()
    for part in raw.split(","):
        layer, dot, head = part.strip().partition(".")
        if not (dot and layer.isdigit() and head.isdigit()) or int(layer) > 1_000 or int(head) > 1_000:
            return None
        pairs.add((int(layer), int(head)))
    return tuple(sorted(pairs)) if len(pairs) <= MAX_LISTED else None


def _looks_like_model_id(value: str) -> bool:
    """A catalogue or reference name, a hub id ("owner/name") or a path: printable, no spaces or markup."""
    return 0 < len(value) <= 200 and value.isprintable() and not any(c in value for c in ' <>"\'`')


def _shown(raw: str) -> str:
    """A parameter as quoted back to the user: short, printable."""
    text = "".join(c if c.isprintable() else "?" for c in raw[:40])
    return text + ("…" if len(raw) > 40 else "")
