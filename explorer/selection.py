"""Which tokens a view keeps: several query tokens summed, and special tokens hidden with rows renormalised."""

from __future__ import annotations

import numpy as np


def special_positions(token_ids: list[int], special_ids: set[int]) -> list[int]:
    """Positions of special tokens (BOS, CLS, SEP, ...) in a text's token ids."""
    return [position for position, token_id in enumerate(token_ids) if token_id in special_ids]


def hide_tokens(weights: np.ndarray, hidden: list[int]) -> tuple[np.ndarray, list[int]]:
    """Drop the `hidden` positions from the last two axes of (..., T, T) weights and renormalise each row over the
    keys that remain, so rows sum to 1 again; returns the weights and the positions kept.

    A row whose kept keys received no weight at all (a causal first row that saw only a hidden token) stays zero.
    """
    num_tokens = weights.shape[-1]
    kept = [p for p in range(num_tokens) if p not in set(hidden)]
    if not kept:
        raise ValueError("Every token of this text is a special token: there is nothing left to show.")
    rows = weights[..., kept, :][..., kept]  # (..., K, K)
    totals = rows.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        renormalised = np.where(totals > 0, rows / totals, 0.0)
    return renormalised.astype(weights.dtype, copy=False), kept


def summed_rows(weights: np.ndarray, queries: list[int]) -> np.ndarray:
    """(T,) the attention that the `queries` rows of one head's (T, T) weights give each key, summed: a span of
    n query tokens hands out n in all."""
    if not queries:
        raise ValueError("Choose at least one query token.")
    if max(queries) >= weights.shape[0] or min(queries) < 0:
        raise ValueError(f"Query tokens run from 0 to {weights.shape[0] - 1}.")
    return weights[sorted(set(queries))].sum(axis=0)
