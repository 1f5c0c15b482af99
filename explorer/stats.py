"""Small numbers read off attention probabilities, for captions and metrics."""

import numpy as np


def future_attention_share(weights: np.ndarray) -> float:
    """Mean over heads and queries of the attention a query gives to later tokens; weights (H, T, T)."""
    if weights.ndim != 3 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(f"Expected one layer's weights (heads, query, key); got shape {weights.shape}.")
    upper = np.triu(np.ones(weights.shape[-2:], dtype=bool), k=1)  # keys after the query
    return float((weights * upper).sum(axis=(-2, -1)).mean() / weights.shape[-1])


def pattern_similarity(weights: np.ndarray) -> np.ndarray:
    """How alike the heads of one layer look: (H, T, T) -> (H, H), the mean over queries of the cosine
    similarity between two heads' rows (1 = the same pattern, 0 = they attend to disjoint keys)."""
    if weights.ndim != 3 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(f"Expected one layer's weights (heads, query, key); got shape {weights.shape}.")
    norms = np.linalg.norm(weights, axis=-1, keepdims=True)  # (H, T, 1)
    unit = weights / np.maximum(norms, 1e-12)  # (H, T, T), each row of length 1
    return np.einsum("hqk,gqk->hgq", unit, unit).mean(axis=-1)  # (H, H)


def group_similarity(similarity: np.ndarray, kv_heads: int) -> list[float]:
    """Mean similarity between different heads of each KV group: (H, H) -> one number per KV head."""
    num_heads = similarity.shape[0]
    if num_heads % kv_heads:
        raise ValueError(f"{num_heads} query heads cannot share {kv_heads} KV heads evenly.")
    size = num_heads // kv_heads
    means = []
    for group in range(kv_heads):
        block = similarity[group * size : (group + 1) * size, group * size : (group + 1) * size]
        means.append(float((block.sum() - np.trace(block)) / (size * size - size)) if size > 1 else 1.0)
    return means
