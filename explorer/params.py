"""Parameters and weight bytes from a model's description: every weight, the weights one token uses, and the
weights one decode step reads (an MoE step reads only the experts its tokens were routed to).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from explorer.config import ModelConfig, read_config
from explorer.dtypes import dtype_bits


@dataclass(frozen=True)
class ParameterEstimate:
    """Parameter count estimated from a config (embeddings, attention, MLP or experts, norms, head)."""

    total: int  # every parameter of the model
    active_per_token: int  # parameters one token uses (MoE: shared plus k routed experts per MoE layer)
    # mixture of experts: what a decode step reads depends on how many distinct experts its tokens pick
    routed_expert: int  # parameters of one routed expert in one layer (0: a dense model)
    routed_experts: int  # E, routed experts per MoE layer
    experts_per_token: int  # k, routed experts each token uses
    moe_layers: int  # layers whose MLP is a mixture of experts
    attention: int  # parameters of every layer's attention (replicated per rank under data-parallel attention)
    fields_used: dict[str, object]  # config field -> value behind the estimate

    @property
    def always_read(self) -> int:
        """Parameters every decode step reads whatever the routing: all but the routed experts."""
        return self.total - self.moe_layers * self.routed_experts * self.routed_expert

    def read_per_step(self, batch: int = 1) -> int:
        """Parameters a decode step of `batch` sequences reads: the dense and shared weights plus, in each MoE
        layer, min(E, batch·k) routed experts (the most the step's tokens can pick)."""
        if batch < 1:
            raise ValueError("Choose a batch of at least 1 sequence.")
        experts = min(self.routed_experts, batch * self.experts_per_token)
        return self.always_read + self.moe_layers * experts * self.routed_expert

    def weights(self, dtype: str = "bf16") -> WeightBytes:
        """The weights in `dtype`: what memory holds, and what each decode step reads."""
        return WeightBytes(self, dtype)

    def weight_bytes(self, dtype: str = "bf16") -> int:
        return math.ceil(self.total * dtype_bits(dtype, "weights") / 8)


@dataclass(frozen=True)
class WeightBytes:
    """A model's weights in one dtype: bytes held in memory and bytes read by a decode step of a batch."""

    parameters: ParameterEstimate | None  # None: a dense model known only by its bytes (`dense`)
    dtype: str  # the weights' dtype, apart from the cache's
    dense_bytes: float = 0.0  # bytes of a model known only by its bytes

    @staticmethod
    def dense(total_bytes: float) -> WeightBytes:
        """Weights that every step reads in full (a dense model, or a measured byte count)."""
        return WeightBytes(None, "", float(total_bytes))

    @property
    def total_bytes(self) -> float:
        """Bytes held in memory: every weight, every expert."""
        if self.parameters is None:
            return self.dense_bytes
        return math.ceil(self.parameters.total * dtype_bits(self.dtype, "weights") / 8)

    def read_bytes(self, batch: int = 1) -> float:
        """Bytes one decode step of `batch` sequences reads (`ParameterEstimate.read_per_step`)."""
        if self.parameters is None:
            return self.dense_bytes
        return math.ceil(self.parameters.read_per_step(batch) * dtype_bits(self.dtype, "weights") / 8)


def estimate_parameters(config) -> ParameterEstimate:
    """Count parameters from a description (or any config `read_config` reads): exact for Llama-like, GPT-2 and
    BERT layouts, within about 1% for others (a few small norms and biases some models add are left out). MoE
    layers count every expert in `total` and the shared plus `num_experts_per_tok` routed experts in
    `active_per_token`. A multimodal config counts its language model only (no vision tower). A config that
    lacks a field the count needs raises ValueError with `ModelConfig.missing["parameters"]`."""
    model = read_config(config)
    if "parameters" in model.missing:
        raise ValueError(model.missing["parameters"])
    hidden, vocab, style = model.hidden_size, model.vocab_size, model.block_style

    # embeddings and output head
    embeddings = vocab * hidden + model.learned_positions * hidden
    if style == "bert":  # token types and the embedding LayerNorm
        embeddings += model.token_types * hidden + 2 * hidden
    output_head = 0 if model.tie_word_embeddings else vocab * hidden
    pooler = hidden * hidden + hidden if style == "bert" else 0

    # norms: RMSNorm has a weight, LayerNorm a weight and a bias
    norm_size = hidden if style == "llama" else 2 * hidden
    norms_per_layer = norm_size * (1 if model.one_norm_per_layer else 2)
    final_norm = 0 if style == "bert" else norm_size

    attention = _attention_parameters(model)

    # MLP: gated (gate, up, down) for Llama-like models, two matrices (with biases for GPT-2 and BERT) otherwise
    inner = model.intermediate_size
    if style == "llama":
        dense_mlp = 3 * hidden * inner
    else:
        dense_mlp = 2 * hidden * inner + (inner + hidden if style in ("gpt2", "bert") else 0)

    # mixture of experts (DeepSeek, Mixtral): the first `dense_layers` layers keep a dense MLP
    expert = 3 * hidden * model.expert_intermediate_size if model.is_moe else 0
    k = model.experts_per_token or 0
    router = hidden * model.routed_experts
    moe_total = (model.routed_experts + model.shared_experts) * expert + router
    moe_active = (k + model.shared_experts) * expert + router
    dense_layers = model.num_layers - model.moe_layers

    common = (
        embeddings + output_head + pooler + final_norm
        + model.num_layers * (attention + norms_per_layer)
        + dense_layers * dense_mlp
    )
    return ParameterEstimate(
        total=common + model.moe_layers * moe_total,
        active_per_token=common + model.moe_layers * moe_active,
        routed_expert=expert,
        routed_experts=model.routed_experts,
        experts_per_token=k,
        moe_layers=model.moe_layers,
        attention=model.num_layers * attention,
        fields_used=model.fields_used,
    )


def _attention_parameters(model: ModelConfig) -> int:
    """Parameters of one attention block: projections (MLA: down and up projections) and their biases."""
    hidden, heads, head_dim = model.hidden_size, model.query_heads, model.head_dim
    if model.attention == "mla":
        q_rank, v_head_dim, rope = model.query_rank, model.value_head_dim, model.rope_head_dim
        q_size = heads * (head_dim + rope)
        query = hidden * q_size if q_rank is None else hidden * q_rank + q_rank + q_rank * q_size  # + q_norm
        return (
            query
            + hidden * (model.latent_rank + rope)  # wkv_a: the latent and the shared RoPE key
            + model.latent_rank  # kv_norm
            + model.latent_rank * heads * (head_dim + v_head_dim)  # wkv_b: per-head keys (no RoPE) and values
            + heads * v_head_dim * hidden  # wo
        )
    q_out, kv_out = heads * head_dim, model.kv_heads * head_dim
    weights = hidden * q_out + 2 * hidden * kv_out + q_out * hidden  # q, k, v, o
    biases = {"none": 0, "qkv": q_out + 2 * kv_out, "qkvo": q_out + 2 * kv_out + hidden}[model.attention_bias]
    return weights + biases


def measured_weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of a loaded model's parameters and buffers as they sit in memory (tied weights counted once)."""
    tensors = {t.data_ptr(): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())
