"""The view's state in the URL: the only place that parses query parameters.

Parsing never raises: a value that cannot be used is replaced by a sensible default and a notice says so.
Checks that need a loaded model (a layer beyond the last, a KV-head count that does not divide the heads)
happen where the model is known, with the same kind of notice.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Mapping

from explorer.catalogue import CATALOGUE, DEFAULT_MODEL

DEFAULT_TEXT = "The giant ate the apple because it was hungry"
MAX_TEXT_CHARS = 20_000  # longer text in a URL is cut; models see at most their token limit anyway
VARIANTS = ("original", "mha", "gqa", "mqa", "mla")
CACHE_DTYPES = ("fp32", "bf16", "fp16", "fp8", "int4")


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
    # attention variant (variant lab)
    variant: str = "original"  # original, mha, gqa, mqa or mla
    kv_heads: int | None = None  # GQA: KV heads kept (None: the variant's default)
    latent_rank: int | None = None  # MLA: size of the joint K/V latent per token and layer
    rope_dims: int | None = None  # MLA: dimensions per head that keep RoPE (decoupled key)
    merge: str = "mean"  # GQA/MQA: how a group's KV heads become one (mean, first, aligned)
    form: str = "naive"  # MLA: naive (RoPE after the up-projection) or decoupled (DeepSeek-V2)
    svd: str = "data"  # MLA: latent from the weights (plain) or from K/V outputs on calibration text (data)
    # KV-cache explorer
    config: str = "smollm2-135m"  # reference config name, or a hub id / config.json path
    tokens: int = 32_768  # context length per sequence
    batch: int = 1  # sequences held at once
    dtype: str = "bf16"  # cache dtype
    gpu: str | None = None  # GPU of the rooflines ("none": no roofline); None: each page's own default


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
}
CHOICES: dict[str, tuple[str, ...]] = {
    "variant": VARIANTS,
    "dtype": CACHE_DTYPES,
    "merge": ("mean", "first", "aligned"),
    "form": ("naive", "decoupled"),
    "svd": ("plain", "data"),
}


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
        elif name == "gpu":
            changes[name] = raw[:40]  # checked against the GPU table by the page that draws it
        elif name in ("model", "config"):
            if _looks_like_model_id(raw) or (name == "model" and raw in CATALOGUE):
                changes[name] = raw
            else:
                fallback = CATALOGUE[DEFAULT_MODEL].label if name == "model" else default.config
                notices.append(f"Unknown {name} '{_shown(raw)}' in the link; showing {fallback}.")
        elif name in INT_RANGES:
            low, high = INT_RANGES[name]
            try:
                value = int(raw)
            except ValueError:
                value = None
            if value is None or not low <= value <= high:
                notices.append(
                    f"The link's {name} '{_shown(raw)}' is not a whole number from {low} to {high:,}; "
                    f"using {getattr(default, name) if getattr(default, name) is not None else 'the default'}."
                )
            else:
                changes[name] = value
        elif name == "log_colours":
            if raw.lower() in ("1", "true", "0", "false"):
                changes[name] = raw.lower() in ("1", "true")
            else:
                notices.append(f"The link's log_colours '{_shown(raw)}' is not 1 or 0; using 0.")
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
    query = {}
    for f in fields(state):
        value = getattr(state, f.name)
        if value == getattr(default, f.name) or value is None:
            continue
        if f.name == "zoom":
            value = f"{value[0]}-{value[1]}"
        elif isinstance(value, bool):
            value = int(value)
        query[f.name] = str(value)
    return query


def _looks_like_model_id(value: str) -> bool:
    """A catalogue or reference name, a hub id ("owner/name") or a path: printable, no spaces or markup."""
    return 0 < len(value) <= 200 and value.isprintable() and not any(c in value for c in ' <>"\'`')


def _shown(raw: str) -> str:
    """A parameter as quoted back to the user: short, printable."""
    text = "".join(c if c.isprintable() else "?" for c in raw[:40])
    return text + ("…" if len(raw) > 40 else "")
