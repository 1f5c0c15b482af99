"""Explanations in plain words, one per idea, to show beside the chart they talk about.

The texts are markdown files in assets/explanations/ (our own words; papers cited by name), so they can be
read and edited without touching code. `explanation(name)` returns one of them.
"""

from __future__ import annotations

from functools import lru_cache

from explorer.paths import ASSETS_DIR

FOLDER = ASSETS_DIR / "explanations"

TOPICS = {
    "qkv": "queries, keys and values: what one row of weights is",
    "self_causal": "self, causal and cross attention, and their masks",
    "multi_head": "why a layer has several heads (and what GQA's KV labels mean)",
    "head_summaries": "entropy, attention sinks and mean distance per head",
    "quadratic_cost": "why attention costs T × T, and the ways around it",
    "kv_cache": "what the KV cache is and why it is a memory wall",
    "mqa_gqa": "multi-query and grouped-query attention",
    "mla": "multi-head latent attention: latent compression, decoupled RoPE, weight absorption",
    "uptrain": "uptraining a converted model, and why it needs a control",
    "alignment": "how Whisper's cross-attention gives each word its time in the sound",
    "rollout": "attention rollout and attention flow across layers, and why they are approximations",
}


@lru_cache(maxsize=None)
def explanation(name: str) -> str:
    """The markdown explanation called `name` (one of TOPICS)."""
    if name not in TOPICS:
        raise ValueError(f"There is no explanation called '{name}'; choose one of: {', '.join(TOPICS)}.")
    return (FOLDER / f"{name}.md").read_text(encoding="utf-8").strip()
