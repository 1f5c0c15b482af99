"""Decode speed: one new token per sequence with `context` tokens cached, for each attention variant, through the
lab's own variant modules (`explorer.variants`: GroupedQueryAttention for MHA/GQA/MQA, MultiHeadLatentAttention
for MLA, naive and absorbed) switched to PyTorch's fused kernel, as a serving stack would run them.

The cache is the only part written for timing: buffers allocated once for `context + 1` tokens and filled with
random values (decode time does not depend on them), so that repeated steps keep the same context instead of
growing it, and nothing is concatenated or copied per step.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import statistics
import time
from typing import Callable, Sequence

import torch

from explorer.loading import LoadedModel
from explorer.scaling.results import DECODE_NAMES, DecodePoint
from explorer.timing import synchronize
from explorer.variants.convert import convert
from explorer.variants.mla import MultiHeadLatentAttention
from explorer.variants.spec import VariantSpec

Progress = Callable[[float, str], None]  # (fraction done in [0, 1], what is happening)

# The variants timed while decoding, and the conversion of SmolLM2 (9 query heads, 3 KV heads) that gives each
# its weights. GQA keeps SmolLM2's own 3 KV heads in the lab's module (an exact conversion); MQA mean-pools
# K/V heads (GQA paper); MLA is DeepSeek-V2's decoupled form (one shared RoPE key of 32 dims, latent of 256)
# so that the same weights run both the naive and the absorbed path. Plain SVD: speed does not depend on quality.
DECODE_VARIANTS: dict[str, VariantSpec] = {
    "MHA": VariantSpec(variant="mha"),
    "GQA": VariantSpec(variant="gqa", kv_heads=3),
    "MQA": VariantSpec(variant="mqa", merge="mean"),
    "MLA naive": VariantSpec(variant="mla", form="decoupled", latent_rank=256, rope_dims=32, svd="plain",
                             merge="mean", attn_path="naive"),
    "MLA absorbed": VariantSpec(variant="mla", form="decoupled", latent_rank=256, rope_dims=32, svd="plain",
                                merge="mean", attn_path="absorb"),
}
assert tuple(DECODE_VARIANTS) == DECODE_NAMES, "the results' variant names follow DECODE_VARIANTS"


class TimingCache:
    """Every layer's cache for `context` cached tokens plus the one being decoded, filled with random values.

    It answers the `update(first, second, layer_idx)` call every variant module makes: the new token's entries
    are written at position `context` and the whole buffer is returned, so each step sees `context + 1` keys.
    MHA/GQA/MQA layers keep keys and values (B, kv, S, hd); an MLA layer keeps its latent and RoPE key side by
    side in one row (B, 1, S, r + dr), handed over as two views, which the absorbed path reads as one key.
    """

    def __init__(self, model, context: int, batch: int, generator: torch.Generator):
        self.context = context
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        for layer in model.model.layers:
            attn = layer.self_attn
            like = dict(device=attn.q_proj.weight.device, dtype=attn.q_proj.weight.dtype, generator=generator)
            if isinstance(attn, MultiHeadLatentAttention):
                r, dr = attn.mla.latent_rank, attn.mla.rope_dims
                row = torch.randn(batch, 1, context + 1, r + dr, **like)  # (B, 1, S, r+dr)
                self.layers.append((row[..., :r], row[..., r:]))  # (B, 1, S, r), (B, 1, S, dr): views of one row
            else:
                shape = (batch, attn.kv_heads, context + 1, attn.head_dim)  # (B, kv, S, hd)
                self.layers.append((torch.randn(shape, **like), torch.randn(shape, **like)))

    def update(self, first: torch.Tensor, second: torch.Tensor, layer_idx: int):
        """Write the new token's (B, heads, 1, d) entries at position `context`; return every position."""
        stored_first, stored_second = self.layers[layer_idx]
        stored_first[:, :, self.context :] = first
        stored_second[:, :, self.context :] = second
        return stored_first, stored_second  # (B, heads, S, d) each

    def nbytes(self) -> int:
        """Bytes held for the `context` cached tokens, every layer."""
        tensors = itertools.chain.from_iterable(self.layers)
        return sum(t[:, :, : self.context].numel() * t.element_size() for t in tensors)


def decode_models(loaded: LoadedModel) -> dict[str, torch.nn.Module]:
    """One model per DECODE_VARIANTS name, converted by the lab's `convert` and switched to the fused kernel.
    The absorbed MLA model shares every weight with the naive one: only the path it attends by differs."""
    models: dict[str, torch.nn.Module] = {}
    for name, spec in DECODE_VARIANTS.items():
        same_weights = [other for other in models if dataclasses.replace(DECODE_VARIANTS[other],
                                                                         attn_path=spec.attn_path) == spec]
        if same_weights:
            models[name] = _sharing_weights(models[same_weights[0]], spec.attn_path)
        else:
            models[name] = convert(loaded, spec).loaded.model
            models[name].set_attn_implementation("sdpa")  # the variant modules then attend on the fused kernel
    return models


def _sharing_weights(model: torch.nn.Module, attn_path: str) -> torch.nn.Module:
    """A copy of an MLA model that shares every parameter and buffer with it and attends by `attn_path`."""
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    twin = copy.deepcopy(model, shared)
    for module in twin.modules():
        if isinstance(module, MultiHeadLatentAttention):
            module.mla = dataclasses.replace(module.mla, attn_path=attn_path)
    return twin


def decode_step(model, context: int, batch: int, generator: torch.Generator):
    """A decode step of the whole (converted) model with `context` tokens cached, as a function to time, and
    the bytes its cache holds. The step embeds one token per sequence, runs every decoder layer of the model
    (norm, the variant's attention module, MLP) and the LM head; it writes the same position each call, so the
    context stays `context`."""
    device = model.lm_head.weight.device
    cache = TimingCache(model, context, batch, generator)
    token_ids = torch.zeros(batch, 1, dtype=torch.long, device=device)  # (B, 1)
    position_ids = torch.full((batch, 1), context, device=device)  # (B, 1)

    def step():
        h = model.model.embed_tokens(token_ids)  # (B, 1, d)
        position_embeddings = model.model.rotary_emb(h, position_ids)  # cos, sin (B, 1, hd)
        for layer in model.model.layers:
            h = layer(h, position_ids=position_ids, cache=cache, position_embeddings=position_embeddings)  # (B, 1, d)
        return model.lm_head(model.model.norm(h))  # (B, 1, vocab)

    return step, cache.nbytes()


@torch.inference_mode()
def measure_decode(
    models: dict[str, torch.nn.Module], contexts: Sequence[int], batch: int = 1, repeats: int = 3,
    progress: Progress | None = None,
) -> list[DecodePoint]:
    """Median seconds per decode step of each variant's model (by DECODE_VARIANTS name) at each context.

    The variants take turns, one step each per round, after one warm-up step each: on a shared machine a burst
    of load then slows every variant alike instead of whichever happened to be running."""
    points = []
    for i, context in enumerate(contexts):
        device = next(iter(models.values())).lm_head.weight.device
        generator = torch.Generator(device=device).manual_seed(context)
        steps = {name: decode_step(model, context, batch, generator) for name, model in models.items()}
        times: dict[str, list[float]] = {name: [] for name in models}
        for round_ in range(repeats + 1):  # round 0 warms up
            for name, (step, _) in steps.items():
                synchronize(device)
                started = time.perf_counter()
                step()
                synchronize(device)
                if round_ > 0:
                    times[name].append(time.perf_counter() - started)
        for name, (_, cache_bytes) in steps.items():
            seconds = statistics.median(times[name])
            points.append(DecodePoint(name, context, seconds, batch / seconds, cache_bytes))
        del steps
        if progress:
            speeds = ", ".join(f"{p.variant} {p.tokens_per_s:,.1f}" for p in points[-len(models):])
            progress((i + 1) / len(contexts), f"decode at {context:,} tokens cached (tokens/s): {speeds}")
    return points
