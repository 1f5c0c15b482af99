"""Numbers that describe one head in a glance, and block pooling, so long inputs stay small and readable.

A 1024-token run of SmolLM2 holds 30 × 9 × 1024 × 1024 weights (1.1 GB in float32): too much to keep or to
send to a browser. Each head is therefore reduced, as the forward pass produces it, to a few blocks and three
summaries in the spirit of Clark et al., "What Does BERT Look At?" (2019): how spread out its attention is
(entropy), how much it parks on the first token (an attention sink, Xiao et al., "Efficient Streaming Language
Models with Attention Sinks", 2023), and how far back it looks (mean attention distance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class HeadSummaries:
    """Per-head numbers for every layer; each array is (L, H): [layer, head], averaged over the queries."""

    entropy: np.ndarray  # bits; 0 = one key takes all the weight, log2(T) = spread evenly over T keys
    first_token: np.ndarray  # share of the weight on token 0 (the usual attention sink), in [0, 1]
    distance: np.ndarray  # mean |query - key| in tokens, weighted by attention: how far a head looks


def summarise_layer(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One layer's weights (H, Tq, Tk) -> entropy, first-token share and mean distance, each (H,).

    Query i sits at key position i + (Tk - Tq), so the same formula serves a prefix that is being extended.
    """
    if weights.ndim != 3:
        raise ValueError(f"Expected one layer's weights (heads, query, key); got shape {weights.shape}.")
    _, num_queries, num_keys = weights.shape
    weights = weights.astype(np.float32, copy=False)
    logs = np.log2(np.maximum(weights, np.float32(1e-30)))  # (H, Tq, Tk); zero weights add nothing below
    entropy = -(weights * logs).sum(axis=-1).mean(axis=-1)  # (H,)
    first_token = weights[:, :, 0].mean(axis=-1)  # (H,)
    query_positions = np.arange(num_queries)[:, None] + (num_keys - num_queries)  # (Tq, 1)
    gaps = np.abs(query_positions - np.arange(num_keys)[None, :]).astype(np.float32)  # (Tq, Tk)
    distance = (weights * gaps).sum(axis=-1).mean(axis=-1)  # (H,)
    return entropy, first_token, distance


def block_edges(num_tokens: int, size: int) -> np.ndarray:
    """(n + 1,) token boundaries of n = min(num_tokens, size) nearly equal blocks: block b is [e[b], e[b+1])."""
    if num_tokens < 1 or size < 1:
        raise ValueError(f"Cannot split {num_tokens} tokens into {size} blocks; both must be at least 1.")
    return np.linspace(0, num_tokens, min(num_tokens, size) + 1).astype(int)


def pool(weights: np.ndarray, size: int) -> np.ndarray:
    """(..., T, T) -> (..., size, size) blocks so long inputs stay small; unchanged if T <= size.

    A block holds the attention its queries give (on average) to its keys, so rows still sum to 1.
    """
    num_tokens = weights.shape[-1]
    if num_tokens <= size:
        return weights
    edges = block_edges(num_tokens, size)
    rows = np.add.reduceat(weights, edges[:-1], axis=-2) / np.diff(edges)[:, None]  # mean over queries
    return np.add.reduceat(rows, edges[:-1], axis=-1)  # sum over keys


def block_labels(tokens: list[str], edges: np.ndarray) -> list[str]:
    """A label per block: its single token ("#5 apple") or its token range ("#32–63")."""
    return [f"#{a} {tokens[a]}" if b - a == 1 else f"#{a}–{b - 1}" for a, b in zip(edges[:-1], edges[1:])]
