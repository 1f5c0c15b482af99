"""Calibration statistics for data-aware conversions: the second moment of each attention layer's input.

Any projection W then has output second moment W Σ Wᵀ, so one pass over calibration text serves every variant.
Decoders read chunks of running prose; encoders read whole documents with their special tokens, as they are
used. Both come from the calibration half of the prose, never the evaluation half.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from explorer.prose import token_chunks
from explorer.quality import ENCODER_MAX_TOKENS, document_ids
from explorer.variants.families import family_of

CHUNK_TOKENS = 512  # tokens per calibration sequence (decoders)


@dataclass
class Calibration:
    """Second moments E[x xᵀ] of the inputs to every attention layer, on calibration prose."""

    input_moments: list[torch.Tensor]  # one (d_model, d_model) float64 tensor per layer
    tokens: int  # calibration tokens seen
    seconds: float  # wall time of the calibration pass


def calibration_inputs(loaded, tokens: int) -> list[torch.Tensor]:
    """(1, T) token-id rows of calibration prose, about `tokens` tokens in all."""
    if loaded.kind == "encoder":
        return document_ids(loaded.tokenizer, "calibration", total_tokens=tokens, max_tokens=ENCODER_MAX_TOKENS)
    chunk_tokens = min(CHUNK_TOKENS, tokens)
    chunks = token_chunks(loaded.tokenizer, "calibration", max(1, tokens // chunk_tokens), chunk_tokens)  # (N, T)
    return [row[None] for row in chunks]


@torch.inference_mode()
def calibrate(loaded, tokens: int = 2048) -> Calibration:
    """Run about `tokens` tokens of calibration prose through the original model and collect input moments."""
    started = time.perf_counter()
    rows = calibration_inputs(loaded, tokens)
    layers = family_of(loaded.config, loaded.entry.label).attention_modules(loaded.model)
    hidden = loaded.config.hidden_size
    moments = [torch.zeros(hidden, hidden, dtype=torch.float64) for _ in layers]

    def collect(layer_index):
        def hook(module, args, kwargs):
            states = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # (B, T, d_model)
            x = states.reshape(-1, hidden).double().cpu()  # (B*T, d_model)
            moments[layer_index] += x.T @ x  # (d_model, d_model)

        return hook

    handles = [layer.register_forward_pre_hook(collect(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        for row in rows:
            loaded.model(input_ids=row.to(loaded.device))
    finally:
        for handle in handles:
            handle.remove()
    count = sum(row.numel() for row in rows)
    return Calibration([m / count for m in moments], count, time.perf_counter() - started)
