"""Grouped-query attention for Llama-family models: MHA, GQA and MQA are the same module with more or fewer KV heads.

Only `kv_heads` keys and values are computed and cached; they are expanded to the query heads in `repeat_kv`.
"""

from __future__ import annotations

from torch import nn
from transformers.models.llama.modeling_llama import LlamaAttention, apply_rotary_pos_emb

from explorer.attention import attend, causal_mask, repeat_kv


class GroupedQueryAttention(LlamaAttention):
    """Self-attention with `heads` query heads sharing `kv_heads` KV heads (MHA: equal; MQA: one KV head).

    It subclasses `LlamaAttention` only so that transformers records its probabilities in
    `outputs.attentions` (recorded by class); its own `__init__` and `forward` replace the parent's.
    """

    def __init__(self, config, layer_idx: int, heads: int, kv_heads: int, head_dim: int, bias: bool = False):
        nn.Module.__init__(self)
        hidden = config.hidden_size
        self.config = config
        self.layer_idx = layer_idx  # the cache slot this layer writes
        self.heads = heads  # query heads
        self.kv_heads = kv_heads  # KV heads, cached
        self.head_dim = head_dim
        self.num_key_value_groups = heads // kv_heads  # query heads per KV head
        self.scaling = head_dim**-0.5
        self.is_causal = True
        self.attention_dropout = 0.0
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=bias)
        self.hook_pattern = nn.Identity()  # tap: attention probabilities (B, H, T, S)

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
        B, T, _ = hidden_states.shape  # batch, tokens, d_model
        q = self.q_proj(hidden_states).view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.k_proj(hidden_states).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, kv, T, hd)
        v = self.v_proj(hidden_states).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, kv, T, hd)
        cos, sin = position_embeddings  # (B, T, hd) each
        q, k = apply_rotary_pos_emb(q, k, cos, sin)  # (B, H, T, hd), (B, kv, T, hd)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, kv, S, hd): only the KV heads are stored
        k = repeat_kv(k, self.num_key_value_groups)  # (B, H, S, hd)
        v = repeat_kv(v, self.num_key_value_groups)  # (B, H, S, hd)
        if attention_mask is None:
            attention_mask = causal_mask(T, k.shape[2], q.dtype, q.device)  # (1, 1, T, S)
        out, probs = attend(q, k, v, attention_mask[..., : k.shape[2]], self.scaling)  # (B, H, T, hd)
        probs = self.hook_pattern(probs)  # (B, H, T, S)
        out = out.transpose(1, 2).reshape(B, T, self.heads * self.head_dim)  # (B, T, H*hd)
        return self.o_proj(out), probs
