"""Which RoPE pairs the decoupled (DeepSeek) form keeps rotating in its one shared key, per layer.

By default the highest frequencies; or by MHA2MLA's 2-norm rule, or by that norm times how far each pair turns over
a context, all measured on calibration text through the layer's input moment.
"""

from __future__ import annotations

import torch

from explorer.variants.families import HeadWeights
from explorer.variants.spec import AttentionShape, VariantSpec

ROTATION_CONTEXT = 512  # distances the rotation rule averages over: the calibration sequences' length


def rope_pairs_of(w: HeadWeights, shape: AttentionShape, spec: VariantSpec, moment, inv_freq=None) -> list[int]:
    """The RoPE pairs the decoupled form keeps in this layer (empty: the highest frequencies, pairs 0, 1, ...).

    One choice for the layer's one shared key, from calibration text. By norm (MHA2MLA's 2-norm rule): pair p
    scores Σ_h √E‖q_{h,p}‖² · √E‖k_{g(h),p}‖², a bound on how much of q·k it can carry. By rotation: that bound
    times the mean |2 sin(θ_p Δ / 2)| over distances Δ = 0 … 511, a bound on how much of q·k changes when the pair
    stops rotating (a slow pair barely turns over a context, so losing its rotation costs little).
    """
    if spec.variant != "mla" or spec.form != "decoupled" or spec.rope_pairs == "highest":
        return []
    H, G, hd = shape.heads, shape.kv_heads, shape.head_dim  # query heads, KV heads, head dim
    half = hd // 2

    def pair_norms(rows):  # (n, hd, D) -> (n, hd/2): √E‖·‖² of each pair's two dims
        energy = torch.einsum("nid,de,nie->ni", rows, moment, rows)  # (n, hd)
        return (energy[:, :half] + energy[:, half:]).sqrt()

    query, key = pair_norms(w.wq), pair_norms(w.wk)  # (H, hd/2), (G, hd/2)
    score = (query * key.repeat_interleave(H // G, dim=0)).sum(0)  # (hd/2,)
    if spec.rope_pairs == "rotation":
        distances = torch.arange(ROTATION_CONTEXT, dtype=torch.float64)  # (Δ,)
        turned = (2 * torch.sin(inv_freq.double()[:, None] * distances[None] / 2)).abs().mean(1)  # (hd/2,)
        score = score * turned
    return sorted(score.topk(spec.rope_dims // 2).indices.tolist())
