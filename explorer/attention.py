"""The one attention kernel every variant calls, and the helper that expands shared KV heads.

MHA, GQA, MQA and MLA differ only in how they make and cache keys and values; the softmax lives here, in two
forms: `attend` keeps the probabilities (the pictures need them), `attend_fused` runs PyTorch's fused kernel
(SDPA) and keeps none, as a fast serving path does. A model whose config asks for "eager" attention gets the
first, any other implementation ("sdpa") the second: the same switch transformers' own attention layers follow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def repeat_kv(states: torch.Tensor, groups: int) -> torch.Tensor:
    """Expand shared KV heads to one per query head: (B, kv_heads, T, hd) -> (B, kv_heads * groups, T, hd).

    Query head h reads KV head h // groups, as in transformers' `repeat_kv`.
    """
    if groups == 1:
        return states
    B, kv_heads, T, hd = states.shape  # batch, KV heads, tokens, head dim
    states = states[:, :, None, :, :].expand(B, kv_heads, groups, T, hd)  # (B, kv, groups, T, hd)
    return states.reshape(B, kv_heads * groups, T, hd)  # (B, H, T, hd)


def causal_mask(num_queries: int, num_keys: int, dtype: torch.dtype, device) -> torch.Tensor:
    """(1, 1, T, S) additive mask: query i (at position S - T + i) may attend to keys up to its position."""
    query_positions = torch.arange(num_queries, device=device)[:, None] + (num_keys - num_queries)  # (T, 1)
    key_positions = torch.arange(num_keys, device=device)[None, :]  # (1, S)
    blocked = key_positions > query_positions  # (T, S)
    mask = torch.zeros(num_queries, num_keys, dtype=dtype, device=device)  # (T, S)
    return mask.masked_fill(blocked, torch.finfo(dtype).min)[None, None]  # (1, 1, T, S)


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention: returns (out, probs).

    q: (B, H, T, dk) queries; k: (B, H or 1, S, dk) keys; v: (B, H or 1, S, dv) values. A single key/value
    head is broadcast to every query head (the absorbed MLA path attends over one shared latent this way).
    mask: additive, broadcastable to (B, H, T, S) (0 where allowed, a large negative number where not), or
    None for no mask. out: (B, H, T, dv); probs: (B, H, T, S), rows sum to 1. The softmax runs in float32
    (or float64 when the inputs are float64) and the probabilities are cast back to the inputs' dtype.
    """
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # (B, H, T, S)
    if mask is not None:
        scores = scores + mask  # (B, H, T, S)
    softmax_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    probs = torch.softmax(scores, dim=-1, dtype=softmax_dtype).to(q.dtype)  # (B, H, T, S)
    out = torch.matmul(probs, v)  # (B, H, T, dv)
    return out, probs


def attend_fused(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> tuple[torch.Tensor, None]:
    """The same attention on PyTorch's fused kernel: returns (out, None), no probabilities.

    q: (B, H, T, dk); k: (B, kv, S, dk) and v: (B, kv, S, dv) with kv dividing H: shared KV heads are read in
    place (`enable_gqa`) instead of being copied once per query head. mask: additive, as for `attend`.
    """
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=k.shape[1] != q.shape[1])
    return out, None  # (B, H, T, dv)


def uses_fused_kernel(config) -> bool:
    """Whether layers built from this config attend with the fused kernel: any implementation but "eager"."""
    return getattr(config, "_attn_implementation", None) not in (None, "eager")
