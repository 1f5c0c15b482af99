"""Grouped-query attention for every family: MHA, GQA and MQA are the same module with more or fewer KV heads.

Only `kv_heads` keys and values are computed and cached; they are expanded to the query heads in `repeat_kv`.
What differs by family (RoPE or learned positions, causal or bidirectional, biases, Gemma-3's q/k norms,
BERT's output projection living outside the module) is read from a `LayerBehaviour`.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from explorer.attention import attend, attend_fused, causal_mask, repeat_kv, uses_fused_kernel


class GroupedQueryAttention(nn.Module):
    """Self-attention with `heads` query heads sharing `kv_heads` KV heads (MHA: equal; MQA: one KV head).

    Each family subclasses it together with its own attention class (see `explorer.variants.families`) only so
    that transformers records its probabilities in `outputs.attentions`; its `__init__` and `forward` win.
    """

    def __init__(self, config, layer_idx: int, heads: int, kv_heads: int, head_dim: int, behaviour, norms=None):
        nn.Module.__init__(self)
        hidden = config.hidden_size
        self.config = config
        self.layer_idx = layer_idx  # the cache slot this layer writes
        self.behaviour = behaviour  # LayerBehaviour: positions, direction, biases, norms, scale
        self.heads = heads  # query heads
        self.kv_heads = kv_heads  # KV heads, cached
        self.head_dim = head_dim
        self.num_key_value_groups = heads // kv_heads  # query heads per KV head
        self.scaling = behaviour.scaling
        self.is_causal = behaviour.causal
        self.attention_dropout = 0.0
        bias = behaviour.bias
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=bias)
        self.o_proj = (
            nn.Linear(heads * head_dim, hidden, bias=behaviour.output_bias) if behaviour.output_projection else None
        )
        self.q_norm, self.k_norm = norms if norms is not None else (None, None)  # Gemma-3: RMSNorm per head
        self.hook_pattern = nn.Identity()  # tap: attention probabilities (B, H, T, S)
        self.hook_cached = nn.Identity()  # tap: (keys, values) a KV cache holds for these tokens, (B, kv, T, hd)

    def forward(self, hidden_states, attention_mask=None, cache=None, position_embeddings=None, **kwargs):
        B, T, _ = hidden_states.shape  # batch, tokens, d_model
        q = self.q_proj(hidden_states).view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.k_proj(hidden_states).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, kv, T, hd)
        v = self.v_proj(hidden_states).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, kv, T, hd)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)  # (B, H, T, hd), (B, kv, T, hd): per head, before RoPE
        if self.behaviour.rope:
            cos, sin = position_embeddings  # (B, T, hd) each
            q, k = apply_rotary_pos_emb(q, k, cos, sin)  # (B, H, T, hd), (B, kv, T, hd)
        k, v = self.hook_cached((k, v))  # (B, kv, T, hd) each
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, kv, S, hd): only the KV heads are stored
        mask = layer_mask(attention_mask, self.is_causal, T, k.shape[2], q)  # (B or 1, 1, T, S) or None
        if uses_fused_kernel(self.config):
            out, probs = attend_fused(q, k, v, mask, self.scaling)  # (B, H, T, hd), None: KV heads read in place
        else:
            k = repeat_kv(k, self.num_key_value_groups)  # (B, H, S, hd)
            v = repeat_kv(v, self.num_key_value_groups)  # (B, H, S, hd)
            out, probs = attend(q, k, v, mask, self.scaling)  # (B, H, T, hd), (B, H, T, S)
        probs = self.hook_pattern(probs)  # (B, H, T, S)
        out = out.transpose(1, 2).reshape(B, T, self.heads * self.head_dim)  # (B, T, H*hd)
        return (self.o_proj(out) if self.o_proj is not None else out), probs


def layer_mask(attention_mask, causal: bool, num_queries: int, num_keys: int, q: torch.Tensor):
    """The additive mask a layer applies: the model's own (cut to the keys present), else a causal one for
    decoders and none for encoders. One decoding query, at the last position, sees every key: no mask."""
    if attention_mask is not None:
        return attention_mask[..., :num_keys]  # (B or 1, 1, T, S)
    return causal_mask(num_queries, num_keys, q.dtype, q.device) if causal and num_queries > 1 else None
