"""KV-cache size from any Hugging Face config (MHA, GQA, MQA, MLA, sliding windows), what fits on a GPU,
the decode roofline, and the bytes of a real model's cache measured beside the formula.

Formulas per token and layer (DeepSeek-V2, Table 1): MHA/GQA/MQA cache 2·kv_heads·head_dim values, MLA caches
latent_rank + rope_head_dim values ((d_c + d_h^R)·l). A sliding-window layer stops growing at its window.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Literal, Sequence

import torch

from explorer.catalogue import local_path, model_kind
from explorer.paths import ASSETS_DIR

if TYPE_CHECKING:  # only for annotations: kv reads configs and never loads a model itself
    from explorer.loading import LoadedModel

Variant = Literal["MHA", "GQA", "MQA", "MLA"]

# Bits per cached value. Quantised caches (fp8, int4) also keep scales; those are not counted here.
DTYPE_BITS: dict[str, int] = {"fp32": 32, "fp16": 16, "bf16": 16, "fp8": 8, "int4": 4}

REFERENCE_DIR = ASSETS_DIR / "configs"


# ---------------------------------------------------------------------------------------------------------
# Reading a config
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttentionLayout:
    """How a model's attention caches keys and values, read from its config."""

    # identity
    name: str  # what the user knows it as, e.g. "meta-llama/Llama-2-7b-hf"
    model_type: str | None  # the config's model_type, e.g. "llama"
    is_decoder: bool  # encoders read the whole text at once and keep no KV cache
    # attention shape
    variant: Variant  # how keys and values are shared or compressed
    num_layers: int  # layers with attention, each with its own cache
    query_heads: int  # n_h, query heads per layer
    kv_heads: int  # KV heads cached per layer (MLA: query_heads, expanded from the latent, not cached)
    head_dim: int  # d_h, dimensions per head
    # MLA (DeepSeek-V2): a latent and one RoPE key shared by all heads are cached instead of K and V
    latent_rank: int | None = None  # d_c, kv_lora_rank
    rope_head_dim: int | None = None  # d_h^R, qk_rope_head_dim
    # sliding windows
    layer_windows: tuple[int | None, ...] = ()  # window per layer; None: the layer attends to the whole prefix
    # provenance
    fields_used: dict[str, object] = field(default_factory=dict)  # config field -> value behind each number
    notes: tuple[str, ...] = ()  # how traps in the config were resolved, one sentence each
    converted: bool = False  # a variant made by convert_layout, not the model as its config builds it

    @property
    def values_per_token_per_layer(self) -> int:
        """Cached numbers per token and layer: 2·kv_heads·head_dim, or latent_rank + rope_head_dim for MLA."""
        if self.variant == "MLA":
            return self.latent_rank + self.rope_head_dim
        return 2 * self.kv_heads * self.head_dim

    @property
    def label(self) -> str:
        """Short variant label for legends: "GQA (8 KV heads)", "MLA (512 + 64)"."""
        if self.variant == "MLA":
            return f"MLA ({self.latent_rank} + {self.rope_head_dim})"
        if self.variant == "GQA":
            return f"GQA ({self.kv_heads} KV heads)"
        return f"{self.variant} ({self.kv_heads} KV head{'s' if self.kv_heads > 1 else ''})"

    @property
    def legend(self) -> str:
        """The label, marked when this is the model as built: "GQA (8 KV heads), as built"."""
        return self.label if self.converted else f"{self.label}, as built"


def reference_models() -> dict[str, dict]:
    """The reference configs shipped in assets/configs, by file stem ("llama-2-7b"), each with its "_source"."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(REFERENCE_DIR.glob("*.json"))}


def load_config(source) -> dict:
    """A config as a plain dict, from a dict, pasted JSON text, a transformers config, a reference name, a
    config.json path or a folder, or (online only) a hub id. Remote code never runs."""
    if isinstance(source, dict):
        return source
    if hasattr(source, "to_dict"):  # a transformers config object
        return source.to_dict()
    text = str(source).strip()
    if text.startswith("{"):  # pasted config.json
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"The pasted config is not valid JSON ({error}); paste the whole config.json.")
    references = reference_models()
    if text in references:
        return references[text]
    for reference in references.values():  # a hub id we ship a reference copy of: no network needed
        if reference["_source"].split(" ")[0].lower() == text.lower():
            return reference
    path = local_path(text)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}); paste the model's config.json as it is.")
    return _config_from_hub(text, sorted(references))


def _config_from_hub(model_id: str, reference_names: list[str]) -> dict:
    """Fetch a hub id's config (no remote code); say in a sentence what to do when that is impossible."""
    offline_hint = (
        f"Paste its config.json, give a path to one, or pick a reference model: {', '.join(reference_names)}."
    )
    if "/" not in model_id:
        raise ValueError(f"'{model_id}' is neither a reference model, a file nor a hub id. {offline_hint}")
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable():
        raise ValueError(f"Cannot fetch the config of '{model_id}': this machine is offline. {offline_hint}")
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_id, trust_remote_code=False).to_dict()
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0][:200]
        raise ValueError(
            f"Could not fetch the config of '{model_id}' ({reason}). Check the id; configs that need remote "
            f"code are not read. {offline_hint}"
        ) from error


def _hub_reachable(timeout_seconds: float = 3.0) -> bool:
    """Can this machine open a connection to the hub? (Saves the hub client's half-minute of retries.)"""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout_seconds).close()
        return True
    except OSError:
        return False


@dataclass
class _Fields:
    """Reads config fields by their possible names, remembering which field gave each number."""

    given: dict  # the fields as written in the config
    resolved: dict  # the same config after transformers filled in its defaults (== given if unknown)
    prefix: str  # "text_config." when the numbers come from a nested text config
    model_type: str | None  # names whose defaults apply, in notes
    fields_used: dict[str, object] = field(default_factory=dict)  # filled as fields are read
    notes: list[str] = field(default_factory=list)  # a sentence for each default that applied

    def get(self, *names: str, default=dataclasses.MISSING):
        for name in names:
            if self.given.get(name) is not None:
                self.fields_used[self.prefix + name] = self.given[name]
                return self.given[name]
        for name in names:
            if self.resolved.get(name) is not None:
                self.fields_used[self.prefix + name] = self.resolved[name]
                self.notes.append(
                    f"{self.prefix + name} is not in the config: transformers' {self.model_type} default "
                    f"({_short(self.resolved[name])}) applies."
                )
                return self.resolved[name]
        if default is not dataclasses.MISSING:
            return default
        also = f" (also looked for {', '.join(names[1:])})" if len(names) > 1 else ""
        raise ValueError(
            f"The config has no {names[0]}{also}: paste the model's complete config.json."
        )


def _short(value) -> str:
    if isinstance(value, list) and len(value) > 4:
        return f"a list of {len(value)}: {', '.join(sorted(set(map(str, value))))}"
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _with_transformers_defaults(given: dict) -> tuple[dict, str | None]:
    """The config as transformers would load it (defaults filled in), or `given` when transformers does not
    know its model_type; the second value says why defaults were not applied."""
    model_type = given.get("model_type")
    if not model_type:
        return given, "The config has no model_type, so only the fields written in it are used."
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        return given, f"transformers does not know model_type {model_type}: only the fields written in it are used."
    fields = {key: value for key, value in given.items() if not key.startswith("_") and key != "model_type"}
    try:
        return CONFIG_MAPPING[model_type](**fields).to_dict(), None
    except Exception as error:  # transformers' config validators raise several error types
        reason = str(error).strip().splitlines()[-1][:200]
        return given, f"transformers rejects this {model_type} config ({reason}): only its written fields are used."


def _fields_of(top: dict) -> _Fields:
    """The fields that describe the language model: the nested text_config of a multimodal config, else all."""
    resolved_top, why_no_defaults = _with_transformers_defaults(top)
    given, resolved, prefix = top, resolved_top, ""
    if isinstance(top.get("text_config"), dict):
        given, resolved, prefix = top["text_config"], resolved_top.get("text_config", {}), "text_config."
    fields = _Fields(given, resolved, prefix, model_type=resolved.get("model_type") or top.get("model_type"))
    if why_no_defaults:
        fields.notes.append(why_no_defaults)
    if prefix:
        fields.notes.append("The numbers come from the nested text_config (a multimodal config).")
    return fields


def attention_layout(config, name: str | None = None) -> AttentionLayout:
    """Read layers, heads, KV heads, head size, MLA ranks and sliding windows from a config.

    `config` is anything `load_config` accepts. Traps handled: Falcon's `multi_query: true` beside
    `num_kv_heads: 71` (one KV head), `head_dim` that differs from hidden_size / heads (Gemma), MLA ranks
    (DeepSeek), `layer_types` and `sliding_window`, `use_sliding_window: false` (Qwen2), a nested
    `text_config` (Gemma-3 multimodal), and GPT-2 / Falcon field names (n_head, n_layer, n_embd).
    """
    top = load_config(config)
    name = name or _display_name(config, top)
    kind = model_kind(SimpleNamespace(**{"model_type": None, **top}))
    if kind == "encoder-decoder":
        raise ValueError(
            f"{name} is an encoder-decoder model; this calculator covers decoder-only models "
            "(and encoders, which keep no cache)."
        )
    fields = _fields_of(top)
    num_layers = int(fields.get("num_hidden_layers", "n_layer", "num_layers"))
    query_heads = int(fields.get("num_attention_heads", "n_head", "num_heads"))
    hidden_size = int(fields.get("hidden_size", "n_embd", "d_model"))

    latent_rank = fields.get("kv_lora_rank", default=None)
    if latent_rank is not None:  # MLA: d_h is the per-head size without the RoPE part (the paper's d_h)
        variant, kv_heads = "MLA", query_heads
        head_dim = int(fields.get("qk_nope_head_dim"))
        rope_head_dim = int(fields.get("qk_rope_head_dim"))
        latent_rank = int(latent_rank)
    else:
        rope_head_dim = None
        kv_heads = _kv_heads(fields, query_heads)
        head_dim = _head_dim(fields, hidden_size, query_heads)
        if head_dim * query_heads != hidden_size:
            fields.notes.append(
                f"head_dim is {head_dim}, not hidden_size / num_attention_heads = {hidden_size / query_heads:g}: "
                "the cache uses head_dim."
            )
        variant = _variant_of(kv_heads, query_heads)
    return AttentionLayout(
        name=name,
        model_type=fields.model_type,
        is_decoder=kind == "decoder",
        variant=variant,
        num_layers=num_layers,
        query_heads=query_heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        latent_rank=latent_rank,
        rope_head_dim=rope_head_dim,
        layer_windows=_layer_windows(fields, num_layers),
        fields_used=fields.fields_used,
        notes=tuple(fields.notes),
    )


def _display_name(source, top: dict) -> str:
    """What to call the model: the hub id of a reference, the id or path asked for, else the config's name."""
    if top.get("_source"):
        return top["_source"].split(" ")[0]
    if isinstance(source, (str, Path)) and not str(source).lstrip().startswith("{"):
        return str(source)
    return top.get("_name_or_path") or top.get("model_type") or "the model"


def _kv_heads(fields: _Fields, query_heads: int) -> int:
    """KV heads, as the model's attention code decides them (Falcon: multi_query wins over num_kv_heads)."""
    new_architecture = fields.get("new_decoder_architecture", default=False)
    multi_query = fields.get("multi_query", default=False)
    if multi_query and not new_architecture:
        stated = fields.given.get("num_kv_heads", fields.resolved.get("num_kv_heads"))
        if stated not in (None, 1):
            fields.notes.append(
                f"multi_query is true, so there is one KV head; num_kv_heads: {stated} is ignored, as in "
                "Falcon's attention code (it counts only with new_decoder_architecture)."
            )
        return 1
    kv_heads = fields.get("num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num", default=None)
    if kv_heads is None:
        fields.notes.append("The config names no KV-head count: every query head has its own (MHA).")
        return query_heads
    return int(kv_heads)


def _head_dim(fields: _Fields, hidden_size: int, query_heads: int) -> int:
    """head_dim as written, else transformers' default where it is not hidden_size / heads (Gemma), else that."""
    derived = hidden_size // query_heads
    if fields.given.get("head_dim") is None and fields.resolved.get("head_dim") in (None, derived):
        fields.fields_used[fields.prefix + "head_dim (hidden_size / num_attention_heads)"] = derived
        return derived
    return int(fields.get("head_dim"))


def _variant_of(kv_heads: int, query_heads: int) -> Variant:
    if query_heads % kv_heads != 0:
        raise ValueError(f"{kv_heads} KV heads cannot be shared evenly by {query_heads} query heads.")
    if kv_heads == query_heads:
        return "MHA"
    return "MQA" if kv_heads == 1 else "GQA"


def _layer_windows(fields: _Fields, num_layers: int) -> tuple[int | None, ...]:
    """The sliding window of each layer (None: full attention)."""
    if fields.given.get("use_sliding_window") is False:
        fields.fields_used[fields.prefix + "use_sliding_window"] = False
        if fields.given.get("sliding_window"):
            fields.notes.append(
                f"use_sliding_window is false: sliding_window {fields.given['sliding_window']} is ignored "
                "and every layer attends to the whole prefix."
            )
        return (None,) * num_layers
    window = fields.get("sliding_window", default=None)
    layer_types = fields.get("layer_types", default=None)
    if layer_types is not None:
        if len(layer_types) != num_layers:
            raise ValueError(
                f"layer_types lists {len(layer_types)} layers but the config has {num_layers}: fix one of them."
            )
        if window is None and "sliding_attention" in layer_types:
            raise ValueError("layer_types names sliding_attention layers but the config has no sliding_window.")
        return tuple(int(window) if kind == "sliding_attention" else None for kind in layer_types)
    return (int(window) if window else None,) * num_layers


# ---------------------------------------------------------------------------------------------------------
# Variants of the same model
# ---------------------------------------------------------------------------------------------------------


def convert_layout(
    layout: AttentionLayout,
    variant: Variant,
    kv_heads: int | None = None,
    latent_rank: int | None = None,
    rope_head_dim: int | None = None,
) -> AttentionLayout:
    """The same model with another attention variant: MHA, GQA with `kv_heads`, MQA, or MLA with
    `latent_rank` and `rope_head_dim` (defaults: DeepSeek-V2's choice d_c = 4·d_h and d_h^R = d_h / 2)."""
    if not layout.is_decoder:
        raise ValueError(f"{layout.name} is an encoder: it keeps no KV cache, so there are no variants to compare.")
    base = dict(latent_rank=None, rope_head_dim=None, fields_used=layout.fields_used, notes=(), converted=True)
    if variant == "MHA":
        return dataclasses.replace(layout, variant="MHA", kv_heads=layout.query_heads, **base)
    if variant == "MQA":
        return dataclasses.replace(layout, variant="MQA", kv_heads=1, **base)
    if variant == "GQA":
        divisors = [d for d in range(1, layout.query_heads + 1) if layout.query_heads % d == 0]
        if kv_heads not in divisors:
            raise ValueError(
                f"{layout.name} has {layout.query_heads} query heads; choose a KV-head count that divides it: "
                f"{', '.join(map(str, divisors))}."
            )
        return dataclasses.replace(layout, variant=_variant_of(kv_heads, layout.query_heads), kv_heads=kv_heads, **base)
    if variant == "MLA":
        latent_rank = 4 * layout.head_dim if latent_rank is None else latent_rank
        rope_head_dim = layout.head_dim // 2 if rope_head_dim is None else rope_head_dim
        if latent_rank < 1 or rope_head_dim < 0:
            raise ValueError("Choose a latent rank of at least 1 and a RoPE key size of 0 or more.")
        return dataclasses.replace(
            layout, variant="MLA", kv_heads=layout.query_heads, latent_rank=latent_rank,
            rope_head_dim=rope_head_dim, fields_used=layout.fields_used, notes=(), converted=True,
        )
    raise ValueError(f"Unknown variant '{variant}': choose MHA, GQA, MQA or MLA.")


def variant_layouts(layout: AttentionLayout) -> list[AttentionLayout]:
    """The model as it is plus the variants worth comparing: MHA, GQA (its own, or 8 KV heads), MQA and MLA."""
    if not layout.is_decoder:
        return []
    candidates = [layout, convert_layout(layout, "MHA")]
    if layout.variant != "GQA" and layout.query_heads % 8 == 0 and layout.query_heads > 8:
        candidates.append(convert_layout(layout, "GQA", kv_heads=8))
    candidates += [convert_layout(layout, "MQA"), convert_layout(layout, "MLA")]
    unique: dict[tuple, AttentionLayout] = {}
    for candidate in candidates:
        key = (candidate.variant, candidate.kv_heads, candidate.latent_rank, candidate.rope_head_dim)
        unique.setdefault(key, candidate)
    return sorted(unique.values(), key=lambda each: -each.values_per_token_per_layer)


# ---------------------------------------------------------------------------------------------------------
# Cache size
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KVCacheSize:
    """The KV cache of `batch` sequences of `tokens` tokens each, by the formula."""

    layout: AttentionLayout  # the attention layout the numbers come from
    # request
    tokens: int  # context length per sequence
    batch: int  # sequences held at once
    dtype: str  # "fp32", "bf16", "fp16", "fp8" or "int4"
    # result
    bits_per_value: int  # 32, 16, 8 or 4
    bytes_per_token: float  # one more token of one sequence, before any sliding window is full
    cached_tokens_per_layer: tuple[int, ...]  # min(tokens, window) for each layer
    kv_cache_bytes: int  # the whole cache: batch x layers x cached tokens x values x bits / 8
    explanation: str  # one sentence with the formula and its numbers

    @property
    def fields_used(self) -> dict[str, object]:
        return self.layout.fields_used


def _check_dtype(dtype: str) -> int:
    if dtype not in DTYPE_BITS:
        raise ValueError(f"Unknown cache dtype '{dtype}': choose one of {', '.join(DTYPE_BITS)}.")
    return DTYPE_BITS[dtype]


def kv_cache_size(layout: AttentionLayout, tokens: int, batch: int = 1, dtype: str = "bf16") -> KVCacheSize:
    """The cache of `batch` sequences of `tokens` tokens; sliding-window layers hold at most their window
    (the window includes the token being decoded; between steps transformers keeps window - 1 of them)."""
    bits = _check_dtype(dtype)
    if tokens < 0 or batch < 1:
        raise ValueError("Choose 0 or more tokens and a batch of at least 1 sequence.")
    if not layout.is_decoder:
        return KVCacheSize(
            layout, tokens, batch, dtype, bits, 0.0, (0,) * layout.num_layers, 0,
            f"{layout.name} is an encoder: it reads the whole text at once and keeps no KV cache.",
        )
    values = layout.values_per_token_per_layer
    cached = tuple(tokens if window is None else min(tokens, window) for window in layout.layer_windows)
    total_bits = batch * sum(cached) * values * bits
    if layout.variant == "MLA":
        per_layer = f"({layout.latent_rank} latent + {layout.rope_head_dim} RoPE key)"
    else:
        heads = f"{layout.kv_heads} KV head{'s' if layout.kv_heads > 1 else ''}"
        per_layer = f"2 (K and V) x {heads} x {layout.head_dim} dims"
    windows = sorted({w for w in layout.layer_windows if w is not None})
    window_text = (
        f"; {sum(w is not None for w in layout.layer_windows)} sliding-window layers stop at "
        f"{', '.join(f'{w:,}' for w in windows)} tokens" if windows else ""
    )
    return KVCacheSize(
        layout=layout,
        tokens=tokens,
        batch=batch,
        dtype=dtype,
        bits_per_value=bits,
        bytes_per_token=layout.num_layers * values * bits / 8,
        cached_tokens_per_layer=cached,
        kv_cache_bytes=math.ceil(total_bits / 8),
        explanation=(
            f"{layout.num_layers} layers x {per_layer} x {bits // 8 if bits >= 8 else 0.5} bytes ({dtype}) = "
            f"{layout.num_layers * values * bits / 8:,.0f} bytes per token{window_text}."
        ),
    )


def cache_curve(
    layout: AttentionLayout, context_lengths: Sequence[int], batch: int = 1, dtype: str = "bf16"
) -> list[int]:
    """Cache bytes at each context length (for charts)."""
    return [kv_cache_size(layout, tokens, batch, dtype).kv_cache_bytes for tokens in context_lengths]


# ---------------------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParameterEstimate:
    """Parameter count estimated from a config (embeddings, attention, MLP or experts, norms, head)."""

    total: int  # every parameter of the model
    active_per_token: int  # parameters one token uses (MoE: shared plus routed experts picked per token)
    fields_used: dict[str, object]  # config field -> value behind the estimate

    def weight_bytes(self, dtype: str = "bf16") -> int:
        return math.ceil(self.total * _check_dtype(dtype) / 8)


def estimate_parameters(config) -> ParameterEstimate:
    """Count parameters from a config: exact for Llama-like, GPT-2 and BERT layouts, within about 1% for
    others (a few small norms and biases some models add are left out). MoE layers count every expert in
    `total` and the shared plus `num_experts_per_tok` routed experts in `active_per_token`. A multimodal
    config counts its language model only (no vision tower)."""
    top = load_config(config)
    layout = attention_layout(top)
    fields = _fields_of(top)
    style = _block_style(fields.model_type, layout.is_decoder)
    hidden = int(fields.get("hidden_size", "n_embd", "d_model"))
    vocab = int(fields.get("vocab_size"))

    # embeddings and output head
    embeddings = vocab * hidden
    if style in ("gpt2", "bert"):  # learned absolute positions
        embeddings += int(fields.get("n_positions", "max_position_embeddings")) * hidden
    if style == "bert":  # token types and the embedding LayerNorm
        embeddings += int(fields.get("type_vocab_size", default=0)) * hidden + 2 * hidden
    tied = style == "bert" or bool(fields.get("tie_word_embeddings", default=True))
    output_head = 0 if tied else vocab * hidden
    pooler = hidden * hidden + hidden if style == "bert" else 0

    # norms: RMSNorm has a weight, LayerNorm a weight and a bias
    norm_size = hidden if style == "llama" else 2 * hidden
    one_norm_falcon = style == "falcon" and not fields.get("new_decoder_architecture", default=False)
    norms_per_layer = norm_size * (1 if one_norm_falcon else 2)
    final_norm = 0 if style == "bert" else norm_size

    attention = _attention_parameters(layout, fields, hidden, style)

    # MLP: gated (gate, up, down) for Llama-like models, two matrices (with biases for GPT-2 and BERT) otherwise
    if style == "llama":
        inner = int(fields.get("intermediate_size"))
        dense_mlp = 3 * hidden * inner
    else:
        inner = int(fields.get("intermediate_size", "n_inner", "ffn_hidden_size", default=0) or 4 * hidden)
        dense_mlp = 2 * hidden * inner + (inner + hidden if style in ("gpt2", "bert") else 0)

    # mixture of experts (DeepSeek, Mixtral): the first `first_k_dense_replace` layers keep a dense MLP
    routed = fields.get("n_routed_experts", "num_local_experts", default=None)
    if routed:
        expert = 3 * hidden * int(fields.get("moe_intermediate_size", default=inner))
        shared = int(fields.get("n_shared_experts", default=0) or 0)
        per_token = int(fields.get("num_experts_per_tok"))
        router = hidden * routed
        moe_layers = layout.num_layers - int(fields.get("first_k_dense_replace", default=0))
        moe_total, moe_active = (routed + shared) * expert + router, (per_token + shared) * expert + router
    else:
        moe_layers, moe_total, moe_active = 0, 0, 0
    dense_layers = layout.num_layers - moe_layers

    common = (
        embeddings + output_head + pooler + final_norm
        + layout.num_layers * (attention + norms_per_layer)
        + dense_layers * dense_mlp
    )
    return ParameterEstimate(
        total=common + moe_layers * moe_total,
        active_per_token=common + moe_layers * moe_active,
        fields_used={**layout.fields_used, **fields.fields_used},
    )


def _block_style(model_type: str | None, is_decoder: bool) -> Literal["llama", "gpt2", "falcon", "bert"]:
    """Which layer recipe a model follows, for counting parameters."""
    if not is_decoder:
        return "bert"  # biases everywhere, LayerNorms, learned positions, a pooler
    if model_type in ("gpt2", "falcon"):
        return model_type
    return "llama"  # RMSNorm, gated MLP, no biases (Mistral, Qwen2, Gemma, DeepSeek, ...)


def _attention_parameters(layout: AttentionLayout, fields: _Fields, hidden: int, style: str) -> int:
    """Parameters of one attention block: projections (MLA: down and up projections) and their biases."""
    heads, head_dim = layout.query_heads, layout.head_dim
    if layout.variant == "MLA":
        q_rank = fields.get("q_lora_rank", default=None)
        v_head_dim = int(fields.get("v_head_dim"))
        q_size = heads * (head_dim + layout.rope_head_dim)
        query = hidden * q_size if q_rank is None else hidden * q_rank + q_rank + q_rank * q_size  # + q_norm
        return (
            query
            + hidden * (layout.latent_rank + layout.rope_head_dim)  # wkv_a: the latent and the shared RoPE key
            + layout.latent_rank  # kv_norm
            + layout.latent_rank * heads * (head_dim + v_head_dim)  # wkv_b: per-head keys (no RoPE) and values
            + heads * v_head_dim * hidden  # wo
        )
    q_out, kv_out = heads * head_dim, layout.kv_heads * head_dim
    weights = hidden * q_out + 2 * hidden * kv_out + q_out * hidden  # q, k, v, o
    if style in ("gpt2", "bert") or fields.get("attention_bias", default=False):
        return weights + q_out + 2 * kv_out + hidden  # biases on q, k, v and o
    if fields.model_type == "qwen2":
        return weights + q_out + 2 * kv_out  # Qwen2 has biases on q, k and v only
    return weights


def measured_weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of a loaded model's parameters and buffers as they sit in memory (tied weights counted once)."""
    tensors = {t.data_ptr(): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


# ---------------------------------------------------------------------------------------------------------
# GPUs: what fits, and the decode roofline
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GPU:
    """One accelerator: memory and peak memory bandwidth, as its vendor states them."""

    name: str  # product name, e.g. "H100 SXM"
    memory_gb: float  # memory as the vendor states it (GPU "GB" are binary: an 80 GB H100 has 80 GiB)
    bandwidth_gb_per_s: float  # peak memory bandwidth in GB/s (decimal: 1e9 bytes per second)
    source: str  # where the numbers come from

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gb * 2**30)

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.bandwidth_gb_per_s * 1e9


GPUS: tuple[GPU, ...] = (
    GPU("RTX 4090", 24, 1008, "NVIDIA GeForce RTX 4090 specifications (24 GB GDDR6X, 1008 GB/s)"),
    GPU("L40S", 48, 864, "NVIDIA L40S datasheet (48 GB GDDR6, 864 GB/s)"),
    GPU("A100 80GB SXM", 80, 2039, "NVIDIA A100 datasheet (80 GB HBM2e, 2,039 GB/s)"),
    GPU("H100 SXM", 80, 3350, "NVIDIA H100 datasheet (80 GB HBM3, 3.35 TB/s)"),
    GPU("H200", 141, 4800, "NVIDIA H200 datasheet (141 GB HBM3e, 4.8 TB/s)"),
)


def gpu_named(name: str) -> GPU:
    for gpu in GPUS:
        if gpu.name == name:
            return gpu
    raise ValueError(f"Unknown GPU '{name}': choose one of {', '.join(gpu.name for gpu in GPUS)}.")


def gpu_memory_lines(gpus: Sequence[GPU] = GPUS) -> dict[str, int]:
    """One line per memory size, named by the GPUs that have it: {"80 GB: A100 80GB SXM, H100 SXM": bytes}."""
    names_by_size: dict[float, list[str]] = {}
    for gpu in gpus:
        names_by_size.setdefault(gpu.memory_gb, []).append(gpu.name)
    return {f"{size:g} GB: {', '.join(names)}": int(size * 2**30) for size, names in sorted(names_by_size.items())}


def longest_context(
    layout: AttentionLayout, memory_bytes: float, weight_bytes: float, batch: int = 1, dtype: str = "bf16"
) -> int | None:
    """The longest context whose cache fits in `memory_bytes` beside the weights.

    0 when the weights alone (plus one token) do not fit; None when memory sets no limit (an encoder, or every
    layer has a sliding window and the full windows fit).
    """
    if memory_bytes <= 0 or weight_bytes < 0:
        raise ValueError("Give a positive memory size and a weight size of 0 or more bytes.")
    free = memory_bytes - weight_bytes

    def fits(tokens: int) -> bool:
        return kv_cache_size(layout, tokens, batch, dtype).kv_cache_bytes <= free

    if not fits(1):
        return 0
    if not layout.is_decoder:
        return None
    if all(window is not None for window in layout.layer_windows) and fits(max(layout.layer_windows)):
        return None
    low, high = 1, 2
    while fits(high):  # the cache grows at least linearly once the windows are full: this ends
        low, high = high, high * 2
    while high - low > 1:  # invariant: fits(low), not fits(high)
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


@dataclass(frozen=True)
class DecodeRoofline:
    """Upper bound on decode speed when every step reads the weights and every sequence's cache once."""

    gpu: GPU  # the accelerator
    tokens: int  # context length per sequence
    batch: int  # sequences decoded together
    weight_bytes: float  # weights read per step
    kv_cache_bytes: int  # cache read per step (all sequences)
    fits: bool  # weights plus cache fit in the GPU's memory
    steps_per_second: float  # bandwidth / (weights + cache)
    tokens_per_second: float  # batch x steps per second: tokens/s <= bandwidth / bytes read per token


def decode_roofline(
    layout: AttentionLayout, gpu: GPU, tokens: int, weight_bytes: float, batch: int = 1, dtype: str = "bf16"
) -> DecodeRoofline:
    """tokens/s <= bandwidth / (weight bytes + KV bytes read per step), times the batch."""
    cache = kv_cache_size(layout, tokens, batch, dtype).kv_cache_bytes
    steps = gpu.bandwidth_bytes_per_s / (weight_bytes + cache)
    return DecodeRoofline(
        gpu=gpu,
        tokens=tokens,
        batch=batch,
        weight_bytes=weight_bytes,
        kv_cache_bytes=cache,
        fits=weight_bytes + cache <= gpu.memory_bytes,
        steps_per_second=steps,
        tokens_per_second=batch * steps,
    )


def roofline_curve(
    layout: AttentionLayout,
    gpu: GPU,
    context_lengths: Sequence[int],
    weight_bytes: float,
    batch: int = 1,
    dtype: str = "bf16",
) -> list[float]:
    """Decode tokens/s bound at each context length; NaN where weights and cache do not fit (for charts)."""
    points = [decode_roofline(layout, gpu, tokens, weight_bytes, batch, dtype) for tokens in context_lengths]
    return [point.tokens_per_second if point.fits else math.nan for point in points]


def context_grid(
    max_tokens: int = 2**20, points: int = 81, include: Sequence[int] = (), min_tokens: int = 1
) -> list[int]:
    """Increasing context lengths from `min_tokens` to `max_tokens`, evenly spaced on a log axis, plus
    `include` (e.g. the sliding windows, where a curve bends)."""
    if not 1 <= min_tokens < max_tokens or points < 2:
        raise ValueError("Choose a longest context above the shortest (at least 1 token) and at least 2 points.")
    ratio = max_tokens / min_tokens
    spaced = {round(min_tokens * ratio ** (i / (points - 1))) for i in range(points)}
    return sorted(spaced | {t for t in include if min_tokens <= t <= max_tokens})


def variant_cache_curves(
    layouts: Sequence[AttentionLayout], context_lengths: Sequence[int], batch: int = 1, dtype: str = "bf16"
) -> dict[str, list[int]]:
    """Cache bytes at each context length, by variant legend (for explorer.charts.kv.cache_size_figure)."""
    return {layout.legend: cache_curve(layout, context_lengths, batch, dtype) for layout in layouts}


def variant_longest_fits(
    layouts: Sequence[AttentionLayout],
    memory_lines: dict[str, int],
    weight_bytes: float,
    batch: int = 1,
    dtype: str = "bf16",
) -> list[tuple[str, str, int]]:
    """(variant legend, memory label, longest context) where memory sets a limit (for the chart's markers)."""
    fits = []
    for layout in layouts:
        for memory_label, memory_bytes in memory_lines.items():
            tokens = longest_context(layout, memory_bytes, weight_bytes, batch, dtype)
            if tokens is not None:
                fits.append((layout.legend, memory_label, tokens))
    return fits


def variant_roofline_curves(
    layouts: Sequence[AttentionLayout],
    gpu: GPU,
    context_lengths: Sequence[int],
    weight_bytes: float,
    batch: int = 1,
    dtype: str = "bf16",
) -> dict[str, list[float]]:
    """Decode tokens/s bound at each context length, by variant legend (for explorer.charts.kv.roofline_figure)."""
    return {
        layout.legend: roofline_curve(layout, gpu, context_lengths, weight_bytes, batch, dtype) for layout in layouts
    }


# ---------------------------------------------------------------------------------------------------------
# Measured: the bytes of a real cache
# ---------------------------------------------------------------------------------------------------------

TORCH_DTYPE_NAMES = {
    torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16",
    torch.float8_e4m3fn: "fp8", torch.float8_e5m2: "fp8",
}


def cache_tensors(cache) -> list[torch.Tensor]:
    """Every tensor a cache holds: a transformers Cache (each layer's keys and values), or any nesting of
    tensors in lists, tuples and dicts (legacy tuples, custom variant caches)."""
    if cache is None:
        return []
    if isinstance(cache, torch.Tensor):
        return [cache]
    if hasattr(cache, "layers"):  # transformers 5 Cache: one layer object per model layer
        return [tensor for layer in cache.layers for tensor in cache_tensors([layer.keys, layer.values])]
    if isinstance(cache, dict):
        cache = list(cache.values())
    if isinstance(cache, (list, tuple)):
        return [tensor for item in cache for tensor in cache_tensors(item)]
    raise TypeError(f"Cannot list the tensors of a {type(cache).__name__}: pass a Cache, tensors, or lists of them.")


def cache_bytes(cache) -> int:
    """Bytes of the values a cache holds (sum of numel x element size over its tensors)."""
    return sum(tensor.numel() * tensor.element_size() for tensor in cache_tensors(cache))


@dataclass(frozen=True)
class MeasuredCache:
    """A real cache after one forward pass, beside the formula for the same tokens."""

    model_name: str  # the loaded model
    tokens: int  # tokens run through the model
    batch: int  # sequences
    has_cache: bool  # False for encoders
    dtype: str  # dtype of the cached tensors ("fp32" on CPU)
    tensor_count: int  # tensors found in the cache
    measured_bytes: int  # sum of the cache tensors' bytes
    formula_bytes: int  # kv_cache_size for the same layout, tokens, batch and dtype
    cuda_peak_bytes: int | None  # CUDA allocator peak during the forward pass, above what was allocated before
    cuda_retained_bytes: int | None  # CUDA memory still allocated afterwards with only the cache kept
    explanation: str  # one sentence for the page


@torch.inference_mode()
def measure_kv_cache(
    loaded: LoadedModel, tokens: int = 64, batch: int = 1, layout: AttentionLayout | None = None
) -> MeasuredCache:
    """Run `batch` x `tokens` token ids through the model with use_cache=True and weigh the real cache.

    The formula uses `layout`, by default read from the model's config; pass `convert_layout(...)` when
    `loaded.model` is a converted variant whose attention no longer matches its config.
    """
    if tokens < 1 or batch < 1:
        raise ValueError("Measure at least 1 token in a batch of at least 1 sequence.")
    layout = layout or attention_layout(loaded.config, name=loaded.name.split(" (")[0])
    model_dtype = TORCH_DTYPE_NAMES.get(loaded.dtype, str(loaded.dtype))
    if not layout.is_decoder:
        return MeasuredCache(
            model_name=layout.name, tokens=tokens, batch=batch, has_cache=False, dtype=model_dtype,
            tensor_count=0, measured_bytes=0, formula_bytes=0, cuda_peak_bytes=None, cuda_retained_bytes=None,
            explanation=f"{layout.name} is an encoder: it reads the whole text at once and keeps no KV cache, "
            "so there is nothing to measure.",
        )
    vocab_size = loaded.config.get_text_config().vocab_size
    input_ids = (torch.arange(batch * tokens, device=loaded.device) % vocab_size).reshape(batch, tokens)  # (B, T)
    on_cuda = loaded.device.type == "cuda"
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        allocated_before = torch.cuda.memory_allocated()
    outputs = loaded.model(input_ids=input_ids, use_cache=True)
    cache = outputs["cache"] if "cache" in outputs else outputs.get("past_key_values")  # renamed in transformers 5
    del outputs  # keep only the cache, so retained memory is the cache's
    cuda_peak = cuda_retained = None
    if on_cuda:
        torch.cuda.synchronize()
        cuda_peak = torch.cuda.max_memory_allocated() - allocated_before
        cuda_retained = torch.cuda.memory_allocated() - allocated_before
    tensors = cache_tensors(cache)
    dtype = TORCH_DTYPE_NAMES.get(tensors[0].dtype, str(tensors[0].dtype)) if tensors else model_dtype
    measured = cache_bytes(tensors)
    formula = kv_cache_size(layout, tokens, batch, dtype).kv_cache_bytes
    verdict = "equal to" if measured == formula else f"{measured / formula:.4f}x"
    # transformers keeps window - 1 tokens of a full sliding layer between steps; the next token completes it
    full_windows = sum(window is not None and tokens >= window for window in layout.layer_windows)
    one_token_per_full_window = batch * full_windows * layout.values_per_token_per_layer * DTYPE_BITS[dtype] // 8
    why = (
        f" transformers keeps window - 1 tokens in each of the {full_windows} full sliding-window layers between "
        "steps (the next token completes the window); the formula counts the whole window."
        if full_windows and measured == formula - one_token_per_full_window
        else ""
    )
    return MeasuredCache(
        model_name=layout.name,
        tokens=tokens,
        batch=batch,
        has_cache=True,
        dtype=dtype,
        tensor_count=len(tensors),
        measured_bytes=measured,
        formula_bytes=formula,
        cuda_peak_bytes=cuda_peak,
        cuda_retained_bytes=cuda_retained,
        explanation=(
            f"{len(tensors)} cache tensors hold {measured:,} bytes after {tokens} tokens x {batch} "
            f"sequence{'s' if batch > 1 else ''}, "
            f"{verdict} the formula's {formula:,} bytes.{why}"
        ),
    )


# ---------------------------------------------------------------------------------------------------------
# Tables for people
# ---------------------------------------------------------------------------------------------------------


def reference_table(dtype: str = "bf16") -> list[dict[str, object]]:
    """One row per reference model (its own attention, as built): cached values and bytes per token."""
    rows = []
    for name, config in reference_models().items():
        layout = attention_layout(config, name)
        size = kv_cache_size(layout, 1, 1, dtype)
        rows.append(
            {
                "model": name,
                "attention": layout.label if layout.is_decoder else "encoder (no cache)",
                "layers": layout.num_layers,
                "values / token / layer": layout.values_per_token_per_layer if layout.is_decoder else 0,
                f"KiB / token ({dtype})": round(size.bytes_per_token / 1024, 3),
                "source": config.get("_source", "").split(";")[0],
            }
        )
    return sorted(rows, key=lambda row: -row[f"KiB / token ({dtype})"])


def variant_table(layouts: Sequence[AttentionLayout], tokens: int, batch: int, dtype: str) -> list[dict[str, object]]:
    """One row per variant of a model: values and bytes per token, the whole cache at `tokens`, and the saving."""
    if not layouts:
        return []
    largest = max(kv_cache_size(layout, tokens, batch, dtype).kv_cache_bytes for layout in layouts) or 1
    rows = []
    for layout in layouts:
        size = kv_cache_size(layout, tokens, batch, dtype)
        rows.append(
            {
                "variant": layout.legend,
                "values / token / layer": layout.values_per_token_per_layer,
                "KiB / token": round(size.bytes_per_token / 1024, 3),
                f"cache at {tokens:,} tokens (GiB)": round(size.kv_cache_bytes / 2**30, 3),
                "vs MHA": f"{size.kv_cache_bytes / largest:.1%}",
            }
        )
    return rows


def layout_for_variant(base: AttentionLayout, spec) -> AttentionLayout:
    """The layout a converted model caches, for an `explorer.variants.VariantSpec` applied to `base`.

    Naive MLA caches only its latent (RoPE is applied after the up-projection); the decoupled form adds the
    shared RoPE key of `rope_dims` dimensions.
    """
    if spec.variant == "original":
        return base
    if spec.variant == "mla":
        rope = spec.rope_dims if spec.form == "decoupled" else 0
        ranks = spec.layer_ranks or (spec.latent_rank,)
        return convert_layout(base, "MLA", latent_rank=round(sum(ranks) / len(ranks)), rope_head_dim=rope)
    return convert_layout(base, spec.variant.upper(), kv_heads=spec.kv_heads)


def measured_table(models: Sequence[tuple[str, LoadedModel, AttentionLayout]], tokens: int) -> list[dict[str, object]]:
    """Measured cache bytes beside the formula, one row per (label, loaded model, layout it should cache)."""
    rows = []
    for label, loaded, layout in models:
        measured = measure_kv_cache(loaded, tokens, 1, layout)
        rows.append(
            {
                "variant": label,
                "values / token / layer": layout.values_per_token_per_layer,
                "cache tensors": measured.tensor_count,
                "measured bytes": measured.measured_bytes,
                "formula bytes": measured.formula_bytes,
                "measured / formula": round(measured.measured_bytes / measured.formula_bytes, 4),
                "dtype": measured.dtype,
            }
        )
    return rows
