"""Prefill cost at one length: one decoder layer of the model over T tokens, its attention core materialised
(the eager kernel the pictures use) and fused (SDPA), the rest of the layer, and the whole layer; time and the
memory of the attention intermediates."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from explorer.attention import attend, causal_mask, repeat_kv
from explorer.loading import LoadedModel
from explorer.scaling.results import PrefillPoint
from explorer.timing import median_seconds, synchronize


def _layer_parts(layer, rotary, hidden: torch.Tensor, with_attention: bool) -> torch.Tensor:
    """One Llama decoder layer on the fast path; without the attention core when `with_attention` is False
    (the output projection then reads the queries, so every matrix product of the layer still runs)."""
    attn = layer.self_attn
    heads, kv_heads, hd = attn.config.num_attention_heads, attn.config.num_key_value_heads, attn.head_dim
    B, T, _ = hidden.shape  # batch, tokens, d_model
    positions = torch.arange(T, device=hidden.device)[None]  # (1, T)
    cos, sin = rotary(hidden, positions)  # (1, T, hd) each
    x = layer.input_layernorm(hidden)  # (B, T, d)
    q = attn.q_proj(x).view(B, T, heads, hd).transpose(1, 2)  # (B, H, T, hd)
    k = attn.k_proj(x).view(B, T, kv_heads, hd).transpose(1, 2)  # (B, kv, T, hd)
    v = attn.v_proj(x).view(B, T, kv_heads, hd).transpose(1, 2)  # (B, kv, T, hd)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)  # (B, H, T, hd), (B, kv, T, hd)
    if with_attention:
        q = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # (B, H, T, hd)
    hidden = hidden + attn.o_proj(q.transpose(1, 2).reshape(B, T, heads * hd))  # (B, T, d)
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))  # (B, T, d)


def _peak_bytes(run: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes allocated by `run()` beyond what was allocated before (CUDA only; None on a CPU)."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    with torch.inference_mode():
        run()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


@torch.inference_mode()
def measure_prefill(
    loaded: LoadedModel, tokens: int, repeats: int = 3, max_materialised_bytes: int = 3 * 2**30
) -> PrefillPoint:
    """Time one layer of the model over `tokens` tokens: the attention core materialised (the eager kernel used
    for pictures) and fused (SDPA), the rest of the layer, and the whole layer. Inputs are random at the model's
    shapes (the time does not depend on the values); the layer's weights are the model's first layer."""
    model, device, dtype = loaded.model, loaded.device, loaded.dtype
    config = model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    hd = getattr(config, "head_dim", None) or config.hidden_size // heads
    value_bytes = torch.finfo(dtype).bits // 8
    generator = torch.Generator(device="cpu").manual_seed(tokens)
    q = torch.randn(1, heads, tokens, hd, generator=generator).to(device, dtype)  # (1, H, T, hd)
    k = torch.randn(1, kv_heads, tokens, hd, generator=generator).to(device, dtype)  # (1, kv, T, hd)
    v = torch.randn(1, kv_heads, tokens, hd, generator=generator).to(device, dtype)  # (1, kv, T, hd)
    hidden = torch.randn(1, tokens, config.hidden_size, generator=generator).to(device, dtype)  # (1, T, d)
    scale = hd**-0.5

    def materialised():
        mask = causal_mask(tokens, tokens, dtype, device)  # (1, 1, T, T)
        return attend(q, repeat_kv(k, heads // kv_heads), repeat_kv(v, heads // kv_heads), mask, scale)

    def fused():
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # (1, H, T, hd)

    layer, rotary = model.model.layers[0], model.model.rotary_emb
    scores_bytes = heads * tokens * tokens * value_bytes  # one (1, H, T, T) tensor
    fits = 2 * scores_bytes + tokens * tokens * value_bytes <= max_materialised_bytes  # scores, probs, mask
    return PrefillPoint(
        tokens=tokens,
        attention_materialised_s=median_seconds(materialised, device, repeats) if fits else None,
        attention_sdpa_s=median_seconds(fused, device, repeats),
        rest_of_layer_s=median_seconds(lambda: _layer_parts(layer, rotary, hidden, False), device, repeats),
        layer_sdpa_s=median_seconds(lambda: _layer_parts(layer, rotary, hidden, True), device, repeats),
        attention_materialised_bytes=(_peak_bytes(materialised, device) or 2 * scores_bytes) if fits else None,
        # the fused kernel keeps the output (1, H, T, hd) and one log-sum-exp per row (1, H, T) in float32
        attention_sdpa_bytes=_peak_bytes(fused, device) or heads * tokens * (hd * value_bytes + 4),
    )


def sdpa_kernel(device: torch.device, dtype: torch.dtype) -> str:
    """The name of the kernel PyTorch picks for causal GQA prefill at SmolLM2's shape (e.g. flash attention)."""
    from torch.profiler import ProfilerActivity, profile

    q = torch.randn(1, 9, 64, 64, device=device, dtype=dtype)  # (1, H, T, hd)
    k = torch.randn(1, 3, 64, 64, device=device, dtype=dtype)  # (1, kv, T, hd)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler, torch.inference_mode():
        F.scaled_dot_product_attention(q, k, k, is_causal=True, enable_gqa=True)
    names = [event.key for event in profiler.key_averages() if event.key.startswith("aten::_scaled_dot_product")]
    return names[0].removeprefix("aten::") if names else "unknown"
