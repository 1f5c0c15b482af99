"""How much a variant changes a model on real text, measured against the original on the evaluation prose.

Decoders: perplexity, KL divergence and top-1 agreement. Encoders (sentence-embedding models such as
all-MiniLM-L6-v2, which have no LM head) are judged by what they are used for: how close each text's
mean-pooled embedding stays, how the texts' pairwise similarities keep their order, and the relative error of
the last hidden state. The evaluation prose is the second half of the Lee news corpus; calibration never
reads it (see `explorer.prose`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from explorer.prose import prose, token_chunks

EVAL_CHUNKS = 2  # sequences of evaluation prose: interactive-sized by default
EVAL_CHUNK_TOKENS = 256  # tokens per sequence
ENCODER_TEXTS = 16  # evaluation documents for an encoder
ENCODER_MAX_TOKENS = 128  # tokens per encoder document, special tokens included (cut longer ones)


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


@dataclass
class EncoderReference:
    """The original encoder's outputs on the evaluation documents, computed once and compared against every variant."""

    inputs: list[torch.Tensor]  # (1, T) token ids per document, special tokens included
    hidden: list[torch.Tensor]  # (T, d_model) float32 last hidden state per document
    embeddings: torch.Tensor  # (N, d_model) float64 mean-pooled embedding per document
    seconds: float  # wall time of the reference pass


@dataclass
class EncoderQuality:
    """An encoder variant measured against the original on the same documents."""

    embedding_cosine: float  # mean over documents of cos(original, variant) mean-pooled embeddings (1 = same)
    min_embedding_cosine: float  # the worst document's cosine
    similarity_rank_correlation: float  # Spearman correlation of all document pairs' cosine similarities,
    # original vs variant: 1 when the variant orders texts by similarity exactly as the original does
    hidden_relative_error: float  # ‖h_variant − h_original‖ / ‖h_original‖, last hidden state, all tokens
    max_hidden_diff: float  # largest |difference| of any last-hidden-state entry
    texts: int  # documents compared
    tokens: int  # tokens over all documents
    seconds: float  # wall time of the variant's pass


def document_ids(
    tokenizer, part, count: int | None = None, total_tokens: int | None = None, max_tokens: int = ENCODER_MAX_TOKENS
) -> list[torch.Tensor]:
    """(1, T) token ids of whole documents from one half of the prose, with the tokenizer's special tokens and
    cut to `max_tokens`: the first `count` documents, or the first ones that make `total_tokens` tokens."""
    rows, total = [], 0
    for text in prose(part).split("\n\n"):
        if (count is not None and len(rows) >= count) or (total_tokens is not None and total >= total_tokens):
            break
        ids = tokenizer(text, truncation=True, max_length=max_tokens, return_tensors="pt")["input_ids"]  # (1, T)
        rows.append(ids)
        total += ids.shape[1]
    return rows


def encoder_evaluation_ids(tokenizer, texts: int = ENCODER_TEXTS) -> list[torch.Tensor]:
    """(1, T) token ids of the first `texts` documents of the evaluation half."""
    return document_ids(tokenizer, "evaluation", count=texts)


@torch.inference_mode()
def hidden_of(model, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """(T, d_model) float32 last hidden state per document, one document at a time (no padding)."""
    device = next(model.parameters()).device
    return [model(input_ids=ids.to(device)).last_hidden_state[0].float().cpu() for ids in inputs]


def mean_pooled(hidden: list[torch.Tensor]) -> torch.Tensor:
    """(N, d_model) float64: each document's token states averaged, as sentence-transformers pools MiniLM."""
    return torch.stack([states.double().mean(0) for states in hidden])


def encoder_reference(model, inputs: list[torch.Tensor]) -> EncoderReference:
    """Run the original encoder once on the evaluation documents."""
    started = time.perf_counter()
    hidden = hidden_of(model, inputs)
    return EncoderReference(inputs, hidden, mean_pooled(hidden), time.perf_counter() - started)


def compare_encoder(model, ref: EncoderReference) -> EncoderQuality:
    """Run `model` on the reference documents and measure how far its embeddings are from the original's."""
    started = time.perf_counter()
    hidden = hidden_of(model, ref.inputs)
    seconds = time.perf_counter() - started
    embeddings = mean_pooled(hidden)  # (N, d_model)
    cosines = torch.nn.functional.cosine_similarity(embeddings, ref.embeddings, dim=-1)  # (N,)
    original_all, variant_all = torch.cat(ref.hidden).double(), torch.cat(hidden).double()  # (ΣT, d_model)
    return EncoderQuality(
        embedding_cosine=float(cosines.mean()),
        min_embedding_cosine=float(cosines.min()),
        similarity_rank_correlation=_rank_correlation(
            _pair_similarities(ref.embeddings), _pair_similarities(embeddings)
        ),
        hidden_relative_error=float((variant_all - original_all).norm() / original_all.norm()),
        max_hidden_diff=float((variant_all - original_all).abs().max()),
        texts=len(hidden),
        tokens=int(original_all.shape[0]),
        seconds=seconds,
    )


def _pair_similarities(embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every pair of documents (i < j): (N, d) -> (N(N-1)/2,)."""
    unit = torch.nn.functional.normalize(embeddings, dim=-1)  # (N, d)
    rows, cols = torch.triu_indices(len(unit), len(unit), offset=1)  # (P,), (P,)
    return (unit[rows] * unit[cols]).sum(-1)  # (P,)


def _rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two equal-length vectors (ties broken by position)."""
    rank_a, rank_b = a.argsort().argsort().double(), b.argsort().argsort().double()  # (P,) each
    return float(torch.corrcoef(torch.stack([rank_a, rank_b]))[0, 1])
