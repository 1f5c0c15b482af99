"""Convert a loaded model (Llama/SmolLM2, Gemma-3, GPT-2 or BERT) to another attention variant, on a deep copy;
the shared original is untouched.

A per-family adapter (`explorer.variants.families`) reads each layer's q/k/v/o per head into one float64
layout; the GQA and MLA maths below is the same for every family, and the result is cast back to the model's
dtype once, so exact conversions stay exact.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass

import torch

from explorer.loading import LoadedModel
from explorer.variants.allocate import allocated_ranks
from explorer.variants.calibrate import Calibration, calibrate
from explorer.variants.families import CONVERTED_CLASSES, Family, HeadWeights, family_of
from explorer.variants.mla import MLAConfig
from explorer.variants.pairs import rope_pairs_of
from explorer.variants.refit import refit_outputs
from explorer.variants.spec import AttentionShape, VariantSpec, attention_shape, check_mla, target_kv_heads


@dataclass
class Conversion:
    """A converted copy of a model, and what the conversion did."""

    loaded: LoadedModel  # the converted copy: `run_attention(conversion.loaded, text)` draws its heatmaps
    spec: VariantSpec  # the settings it was made with
    seconds: float  # wall time of the conversion (copy + weight maths), calibration pass excluded
    calibration_seconds: float  # wall time of the calibration pass it ran (0 when given one or none needed)
    latent_ranks: list[int] | None = None  # MLA: latent width per layer
    energy_kept: list[float] | None = None  # MLA: share of the (balanced) K/V output energy the latent keeps,
    # per layer: measured on calibration text for data-aware SVD, on the weights for plain SVD. In the decoupled
    # form this is the keys' non-RoPE dims and the values only; the RoPE dims are counted apart, below.
    rope_key_energy_kept: list[float] | None = None  # decoupled MLA: share of the per-head RoPE keys' energy
    # that the one shared RoPE key reproduces, per layer (same text or weights as energy_kept)
    rope_pairs: list[list[int]] | None = None  # decoupled MLA: the RoPE pairs each layer's shared key keeps
    refit_seconds: float = 0.0  # wall time of the output-projection refit (0 when none)


@dataclass
class LatentWeights:
    """An MLA layer's weights in float64 (r latent rank, dr RoPE dims, dn = hd - dr)."""

    wq: torch.Tensor  # (H, hd, D) query rows per head, laid out [q_nope | q_pe]
    bq: torch.Tensor | None  # (H, hd) query bias in the same layout
    w_down: torch.Tensor  # (r, D) latent c_kv = w_down x
    k_pe: torch.Tensor  # (dr, D) the one shared RoPE key (empty in the naive form)
    b_pe: torch.Tensor | None  # (dr,) its bias
    w_up: torch.Tensor  # (G*(dn+hd), r) per KV head [k_nope; v] = w_up c_kv + b_up
    b_up: torch.Tensor | None  # (G*(dn+hd),) the K/V biases, kept exactly on the up-projection
    wo: torch.Tensor | None  # (D, H, hd) output projection (None: it lives outside the module, BERT)
    bo: torch.Tensor | None  # (D,)


def convert(loaded: LoadedModel, spec: VariantSpec, calibration: Calibration | None = None) -> Conversion:
    """A converted deep copy of `loaded` (the original when spec.variant is 'original'); never mutates `loaded`."""
    shape = attention_shape(loaded.config, loaded.entry.label)
    if spec.variant == "original":
        return Conversion(loaded, spec, 0.0, 0.0)
    family = family_of(loaded.config, loaded.entry.label)
    family.check(spec, loaded.entry.label)
    kv_heads = target_kv_heads(spec, shape) if spec.variant != "mla" else None  # checks before any work
    ranks = check_mla(spec, shape) if spec.variant == "mla" else None
    calibration_seconds = 0.0
    if spec.uses_calibration() and calibration is None:
        calibration = calibrate(loaded, spec.calibration_tokens)
        calibration_seconds = calibration.seconds
    if spec.variant == "mla" and spec.rank_allocation == "sensitivity" and spec.layer_ranks is None:
        uniform = dataclasses.replace(spec, rank_allocation="uniform", refit="none")

        def converted_at(rank: int) -> torch.nn.Module:
            return convert(loaded, dataclasses.replace(uniform, latent_rank=rank), calibration).loaded.model

        spec = dataclasses.replace(spec, layer_ranks=tuple(allocated_ranks(loaded, spec, converted_at)))
        ranks = check_mla(spec, shape)

    started = time.perf_counter()
    model = fresh_copy(loaded.model)
    hidden = loaded.config.hidden_size
    energy_kept, rope_key_energy_kept, kept_pairs = [], [], []
    for i, (parent, name) in enumerate(family.attention_slots(model)):
        attn = getattr(parent, name)
        moment = calibration.input_moments[i] if calibration is not None else None
        weights = family.read(attn, shape)
        if spec.variant == "mla":
            latent_moment = moment if spec.svd == "data" else _identity(hidden)
            rope = family.rope(model, i)
            pairs = rope_pairs_of(weights, shape, spec, moment, rope[0] if rope is not None else None)
            latent, energy, rope_energy = to_mla(weights, shape, spec, ranks[i], latent_moment, moment, pairs)
            mla = MLAConfig(shape.heads, shape.kv_heads, shape.head_dim, ranks[i], latent.k_pe.shape[0], spec.form,
                            spec.attn_path, tuple(pairs))
            new_layer = _mla_layer(family, model, attn, i, mla, latent)
            energy_kept.append(energy)
            if rope_energy is not None:
                rope_key_energy_kept.append(rope_energy)
                kept_pairs.append(list(mla.kept_pairs))
        else:
            new_layer = _gqa_layer(family, attn, i, shape, to_gqa(weights, shape, kv_heads, spec.merge, moment))
        setattr(parent, name, new_layer)
    if kv_heads is not None and hasattr(model.config, "num_key_value_heads"):
        model.config.num_key_value_heads = kv_heads
    seconds = time.perf_counter() - started
    converted = dataclasses.replace(loaded, model=model)
    refit_seconds = refit_outputs(loaded, converted, spec.calibration_tokens) if spec.refit == "output" else 0.0
    return Conversion(converted, spec, seconds, calibration_seconds, ranks, energy_kept or None,
                      rope_key_energy_kept or None, kept_pairs or None, refit_seconds)


def to_gqa(w: HeadWeights, shape: AttentionShape, kv_heads: int, merge: str, moment) -> HeadWeights:
    """The layer's weights with `kv_heads` KV heads.

    More KV heads: repeat each (exact). Fewer: merge each group of old heads into one by its mean, its first
    head, or aligned (keys by complex PCA per RoPE frequency pair, values by PCA, rotations folded into the
    queries and the output projection). Biases follow their rows. With Gemma-3's k_norm after `k_proj`,
    mean-pooling pools the projections, not the normalised keys: the merged head is normalised as a whole.
    """
    G, hd = shape.kv_heads, shape.head_dim  # KV heads, head dim
    wq, wk, wv, wo, bk, bv = w.wq, w.wk, w.wv, w.wo, w.bk, w.bv  # (H, hd, D), (G, hd, D) x2, (D, H, hd), (G, hd) x2
    if kv_heads >= G:
        wk, wv = wk.repeat_interleave(kv_heads // G, dim=0), wv.repeat_interleave(kv_heads // G, dim=0)  # (kv, hd, D)
        bk, bv = (None if b is None else b.repeat_interleave(kv_heads // G, dim=0) for b in (bk, bv))  # (kv, hd)
        return dataclasses.replace(w, wk=wk, wv=wv, bk=bk, bv=bv)
    members = G // kv_heads  # old KV heads merged into each new one
    if merge == "aligned":
        if any(b is not None for b in (w.bq, bk, bv)):
            raise ValueError("The aligned merge supports attention layers without biases; choose merge='mean'.")
        wq, wk, wv, wo = _aligned_gqa(wq, wk.view(kv_heads, members, hd, -1), wv.view(kv_heads, members, hd, -1), wo,
                                      moment)
        return dataclasses.replace(w, wq=wq, wk=wk, wv=wv, wo=wo)
    pool = (lambda groups: groups.mean(1)) if merge == "mean" else (lambda groups: groups[:, 0])
    wk, wv = pool(wk.view(kv_heads, members, hd, -1)), pool(wv.view(kv_heads, members, hd, -1))  # (kv, hd, D)
    bk, bv = (None if b is None else pool(b.view(kv_heads, members, hd)) for b in (bk, bv))  # (kv, hd)
    return dataclasses.replace(w, wk=wk, wv=wv, bk=bk, bv=bv)


def _gqa_layer(family: Family, attn, layer_index: int, shape: AttentionShape, w: HeadWeights):
    """A new GQA module of the family's class, holding `w` in the original layer's dtype and device."""
    H, hd = shape.heads, shape.head_dim  # query heads, head dim
    kv_heads = w.wk.shape[0]
    gqa_class, _ = CONVERTED_CLASSES[family.base_attention]
    module = gqa_class(attn.config, layer_index, H, kv_heads, hd, family.behaviour(attn), family.norms(attn))
    dtype, device = _dtype_device(attn)
    module = module.to(dtype)
    _copy(module.q_proj.weight, w.wq.reshape(H * hd, -1))
    _copy(module.k_proj.weight, w.wk.reshape(kv_heads * hd, -1))
    _copy(module.v_proj.weight, w.wv.reshape(kv_heads * hd, -1))
    for bias, value in ((module.q_proj.bias, w.bq), (module.k_proj.bias, w.bk), (module.v_proj.bias, w.bv)):
        _copy_bias(bias, value)
    if module.o_proj is not None:
        _copy(module.o_proj.weight, w.wo.reshape(w.wo.shape[0], H * hd))
        _copy_bias(module.o_proj.bias, w.bo)
    for key, value in family.layer_extras(attn).items():
        setattr(module, key, value)
    return module.to(device)


def _aligned_gqa(wq, wk_groups, wv_groups, wo, moment):
    """Merge each group of KV heads along its principal directions and fold the rotations into Q and O."""
    kv_heads, members, hd, _ = wk_groups.shape  # new KV heads, old heads per new head, head dim, d_model
    H = wq.shape[0]
    old_group_size = H // (kv_heads * members)  # query heads per old KV head
    wq, wo = wq.clone(), wo.clone()
    new_k, new_v = [], []
    for j in range(kv_heads):
        k_rows, key_turns = aligned_key(wk_groups[j], moment)  # (hd, D), (m, hd/2) complex
        v_rows, value_maps = aligned_values(wv_groups[j], moment)  # (hd, D), (m, hd, hd)
        new_k.append(k_rows)
        new_v.append(v_rows)
        for member in range(members):
            old_head = j * members + member
            for h in range(old_head * old_group_size, (old_head + 1) * old_group_size):
                wq[h] = turn_pairs(wq[h], key_turns[member].conj())  # (hd, D)
                wo[:, h] = wo[:, h] @ value_maps[member]  # (D, hd)
    return wq, torch.stack(new_k), torch.stack(new_v), wo


def aligned_key(member_keys: torch.Tensor, moment: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge key heads (m, d, D) into one (d, D) per RoPE frequency pair, treating each pair as a complex number.

    Pair p of head g is z_g = k[p] + i·k[p + d/2]. The merged key is w = Σ_g conj(u_g) z_g with u the top
    eigenvector of E[z zᴴ]; a query reading head g becomes conj(u_g)·q. Multiplying by a complex number
    commutes with RoPE's rotation, so this stays exact for any position. Returns (rows, u (m, d/2) complex).
    """
    m, d, D = member_keys.shape  # member heads, dims, d_model
    z = torch.complex(member_keys[:, : d // 2], member_keys[:, d // 2 :])  # (m, P, D): P pairs
    # g, h member heads, p pair, d and e model dims
    covariance = torch.einsum("gpd,de,hpe->pgh", z, moment.to(z.dtype), z.conj())  # (P, m, m) Hermitian
    _, eigenvectors = torch.linalg.eigh(covariance)  # ascending eigenvalues
    u = eigenvectors[..., -1]  # (P, m): top direction per pair
    merged = torch.einsum("pg,gpd->pd", u.conj(), z)  # (P, D)
    return torch.cat([merged.real, merged.imag]), u.T  # (d, D), (m, P)


def turn_pairs(rows: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
    """Multiply each RoPE pair of `rows` (d, D) by a complex number: turn (d/2,) complex -> (d, D)."""
    d = rows.shape[0]
    z = torch.complex(rows[: d // 2], rows[d // 2 :]) * turn[:, None]  # (P, D)
    return torch.cat([z.real, z.imag])  # (d, D)


def aligned_values(member_values: torch.Tensor, moment: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge value heads (m, d, D) into one (d, D) by PCA of their joint outputs; v_g ≈ maps[g] @ merged."""
    m, d, D = member_values.shape
    stacked = member_values.reshape(m * d, D)  # (m*d, D)
    _, eigenvectors = torch.linalg.eigh(stacked @ moment @ stacked.T)  # (m*d, m*d), ascending
    top = eigenvectors[:, -d:]  # (m*d, d)
    return top.T @ stacked, top.view(m, d, d)  # (d, D), (m, d, d)


def to_mla(w: HeadWeights, shape: AttentionShape, spec: VariantSpec, rank: int, latent_moment, merge_moment,
           pairs: list[int] | None = None):
    """An MLA layer's weights made from `w`, the share of energy its latent keeps, and (decoupled form) the share
    of the per-head RoPE keys' energy the one shared RoPE key keeps (None in the naive form).

    K (without its RoPE part) and V of all KV heads are stacked and projected on their top-`rank` principal
    directions under `latent_moment` (identity: plain SVD of the weights; calibration moments: data-aware).
    With balancing, V is scaled to K's energy first, so neither dominates the shared latent. K/V biases are
    added after the up-projection, so they stay exact at any rank.
    """
    H, G, hd = shape.heads, shape.kv_heads, shape.head_dim  # query heads, KV heads, head dim
    rope_dims = spec.rope_dims if spec.form == "decoupled" else 0
    half = hd // 2  # RoPE pairs per head
    kept = torch.tensor(pairs, dtype=torch.long) if pairs else torch.arange(rope_dims // 2)  # (dr/2,) pairs kept
    rope_index = torch.cat([kept, kept + half])  # (dr,) rotate_half layout
    nope_index = _nope_index(hd, rope_index)  # (dn,)
    wq, wk, wv, wo = w.wq, w.wk, w.wv, w.wo  # (H, hd, D), (G, hd, D), (G, hd, D), (D, H, hd) or None
    if rope_dims and any(b is not None for b in (w.bq, w.bk)) and spec.merge == "aligned":
        raise ValueError("The aligned RoPE key supports attention layers without biases; choose merge='mean'.")

    # queries: per head [q_nope | q_pe]; the shared RoPE key merges the KV heads' RoPE rows
    q_nope, q_pe = wq[:, nope_index], wq[:, rope_index]  # (H, dn, D), (H, dr, D)
    k_pe_heads = wk[:, rope_index]  # (G, dr, D)
    turns = None
    b_pe_heads = w.bk[:, rope_index] if w.bk is not None else None  # (G, dr)
    if rope_dims == 0 or spec.merge == "mean":
        k_pe, b_pe = k_pe_heads.mean(0), (b_pe_heads.mean(0) if b_pe_heads is not None else None)  # (dr, D), (dr,)
    elif spec.merge == "first":
        k_pe, b_pe = k_pe_heads[0], (b_pe_heads[0] if b_pe_heads is not None else None)  # (dr, D), (dr,)
    else:
        k_pe, turns = aligned_key(k_pe_heads, merge_moment)  # (dr, D), (G, dr/2)
        b_pe = None
        q_pe = torch.stack([turn_pairs(q_pe[h], turns[h // (H // G)].conj()) for h in range(H)])  # (H, dr, D)

    # the joint latent of [k_nope; v] per KV head
    weighted, weights, eigenvalues, eigenvectors = latent_spectrum(wq, wk, wv, wo, spec, G, nope_index, latent_moment)
    top = eigenvectors[:, :rank]  # (G*(dn+hd), r): principal directions, largest first
    energy_kept = float(eigenvalues[:rank].sum() / eigenvalues.sum())
    w_down = top.T @ weighted  # (r, D): c_kv = w_down x = topᵀ A [k_nope; v]
    w_up = torch.linalg.solve(weights, top)  # (G*(dn+hd), r): [k_nope; v] ≈ A⁻¹ top c_kv
    b_up = None
    if w.bk is not None:
        b_up = torch.cat([w.bk[:, nope_index], w.bv], dim=1).reshape(-1)  # (G*(dn+hd),) per head [k_nope; v]
    order = torch.cat([nope_index, rope_index])  # (hd,) the query layout [q_nope | q_pe]
    latent = LatentWeights(
        wq=torch.cat([q_nope, q_pe], dim=1),  # (H, hd, D)
        bq=w.bq[:, order] if w.bq is not None else None,  # (H, hd)
        w_down=w_down, k_pe=k_pe, b_pe=b_pe, w_up=w_up, b_up=b_up, wo=wo, bo=w.bo,
    )
    rope_kept = _rope_key_kept(k_pe_heads, k_pe, turns, latent_moment) if rope_dims else None
    return latent, energy_kept, rope_kept


def _rope_key_kept(k_pe_heads: torch.Tensor, k_pe: torch.Tensor, turns, moment: torch.Tensor) -> float:
    """1 − Σ_g E‖(k_g − k̂_g) x‖² / Σ_g E‖k_g x‖²: the share of the KV heads' RoPE keys k_g (G, dr, D) that the
    key each head group reads, k̂_g, reproduces. k̂_g is the shared key (dr, D), turned per RoPE pair by
    turns[g] for the aligned merge (its queries are turned back, so the scores see k̂_g). E over `moment`.
    Floored at 0: keeping the first head's key can miss the others by more than their own size."""
    G = k_pe_heads.shape[0]
    if turns is None:
        heard = k_pe.expand(G, -1, -1)  # (G, dr, D)
    else:
        heard = torch.stack([turn_pairs(k_pe, turns[g]) for g in range(G)])  # (G, dr, D)
    error = k_pe_heads - heard  # (G, dr, D)
    lost = torch.einsum("gid,de,gie->", error, moment, error)
    total = torch.einsum("gid,de,gie->", k_pe_heads, moment, k_pe_heads)
    return max(0.0, float(1 - lost / total)) if total > 0 else 1.0


def _mla_layer(family: Family, model, attn, layer_index: int, mla: MLAConfig, w: LatentWeights):
    """A new MLA module of the family's class, holding `w` in the original layer's dtype and device."""
    _, mla_class = CONVERTED_CLASSES[family.base_attention]
    rope = family.rope(model, layer_index)
    module = mla_class(attn.config, layer_index, mla, family.behaviour(attn), rope, family.norms(attn))
    dtype, device = _dtype_device(attn)
    module = module.to(dtype)
    _copy(module.q_proj.weight, w.wq.reshape(mla.heads * mla.head_dim, -1))
    _copy_bias(module.q_proj.bias, w.bq)
    _copy(module.wkv_a.weight, torch.cat([w.w_down, w.k_pe]))
    if module.wkv_a.bias is not None:
        _copy(module.wkv_a.bias, torch.cat([torch.zeros(mla.latent_rank, dtype=torch.float64), w.b_pe]))
    _copy(module.wkv_b.weight, w.w_up)
    _copy_bias(module.wkv_b.bias, w.b_up)
    if module.o_proj is not None:
        _copy(module.o_proj.weight, w.wo.reshape(w.wo.shape[0], mla.heads * mla.head_dim))
        _copy_bias(module.o_proj.bias, w.bo)
    for key, value in family.layer_extras(attn).items():
        setattr(module, key, value)
    return module.to(device)


def latent_spectrum(wq, wk, wv, wo, spec: VariantSpec, kv_heads: int, nope_index, moment):
    """PCA of the stacked [k_nope; v] outputs of every KV head in a weighted space y' = A y (A invertible).

    Returns (A W (n, D), A (n, n), eigenvalues (n,) and eigenvectors (n, n), largest first), n = G·(dn+hd).
    A is the identity or the query/output weighting, with V scaled to K's energy when balancing, then by
    `spec.value_weight`.
    """
    rows = torch.cat([wk[:, nope_index], wv], dim=1).reshape(-1, wk.shape[-1])  # (n, D), per head [k_nope; v]
    n = rows.shape[0]
    if spec.weighting == "query-output":
        weights = _use_weights(wq, wo, kv_heads, nope_index, moment)  # (n, n)
    else:
        weights = torch.eye(n, dtype=rows.dtype)  # (n, n)
    is_value = (torch.arange(n) % (n // kv_heads)) >= len(nope_index)  # (n,)
    weighted = weights @ rows  # (n, D)
    row_energy = torch.einsum("rd,de,re->r", weighted, moment, weighted)  # (n,) E[y'_r²]
    balance = (row_energy[~is_value].sum() / row_energy[is_value].sum()).sqrt() if spec.balance_kv else 1.0
    balance = balance * spec.value_weight
    row_scale = torch.where(is_value, torch.as_tensor(balance, dtype=rows.dtype), torch.ones((), dtype=rows.dtype))
    weights = weights * row_scale[:, None]  # V rows scaled to K's energy
    weighted = weights @ rows  # (n, D)
    eigenvalues, eigenvectors = torch.linalg.eigh(weighted @ moment @ weighted.T)  # ascending
    return weighted, weights, eigenvalues.flip(0).clamp_min(0), eigenvectors.flip(-1)


def _nope_index(head_dim: int, rope_index: torch.Tensor) -> torch.Tensor:
    """Dims of a head that lose RoPE: every dim not in `rope_index` (rotate_half layout), in order."""
    rope = set(rope_index.tolist())
    return torch.tensor([i for i in range(head_dim) if i not in rope], dtype=torch.long)


def _use_weights(wq, wo, kv_heads: int, nope_index, moment) -> torch.Tensor:
    """Block-diagonal A: each key dim weighted by its RoPE pair's query energy, values by √(Σ_h W_Oₕᵀ W_Oₕ).

    An error δk changes scores by q·δk and an error δv changes the output by W_O δv; PCA in the weighted
    space keeps the directions that matter to the heads reading this KV head. Pair energies are averaged over
    the two dims of a pair so the weight commutes with RoPE's rotation.
    """
    H, hd, D = wq.shape  # query heads, head dim, d_model
    groups = H // kv_heads
    query_energy = torch.einsum("hid,de,hie->hi", wq, moment, wq)  # (H, hd): E[q_i²] per head and dim
    blocks = []
    for g in range(kv_heads):
        heads = slice(g * groups, (g + 1) * groups)
        energy = query_energy[heads].mean(0)  # (hd,)
        pair_energy = (energy + energy.roll(hd // 2)) / 2  # (hd,): same weight on both dims of a pair
        key_weight = torch.diag(pair_energy[nope_index].sqrt())  # (dn, dn)
        if wo is None:  # BERT: the output projection lives outside the attention module; weigh values evenly
            value_weight = torch.eye(hd, dtype=wq.dtype)  # (hd, hd)
        else:
            wo_g = wo[:, heads].permute(1, 0, 2)  # (groups, D, hd)
            eigenvalues, eigenvectors = torch.linalg.eigh(torch.einsum("gdi,gdj->ij", wo_g, wo_g))  # (hd,), (hd, hd)
            value_weight = eigenvectors @ torch.diag(eigenvalues.clamp_min(0).sqrt()) @ eigenvectors.T  # (hd, hd)
        blocks.append(torch.block_diag(key_weight, value_weight))
    return torch.block_diag(*blocks)  # (G*(dn+hd), G*(dn+hd))


def _copy(parameter: torch.nn.Parameter, value: torch.Tensor) -> None:
    """Copy `value` into a new module's weight, checking its shape first."""
    assert parameter.shape == value.shape, f"shape {tuple(value.shape)} does not fit {tuple(parameter.shape)}"
    with torch.no_grad():
        parameter.copy_(value.to(parameter.dtype))


def _copy_bias(parameter: torch.nn.Parameter | None, value: torch.Tensor | None) -> None:
    """Copy a bias (any shape, flattened) into a new module's bias; both exist or neither does."""
    assert (parameter is None) == (value is None), "a bias exists on one side only"
    if parameter is not None:
        _copy(parameter, value.reshape(-1))


def _dtype_device(attn) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of an attention layer's weights."""
    parameter = next(attn.parameters())
    return parameter.dtype, parameter.device


def _identity(size: int) -> torch.Tensor:
    return torch.eye(size, dtype=torch.float64)


def fresh_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy without the output-recording hooks transformers installed on the original.

    transformers installs its `outputs.attentions` hooks once per model, lazily; a copy made after that would
    keep stale hooks and never hook the new attention modules. Dropping them lets the copy install its own.
    """
    model = copy.deepcopy(model)
    for module in model.modules():
        for key, hook in list(module._forward_hooks.items()):
            if getattr(hook, "__name__", "") == "output_capturing_hook":
                del module._forward_hooks[key]
        if getattr(module, "_output_capturing_hooks_installed", False):
            module._output_capturing_hooks_installed = False
    return model
