"""How much a variant changes a model on real text, measured against the original on the evaluation prose.

Decoders: perplexity, KL divergence and top-1 agreement. Encoders (sentence-embedding models such as
all-MiniLM-L6-v2, which have no LM head) are judged by what they are used for: how close each text's
mean-pooled embedding stays, how the texts' pairwise similarities keep their order, and the relative error of
the last hidden state. The evaluation prose is the second half of the Lee news corpus; calibration never
reads it (see `explorer.prose`).

Every figure comes with a 95% interval from one function, `bootstrap`: a percentile bootstrap over fixed-length
blocks of the scored tokens (over documents for an encoder). Two models scored on the same tokens give the same
blocks, so a ratio or a difference between them is resampled in pairs, and what both find hard cancels. A verdict
("within 5%") is read from an interval with `below`: yes, no, or "can't tell at this size".
"""

from __future__ import annotations

import tempfile
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch

from explorer.prose import prose, token_chunks

EVAL_CHUNKS = 2  # sequences of evaluation prose: interactive-sized by default
EVAL_CHUNK_TOKENS = 256  # tokens per sequence
EVAL_TOKENS = 8192  # held-out tokens the command line and every committed result score (32 sequences of 256)
ENCODER_TEXTS = 16  # evaluation documents for an encoder
ENCODER_MAX_TOKENS = 128  # tokens per encoder document, special tokens included (cut longer ones)
BLOCK_TOKENS = 64  # next-token predictions per bootstrap block: a 256-token sequence gives blocks of 64, 64, 64, 63
RESAMPLES = 2000  # bootstrap resamples behind every interval
LEVEL = 0.95  # coverage of every interval
REFERENCE_MEMORY_BYTES = 2 * 2**30  # reference logits larger than this are kept in a temporary file, not in memory
CANT_TELL = "can't tell at this size"
Verdict = Literal["yes", "no", "can't tell at this size"]


def bootstrap(
    values, weights=None, statistic: Callable[[np.ndarray], np.ndarray] | None = None,
    resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0,
) -> tuple[float, float]:
    """A percentile-bootstrap interval over chunks: `values` (C,) or (C, M) holds one row per chunk (M measures of
    the same chunk stay together, which is what makes a comparison of two models on the same chunks *paired*),
    `weights` (C,) the tokens behind each row. Each resample draws C chunks with replacement and averages every
    column (weighted); `statistic` maps those (R, M) means to the (R,) numbers whose central `level` share is
    returned (default: the first column's mean). Seeded, so an interval is the same on every run."""
    values = np.asarray(values, dtype=np.float64)
    values = values[:, None] if values.ndim == 1 else values  # (C, M)
    chunks = values.shape[0]
    if chunks < 2:
        raise ValueError("An interval needs at least two chunks of evaluation text; score more tokens.")
    weights = np.ones(chunks) if weights is None else np.asarray(weights, dtype=np.float64)  # (C,)
    picks = np.random.default_rng(seed).integers(0, chunks, size=(resamples, chunks))  # (R, C) chunk indices
    chosen = weights[picks]  # (R, C)
    means = np.einsum("rc,rcm->rm", chosen, values[picks]) / chosen.sum(1, keepdims=True)  # (R, M)
    numbers = means[:, 0] if statistic is None else statistic(means)  # (R,)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(numbers, [tail, 100 - tail])
    return float(low), float(high)


def below(interval: tuple[float, float], line: float) -> Verdict:
    """Whether a measured number is at or under `line`, read from its interval: yes when the whole interval is,
    no when none of it is, and can't tell when the line falls inside it."""
    low, high = interval
    if high <= line:
        return "yes"
    return "no" if low > line else CANT_TELL


def better(interval: tuple[float, float], even: float, lower_is_better: bool = True) -> Verdict:
    """Whether `a` beats `b`, read from the interval of their ratio (`even` = 1) or difference (`even` = 0): yes when
    the whole interval lies on the better side of `even`, no when none of it does (equal is no), else can't tell."""
    low, high = interval if lower_is_better else (-interval[1], -interval[0])
    even = even if lower_is_better else -even
    if high < even:
        return "yes"
    return "no" if low >= even else CANT_TELL


def blocks(per_token: dict[str, torch.Tensor], block_tokens: int = BLOCK_TOKENS) -> dict[str, list[float]]:
    """Per-token measures (N, P) of N sequences cut into blocks of `block_tokens` positions within each sequence:
    {"tokens": [n per block], name: [block mean per block]}, the rows `bootstrap` resamples. Blocks never cross a
    sequence, and every model scored on the same sequences gets the same blocks, so they pair."""
    first = next(iter(per_token.values()))
    N, P = first.shape  # sequences, predicted positions per sequence
    starts = range(0, P, block_tokens)
    result = {"tokens": [min(block_tokens, P - start) for _ in range(N) for start in starts]}
    for name, values in per_token.items():
        sums = torch.stack([values[:, s : s + block_tokens].double().sum(1) for s in starts], 1)  # (N, blocks)
        counts = torch.tensor([min(block_tokens, P - s) for s in starts], dtype=torch.float64)  # (blocks,)
        result[name] = [round(float(v), 7) for v in (sums / counts).reshape(-1)]
    return result


def perplexity_interval(block_stats: dict) -> tuple[float, float]:
    """95% interval of exp(mean negative log-likelihood) from one model's blocks."""
    low, high = bootstrap(block_stats["nll"], block_stats["tokens"])
    return float(np.exp(low)), float(np.exp(high))


def ratio_interval(a: dict, b: dict) -> tuple[float, float]:
    """Paired 95% interval of perplexity(a) / perplexity(b), both scored on the same blocks: each resample draws
    the same blocks for both, so what the two share (a hard passage) cancels."""
    if a["tokens"] != b["tokens"]:
        raise ValueError("The two models were not scored on the same evaluation blocks; score them on the same text.")
    difference = np.asarray(a["nll"]) - np.asarray(b["nll"])  # (C,)
    low, high = bootstrap(difference, a["tokens"])
    return float(np.exp(low)), float(np.exp(high))


def ratio(a: dict, b: dict) -> float:
    """perplexity(a) / perplexity(b) from their blocks (the point estimate beside `ratio_interval`)."""
    weights = np.asarray(a["tokens"], dtype=np.float64)
    difference = np.asarray(a["nll"]) - np.asarray(b["nll"])
    return float(np.exp((weights * difference).sum() / weights.sum()))


@dataclass
class Reference:
    """The original model's logits on the evaluation tokens, computed once and compared against every variant."""

    input_ids: torch.Tensor  # (N, T) evaluation token ids
    logits: torch.Tensor | np.ndarray  # (N, T, V) float32 logits of the original model (memory or temporary file)
    perplexity: float  # the original model's perplexity on these tokens
    seconds: float  # wall time of the reference pass
    perplexity_ci: tuple[float, float] = (float("nan"), float("nan"))  # its 95% interval
    blocks: dict = field(default_factory=dict)  # per-block "tokens" and "nll" of the original, for paired ratios

    def logits_of(self, index: int) -> torch.Tensor:
        """(T, V) float32 logits of sequence `index`."""
        return torch.as_tensor(np.asarray(self.logits[index])) if isinstance(self.logits, np.ndarray) else self.logits[index]


@dataclass
class Quality:
    """A variant measured against the original on the same tokens, each figure with its 95% interval."""

    perplexity: float  # exp(mean next-token negative log-likelihood)
    kl: float  # mean KL(original ‖ variant) over predicted positions, in nats
    top1_agreement: float  # share of positions where both models predict the same next token
    max_logit_diff: float  # largest |logit difference| over every position and vocabulary entry
    tokens: int  # next-token predictions scored
    seconds: float  # wall time of the variant's pass
    perplexity_ci: tuple[float, float] = (float("nan"), float("nan"))
    kl_ci: tuple[float, float] = (float("nan"), float("nan"))
    top1_agreement_ci: tuple[float, float] = (float("nan"), float("nan"))
    perplexity_ratio: float = float("nan")  # perplexity / the original's, on the same tokens
    perplexity_ratio_ci: tuple[float, float] = (float("nan"), float("nan"))  # paired over the same blocks
    blocks: dict = field(default_factory=dict)  # per-block "tokens", "nll", "kl", "top1": what the intervals rest on


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
    return float(token_nll(logits, input_ids).mean().exp())


def token_nll(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """(N, T-1) float64 negative log-likelihood of each next token: logits (N, T, V), input_ids (N, T)."""
    log_probs = torch.log_softmax(logits[:, :-1].double(), dim=-1)  # (N, T-1, V)
    return -log_probs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # (N, T-1)


@torch.inference_mode()
def reference(model, input_ids: torch.Tensor) -> Reference:
    """Run the original model once on the evaluation tokens. Logits too large for memory (Gemma-3's 262k-word
    vocabulary over thousands of tokens) go to a temporary file that lives as long as the Reference."""
    started = time.perf_counter()
    device = next(model.parameters()).device
    N, T = input_ids.shape  # sequences, tokens per sequence
    vocab = model.get_output_embeddings().weight.shape[0]
    if N * T * vocab * 4 > REFERENCE_MEMORY_BYTES:
        handle = tempfile.NamedTemporaryFile(prefix="reference-logits-", suffix=".npy")
        logits = np.lib.format.open_memmap(handle.name, mode="w+", dtype=np.float32, shape=(N, T, vocab))
    else:
        handle, logits = None, torch.empty(N, T, vocab)  # (N, T, V)
    nll = torch.empty(N, T - 1, dtype=torch.float64)  # (N, T-1)
    for index, row in enumerate(input_ids):
        row_logits = model(input_ids=row[None].to(device)).logits.float().cpu()  # (1, T, V)
        logits[index] = row_logits[0].numpy() if handle else row_logits[0]
        nll[index] = token_nll(row_logits, row[None])[0]
    ref = Reference(input_ids, logits, float(nll.mean().exp()), time.perf_counter() - started)
    if handle is not None:
        weakref.finalize(ref, handle.close)  # the file goes when the Reference does
    ref.blocks = blocks({"nll": nll})
    ref.perplexity_ci = perplexity_interval(ref.blocks) if N * (T - 1) > BLOCK_TOKENS else (ref.perplexity,) * 2
    return ref


def identity(ref: Reference) -> Quality:
    """The original measured against itself: the yardstick, identical by definition."""
    tokens = sum(ref.blocks["tokens"])
    same = {**ref.blocks, "kl": [0.0] * len(ref.blocks["nll"]), "top1": [1.0] * len(ref.blocks["nll"])}
    return Quality(ref.perplexity, 0.0, 1.0, 0.0, tokens, ref.seconds, ref.perplexity_ci, (0.0, 0.0), (1.0, 1.0),
                   1.0, (1.0, 1.0), same)


@torch.inference_mode()
def compare(model, ref: Reference) -> Quality:
    """Run `model` on the reference tokens and measure how far it is from the original, sequence by sequence
    (memory stays at one sequence's logits), with bootstrap intervals over blocks of the same tokens."""
    device = next(model.parameters()).device
    started = time.perf_counter()
    nll, kl, agree, worst = [], [], [], 0.0
    for index, row in enumerate(ref.input_ids):
        logits = model(input_ids=row[None].to(device)).logits.float().cpu()[0]  # (T, V) variant
        original = ref.logits_of(index)  # (T, V)
        log_p = torch.log_softmax(original[:-1].double(), dim=-1)  # (T-1, V) original
        log_q = torch.log_softmax(logits[:-1].double(), dim=-1)  # (T-1, V) variant
        nll.append(-log_q.gather(-1, row[1:, None]).squeeze(-1))  # (T-1,)
        kl.append((log_p.exp() * (log_p - log_q)).sum(-1))  # (T-1,)
        agree.append((original[:-1].argmax(-1) == logits[:-1].argmax(-1)).double())  # (T-1,)
        worst = max(worst, float((logits - original).abs().max()))
    seconds = time.perf_counter() - started
    nll, kl, agree = torch.stack(nll), torch.stack(kl), torch.stack(agree)  # (N, T-1) each
    stats = blocks({"nll": nll, "kl": kl, "top1": agree})
    enough = len(stats["tokens"]) > 1
    nan = (float("nan"), float("nan"))
    return Quality(
        perplexity=float(nll.mean().exp()),
        kl=float(kl.mean()),
        top1_agreement=float(agree.mean()),
        max_logit_diff=worst,
        tokens=agree.numel(),
        seconds=seconds,
        perplexity_ci=perplexity_interval(stats) if enough else nan,
        kl_ci=bootstrap(stats["kl"], stats["tokens"]) if enough else nan,
        top1_agreement_ci=bootstrap(stats["top1"], stats["tokens"]) if enough else nan,
        perplexity_ratio=ratio(stats, ref.blocks),
        perplexity_ratio_ci=ratio_interval(stats, ref.blocks) if enough else nan,
        blocks=stats,
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
    embedding_cosine_ci: tuple[float, float] = (float("nan"), float("nan"))  # 95%, bootstrap over documents
    hidden_relative_error_ci: tuple[float, float] = (float("nan"), float("nan"))  # 95%, bootstrap over documents
    document_cosines: list[float] = field(default_factory=list)  # (N,) per document, for paired comparisons


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
    squared_error = [float((new.double() - old.double()).pow(2).sum()) for new, old in zip(hidden, ref.hidden)]  # (N,)
    squared_norm = [float(old.double().pow(2).sum()) for old in ref.hidden]  # (N,)
    per_document = np.stack([squared_error, squared_norm], 1)  # (N, 2): the error's ratio pairs them per document
    nan = (float("nan"), float("nan"))
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
        embedding_cosine_ci=bootstrap(cosines.numpy()) if len(hidden) > 1 else nan,
        hidden_relative_error_ci=bootstrap(per_document, statistic=lambda m: np.sqrt(m[:, 0] / m[:, 1]))
        if len(hidden) > 1 else nan,
        document_cosines=[float(c) for c in cosines],
    )


def encoder_identity(ref: EncoderReference) -> EncoderQuality:
    """The original encoder measured against itself: the yardstick, identical by definition."""
    tokens = sum(int(ids.numel()) for ids in ref.inputs)
    return EncoderQuality(1.0, 1.0, 1.0, 0.0, 0.0, len(ref.inputs), tokens, ref.seconds, (1.0, 1.0), (0.0, 0.0),
                          [1.0] * len(ref.inputs))


def precision_note(entry) -> str | None:
    """What the weights are, when that matters for reading a number: a model dequantised from a 4-bit GGUF
    scores its own perplexity, not the bf16 release's; None for weights shipped at full precision."""
    if entry.quantization is None:
        return None
    return (f"{entry.label.split(' (')[0]}'s weights are dequantised from a 4-bit GGUF ({entry.quantization}) to "
            "float32: absolute perplexities belong to this model, not to the bf16 release; comparisons between "
            "variants, all made from the same weights, stay valid.")


def _pair_similarities(embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every pair of documents (i < j): (N, d) -> (N(N-1)/2,)."""
    unit = torch.nn.functional.normalize(embeddings, dim=-1)  # (N, d)
    rows, cols = torch.triu_indices(len(unit), len(unit), offset=1)  # (P,), (P,)
    return (unit[rows] * unit[cols]).sum(-1)  # (P,)


def _rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two equal-length vectors (ties broken by position)."""
    rank_a, rank_b = a.argsort().argsort().double(), b.argsort().argsort().double()  # (P,) each
    return float(torch.corrcoef(torch.stack([rank_a, rank_b]))[0, 1])
