"""Measure the KV cache a model really keeps, per layer: run a forward pass with caching and weigh the cached tensors.

The formula beside each variant (`explorer.variants.spec.cache_values_per_token`) must agree with this; the
tensors are read by `explorer.kv.cache_tensors`, the same reader the KV-cache page uses.
"""

from __future__ import annotations

import torch

from explorer.kv import cache_tensors


@torch.inference_mode()
def measured_cache(model, input_ids: torch.Tensor) -> tuple[list[int], list[int]]:
    """(values, bytes) per token for each layer, read from the cache tensors of one forward pass.

    Every layer's cache holds two tensors (keys and values; MLA keeps its latent and its RoPE key there).
    """
    outputs = model(input_ids=input_ids, use_cache=True)
    B, T = input_ids.shape  # batch, tokens
    values, sizes = [], []
    for layer in outputs.cache.layers:
        tensors = cache_tensors([layer.keys, layer.values])
        values.append(sum(t.numel() for t in tensors) // (B * T))
        sizes.append(sum(t.numel() * t.element_size() for t in tensors) // (B * T))
    return values, sizes
