"""How much a variant changes a model on real text: perplexity, KL divergence and top-1 agreement vs the original.

The evaluation prose is the second half of the Lee news corpus; calibration never reads it (see `explorer.prose`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from explorer.prose import token_chunks

EVAL_CHUNKS = 2  # sequences of evaluation prose: interactive-sized by default
EVAL_CHUNK_TOKENS = 256  # tokens per sequence


@dataclass
class Reference:
    """The original model's logits on the evaluation tokens, computed once and compared against every variant."""

    input_ids: torch.Tensor  # (N, T) evaluation token ids
    logits: torch.Tensor  # (N, T, V) float32 logits of the original model
    perplexity: float  # the original model's perplexity on these tokens
    seconds: float  # wall time of the reference pass


@dataclass
class Quality:
    """A variant measured against the original on the same tokens."""

    perplexity: float  # exp(mean next-token negative log-likelihood)
    kl: float  # mean KL(original ‖ variant) over predicted positions, in nats
    top1_agreement: float  # share of positions where both models predict the same next token
    max_logit_diff: float  # largest |logit difference| over every position and vocabulary entry
    tokens: int  # next-token predictions scored
    seconds: float  # wall time of the variant's pass


def evaluation_ids(tokenizer, chunks: int = EVAL_CHUNKS, chunk_tokens: int = EVAL_CHUNK_TOKENS) -> torch.Tensor:
    """(chunks, chunk_tokens) token ids from the evaluation half of the prose."""
    return token_chunks(tokenizer, "evaluation", chunks, chunk_tokens)


@torch.inference_mode()
def logits_of(model, input_ids: torch.Tensor) -> torch.Tensor:
    """(N, T, V) float32 logits, one sequence at a time to bound memory."""
    device = next(model.parameters()).device
    return torch.cat([model(input_ids=row[None].to(device)).logits.float().cpu() for row in input_ids])


def perplexity(logits: torch.Tensor, input_ids: torch.Tensor) -> float:
    """exp of the mean negative log-likelihood of each next token: logits (N, T, V), input_ids (N, T)."""
    log_probs = torch.log_softmax(logits[:, :-1].double(), dim=-1)  # (N, T-1, V)
    nll = -log_probs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # (N, T-1)
    return float(nll.mean().exp())


def reference(model, input_ids: torch.Tensor) -> Reference:
    """Run the original model once on the evaluation tokens."""
    started = time.perf_counter()
    logits = logits_of(model, input_ids)  # (N, T, V)
    return Reference(input_ids, logits, perplexity(logits, input_ids), time.perf_counter() - started)


def compare(model, ref: Reference) -> Quality:
    """Run `model` on the reference tokens and measure how far it is from the original."""
    started = time.perf_counter()
    logits = logits_of(model, ref.input_ids)  # (N, T, V)
    seconds = time.perf_counter() - started
    predicted = slice(None, -1)  # positions that predict a next token inside the text
    log_p = torch.log_softmax(ref.logits[:, predicted].double(), dim=-1)  # (N, T-1, V) original
    log_q = torch.log_softmax(logits[:, predicted].double(), dim=-1)  # (N, T-1, V) variant
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)  # (N, T-1)
    agree = ref.logits[:, predicted].argmax(-1) == logits[:, predicted].argmax(-1)  # (N, T-1)
    return Quality(
        perplexity=perplexity(logits, ref.input_ids),
        kl=float(kl.mean()),
        top1_agreement=float(agree.double().mean()),
        max_logit_diff=float((logits - ref.logits).abs().max()),
        tokens=agree.numel(),
        seconds=seconds,
    )
