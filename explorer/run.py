"""Run a text through a loaded model and keep what the pictures need: tokens, attention, masks.

The result is plain numpy so that charts and pages never touch the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from explorer.catalogue import ModelKind
from explorer.loading import LoadedModel

MAX_TOKENS = 512  # longest input drawn in full; longer text is truncated with a notice


@dataclass
class AttentionRun:
    """One forward pass: what the model saw and where every head looked."""

    text: str  # the text as given
    token_ids: list[int]  # what the model saw, special tokens included
    tokens: list[str]  # a readable label per token, same order as token_ids
    attentions: np.ndarray  # (L, H, T, T) float32: [layer, head, query, key], rows sum to 1
    masks: np.ndarray  # (L, T, T) bool: True where a query may attend to a key
    layer_windows: list[int | None]  # sliding window per layer (None: full attention)
    kind: ModelKind  # decoder (causal mask) or encoder (no mask)
    truncated: bool  # the text had more than `max_tokens` tokens and was cut
    forward_seconds: float  # wall time of the forward pass

    @property
    def num_layers(self) -> int:
        return self.attentions.shape[0]

    @property
    def num_heads(self) -> int:
        return self.attentions.shape[1]


def readable_tokens(tokenizer, token_ids: list[int]) -> list[str]:
    """One short label per token, as text rather than byte-level symbols ('Ġthe' -> 'the')."""
    labels = []
    for token_id in token_ids:
        text = tokenizer.decode([token_id])
        text = text.replace("\n", "↵").replace("\t", "⇥").strip()
        labels.append(text if text else "␣")
    return labels


def layer_windows(config) -> list[int | None]:
    """The sliding window of each layer (None where a layer attends to the whole prefix)."""
    num_layers = config.num_hidden_layers
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return [window if kind == "sliding_attention" else None for kind in layer_types]
    if window and getattr(config, "use_sliding_window", True):
        return [window] * num_layers
    return [None] * num_layers


def attention_mask(kind: ModelKind, num_tokens: int, window: int | None) -> np.ndarray:
    """(T, T) bool: may query i attend to key j? Causal for decoders, banded by a sliding window."""
    if kind == "encoder":
        return np.ones((num_tokens, num_tokens), dtype=bool)
    query = np.arange(num_tokens)[:, None]
    key = np.arange(num_tokens)[None, :]
    allowed = key <= query
    if window is not None:
        allowed &= query - key < window
    return allowed


def encode(loaded: LoadedModel, text: str, max_tokens: int = MAX_TOKENS) -> tuple[list[int], bool]:
    """Token ids for `text` (special tokens as the model expects them), cut to `max_tokens`."""
    token_ids = loaded.tokenizer(text)["input_ids"]
    if len(token_ids) <= max_tokens:
        return token_ids, False
    return token_ids[:max_tokens], True


@torch.inference_mode()
def run_attention(loaded: LoadedModel, text: str, max_tokens: int = MAX_TOKENS) -> AttentionRun:
    """Run `text` through the model once and collect every layer's attention probabilities."""
    if not text.strip():
        raise ValueError("The text is empty: type a sentence to see where the model attends.")
    token_ids, truncated = encode(loaded, text, max_tokens)
    input_ids = torch.tensor([token_ids], device=loaded.device)  # (1, T)
    started = time.perf_counter()
    outputs = loaded.model(input_ids=input_ids, output_attentions=True)
    forward_seconds = time.perf_counter() - started
    if not outputs.attentions:
        raise RuntimeError("The model returned no attention weights; load it with eager attention.")
    attentions = torch.stack(outputs.attentions)[:, 0].float().cpu().numpy()  # (L, H, T, T)
    windows = layer_windows(loaded.config)
    masks = np.stack([attention_mask(loaded.kind, len(token_ids), w) for w in windows])  # (L, T, T)
    return AttentionRun(
        text=text,
        token_ids=token_ids,
        tokens=readable_tokens(loaded.tokenizer, token_ids),
        attentions=attentions,
        masks=masks,
        layer_windows=windows,
        kind=loaded.kind,
        truncated=truncated,
        forward_seconds=forward_seconds,
    )
