"""What a variant is: the settings of one attention conversion, checked against a model's shape.

A `VariantSpec` is data only (it travels in URLs and cache keys); `explorer.variants.convert` applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from explorer.config import VARIANTS, ModelConfig, Variant, classify, read_config
from explorer.kv import values_per_layer, with_attention

VariantName = Variant  # "original" or one of explorer.config.ATTENTIONS: the one spelling, everywhere
__all__ = ["VARIANTS", "VariantName", "VariantSpec", "AttentionShape", "attention_shape", "cached_layout",
           "target_kv_heads", "check_mla", "cache_values_per_token", "cache_bytes_per_token"]


@dataclass(frozen=True)
class VariantSpec:
    """One attention variant and its settings. Fields that a variant does not use are ignored."""

    # which attention
    variant: VariantName = "original"  # original model, or mha / gqa / mqa / mla
    # mha, gqa, mqa: how many KV heads, and how heads are merged when there are fewer than before
    kv_heads: int | None = None  # gqa only: KV heads after conversion (mha: every query head; mqa: 1)
    merge: Literal["mean", "first", "aligned"] = "mean"  # mean-pool a group (GQA paper), keep its first
    # head, or align it first (PCA per RoPE frequency pair for keys, PCA for values). MLA uses the same
    # choice to merge its KV heads' RoPE parts into the one shared RoPE key.
    # mla
    form: Literal["naive", "decoupled"] = "naive"  # naive: RoPE after the up-projection (exact at full rank,
    # cannot be absorbed); decoupled: DeepSeek-V2, RoPE on `rope_dims` dims of one shared key, rest compressed
    latent_rank: int = 256  # width of the joint K/V latent cached per token and layer
    layer_ranks: tuple[int, ...] | None = None  # one latent width per layer (overrides latent_rank)
    rope_dims: int = 32  # decoupled only: dims of the shared RoPE key (even; highest frequencies kept)
    svd: Literal["plain", "data"] = "data"  # plain SVD of the weights, or PCA of K/V outputs on calibration text
    weighting: Literal["none", "query-output"] = "none"  # PCA of raw K/V outputs, or of K weighted by query
    # energy per RoPE pair and V by the output projection (keeps what changes scores and outputs)
    balance_kv: bool = True  # scale V to K's energy before the joint PCA/SVD, so the latent serves both
    value_weight: float = 1.0  # then scale V by this (below 1: the latent favours keys, whose errors move every
    # attention weight, over values)
    attn_path: Literal["naive", "absorb"] = "naive"  # decoupled only: expand K/V from the latent, or fold
    # W_UK into the query and W_UV into the output and attend over the latent itself
    rank_allocation: Literal["uniform", "sensitivity"] = "uniform"  # the same latent rank in every layer, or
    # ranks per layer chosen from each layer's measured sensitivity, for the same total cache (`variants.allocate`)
    rope_pairs: Literal["highest", "norm", "rotation"] = "highest"  # decoupled only: which RoPE pairs keep
    # rotation: the highest frequencies; per layer the largest ‖q_p‖·‖k_p‖ on calibration text (MHA2MLA's 2-norm);
    # or that norm times how far the pair turns over a context (what losing its rotation would change)
    refit: Literal["none", "output"] = "none"  # mla: refit each layer's output projection by least squares so the
    # layer reproduces the original's attention output on calibration text (`variants.refit`)
    # calibration (data-aware SVD, aligned merges, sensitivity and refits)
    calibration_tokens: int = 2048  # tokens of calibration prose, kept apart from the evaluation prose

    def label(self) -> str:
        """A short readable name, e.g. 'mla naive r=256 data' or 'gqa 3 mean'."""
        if self.variant in ("original", "mha"):
            return self.variant
        if self.variant in ("gqa", "mqa"):
            heads = 1 if self.variant == "mqa" else self.kv_heads
            return f"{self.variant} kv={heads} {self.merge}"
        rank = f"r={self.latent_rank}" if self.layer_ranks is None else f"r~{self.mean_rank():.0f}/layer"
        rope = f" rope={self.rope_dims} {self.merge} {self.attn_path}" if self.form == "decoupled" else ""
        if self.form == "decoupled" and self.rope_pairs != "highest":
            rope = rope.replace(f"rope={self.rope_dims}", f"rope={self.rope_dims} by-{self.rope_pairs}")
        balance = "" if self.balance_kv else " unbalanced"
        balance += " qo-weighted" if self.weighting == "query-output" else ""
        balance += f" v×{self.value_weight:g}" if self.value_weight != 1.0 else ""
        balance += " sensitivity-ranks" if self.rank_allocation == "sensitivity" else ""
        balance += " refit" if self.refit == "output" else ""
        return f"mla {self.form} {rank} {self.svd}{balance}{rope}"

    def mean_rank(self) -> float:
        ranks = self.layer_ranks or (self.latent_rank,)
        return sum(ranks) / len(ranks)

    def uses_calibration(self) -> bool:
        if self.variant == "mla":
            return (self.svd == "data" or (self.form == "decoupled" and (self.merge == "aligned"
                                                                          or self.rope_pairs != "highest"))
                    or self.rank_allocation == "sensitivity")
        return self.variant in ("gqa", "mqa") and self.merge == "aligned"


@dataclass(frozen=True)
class AttentionShape:
    """What a conversion needs of a model's attention: a thin view of `explorer.config.ModelConfig`, which reads
    the config (this only keeps the four sizes and a name for sentences)."""

    num_layers: int  # l, layers with attention
    heads: int  # n_h, query heads per layer
    kv_heads: int  # n_g, KV heads per layer
    head_dim: int  # d_h, dims per head
    model_name: str = "the model"  # used in error messages

    @staticmethod
    def of(model: ModelConfig) -> AttentionShape:
        return AttentionShape(model.num_layers, model.query_heads, model.kv_heads, model.head_dim, model.name)

    def as_config(self) -> ModelConfig:
        """The description these sizes stand for (full attention in every layer)."""
        return ModelConfig(name=self.model_name, num_layers=self.num_layers, query_heads=self.heads,
                           kv_heads=self.kv_heads, head_dim=self.head_dim, layer_windows=(None,) * self.num_layers,
                           attention=classify(self.kv_heads, self.heads))

    @property
    def kv_values_per_layer(self) -> int:
        return 2 * self.kv_heads * self.head_dim


def attention_shape(config, model_name: str | None = None) -> AttentionShape:
    """The attention sizes of any config `explorer.config.read_config` reads (one reader for every module)."""
    return AttentionShape.of(read_config(config, model_name))


def target_kv_heads(spec: VariantSpec, shape: AttentionShape) -> int:
    """KV heads after a mha/gqa/mqa conversion, checked: a sentence says what to choose when it cannot work."""
    kv_heads = {"mha": shape.heads, "mqa": 1, "gqa": spec.kv_heads, "original": shape.kv_heads}[spec.variant]
    choices = [n for n in range(1, shape.heads + 1) if shape.heads % n == 0]
    reachable = [n for n in choices if shape.kv_heads % n == 0 or n % shape.kv_heads == 0]
    if kv_heads is None or kv_heads not in reachable:
        listed = ", ".join(str(n) for n in reachable[:-1]) + f" or {reachable[-1]}"
        raise ValueError(
            f"{shape.model_name} has {shape.heads} query heads and {shape.kv_heads} KV heads; "
            f"choose {listed} KV heads."
        )
    return kv_heads


def check_mla(spec: VariantSpec, shape: AttentionShape) -> list[int]:
    """The latent width of every layer, after checking the MLA settings against the model's shape."""
    ranks = list(spec.layer_ranks) if spec.layer_ranks is not None else [spec.latent_rank] * shape.num_layers
    if len(ranks) != shape.num_layers:
        raise ValueError(f"{shape.model_name} has {shape.num_layers} layers; give one latent rank per layer.")
    rope_dims = spec.rope_dims if spec.form == "decoupled" else 0
    if rope_dims % 2 or not 0 <= rope_dims <= shape.head_dim:
        raise ValueError(
            f"RoPE acts on pairs of dims: choose an even rope_dims between 0 and {shape.head_dim} "
            f"(the head dim of {shape.model_name})."
        )
    full_rank = shape.kv_heads * (2 * shape.head_dim - rope_dims)
    for rank in ranks:
        if not 1 <= rank <= full_rank:
            raise ValueError(
                f"The K/V outputs of {shape.model_name} span at most {full_rank} dims per layer "
                f"with rope_dims={rope_dims}; choose a latent rank between 1 and {full_rank}."
            )
    if spec.form == "naive" and spec.attn_path == "absorb":
        raise ValueError(
            "Naive MLA applies RoPE after the up-projection, so W_UK cannot be folded into the query; "
            "choose form='decoupled' to use the absorbed path."
        )
    return ranks


def cached_layout(spec: VariantSpec, model: ModelConfig | AttentionShape) -> ModelConfig:
    """The one function from a variant spec to the layout its converted model caches, after checking the spec
    against the model (a sentence says what to choose when it cannot work).

    Naive MLA caches only its latent (RoPE is applied after the up-projection); the decoupled form adds the
    shared RoPE key of `rope_dims` dims. Per-layer latent ranks stay per layer.
    """
    if isinstance(model, AttentionShape):
        model = model.as_config()
    shape = AttentionShape.of(model)
    if spec.variant == "original":
        return model
    if spec.variant == "mla":
        ranks = check_mla(spec, shape)
        rope_dims = spec.rope_dims if spec.form == "decoupled" else 0
        return with_attention(model, "mla", latent_rank=ranks[0], rope_head_dim=rope_dims,
                              layer_latent_ranks=tuple(ranks) if len(set(ranks)) > 1 else ())
    return with_attention(model, "gqa", kv_heads=target_kv_heads(spec, shape))


def cache_values_per_token(spec: VariantSpec, shape: ModelConfig | AttentionShape) -> list[int]:
    """KV-cache values per token for each layer of the converted model (`explorer.kv.values_per_layer`, the
    one formula: 2 · kv_heads · head_dim, or MLA's latent plus its shared RoPE key)."""
    return list(values_per_layer(cached_layout(spec, shape)))


def cache_bytes_per_token(spec: VariantSpec, shape: ModelConfig | AttentionShape, bytes_per_value: int) -> list[int]:
    """The formula in bytes: values per token per layer times the bytes of one value (4 for float32)."""
    return [values * bytes_per_value for values in cache_values_per_token(spec, shape)]
