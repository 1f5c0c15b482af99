"""How much of each head's q·k each rotary frequency pair carries, measured on real text.

After RoPE a query-key score is a sum over frequency pairs: in the `rotate_half` layout of Llama and Gemma-3,
pair p is the dims (p, p + hd/2), rotated together at angle position × inv_freq[p], and

    q·k = Σ_p (q[p] k[p] + q[p + hd/2] k[p + hd/2]) = Σ_p c_p.

A pair's share of a head is the mean |c_p| over every causal (query, key) pair of the text (key at or before the
query), divided by the sum of those means over all pairs, so a head's shares add up to 1. Absolute values, not
signed ones: a pair that adds +5 to one score and -5 to another moves attention as much as one that adds +5 twice.
Every (query, key) pair weighs the same (not weighted by attention), so a pair that shapes which keys lose is
counted as much as one that shapes which key wins.

The decoupled (DeepSeek) form keeps RoPE on a few pairs only; `decoupled_pairs` names the ones it keeps today
(the `rope_dims / 2` highest-frequency pairs, see `_nope_index` in `explorer.variants.convert`), and every
function that marks kept pairs takes them as a list per layer, so another choice (by 2-norm, say) plugs in.

q and k are the model's own: forward hooks take the projections' outputs (after Gemma-3's q/k norms) and the
rotation the layer received, during one pass of the calling thread; the hooks are removed after it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from explorer.loading import LoadedModel
from explorer.prose import prose
from explorer.run import attention_modules

ROPE_TOKENS = 256  # tokens of calibration prose measured (never the evaluation half)


@dataclass(frozen=True)
class RopeShares:
    """Each head's share of |q·k| per rotary pair, on one text."""

    shares: np.ndarray  # (L, H, P) float64: share of mean |c_p| over causal pairs; sums to 1 over P
    inv_freq: np.ndarray  # (L, P) radians per token of each pair (Gemma-3's local and global layers differ)
    num_tokens: int  # tokens of the text measured
    source: str  # which text: "calibration prose" or "the lab's text"

    @property
    def wavelengths(self) -> np.ndarray:
        """(L, P) tokens per full turn of each pair: 2π / inv_freq (pair 0 turns fastest)."""
        return 2 * np.pi / self.inv_freq


def pair_contributions(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """c_p for every pair: q (T, hd) and k (S, hd), rotated, in the rotate_half layout -> (P, T, S), P = hd / 2.

    Summed over P it is q @ kᵀ exactly (the score before the 1/√d scale).
    """
    T, hd = q.shape  # query positions, head dim
    half = hd // 2
    q_pairs = torch.stack([q[:, :half], q[:, half:]], dim=-1)  # (T, P, 2)
    k_pairs = torch.stack([k[:, :half], k[:, half:]], dim=-1)  # (S, P, 2)
    # t query pos, s key pos, p pair, i the pair's two dims
    return torch.einsum("tpi,spi->pts", q_pairs, k_pairs)  # (P, T, S)


def head_shares(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(P,) share of mean |c_p| over causal (query, key) pairs, for one head: q (T, hd), k (T, hd), rotated."""
    T = q.shape[0]
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()  # (T, T): key at or before the query
    magnitude = pair_contributions(q.double(), k.double()).abs()  # (P, T, T)
    mean = magnitude[:, causal].mean(dim=-1)  # (P,)
    return mean / mean.sum()


def rotated_queries_and_keys(loaded: LoadedModel, input_ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (q (H, T, hd), k (G, T, hd)) after RoPE, as the model computed them on `input_ids` (1, T).

    Hooks read q_proj/k_proj outputs (q_norm/k_norm outputs where the layer has them: Gemma-3) and the rotation
    (cos, sin) the layer was given, then rotate as the layer does; they live for this pass of this thread only.
    """
    modules, _ = attention_modules(loaded.model)
    owner = threading.get_ident()
    seen: dict[tuple[int, str], torch.Tensor] = {}

    def keep(layer: int, name: str, value: torch.Tensor) -> None:
        if threading.get_ident() == owner:
            seen[(layer, name)] = value.detach()

    hooks = []
    for layer, module in enumerate(modules):
        if not hasattr(module, "q_proj"):
            raise ValueError(f"{type(module).__name__} keeps no q_proj: the rotary view reads Llama-style layers.")
        query_source = module.q_norm if getattr(module, "q_norm", None) is not None else module.q_proj
        key_source = module.k_norm if getattr(module, "k_norm", None) is not None else module.k_proj
        hooks.append(query_source.register_forward_hook(lambda _m, _i, out, layer=layer: keep(layer, "q", out)))
        hooks.append(key_source.register_forward_hook(lambda _m, _i, out, layer=layer: keep(layer, "k", out)))
        hooks.append(module.register_forward_pre_hook(
            lambda _m, _args, kwargs, layer=layer: keep(layer, "cos_sin", torch.stack(kwargs["position_embeddings"])),
            with_kwargs=True))
    try:
        with torch.inference_mode():
            loaded.model(input_ids=input_ids.to(loaded.device))
    finally:
        for hook in hooks:
            hook.remove()
    config = loaded.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    T = input_ids.shape[1]
    layers = []
    for layer in range(len(modules)):
        q = seen[(layer, "q")].float().reshape(1, T, heads, head_dim).transpose(1, 2)  # (1, H, T, hd)
        k = seen[(layer, "k")].float().reshape(1, T, kv_heads, head_dim).transpose(1, 2)  # (1, G, T, hd)
        cos, sin = seen[(layer, "cos_sin")].float()  # (1, T, hd) each
        q, k = apply_rotary_pos_emb(q, k, cos, sin)  # (1, H, T, hd), (1, G, T, hd)
        layers.append((q[0], k[0]))
    return layers


def measure_shares(loaded: LoadedModel, input_ids: torch.Tensor, source: str) -> RopeShares:
    """Every head's share of |q·k| per rotary pair on `input_ids` (1, T); a model without RoPE is refused."""
    from explorer.variants import family_of

    family = family_of(loaded.config, loaded.entry.label if loaded.entry else "")
    if family.rope(loaded.model, 0) is None:
        raise ValueError(f"{loaded.name} places tokens with learned absolute positions, not rotary pairs: choose "
                         "SmolLM2 or Gemma-3 to see the frequency view.")
    layers = rotated_queries_and_keys(loaded, input_ids)
    shares, inv_freq = [], []
    for layer, (q, k) in enumerate(layers):
        groups = q.shape[0] // k.shape[0]  # query heads per KV head
        shares.append(torch.stack([head_shares(q[h], k[h // groups]) for h in range(q.shape[0])]))  # (H, P)
        inv_freq.append(family.rope(loaded.model, layer)[0].double())  # (P,)
    return RopeShares(torch.stack(shares).numpy(), torch.stack(inv_freq).cpu().numpy(), input_ids.shape[1], source)


def prose_ids(loaded: LoadedModel, num_tokens: int = ROPE_TOKENS) -> torch.Tensor:
    """(1, T) the first `num_tokens` tokens of the calibration prose (the corpus half never scored)."""
    token_ids = loaded.tokenizer(prose("calibration")[: num_tokens * 8])["input_ids"][:num_tokens]
    return torch.tensor([token_ids])  # (1, T)


def decoupled_pairs(num_layers: int, rope_dims: int) -> list[list[int]]:
    """The pairs the decoupled form keeps RoPE on by default, per layer: the `rope_dims / 2` highest-frequency ones
    (a conversion with `rope_pairs="norm"` reports its own choice in `Conversion.rope_pairs`)."""
    return [list(range(rope_dims // 2)) for _ in range(num_layers)]


def kept_share(shares: np.ndarray, kept: Sequence[Sequence[int]]) -> np.ndarray:
    """(L,) the share of |q·k| the kept pairs carry in each layer, averaged over its heads: shares (L, H, P)."""
    if len(kept) != shares.shape[0]:
        raise ValueError(f"Name the kept pairs of all {shares.shape[0]} layers; got {len(kept)}.")
    return np.array([shares[layer][:, list(pairs)].sum(axis=-1).mean() for layer, pairs in enumerate(kept)])


def kept_sentence(shares: RopeShares, kept: Sequence[Sequence[int]], rope_dims: int, current: bool) -> str:
    """What the kept pairs carry, in words: the mean over layers and heads, and the layers where they carry least."""
    per_layer = kept_share(shares.shares, kept)
    lowest = np.argsort(per_layer)[:3]
    which = "this conversion keeps" if current else f"the decoupled form would keep at {rope_dims} RoPE dims"
    return (f"The pairs {which} (outlined) carry {per_layer.mean():.0%} of |q·k| on average over layers and heads "
            f"({shares.num_tokens} tokens of {shares.source}); least in layers "
            + ", ".join(f"{layer} ({per_layer[layer]:.0%})" for layer in lowest) + ". The rest of each head's "
            "score loses its position information in that form.")
