"""Multi-head latent attention (MLA) for Llama-family models, with a naive and an absorbed path side by side.

Keys and values are rebuilt from one cached latent per token (DeepSeek-V2 naming: `wkv_a` down, `wkv_b` up).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaAttention, rotate_half

from explorer.attention import attend, causal_mask, repeat_kv


@dataclass(frozen=True)
class MLAConfig:
    """The shape and behaviour of one MLA layer."""

    # heads
    heads: int  # query heads
    kv_heads: int  # KV groups the up-projection serves; query head h reads group h // (heads // kv_heads)
    head_dim: int  # dims per query/key/value head (before the nope/rope split)
    # latent
    latent_rank: int  # width of the cached joint K/V latent (c_kv)
    rope_dims: int  # dims of the one shared RoPE key k_pe, cached beside the latent (0 in the naive form)
    # behaviour
    form: Literal["naive", "decoupled"]  # naive: RoPE on the full keys after up-projection; decoupled: DeepSeek-V2
    attn_path: Literal["naive", "absorb"]  # decoupled only: expand K/V from the latent, or attend over the latent

    @property
    def nope_dims(self) -> int:
        """Dims per head of the query/key part without RoPE (q_nope, k_nope)."""
        return self.head_dim - self.rope_dims


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply RoPE in the `rotate_half` layout: x (B, H, T, d), cos and sin (B or 1, T, d)."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]  # (B, H, T, d)


class MultiHeadLatentAttention(LlamaAttention):
    """MLA converted from a Llama attention layer; caches the latent (B, 1, S, r) and the RoPE key (B, 1, S, dr).

    It subclasses `LlamaAttention` only so that transformers records its probabilities in `outputs.attentions`.
    Unlike DeepSeek there is no `kv_norm` on the latent: a training-free conversion must stay linear.
    """

    def __init__(self, config, layer_idx: int, mla: MLAConfig, rope_inv_freq: torch.Tensor, rope_scaling: float):
        nn.Module.__init__(self)
        hidden = config.hidden_size
        self.config = config
        self.layer_idx = layer_idx  # the cache slot this layer writes
        self.mla = mla
        self.head_dim = mla.head_dim
        self.num_key_value_groups = mla.heads // mla.kv_heads  # query heads per KV group
        self.scaling = mla.head_dim**-0.5  # the original model's scale: q·k still spans head_dim dims
        self.is_causal = True
        self.attention_dropout = 0.0
        self.q_proj = nn.Linear(hidden, mla.heads * mla.head_dim, bias=False)  # per head [q_nope | q_pe]
        self.wkv_a = nn.Linear(hidden, mla.latent_rank + mla.rope_dims, bias=False)  # down: [c_kv | k_pe]
        self.wkv_b = nn.Linear(mla.latent_rank, mla.kv_heads * (mla.nope_dims + mla.head_dim), bias=False)  # up
        self.o_proj = nn.Linear(mla.heads * mla.head_dim, hidden, bias=False)
        half = mla.head_dim // 2
        kept_pairs = torch.arange(mla.rope_dims // 2)  # the highest-frequency pairs keep RoPE
        self.register_buffer("rope_columns", torch.cat([kept_pairs, kept_pairs + half]), persistent=False)
        self.register_buffer("rope_inv_freq", rope_inv_freq.clone(), persistent=False)  # (hd/2,)
        self.rope_scaling = rope_scaling
        self.hook_pattern = nn.Identity()  # tap: attention probabilities (B, H, T, S)

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        mla = self.mla
        B, T, _ = hidden_states.shape  # batch, tokens, d_model
        q = self.q_proj(hidden_states).view(B, T, mla.heads, mla.head_dim).transpose(1, 2)  # (B, H, T, hd)
        kv_a = self.wkv_a(hidden_states)  # (B, T, r+dr)
        latent, k_pe = kv_a.split([mla.latent_rank, mla.rope_dims], dim=-1)  # (B, T, r), (B, T, dr)
        latent = latent[:, None]  # (B, 1, T, r)
        k_pe = k_pe[:, None]  # (B, 1, T, dr)
        cos, sin = position_embeddings  # (B, T, hd) each, for the query positions
        q_nope, q_pe = q.split([mla.nope_dims, mla.rope_dims], dim=-1)  # (B, H, T, dn), (B, H, T, dr)
        if mla.form == "decoupled":
            cos_pe, sin_pe = cos[..., self.rope_columns], sin[..., self.rope_columns]  # (B, T, dr)
            q_pe = rotate(q_pe, cos_pe, sin_pe)  # (B, H, T, dr)
            k_pe = rotate(k_pe, cos_pe, sin_pe)  # (B, 1, T, dr): rotated once, before caching
        if cache is not None:
            latent, k_pe = cache.update(latent, k_pe, self.layer_idx)  # (B, 1, S, r), (B, 1, S, dr)
        S = latent.shape[2]  # key positions
        mask = causal_mask(T, S, q.dtype, q.device) if attention_mask is None else attention_mask[..., :S]
        if mla.attn_path == "absorb":
            out, probs = self._attend_absorbed(q_nope, q_pe, latent, k_pe, mask)  # (B, H, T, hd)
        else:
            out, probs = self._attend_naive(q_nope, q_pe, latent, k_pe, mask, cos, sin)  # (B, H, T, hd)
        probs = self.hook_pattern(probs)  # (B, H, T, S)
        out = out.transpose(1, 2).reshape(B, T, mla.heads * mla.head_dim)  # (B, T, H*hd)
        return self.o_proj(out), probs

    def _attend_naive(self, q_nope, q_pe, latent, k_pe, mask, cos, sin):
        """Expand every cached latent into per-group keys and values, then attend as GQA."""
        mla = self.mla
        B, _, S, _ = latent.shape  # batch, 1, key positions, latent rank
        kv = self.wkv_b(latent[:, 0]).view(B, S, mla.kv_heads, mla.nope_dims + mla.head_dim)  # (B, S, kv, dn+hd)
        k_nope, v = kv.transpose(1, 2).split([mla.nope_dims, mla.head_dim], dim=-1)  # (B, kv, S, dn), (B, kv, S, hd)
        if mla.form == "naive":
            # RoPE after the up-projection: every past key is re-rotated at every step (cannot be absorbed).
            key_cos, key_sin = self._key_rotary(S, q_nope.dtype)  # (1, S, hd)
            q = rotate(q_nope, cos, sin)  # (B, H, T, hd)
            k = rotate(k_nope, key_cos, key_sin)  # (B, kv, S, hd)
        else:
            q = torch.cat([q_nope, q_pe], dim=-1)  # (B, H, T, hd)
            k = torch.cat([k_nope, k_pe.expand(B, mla.kv_heads, S, mla.rope_dims)], dim=-1)  # (B, kv, S, hd)
        k = repeat_kv(k, self.num_key_value_groups)  # (B, H, S, hd)
        v = repeat_kv(v, self.num_key_value_groups)  # (B, H, S, hd)
        return attend(q, k, v, mask, self.scaling)  # (B, H, T, hd), (B, H, T, S)

    def _attend_absorbed(self, q_nope, q_pe, latent, k_pe, mask):
        """Fold W_UK into the query and W_UV into the output: attend over the cached latent directly."""
        # b batch, h head, s query pos, d nope dim, e value dim, c latent
        w_uk, w_uv = self.up_weights_per_head()  # (H, dn, r), (H, hd, r)
        q_latent = torch.einsum("bhsd,hdc->bhsc", q_nope, w_uk)  # (B, H, T, r)
        q = torch.cat([q_latent, q_pe], dim=-1)  # (B, H, T, r+dr)
        k = torch.cat([latent, k_pe], dim=-1)  # (B, 1, S, r+dr): one key head shared by all query heads
        out_latent, probs = attend(q, k, latent, mask, self.scaling)  # (B, H, T, r), (B, H, T, S)
        out = torch.einsum("bhsc,hec->bhse", out_latent, w_uv)  # (B, H, T, hd)
        return out, probs

    def up_weights_per_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W_UK (H, dn, r) and W_UV (H, hd, r): the up-projection of each query head's KV group."""
        mla = self.mla
        w_ukv = self.wkv_b.weight.view(mla.kv_heads, mla.nope_dims + mla.head_dim, mla.latent_rank)  # (kv, dn+hd, r)
        w_ukv = w_ukv.repeat_interleave(self.num_key_value_groups, dim=0)  # (H, dn+hd, r)
        return w_ukv[:, : mla.nope_dims], w_ukv[:, mla.nope_dims :]

    def _key_rotary(self, num_keys: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin (1, S, hd) for key positions 0..S-1, computed as `LlamaRotaryEmbedding` does."""
        positions = torch.arange(num_keys, device=self.rope_inv_freq.device, dtype=torch.float32)  # (S,)
        freqs = positions[:, None] * self.rope_inv_freq.float()[None, :]  # (S, hd/2)
        angles = torch.cat([freqs, freqs], dim=-1)[None]  # (1, S, hd)
        return (angles.cos() * self.rope_scaling).to(dtype), (angles.sin() * self.rope_scaling).to(dtype)
