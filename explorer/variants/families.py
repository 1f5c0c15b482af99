"""Per-family weight adapters: read one attention layer's q/k/v/o per head into one float64 layout, and say
what the layer does around the attention kernel, so the GQA and MLA maths in `convert` is shared by every family.

Llama (SmolLM2), Gemma-3, GPT-2 and BERT differ in where their weights live (`q_proj` rows, GPT-2's fused
`Conv1D` columns, BERT's `query`/`key`/`value`), in positions (RoPE or learned absolute), in biases, in
Gemma-3's per-head q/k norms and in who owns the output projection (BERT keeps it in `BertSelfOutput`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from transformers.models.bert.modeling_bert import BertSelfAttention
from transformers.models.gemma3.modeling_gemma3 import Gemma3Attention
from transformers.models.gpt2.modeling_gpt2 import GPT2Attention
from transformers.models.llama.modeling_llama import LlamaAttention

from explorer.variants.gqa import GroupedQueryAttention
from explorer.variants.mla import MultiHeadLatentAttention
from explorer.variants.spec import AttentionShape, VariantSpec


@dataclass
class HeadWeights:
    """One attention layer's projections per head, as float64 copies (d = d_model, H query heads, G KV heads)."""

    wq: torch.Tensor  # (H, hd, D) query rows of each head
    wk: torch.Tensor  # (G, hd, D) key rows of each KV head
    wv: torch.Tensor  # (G, hd, D) value rows of each KV head
    wo: torch.Tensor | None  # (D, H, hd) output projection per head; None where the module has none (BERT)
    bq: torch.Tensor | None = None  # (H, hd) query bias (GPT-2, BERT)
    bk: torch.Tensor | None = None  # (G, hd) key bias
    bv: torch.Tensor | None = None  # (G, hd) value bias
    bo: torch.Tensor | None = None  # (D,) output bias


@dataclass(frozen=True)
class LayerBehaviour:
    """What a family's attention layer does around the shared kernel; a converted layer keeps all of it."""

    # positions and direction
    rope: bool  # rotary positions on q and k (Llama, Gemma-3); False: learned absolute positions (GPT-2, BERT)
    causal: bool  # decoder (a token sees only the past) or encoder (bidirectional)
    # around the kernel
    scaling: float  # score scale: head_dim**-0.5 (Llama, BERT, GPT-2), query_pre_attn_scalar**-0.5 (Gemma-3)
    bias: bool  # q/k/v projections have biases
    output_projection: bool  # the module owns o_proj (False for BERT: BertSelfOutput applies it)
    output_bias: bool  # o_proj has a bias (GPT-2)
    qk_norm: bool  # Gemma-3: RMSNorm on each query and key head before RoPE


class Family:
    """Where one family keeps its attention layers and weights. Subclasses fill in the family's layout."""

    name = "Llama"
    model_types: tuple[str, ...] = ("llama",)
    base_attention: type = LlamaAttention  # the class transformers records `outputs.attentions` by

    def attention_slots(self, model) -> list[tuple[nn.Module, str]]:
        """(parent module, attribute) of every self-attention layer, in layer order."""
        return [(layer, "self_attn") for layer in model.model.layers]

    def attention_modules(self, model) -> list[nn.Module]:
        return [getattr(parent, name) for parent, name in self.attention_slots(model)]

    def read(self, attn, shape: AttentionShape) -> HeadWeights:
        """The layer's weights per head, float64 copies (the module itself is never changed)."""
        H, G, hd = shape.heads, shape.kv_heads, shape.head_dim  # query heads, KV heads, head dim
        return HeadWeights(
            wq=_float64(attn.q_proj.weight).view(H, hd, -1),  # (H, hd, D)
            wk=_float64(attn.k_proj.weight).view(G, hd, -1),  # (G, hd, D)
            wv=_float64(attn.v_proj.weight).view(G, hd, -1),  # (G, hd, D)
            wo=_float64(attn.o_proj.weight).view(-1, H, hd),  # (D, H, hd)
            bq=_float64(attn.q_proj.bias, (H, hd)),
            bk=_float64(attn.k_proj.bias, (G, hd)),
            bv=_float64(attn.v_proj.bias, (G, hd)),
            bo=_float64(attn.o_proj.bias),
        )

    def behaviour(self, attn) -> LayerBehaviour:
        return LayerBehaviour(
            rope=True,
            causal=True,
            scaling=attn.scaling,
            bias=attn.q_proj.bias is not None,
            output_projection=True,
            output_bias=attn.o_proj.bias is not None,
            qk_norm=False,
        )

    def norms(self, attn) -> tuple[nn.Module, nn.Module] | None:
        """Copies of the per-head (q_norm, k_norm) a converted layer must keep, or None."""
        return None

    def rope(self, model, layer_index: int) -> tuple[torch.Tensor, float] | None:
        """(inv_freq (hd/2,), attention scaling) of the RoPE this layer uses, or None without RoPE."""
        rotary = model.model.rotary_emb
        return rotary.inv_freq, rotary.attention_scaling

    def check(self, spec: VariantSpec, label: str) -> None:
        """Refuse, with a sentence, settings this family's attention cannot support."""

    def output_projection(self, attn) -> nn.Module:
        """The module that maps the layer's concatenated heads to the residual stream (its input is every head)."""
        return attn.o_proj

    def layer_extras(self, attn) -> dict:
        """Attributes of the original layer other code reads (Gemma-3's sliding window), copied onto the new one."""
        return {}


class Gemma3Family(Family):
    """Gemma-3: Llama's layout plus q_norm/k_norm per head before RoPE, head_dim ≠ d_model / heads,
    query_pre_attn_scalar scaling, and sliding-window layers with their own RoPE base.

    The sliding window lives in the attention mask and the cache layers (both made from the config), so a
    converted layer keeps it without doing anything. transformers 5.24's `Gemma3Attention` does not apply
    `attn_logit_softcapping` (null in Gemma-3 configs); converted layers do not either, so they stay exact.
    """

    name = "Gemma-3"
    model_types = ("gemma3_text",)  # the text model; multimodal "gemma3" nests it in text_config
    base_attention = Gemma3Attention

    def behaviour(self, attn) -> LayerBehaviour:
        return dataclasses.replace(super().behaviour(attn), qk_norm=True)

    def norms(self, attn):
        return copy.deepcopy(attn.q_norm), copy.deepcopy(attn.k_norm)

    def rope(self, model, layer_index: int):
        rotary = _text_model(model).rotary_emb
        layer_type = model.config.layer_types[layer_index]
        return getattr(rotary, f"{layer_type}_inv_freq"), getattr(rotary, f"{layer_type}_attention_scaling")

    def attention_slots(self, model):
        return [(layer, "self_attn") for layer in _text_model(model).layers]

    def layer_extras(self, attn) -> dict:
        return {"layer_type": attn.layer_type, "sliding_window": attn.sliding_window, "is_sliding": attn.is_sliding}

    def check(self, spec: VariantSpec, label: str) -> None:
        if spec.merge == "aligned" and spec.variant in ("gqa", "mqa"):
            raise ValueError(
                f"{label} normalises each key head (k_norm) before RoPE, so the aligned merge's rotations would "
                "not pass through that norm; choose merge='mean' or merge='first'."
            )
        if spec.variant == "mla" and spec.form == "decoupled":
            raise ValueError(
                f"{label} normalises each whole key head (k_norm) before RoPE, so a key cannot be split into a "
                "compressed part and a separately cached RoPE part; choose form='naive'."
            )


class GPT2Family(Family):
    """GPT-2: a fused `Conv1D` `c_attn` with weight (D, 3D), Q|K|V column blocks, biases, learned positions."""

    name = "GPT-2"
    model_types = ("gpt2",)
    base_attention = GPT2Attention

    def attention_slots(self, model):
        return [(block, "attn") for block in model.transformer.h]

    def read(self, attn, shape: AttentionShape) -> HeadWeights:
        H, hd = shape.heads, shape.head_dim  # query heads (= KV heads), head dim
        D = H * hd  # d_model
        weight = _float64(attn.c_attn.weight)  # (D, 3D): Conv1D computes x @ weight, so columns are outputs
        assert weight.shape == (D, 3 * D), f"c_attn weight {tuple(weight.shape)} is not (d, 3d)"
        wq, wk, wv = (block.T.reshape(H, hd, D) for block in weight.split(D, dim=1))  # (H, hd, D) each
        bq, bk, bv = (block.view(H, hd) for block in _float64(attn.c_attn.bias).split(D))  # (H, hd) each
        wo = _float64(attn.c_proj.weight).T.reshape(D, H, hd)  # (D, H, hd): Conv1D weight is (in, out)
        return HeadWeights(wq, wk, wv, wo, bq, bk, bv, _float64(attn.c_proj.bias))

    def behaviour(self, attn) -> LayerBehaviour:
        return LayerBehaviour(
            rope=False, causal=True, scaling=attn.scaling, bias=True, output_projection=True, output_bias=True,
            qk_norm=False,
        )

    def rope(self, model, layer_index: int):
        return None

    def check(self, spec: VariantSpec, label: str) -> None:
        _check_absolute_positions(spec, label)

    def output_projection(self, attn) -> nn.Module:
        return attn.c_proj


class BertFamily(Family):
    """BERT (all-MiniLM-L6-v2): bidirectional, biases on Q/K/V, learned positions; `BertSelfAttention`
    returns the concatenated heads and `BertSelfOutput` (kept as it is) applies the output projection."""

    name = "BERT"
    model_types = ("bert",)
    base_attention = BertSelfAttention

    def attention_slots(self, model):
        encoder = model.encoder if hasattr(model, "encoder") else model.bert.encoder
        return [(layer.attention, "self") for layer in encoder.layer]

    def read(self, attn, shape: AttentionShape) -> HeadWeights:
        H, hd = shape.heads, shape.head_dim  # query heads (= KV heads), head dim
        return HeadWeights(
            wq=_float64(attn.query.weight).view(H, hd, -1),  # (H, hd, D)
            wk=_float64(attn.key.weight).view(H, hd, -1),  # (H, hd, D)
            wv=_float64(attn.value.weight).view(H, hd, -1),  # (H, hd, D)
            wo=None,  # BertSelfOutput.dense, outside this module
            bq=_float64(attn.query.bias, (H, hd)),
            bk=_float64(attn.key.bias, (H, hd)),
            bv=_float64(attn.value.bias, (H, hd)),
        )

    def behaviour(self, attn) -> LayerBehaviour:
        return LayerBehaviour(
            rope=False, causal=bool(attn.is_causal), scaling=attn.scaling, bias=True, output_projection=False,
            output_bias=False, qk_norm=False,
        )

    def rope(self, model, layer_index: int):
        return None

    def check(self, spec: VariantSpec, label: str) -> None:
        _check_absolute_positions(spec, label)
        if spec.refit == "output":
            raise ValueError(f"{label} applies its output projection outside the attention layer, so it cannot be "
                             "refitted with the layer; choose refit='none'.")


FAMILIES: tuple[Family, ...] = (Family(), Gemma3Family(), GPT2Family(), BertFamily())


def family_of(config, label: str = "the model") -> Family:
    """The adapter for a config's model type; a sentence names the supported families otherwise."""
    for family in FAMILIES:
        if config.model_type in family.model_types:
            return family
    names = ", ".join(f"{family.name} ({'/'.join(family.model_types)})" for family in FAMILIES)
    raise ValueError(
        f"Attention conversions support {names} models; {label} is a '{config.model_type}' model. "
        "Pick SmolLM2, Gemma-3, GPT-2 or all-MiniLM-L6-v2 to compare variants."
    )


# One converted class per family: the same module, registered under the family's attention class so that
# transformers records its probabilities in `outputs.attentions` (it finds attention layers by class).


class LlamaGroupedQueryAttention(GroupedQueryAttention, LlamaAttention):
    """`GroupedQueryAttention` in a Llama model."""


class Gemma3GroupedQueryAttention(GroupedQueryAttention, Gemma3Attention):
    """`GroupedQueryAttention` in a Gemma-3 model."""


class GPT2GroupedQueryAttention(GroupedQueryAttention, GPT2Attention):
    """`GroupedQueryAttention` in a GPT-2 model."""


class BertGroupedQueryAttention(GroupedQueryAttention, BertSelfAttention):
    """`GroupedQueryAttention` in a BERT model."""


class LlamaLatentAttention(MultiHeadLatentAttention, LlamaAttention):
    """`MultiHeadLatentAttention` in a Llama model."""


class Gemma3LatentAttention(MultiHeadLatentAttention, Gemma3Attention):
    """`MultiHeadLatentAttention` in a Gemma-3 model."""


class GPT2LatentAttention(MultiHeadLatentAttention, GPT2Attention):
    """`MultiHeadLatentAttention` in a GPT-2 model."""


class BertLatentAttention(MultiHeadLatentAttention, BertSelfAttention):
    """`MultiHeadLatentAttention` in a BERT model."""


CONVERTED_CLASSES: dict[type, tuple[type, type]] = {  # base attention class -> (GQA class, MLA class)
    LlamaAttention: (LlamaGroupedQueryAttention, LlamaLatentAttention),
    Gemma3Attention: (Gemma3GroupedQueryAttention, Gemma3LatentAttention),
    GPT2Attention: (GPT2GroupedQueryAttention, GPT2LatentAttention),
    BertSelfAttention: (BertGroupedQueryAttention, BertLatentAttention),
}


def _check_absolute_positions(spec: VariantSpec, label: str) -> None:
    """Refusals for families with learned absolute positions: no RoPE to decouple or to align pairs under."""
    if spec.variant == "mla" and spec.form == "decoupled":
        raise ValueError(
            f"{label} uses learned absolute positions, not RoPE, so there is no rotary key to decouple; choose "
            "form='naive', which compresses the whole keys and values into the latent (exact at full rank)."
        )
    if spec.variant in ("gqa", "mqa") and spec.merge == "aligned":
        raise ValueError(
            f"The aligned merge rotates keys per RoPE frequency pair and {label} has no RoPE; choose "
            "merge='mean' (the GQA paper's mean-pooling) or merge='first'."
        )


def _float64(tensor: torch.Tensor | None, shape: tuple[int, ...] | None = None) -> torch.Tensor | None:
    """A detached float64 copy (optionally reshaped), or None for a missing bias."""
    if tensor is None:
        return None
    copied = tensor.detach().to(device="cpu", dtype=torch.float64)
    return copied.view(shape) if shape is not None else copied


def _text_model(model):
    """The text decoder of a Gemma-3 model (`Gemma3ForCausalLM.model`, or the language model of a
    multimodal `Gemma3ForConditionalGeneration`)."""
    inner = model.model
    return getattr(inner, "language_model", inner)

