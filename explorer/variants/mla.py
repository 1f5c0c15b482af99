"""Multi-head latent attention (MLA) for every family, with a naive and an absorbed path side by side.

Keys and values are rebuilt from one cached latent per token (DeepSeek-V2 naming: `wkv_a` down, `wkv_b` up).
Families without RoPE (GPT-2, BERT) use the naive form with no rotation: the latent is a plain low-rank K/V.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from transformers.models.llama.modeling_llama import rotate_half

from explorer.attention import attend, attend_fused, repeat_kv, uses_fused_kernel
from explorer.variants.gqa import layer_mask


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
    rope_pairs: tuple[int, ...] = ()  # decoupled only: the RoPE pairs the shared key keeps (pair p rotates dims p
    # and p + hd/2 at frequency θ_p); empty: the rope_dims/2 highest frequencies, pairs 0, 1, ...

    @property
    def kept_pairs(self) -> tuple[int, ...]:
        """The RoPE pairs that keep rotation, in the order the shared RoPE key lays them out."""
        return self.rope_pairs or tuple(range(self.rope_dims // 2))

    @property
    def nope_dims(self) -> int:
        """Dims per head of the query/key part without RoPE (q_nope, k_nope)."""
        return self.head_dim - self.rope_dims


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply RoPE in the `rotate_half` layout: x (B, H, T, d), cos and sin (B or 1, T, d)."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]  # (B, H, T, d)


class MultiHeadLatentAttention(nn.Module):
    """MLA converted from an attention layer; caches the latent (B, 1, S, r) and the RoPE key (B, 1, S, dr).

    Each family subclasses it with its own attention class only so that transformers records its
    probabilities in `outputs.attentions`. Unlike DeepSeek there is no `kv_norm` on the latent: a
    training-free conversion must stay linear. K/V biases live on the up-projection (exact at any rank; the
    absorbed path folds them in, see `_attend_absorbed`); Gemma-3's k_norm acts on each key head after the
    up-projection, as it did after `k_proj`. With a fused-kernel config ("sdpa") both paths attend on PyTorch's
    fused kernel and record no probabilities (see `explorer.attention`).
    """

    def __init__(self, config, layer_idx: int, mla: MLAConfig, behaviour, rope=None, norms=None):
        nn.Module.__init__(self)
        hidden = config.hidden_size
        self.config = config
        self.layer_idx = layer_idx  # the cache slot this layer writes
        self.mla = mla
        self.behaviour = behaviour  # LayerBehaviour: positions, direction, biases, norms, scale
        self.head_dim = mla.head_dim
        self.num_key_value_groups = mla.heads // mla.kv_heads  # query heads per KV group
        self.scaling = behaviour.scaling  # the original model's scale: q·k still spans head_dim dims
        self.is_causal = behaviour.causal
        self.attention_dropout = 0.0
        bias = behaviour.bias
        self.q_proj = nn.Linear(hidden, mla.heads * mla.head_dim, bias=bias)  # per head [q_nope | q_pe]
        self.wkv_a = nn.Linear(hidden, mla.latent_rank + mla.rope_dims, bias=bias and mla.rope_dims > 0)  # down:
        # [c_kv | k_pe]; only the RoPE key can carry a bias (the latent's is zero, K/V biases sit on wkv_b)
        self.wkv_b = nn.Linear(mla.latent_rank, mla.kv_heads * (mla.nope_dims + mla.head_dim), bias=bias)  # up
        self.o_proj = (
            nn.Linear(mla.heads * mla.head_dim, hidden, bias=behaviour.output_bias)
            if behaviour.output_projection
            else None
        )
        self.q_norm, self.k_norm = norms if norms is not None else (None, None)  # Gemma-3: RMSNorm per head
        half = mla.head_dim // 2
        kept_pairs = torch.tensor(mla.kept_pairs, dtype=torch.long)  # (dr/2,) the pairs that keep RoPE
        self.register_buffer("rope_columns", torch.cat([kept_pairs, kept_pairs + half]), persistent=False)
        inv_freq, self.rope_scaling = rope if rope is not None else (torch.zeros(0), 1.0)
        self.register_buffer("rope_inv_freq", inv_freq.clone(), persistent=False)  # (hd/2,), empty without RoPE
        self.hook_pattern = nn.Identity()  # tap: attention probabilities (B, H, T, S)
        self.hook_cached = nn.Identity()  # tap: (latent (B, 1, T, r), k_pe (B, 1, T, dr)), what the cache holds

    def forward(self, hidden_states, attention_mask=None, cache=None, position_embeddings=None, **kwargs):
        mla = self.mla
        B, T, _ = hidden_states.shape  # batch, tokens, d_model
        q = self.q_proj(hidden_states).view(B, T, mla.heads, mla.head_dim).transpose(1, 2)  # (B, H, T, hd)
        if self.q_norm is not None:
            q = self.q_norm(q)  # (B, H, T, hd): naive form only, where q keeps its original layout
        kv_a = self.wkv_a(hidden_states)  # (B, T, r+dr)
        latent, k_pe = kv_a.split([mla.latent_rank, mla.rope_dims], dim=-1)  # (B, T, r), (B, T, dr)
        latent = latent[:, None]  # (B, 1, T, r)
        k_pe = k_pe[:, None]  # (B, 1, T, dr)
        cos, sin = position_embeddings if self.behaviour.rope else (None, None)  # (B, T, hd) each
        q_nope, q_pe = q.split([mla.nope_dims, mla.rope_dims], dim=-1)  # (B, H, T, dn), (B, H, T, dr)
        if mla.form == "decoupled":
            cos_pe, sin_pe = cos[..., self.rope_columns], sin[..., self.rope_columns]  # (B, T, dr)
            q_pe = rotate(q_pe, cos_pe, sin_pe)  # (B, H, T, dr)
            k_pe = rotate(k_pe, cos_pe, sin_pe)  # (B, 1, T, dr): rotated once, before caching
        latent, k_pe = self.hook_cached((latent, k_pe))  # (B, 1, T, r), (B, 1, T, dr)
        if cache is not None:
            latent, k_pe = cache.update(latent, k_pe, self.layer_idx)  # (B, 1, S, r), (B, 1, S, dr)
        S = latent.shape[2]  # key positions
        mask = layer_mask(attention_mask, self.is_causal, T, S, q)  # (B or 1, 1, T, S) or None
        if mla.attn_path == "absorb":
            out, probs = self._attend_absorbed(q_nope, q_pe, latent, k_pe, mask)  # (B, H, T, hd)
        else:
            positions = kwargs.get("position_ids")  # (B, T) or None
            out, probs = self._attend_naive(q_nope, q_pe, latent, k_pe, mask, cos, sin, positions)  # (B, H, T, hd)
        probs = self.hook_pattern(probs)  # (B, H, T, S)
        out = out.transpose(1, 2).reshape(B, T, mla.heads * mla.head_dim)  # (B, T, H*hd)
        return (self.o_proj(out) if self.o_proj is not None else out), probs

    def _attend_naive(self, q_nope, q_pe, latent, k_pe, mask, cos, sin, positions=None):
        """Expand every cached latent into per-group keys and values, then attend as GQA."""
        mla = self.mla
        B, _, S, _ = latent.shape  # batch, 1, key positions, latent rank
        kv = self.wkv_b(latent[:, 0]).view(B, S, mla.kv_heads, mla.nope_dims + mla.head_dim)  # (B, S, kv, dn+hd)
        k_nope, v = kv.transpose(1, 2).split([mla.nope_dims, mla.head_dim], dim=-1)  # (B, kv, S, dn), (B, kv, S, hd)
        if mla.form == "naive":
            if self.k_norm is not None:
                k_nope = self.k_norm(k_nope)  # (B, kv, S, hd): Gemma-3 normalises each key head before RoPE
            q, k = q_nope, k_nope  # (B, H, T, hd), (B, kv, S, hd): learned absolute positions need no rotation
            if self.behaviour.rope:
                # RoPE after the up-projection: every past key is re-rotated at every step (cannot be absorbed).
                key_cos, key_sin = self._key_rotary(S, positions, q_nope.dtype)  # (1, S, hd)
                q = rotate(q_nope, cos, sin)  # (B, H, T, hd)
                k = rotate(k_nope, key_cos, key_sin)  # (B, kv, S, hd)
        else:
            q = torch.cat([q_nope, q_pe], dim=-1)  # (B, H, T, hd)
            k = torch.cat([k_nope, k_pe.expand(B, mla.kv_heads, S, mla.rope_dims)], dim=-1)  # (B, kv, S, hd)
        if uses_fused_kernel(self.config):
            return attend_fused(q, k, v, mask, self.scaling)  # (B, H, T, hd), None: KV groups read in place
        k = repeat_kv(k, self.num_key_value_groups)  # (B, H, S, hd)
        v = repeat_kv(v, self.num_key_value_groups)  # (B, H, S, hd)
        return attend(q, k, v, mask, self.scaling)  # (B, H, T, hd), (B, H, T, S)

    def _attend_absorbed(self, q_nope, q_pe, latent, k_pe, mask):
        """Fold W_UK into the query and W_UV into the output: attend over the cached latent directly.

        The up-projection's K/V biases fold in exactly. A key bias b_k adds q·b_k to every score of a query,
        the same for every key, so the softmax ignores it. A value bias passes straight through, because a
        query's attention weights sum to 1: Σₛ pₛ (W_UV cₛ + b_v) = W_UV (Σₛ pₛ cₛ) + b_v.
        """
        mla = self.mla
        B, H, T, _ = q_nope.shape  # batch, query heads, query positions, nope dims
        G, groups, r = mla.kv_heads, self.num_key_value_groups, mla.latent_rank  # KV groups, heads per group
        S = latent.shape[2]  # key positions
        w_uk, w_uv = self.up_weights_per_group()  # (G, dn, r), (G, hd, r)
        # b batch, g KV group, j head within the group, s query pos, d nope dim, e value dim, c latent
        q_latent = torch.einsum("bgjsd,gdc->bgjsc", q_nope.reshape(B, G, groups, T, -1), w_uk)  # (B, G, j, T, r)
        q = torch.cat([q_latent.reshape(B, H, T, r), q_pe], dim=-1)  # (B, H, T, r+dr)
        if uses_fused_kernel(self.config):
            # One key head (latent | RoPE key) serves every query head: the H heads become H·T query rows of one
            # head, so nothing is expanded per head (DeepSeek attends this way). The cached row doubles as the
            # value, keeping key and value widths equal for the fused kernel; its last dr columns are dropped.
            key = side_by_side(latent, k_pe)  # (B, 1, S, r+dr)
            rows = q.reshape(B, 1, H * T, r + mla.rope_dims)  # (B, 1, H*T, r+dr)
            if mask is not None:
                mask = mask.expand(mask.shape[0], H, T, S).reshape(mask.shape[0], 1, H * T, S)  # (B or 1, 1, H*T, S)
            out_rows, probs = attend_fused(rows, key, key, mask, self.scaling)  # (B, 1, H*T, r+dr), None
            out_latent = out_rows[..., :r].reshape(B, H, T, r)  # (B, H, T, r)
        else:
            key = torch.cat([latent, k_pe], dim=-1)  # (B, 1, S, r+dr): one key head shared by all query heads
            out_latent, probs = attend(q, key, latent, mask, self.scaling)  # (B, H, T, r), (B, H, T, S)
        out = torch.einsum("bgjsc,gec->bgjse", out_latent.reshape(B, G, groups, T, r), w_uv)  # (B, G, j, T, hd)
        out = out.reshape(B, H, T, mla.head_dim)  # (B, H, T, hd)
        if self.wkv_b.bias is not None:
            b_v = self.wkv_b.bias.view(G, mla.nope_dims + mla.head_dim)[:, mla.nope_dims :]  # (G, hd)
            out = out + b_v.repeat_interleave(groups, dim=0)[None, :, None, :]  # (B, H, T, hd)
        return out, probs

    def up_weights_per_group(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W_UK (G, dn, r) and W_UV (G, hd, r): the up-projection of each KV group, as views of `wkv_b`
        (query head h reads group h // (heads / G))."""
        mla = self.mla
        w_ukv = self.wkv_b.weight.view(mla.kv_heads, mla.nope_dims + mla.head_dim, mla.latent_rank)  # (G, dn+hd, r)
        return w_ukv[:, : mla.nope_dims], w_ukv[:, mla.nope_dims :]

    def _key_rotary(self, num_keys: int, query_positions, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin (1, S, hd) for the S cached keys, computed as the model's rotary embedding does.

        The keys are the S positions that end at the last query's: 0..S-1 with a full cache, the most recent
        S with a sliding-window cache (Gemma-3's local layers keep only their window).
        """
        last = int(query_positions[0, -1]) if query_positions is not None else num_keys - 1
        first = last - num_keys + 1
        positions = torch.arange(first, last + 1, device=self.rope_inv_freq.device, dtype=torch.float32)  # (S,)
        freqs = positions[:, None] * self.rope_inv_freq.float()[None, :]  # (S, hd/2)
        angles = torch.cat([freqs, freqs], dim=-1)[None]  # (1, S, hd)
        return (angles.cos() * self.rope_scaling).to(dtype), (angles.sin() * self.rope_scaling).to(dtype)


def side_by_side(latent: torch.Tensor, k_pe: torch.Tensor) -> torch.Tensor:
    """latent (B, 1, S, r) and k_pe (B, 1, S, dr) joined into one key (B, 1, S, r+dr).

    A cache that stores each token's latent and RoPE key side by side in one row (DeepSeek's inference code
    does) hands over two views of that row: they are read as one tensor, without copying the cache each step.
    Anything else is concatenated.
    """
    r, dr = latent.shape[-1], k_pe.shape[-1]
    adjacent = (
        latent.stride() == k_pe.stride() and latent.stride(-1) == 1 and latent.stride(-2) == r + dr
        and k_pe.data_ptr() == latent.data_ptr() + r * latent.element_size()
        and latent.untyped_storage().data_ptr() == k_pe.untyped_storage().data_ptr()
    )
    if adjacent:
        return latent.as_strided((*latent.shape[:-1], r + dr), latent.stride())  # (B, 1, S, r+dr), a view
    return torch.cat([latent, k_pe], dim=-1)  # (B, 1, S, r+dr)
