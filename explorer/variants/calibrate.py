"""Calibration statistics for data-aware conversions: the second moment of each attention layer's input.

Any projection W then has output second moment W Σ Wᵀ, so one pass over calibration text serves every variant.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from explorer.prose import token_chunks

CHUNK_TOKENS = 512  # tokens per calibration sequence


@dataclass
class Calibration:
    """Second moments E[x xᵀ] of the inputs to every attention layer, on calibration prose."""

    input_moments: list[torch.Tensor]  # one (d_model, d_model) float64 tensor per layer
    tokens: int  # calibration tokens seen
    seconds: float  # wall time of the calibration pass


@torch.inference_mode()
def calibrate(loaded, tokens: int = 2048) -> Calibration:
    """Run `tokens` tokens of the calibration half of the prose through the original model and collect moments."""
    started = time.perf_counter()
    chunk_tokens = min(CHUNK_TOKENS, tokens)
    input_ids = token_chunks(loaded.tokenizer, "calibration", max(1, tokens // chunk_tokens), chunk_tokens)  # (N, T)
    layers = loaded.model.model.layers
    hidden = loaded.config.hidden_size
    moments = [torch.zeros(hidden, hidden, dtype=torch.float64) for _ in layers]

    def collect(layer_index):
        def hook(module, args, kwargs):
            x = kwargs["hidden_states"].reshape(-1, hidden).double().cpu()  # (N*T, d_model)
            moments[layer_index] += x.T @ x  # (d_model, d_model)

        return hook

    handles = [
        layer.self_attn.register_forward_pre_hook(collect(i), with_kwargs=True) for i, layer in enumerate(layers)
    ]
    try:
        for row in input_ids:
            loaded.model(input_ids=row[None].to(loaded.device))
    finally:
        for handle in handles:
            handle.remove()
    count = input_ids.numel()
    return Calibration([m / count for m in moments], count, time.perf_counter() - started)
