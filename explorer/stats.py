"""Small numbers read off attention probabilities, for captions and metrics."""

import numpy as np


def future_attention_share(weights: np.ndarray) -> float:
    """Mean over heads and queries of the attention a query gives to later tokens; weights (H, T, T)."""
    if weights.ndim != 3 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(f"Expected one layer's weights (heads, query, key); got shape {weights.shape}.")
    upper = np.triu(np.ones(weights.shape[-2:], dtype=bool), k=1)  # keys after the query
    return float((weights * upper).sum(axis=(-2, -1)).mean() / weights.shape[-1])
