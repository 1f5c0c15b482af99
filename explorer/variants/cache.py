"""Measure the K/V a model really keeps or computes, per layer, from the tensors themselves.

Decoders: run a forward pass with caching and weigh the cached tensors (read by `explorer.kv.cache_tensors`,
the same reader the KV-cache page uses). Encoders keep no cache across steps: they compute keys and values
for all tokens at once and drop them, so `computed_kv` weighs the K/V tensors each layer produces in one
pass, which is what a cache would hold for those tokens. The formula beside each variant
(`explorer.variants.spec.cache_values_per_token`) must agree with both.
"""

from __future__ import annotations

import torch

from explorer.kv import cache_tensors


@torch.inference_mode()
def measured_cache(model, input_ids: torch.Tensor) -> tuple[list[int], list[int]]:
    """(values, bytes) per cached token for each layer, read from the cache tensors of one forward pass.

    Every layer's cache holds two tensors (keys and values; MLA keeps its latent and its RoPE key there),
    each (B, heads, S, d). Dividing by the S positions it holds gives the per-token size even where a
    sliding-window layer (Gemma-3) keeps only its last window of tokens.
    """
    outputs = model(input_ids=input_ids, use_cache=True)
    B = input_ids.shape[0]  # batch
    values, sizes = [], []
    for layer in outputs.cache.layers:
        tensors = cache_tensors([layer.keys, layer.values])
        values.append(sum(t.numel() // (B * t.shape[-2]) for t in tensors))
        sizes.append(sum(t.numel() * t.element_size() // (B * t.shape[-2]) for t in tensors))
    return values, sizes


@torch.inference_mode()
def computed_kv(model, attention_layers, input_ids: torch.Tensor) -> tuple[list[int], list[int]]:
    """(values, bytes) per token for each layer: the K/V tensors each attention layer computes in one pass.

    A converted layer hands them to its `hook_cached` tap ((keys, values), or MLA's (latent, RoPE key)); an
    original layer's are the outputs of its key and value projections (`key`/`value` or `k_proj`/`v_proj`).
    """
    B, T = input_ids.shape  # batch, tokens
    seen: list[list[torch.Tensor]] = [[] for _ in attention_layers]

    def keep(index):
        def hook(module, inputs, output):
            seen[index].extend(cache_tensors(output))

        return hook

    handles = []
    for i, layer in enumerate(attention_layers):
        taps = [layer.hook_cached] if hasattr(layer, "hook_cached") else _kv_projections(layer)
        handles += [tap.register_forward_hook(keep(i)) for tap in taps]
    try:
        model(input_ids=input_ids)
    finally:
        for handle in handles:
            handle.remove()
    values = [sum(t.numel() for t in tensors) // (B * T) for tensors in seen]
    sizes = [sum(t.numel() * t.element_size() for t in tensors) // (B * T) for tensors in seen]
    return values, sizes


def _kv_projections(layer) -> list[torch.nn.Module]:
    """The modules whose outputs are an original layer's keys and values."""
    for names in (("key", "value"), ("k_proj", "v_proj")):
        if all(hasattr(layer, name) for name in names):
            return [getattr(layer, name) for name in names]
    raise ValueError(f"Cannot find the key and value projections of a {type(layer).__name__} layer.")
