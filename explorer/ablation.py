"""Head ablation: switch off heads of a real decoder and measure what changes, the shared model left untouched.

A head is switched off by zeroing its slice of the input to its layer's output projection (`o_proj`): the head's
weighted values no longer reach the residual stream, and nothing else in that layer changes (its own attention
and every other head's are computed as before). Hooks live only for the one pass of the calling thread and are
removed after it, so the cached model that every session shares is never modified.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from explorer.loading import LoadedModel
from explorer.run import attention_modules, encode

TOP_K = 5  # next-token candidates shown before and after


@dataclass
class Prediction:
    """What a decoder says about a text: its next-token distribution and its loss on the text itself."""

    probabilities: np.ndarray  # (V,) float32: the next token's probabilities after the last position
    loss: float  # mean next-token cross-entropy over the text, nats (NaN for a one-token text)

    def top(self, k: int = TOP_K) -> list[int]:
        """The ids of the k likeliest next tokens, likeliest first."""
        return np.argsort(-self.probabilities)[:k].tolist()


@dataclass
class AblationResult:
    """The same text with and without some heads."""

    heads: list[tuple[int, int]]  # (layer, head) switched off
    before: Prediction
    after: Prediction
    candidates: list[tuple[str, float, float]]  # (token, probability before, after): both top-5s, by before
    num_tokens: int  # tokens of the text; the loss averages the T - 1 predictions inside it

    @property
    def next_token_before(self) -> str:
        """The likeliest next token with every head on."""
        return max(self.candidates, key=lambda c: c[1])[0]

    @property
    def next_token_after(self) -> str:
        """The likeliest next token with the chosen heads off."""
        return max(self.candidates, key=lambda c: c[2])[0]

    def rows(self) -> list[dict]:
        """The numbers as a table for export: one row per candidate next token."""
        return [{"next_token": token, "probability_all_heads": round(before, 6), "probability_heads_off": round(after, 6)}
                for token, before, after in self.candidates]


def _output_projection(attention: torch.nn.Module) -> torch.nn.Linear:
    projection = getattr(attention, "o_proj", None)
    if not isinstance(projection, torch.nn.Linear):
        raise ValueError(f"{type(attention).__name__} has no output projection `o_proj`; head ablation works on "
                         "decoders such as SmolLM2 and Gemma-3.")
    return projection


def _predict(loaded: LoadedModel, input_ids: torch.Tensor) -> Prediction:
    logits = loaded.model(input_ids=input_ids).logits[0].float()  # (T, V)
    if input_ids.shape[1] > 1:
        loss = torch.nn.functional.cross_entropy(logits[:-1], input_ids[0, 1:]).item()
    else:
        loss = float("nan")
    return Prediction(probabilities=torch.softmax(logits[-1], dim=-1).cpu().numpy(), loss=loss)  # (V,)


@torch.inference_mode()
def ablate_heads(loaded: LoadedModel, text: str, heads: list[tuple[int, int]], max_tokens: int = 512) -> AblationResult:
    """Next-token candidates and loss on `text`, first as the model is, then with `heads` (layer, head) off."""
    if loaded.kind != "decoder":
        raise ValueError(f"{loaded.name} is not a decoder: head ablation measures next-token predictions, so it "
                         "needs a decoder such as SmolLM2.")
    if not text.strip():
        raise ValueError("The text is empty: type a sentence to ablate heads on.")
    modules, _ = attention_modules(loaded.model)
    num_heads = loaded.config.num_attention_heads
    for layer, head in heads:
        if not (0 <= layer < len(modules) and 0 <= head < num_heads):
            raise ValueError(f"There is no head H{head} in layer {layer}: this model has {len(modules)} layers of "
                             f"{num_heads} heads.")
    token_ids, _ = encode(loaded, text, max_tokens)
    input_ids = torch.tensor([token_ids], device=loaded.device)  # (1, T)
    before = _predict(loaded, input_ids)
    with heads_switched_off(loaded, heads):
        after = _predict(loaded, input_ids)
    ids = list(dict.fromkeys([*before.top(), *after.top()]))
    ids.sort(key=lambda i: -before.probabilities[i])
    candidates = [(loaded.tokenizer.decode([i]), float(before.probabilities[i]), float(after.probabilities[i]))
                  for i in ids]
    return AblationResult(heads=sorted(heads), before=before, after=after, candidates=candidates,
                          num_tokens=len(token_ids))


class heads_switched_off:
    """Context manager: while inside, the calling thread's passes run with `heads` (layer, head) zeroed at the
    input of their layer's output projection. Other threads' passes (other sessions) are not affected."""

    def __init__(self, loaded: LoadedModel, heads: list[tuple[int, int]]):
        self.loaded, self.heads, self.hooks = loaded, heads, []

    def __enter__(self):
        modules, _ = attention_modules(self.loaded.model)
        head_dim = getattr(self.loaded.config, "head_dim", None) or (
            self.loaded.config.hidden_size // self.loaded.config.num_attention_heads)
        owner = threading.get_ident()
        by_layer: dict[int, list[int]] = {}
        for layer, head in self.heads:
            by_layer.setdefault(layer, []).append(head)

        def zero(_module, inputs, off):
            if threading.get_ident() != owner:
                return None
            (states,) = inputs  # (B, T, H * hd): the heads' outputs side by side, head-major
            states = states.clone()
            for head in off:
                states[..., head * head_dim : (head + 1) * head_dim] = 0
            return (states,)

        for layer, off in by_layer.items():
            projection = _output_projection(modules[layer])
            self.hooks.append(projection.register_forward_pre_hook(lambda m, i, off=off: zero(m, i, off)))
        return self

    def __exit__(self, *exc):
        for hook in self.hooks:
            hook.remove()
        return False
