"""Latent ranks per layer from measured sensitivity: where a rank step costs the model most, keep more rank.

Each layer is converted alone at each candidate rank while every other layer sits at the uniform rank of the same
budget, and the model's KL divergence from the original's next-token predictions is measured on calibration prose
(never the evaluation prose). The ranks that minimise the summed KL for the same total cache are then chosen
exactly, by dynamic programming over layers (a multiple-choice knapsack), not greedily.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from explorer.loading import cache_dir
from explorer.variants.calibrate import calibration_inputs
from explorer.variants.families import family_of
from explorer.variants.spec import VariantSpec, attention_shape

SENSITIVITY_TOKENS = 512  # calibration tokens each measurement reads (one sequence)


@dataclass
class Sensitivity:
    """KL from the original (nats per token) with one layer at each candidate rank, the others at the base rank."""

    ranks: list[int]  # candidate latent ranks, ascending; the largest is the exact (full) rank
    kl: list[list[float]]  # (L, len(ranks)): KL with layer l at ranks[j] and every other layer at `base_rank`
    base_rank: int  # the uniform rank of the budget, held by every other layer while one is measured
    base_kl: float  # KL with every layer at the base rank
    tokens: int  # calibration tokens each measurement read
    seconds: float  # wall time of all the measurements

    def layer_costs(self) -> list[list[float]]:
        """What moving each layer from the base rank to each candidate rank adds to the KL (negative: saves)."""
        return [[value - self.base_kl for value in row] for row in self.kl]


def candidate_ranks(full_rank: int, step: int) -> list[int]:
    """Ranks step, 2·step, ... below the full rank, and the full rank itself (exact)."""
    return [*range(step, full_rank, step), full_rank]


def rank_step(spec: VariantSpec) -> int:
    """The step between candidate ranks: 64, or half the budget's rank when that is smaller (small models), so
    that layers can trade rank around the budget."""
    return max(1, min(64, spec.latent_rank // 2))


@torch.inference_mode()
def measure_sensitivity(loaded, spec: VariantSpec, converted_at: Callable[[int], torch.nn.Module],
                        progress=None) -> Sensitivity:
    """Swap one layer at a time to every candidate rank (into a copy whose other layers sit at `spec.latent_rank`)
    and measure the KL from the original on `SENSITIVITY_TOKENS` calibration tokens. `converted_at(rank)` is the
    model converted with `spec`'s settings at one uniform rank; `progress(share)` hears how far it has got."""
    started = time.perf_counter()
    shape = attention_shape(loaded.config, loaded.entry.label)
    ranks = candidate_ranks(_full_rank(spec, shape), rank_step(spec))
    ids = calibration_inputs(loaded, SENSITIVITY_TOKENS)[0].to(loaded.device)  # (1, T)
    original_logp = F.log_softmax(loaded.model(input_ids=ids).logits.float(), -1)  # (1, T, V)
    family = family_of(loaded.config, loaded.entry.label)
    layers_at = {rank: family.attention_modules(converted_at(rank)) for rank in ranks if rank != spec.latent_rank}
    working = converted_at(spec.latent_rank)  # every layer at the base rank; one slot at a time is swapped

    def kl() -> float:
        logp = F.log_softmax(working(input_ids=ids).logits.float(), -1)  # (1, T, V)
        return float(F.kl_div(logp, original_logp, log_target=True, reduction="none").sum(-1).mean())

    base_kl = kl()
    table = []
    slots = family.attention_slots(working)
    for index, (parent, name) in enumerate(slots):
        base_layer = getattr(parent, name)
        row = []
        for rank in ranks:
            if rank == spec.latent_rank:  # this layer at the base rank: the base model, measured once above
                row.append(base_kl)
                continue
            setattr(parent, name, layers_at[rank][index])
            row.append(kl())
            setattr(parent, name, base_layer)
        table.append(row)
        if progress is not None:
            progress((index + 1) / len(slots))
    return Sensitivity(ranks, table, spec.latent_rank, base_kl, ids.numel(), time.perf_counter() - started)


def _full_rank(spec: VariantSpec, shape) -> int:
    rope_dims = spec.rope_dims if spec.form == "decoupled" else 0
    return shape.kv_heads * (2 * shape.head_dim - rope_dims)


def allocate(costs: list[list[float]], ranks: list[int], budget: int) -> list[int]:
    """One rank per layer, from `ranks`, minimising the summed cost with the ranks summing to `budget` exactly
    (or to the largest total under it when no choice reaches it exactly). Dynamic programming over layers."""
    unit = math.gcd(*ranks)
    steps = [rank // unit for rank in ranks]
    limit = budget // unit
    best = {0: (0.0, [])}  # total steps used -> (cost, choices so far)
    for layer_costs in costs:
        reached = {}
        for used, (cost, chosen) in best.items():
            for choice, (size, extra) in enumerate(zip(steps, layer_costs)):
                total = used + size
                if total <= limit and (total not in reached or cost + extra < reached[total][0]):
                    reached[total] = (cost + extra, chosen + [choice])
        best = reached
    if not best:
        raise ValueError("The latent budget is smaller than the smallest rank for every layer; choose a larger rank.")
    _, chosen = best[max(best)]
    return [ranks[choice] for choice in chosen]


def cached_sensitivity(loaded, spec: VariantSpec, converted_at, progress=None) -> Sensitivity:
    """`measure_sensitivity`, kept on disk per model and settings (it takes minutes on a CPU)."""
    key = "-".join(str(part) for part in (
        loaded.entry.key, spec.form, spec.latent_rank, spec.rope_dims, spec.rope_pairs, spec.svd, spec.weighting,
        spec.balance_kv, spec.value_weight, spec.merge, spec.calibration_tokens, SENSITIVITY_TOKENS,
        str(loaded.model.dtype).removeprefix("torch."),
    ))
    path = cache_dir() / "sensitivity" / f"{key}.json"
    if path.exists():
        return Sensitivity(**json.loads(path.read_text()))
    sensitivity = measure_sensitivity(loaded, spec, converted_at, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(sensitivity)))
    return sensitivity


def allocated_ranks(loaded, spec: VariantSpec, converted_at, progress=None) -> list[int]:
    """The latent rank of each layer for `spec`'s total budget (latent_rank per layer on average), by sensitivity."""
    sensitivity = cached_sensitivity(loaded, spec, converted_at, progress)
    return allocate(sensitivity.layer_costs(), sensitivity.ranks, spec.latent_rank * len(sensitivity.kl))
