"""Two variants on the same prompt: the first step where their generations part, and how far apart their
next-token distributions are at every step (KL, read on the first generation's context)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from explorer.generate import Generation
from explorer.loading import LoadedModel


@dataclass(frozen=True)
class Comparison:
    """How a second variant's generation departs from the first's on the same prompt."""

    first_divergence: int | None  # first step whose token differs (None: identical over the common steps)
    kl: np.ndarray  # (N,) KL(first || second) in nats of the next-token distributions, on the first's context
    compared_steps: int  # N: the first generation's steps


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """The first index where two token sequences differ; the shorter one's end counts when one stopped early."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


@torch.inference_mode()
def next_token_log_probs(loaded: LoadedModel, prompt: list[int], continuation: list[int]) -> torch.Tensor:
    """(N, V) log-probabilities of the next token at each of the N steps of `continuation`, teacher-forced.

    One forward pass over the prompt and all but the last generated token; logits are kept only where a step
    chose its token (the last prompt position, then each generated one).
    """
    N = len(continuation)
    ids = torch.tensor([prompt + continuation[:-1]], device=loaded.device)  # (1, P + N - 1)
    logits = loaded.model(input_ids=ids, use_cache=False, logits_to_keep=N).logits[0]  # (N, V)
    return torch.log_softmax(logits.float(), dim=-1)  # (N, V)


def compare(first: Generation, second: Generation, first_model: LoadedModel, second_model: LoadedModel) -> Comparison:
    """First divergence of two generations from one prompt, and the per-step KL between their next-token
    distributions, both read on the first generation's context so that every step compares like with like
    (until the first divergence this is also the second's own context)."""
    if first.prompt_ids != second.prompt_ids:
        raise ValueError("Compare generations of the same prompt.")
    if not first.steps:
        return Comparison(first_divergence(first.token_ids, second.token_ids), np.zeros(0, np.float32), 0)
    log_p = next_token_log_probs(first_model, first.prompt_ids, first.token_ids)  # (N, V)
    log_q = next_token_log_probs(second_model, first.prompt_ids, first.token_ids)  # (N, V)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1).clamp_min(0.0)  # (N,)
    return Comparison(first_divergence(first.token_ids, second.token_ids), kl.cpu().numpy(), len(first.steps))
