"""THE description of a model, read once from any config: layers, heads, KV heads, head dims, MLA ranks, the
window of every layer, mixture of experts and tied embeddings. Every module that needs a model's shape (cache
size, parameters, the memory guard, the masks of a run, variant specs) reads it from `read_config`.

Sources (`explorer.config_sources.load_config`): a dict, pasted config.json text, a transformers config object, a
reference name (assets/configs), a config.json path or folder, or (online only) a hub id. Remote code never runs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

from explorer.catalogue import ModelKind, model_kind
from explorer.config_sources import load_config, reference_models

Attention = Literal["mha", "gqa", "mqa", "mla"]  # the one spelling of attention variants, everywhere
ATTENTIONS: tuple[Attention, ...] = ("mha", "gqa", "mqa", "mla")
Variant = Literal["original", Attention]  # a model as built, or converted to one of the attentions
VARIANTS: tuple[str, ...] = ("original", *ATTENTIONS)
BlockStyle = Literal["llama", "gpt2", "falcon", "bert"]  # which layer recipe the parameter count follows

__all__ = ["ATTENTIONS", "VARIANTS", "Attention", "BlockStyle", "ModelConfig", "Variant", "classify", "load_config",
           "read_config", "reference_models"]  # the sources are re-exported: a config is read from them


@dataclass(frozen=True)
class ModelConfig:
    """A model's attention and size, read from its config (symbols as in DeepSeek-V2 and the GQA paper)."""

    # identity
    name: str  # what the user knows it as, e.g. "meta-llama/Llama-2-7b-hf"
    model_type: str | None = None  # the config's model_type, e.g. "llama"
    kind: ModelKind = "decoder"  # encoders read the whole text at once and keep no KV cache
    # size
    num_layers: int = 1  # l, attention layers (an encoder-decoder: encoder plus decoder layers)
    hidden_size: int | None = None  # d, width of the residual stream
    intermediate_size: int | None = None  # d_ff, width of a dense MLP
    vocab_size: int | None = None  # |V|, rows of the embedding and the output head
    tie_word_embeddings: bool = True  # the output head reuses the embedding matrix
    # attention
    attention: Attention = "mha"  # how keys and values are shared (mha/gqa/mqa) or compressed (mla)
    query_heads: int = 1  # n_h, query heads per layer
    kv_heads: int = 1  # n_g, KV heads cached per layer (MLA: n_h, expanded from the latent, not cached)
    head_dim: int = 64  # d_h, dims per head (MLA: the part without RoPE, qk_nope_head_dim)
    # MLA (DeepSeek-V2): a latent and one RoPE key shared by all heads are cached instead of K and V
    latent_rank: int | None = None  # d_c, kv_lora_rank
    rope_head_dim: int | None = None  # d_h^R, qk_rope_head_dim
    query_rank: int | None = None  # d_c', q_lora_rank (None: queries are not compressed)
    value_head_dim: int | None = None  # v_head_dim (None: head_dim)
    layer_latent_ranks: tuple[int, ...] = ()  # a converted model's d_c per layer (empty: latent_rank everywhere)
    # sliding windows
    layer_windows: tuple[int | None, ...] = ()  # window per layer; None: the layer attends to the whole prefix
    window_rule: str = ""  # which rule gave the windows, in a sentence
    # mixture of experts (DeepSeek, Mixtral): the first `dense_layers` layers keep a dense MLP
    routed_experts: int = 0  # E, n_routed_experts / num_local_experts (0: a dense model)
    experts_per_token: int | None = None  # k, num_experts_per_tok: routed experts each token uses
    shared_experts: int = 0  # n_shared_experts, used by every token
    dense_layers: int = 0  # first_k_dense_replace
    expert_intermediate_size: int | None = None  # moe_intermediate_size, width of one expert's MLP
    # what the parameter count needs beyond the above
    block_style: BlockStyle = "llama"  # RMSNorm and gated MLP (llama), or GPT-2, Falcon and BERT recipes
    learned_positions: int = 0  # rows of a learned position embedding (0: RoPE or none)
    token_types: int = 0  # BERT's token-type embeddings
    attention_bias: Literal["none", "qkv", "qkvo"] = "none"  # which attention projections have biases
    one_norm_per_layer: bool = False  # Falcon-7B's parallel attention and MLP share one LayerNorm
    # provenance
    fields_used: dict[str, object] = field(default_factory=dict)  # config field -> value behind each number
    notes: tuple[str, ...] = ()  # how traps in the config were resolved, one sentence each
    missing: dict[str, str] = field(default_factory=dict)  # figure -> why the config cannot give it
    converted: bool = False  # a variant made from the model, not the model as its config builds it

    @property
    def is_decoder(self) -> bool:
        """Decoders (and encoder-decoders) keep a KV cache while they generate."""
        return self.kind != "encoder"

    @property
    def is_moe(self) -> bool:
        return self.routed_experts > 0

    @property
    def moe_layers(self) -> int:
        """Layers whose MLP is a mixture of experts."""
        return self.num_layers - self.dense_layers if self.is_moe else 0

    def latent_rank_of(self, layer: int) -> int:
        """d_c of one layer (a converted model may give each layer its own)."""
        return self.layer_latent_ranks[layer] if self.layer_latent_ranks else self.latent_rank

    @property
    def label(self) -> str:
        """Short variant label for legends: "GQA (8 KV heads)", "MLA (512 + 64)"."""
        if self.attention == "mla":
            rank = self.latent_rank if not self.layer_latent_ranks else f"~{self.latent_rank}"
            return f"MLA ({rank} + {self.rope_head_dim})"
        if self.attention == "gqa":
            return f"GQA ({self.kv_heads} KV heads)"
        return f"{self.attention.upper()} ({self.kv_heads} KV head{'s' if self.kv_heads > 1 else ''})"

    @property
    def legend(self) -> str:
        """The label, marked when this is the model as built: "GQA (8 KV heads), as built"."""
        return self.label if self.converted else f"{self.label}, as built"


def classify(kv_heads: int, query_heads: int) -> Attention:
    """MHA, GQA or MQA from the head counts: the one place that decides it."""
    if kv_heads < 1 or query_heads % kv_heads != 0:
        raise ValueError(f"{kv_heads} KV heads cannot be shared evenly by {query_heads} query heads.")
    if kv_heads == query_heads:
        return "mha"
    return "mqa" if kv_heads == 1 else "gqa"


# --- reading the fields -----------------------------------------------------------------------------------------

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
        """The first of `names` written in the config (an explicit null counts), else transformers' default."""
        for name in names:
            if name in self.given and (self.given[name] is not None or default is not dataclasses.MISSING):
                if self.given[name] is not None:
                    self.fields_used[self.prefix + name] = self.given[name]
                    return self.given[name]
                return default
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
        raise ValueError(f"The config has no {names[0]}{also}: paste the model's complete config.json.")


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
    from transformers import CONFIG_MAPPING  # the mapping is lazy: this imports no model code

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


def read_config(source, name: str | None = None) -> ModelConfig:
    """Read a model's description from anything `load_config` accepts (a ModelConfig is returned as it is).

    Traps handled: Falcon's `multi_query: true` beside `num_kv_heads: 71` (one KV head), `head_dim` that differs
    from hidden_size / heads (Gemma), MLA ranks (DeepSeek), the window rules (below), a nested `text_config`
    (Gemma-3 multimodal), GPT-2 / Falcon / T5 field names. Fields only the parameter count needs (vocabulary,
    MLP and expert sizes) may be missing: `missing["parameters"]` then says why, and the cache still answers.
    """
    if isinstance(source, ModelConfig):
        return source
    top = load_config(source)
    name = name or _display_name(source, top)
    kind = model_kind(SimpleNamespace(**{"model_type": None, **top}))
    fields = _fields_of(top)
    num_layers = int(fields.get("num_hidden_layers", "n_layer", "num_layers", "encoder_layers"))
    if kind == "encoder-decoder":  # T5 and Whisper count the decoder apart
        num_layers += int(fields.get("num_decoder_layers", "decoder_layers", default=0) or 0)
    query_heads = int(fields.get("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads"))
    hidden_size = int(fields.get("hidden_size", "n_embd", "d_model"))

    mla: dict[str, object] = {}
    latent_rank = fields.get("kv_lora_rank", default=None)
    if latent_rank is not None:  # MLA: d_h is the per-head size without the RoPE part (the paper's d_h)
        attention, kv_heads = "mla", query_heads
        head_dim = int(fields.get("qk_nope_head_dim"))
        query_rank = fields.get("q_lora_rank", default=None)
        mla = dict(latent_rank=int(latent_rank), rope_head_dim=int(fields.get("qk_rope_head_dim")),
                   query_rank=None if query_rank is None else int(query_rank),
                   value_head_dim=int(fields.get("v_head_dim", default=head_dim)))
    else:
        kv_heads = _kv_heads(fields, query_heads)
        head_dim = _head_dim(fields, hidden_size, query_heads)
        if head_dim * query_heads != hidden_size:
            fields.notes.append(
                f"head_dim is {head_dim}, not hidden_size / num_attention_heads = {hidden_size / query_heads:g}: "
                "the cache uses head_dim."
            )
        attention = classify(kv_heads, query_heads)
    windows, rule = _layer_windows(fields, num_layers)
    if not top.get("model_type"):
        fields.notes.append(f"Without a model_type the window rule is assumed: {rule}")
    style = _block_style(fields.model_type, kind)
    missing: dict[str, str] = {}
    try:
        sizes = _size_fields(fields, style, hidden_size)
    except ValueError as error:
        sizes = {}
        missing["parameters"] = (
            f"The parameter count, and so the weights, need fields this config lacks: {error} The cache size "
            "needs none of them."
        )
    return ModelConfig(
        name=name, model_type=fields.model_type, kind=kind,
        num_layers=num_layers, hidden_size=hidden_size, attention=attention, query_heads=query_heads,
        kv_heads=kv_heads, head_dim=head_dim, **mla, layer_windows=windows, window_rule=rule,
        block_style=style, **sizes,
        fields_used=fields.fields_used, notes=tuple(fields.notes), missing=missing,
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
    if fields.resolved.get("d_kv") is not None:  # T5
        return int(fields.get("d_kv"))
    if fields.given.get("head_dim") is None and fields.resolved.get("head_dim") in (None, derived):
        fields.fields_used[fields.prefix + "head_dim (hidden_size / num_attention_heads)"] = derived
        return derived
    return int(fields.get("head_dim"))


def _layer_windows(fields: _Fields, num_layers: int) -> tuple[tuple[int | None, ...], str]:
    """The sliding window of each layer (None: full attention) and the rule that gave them, in a sentence.

    The one rule: `use_sliding_window: false` turns windows off (Qwen2); else `layer_types` names each layer
    (Gemma-2/3 alternation, Qwen2's max_window_layers: transformers writes them for the model types it
    knows); else a `sliding_window` applies to every layer (Mistral); else every layer sees the whole prefix.
    """
    if fields.given.get("use_sliding_window") is False:
        fields.fields_used[fields.prefix + "use_sliding_window"] = False
        if fields.given.get("sliding_window"):
            fields.notes.append(
                f"use_sliding_window is false: sliding_window {fields.given['sliding_window']} is ignored "
                "and every layer attends to the whole prefix."
            )
        return (None,) * num_layers, "use_sliding_window is false, so every layer attends to the whole prefix."
    window = fields.get("sliding_window", default=None)
    layer_types = fields.get("layer_types", default=None)
    if layer_types is not None:
        if len(layer_types) != num_layers:
            raise ValueError(
                f"layer_types lists {len(layer_types)} layers but the config has {num_layers}: fix one of them."
            )
        sliding = sum(kind == "sliding_attention" for kind in layer_types)
        if window is None and sliding:
            raise ValueError("layer_types names sliding_attention layers but the config has no sliding_window.")
        windows = tuple(int(window) if kind == "sliding_attention" else None for kind in layer_types)
        return windows, f"layer_types names each layer: {sliding} of {num_layers} slide over {window} tokens."
    if window:
        return (int(window),) * num_layers, f"sliding_window {window} with no layer_types: every layer slides " \
                                            "(Mistral's rule)."
    return (None,) * num_layers, "no sliding_window: every layer attends to the whole prefix."


def _block_style(model_type: str | None, kind: ModelKind) -> BlockStyle:
    """Which layer recipe a model follows, for counting parameters."""
    if kind == "encoder":
        return "bert"  # biases everywhere, LayerNorms, learned positions, a pooler
    if model_type in ("gpt2", "falcon"):
        return model_type
    return "llama"  # RMSNorm, gated MLP, no biases (Mistral, Qwen2, Gemma, DeepSeek, ...)


def _size_fields(fields: _Fields, style: BlockStyle, hidden: int) -> dict[str, object]:
    """The fields only the parameter count needs; ValueError (a sentence) when one is missing."""
    sizes: dict[str, object] = {"vocab_size": int(fields.get("vocab_size"))}
    if style == "llama":
        sizes["intermediate_size"] = int(fields.get("intermediate_size"))
    else:
        inner = fields.get("intermediate_size", "n_inner", "ffn_hidden_size", "d_ff", default=0)
        sizes["intermediate_size"] = int(inner or 4 * hidden)
    if style in ("gpt2", "bert"):  # learned absolute positions
        sizes["learned_positions"] = int(fields.get("n_positions", "max_position_embeddings"))
    if style == "bert":
        sizes["token_types"] = int(fields.get("type_vocab_size", default=0))
    sizes["tie_word_embeddings"] = style == "bert" or bool(fields.get("tie_word_embeddings", default=True))
    if style in ("gpt2", "bert") or fields.get("attention_bias", default=False):
        sizes["attention_bias"] = "qkvo"
    elif fields.model_type == "qwen2":
        sizes["attention_bias"] = "qkv"  # Qwen2 has biases on q, k and v only
    sizes["one_norm_per_layer"] = style == "falcon" and not fields.get("new_decoder_architecture", default=False)
    routed = fields.get("n_routed_experts", "num_local_experts", default=None)
    if routed:
        sizes.update(
            routed_experts=int(routed),
            experts_per_token=int(fields.get("num_experts_per_tok")),
            shared_experts=int(fields.get("n_shared_experts", default=0) or 0),
            dense_layers=int(fields.get("first_k_dense_replace", default=0) or 0),
            expert_intermediate_size=int(fields.get("moe_intermediate_size", default=sizes["intermediate_size"])),
        )
    return sizes
