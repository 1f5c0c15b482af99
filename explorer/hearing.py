"""Whisper hears a clip: the transcript, all three kinds of attention, and word timings from cross-attention.

One run: the log-mel features of the clip (padded to Whisper's 30 s window), greedy decoding of the transcript,
then one forward pass of [start, no-timestamps, transcript tokens, end] with eager attention, which returns
the encoder's self-attention over audio frames, the decoder's causal self-attention over text tokens and the
decoder->encoder cross-attention. Attention over the 1,500 encoder frames spans the padding too; it is cut to
the frames that hold the clip (20 ms each) and each row renormalised over them (the share it gave the real
frames is kept, to show how much went to padding).

Word timings follow Whisper's own word timestamps: the cross-attention of the alignment heads (the heads its
authors found to track time), normalised per frame across tokens, median-filtered along time (width 7),
averaged, then a monotonic dynamic-time-warping path through tokens x frames; a token starts where the path
enters its row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from explorer.audio import SAMPLE_RATE, Audio

START, END, NO_TIMESTAMPS = 50257, 50256, 50362  # tiny.en's <|startoftranscript|>, <|endoftext|>, <|notimestamps|>
FIRST_SPECIAL = 50257  # ids from here on are special or timestamp tokens, never text
FRAME_SECONDS = 0.02  # one encoder frame: two 10 ms mel hops
MEL_HOP = 160  # samples per mel frame at 16 kHz
MAX_TEXT_TOKENS = 224  # Whisper's own limit for one window's transcript
MEDIAN_WIDTH = 7  # Whisper's median filter along time for word timestamps
PREFIX = 2  # [start, no-timestamps] before the transcript tokens
ENGLISH_VOCAB = 51864  # the vocabulary of every English-only Whisper, whose special ids are those above


@dataclass
class Word:
    text: str
    start: float  # seconds
    end: float  # seconds
    tokens: tuple[int, int]  # [first, end) index into the transcript tokens


@dataclass
class HearingRun:
    """What Whisper heard in one clip, with every attention tensor cut to the clip's frames."""

    audio: Audio
    transcript: str
    token_ids: list[int]  # the transcript's token ids (no special tokens)
    tokens: list[str]  # readable transcript tokens
    sequence: list[str]  # readable decoder input: start, no-timestamps, transcript tokens, end
    frames: int  # encoder frames that hold the clip (20 ms each)
    mel: np.ndarray  # (80, 2 * frames) log-mel features of the clip
    cross: np.ndarray  # (L, H, S, frames) float32: decoder->encoder, rows renormalised over the clip's frames
    cross_real_share: np.ndarray  # (L, H, S): share of each row that fell on the clip's frames before cutting
    encoder: np.ndarray  # (L, H, frames, frames) float16: encoder self-attention among the clip's frames
    decoder: np.ndarray  # (L, H, S, S) float32: causal decoder self-attention over the sequence
    alignment_heads: list[tuple[int, int]]  # (decoder layer, head)
    alignment: np.ndarray  # (n + 1, frames): the filtered alignment-head average, rows predicting each token, end
    path: np.ndarray  # (P, 2) int: the monotonic path through `alignment` (row, frame)
    token_times: np.ndarray  # (n, 2) seconds: start and end of each transcript token
    words: list[Word]
    seconds: dict[str, float] = field(default_factory=dict)  # features, encoder, decoding, attention, alignment

    def shapes(self) -> dict[str, list[int]]:
        return {name: list(getattr(self, name).shape) for name in
                ("mel", "cross", "cross_real_share", "encoder", "decoder", "alignment")}


def features(loaded, audio: Audio) -> np.ndarray:
    """(80, 3000) log-mel features of the clip padded to 30 s, as Whisper's feature extractor computes them."""
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(feature_size=loaded.model.config.num_mel_bins)
    return extractor(audio.samples, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]


def readable(tokenizer, ids: list[int]) -> list[str]:
    """Each token as text (leading spaces kept), or its special name."""
    return [tokenizer.decode([i]) for i in ids]


@torch.no_grad()
def encode_audio(loaded, feature: np.ndarray, attentions: bool = False):
    """The encoder's output for (80, 3000) features: hidden states (1, 1500, d) and, when asked, its attentions."""
    inputs = torch.from_numpy(feature)[None].to(loaded.device, loaded.dtype)  # (1, 80, 3000)
    return loaded.model.model.encoder(inputs, output_attentions=attentions)


@torch.no_grad()
def transcribe(loaded, encoded: torch.Tensor) -> list[int]:
    """Greedy decoding without timestamps from the encoder's output (1, 1500, d): the transcript's token ids
    (special and timestamp tokens suppressed)."""
    model = loaded.model
    suppress = list(getattr(model.config, "suppress_tokens", None) or [])
    first_suppress = list(getattr(model.config, "begin_suppress_tokens", None) or [220, END])
    ids = [START, NO_TIMESTAMPS]
    cache, fresh = None, ids  # the decoder's KV cache, and the tokens it has not seen yet
    for step in range(MAX_TEXT_TOKENS):
        decoder_ids = torch.tensor([fresh], device=loaded.device)  # (1, new tokens)
        out = model(encoder_outputs=(encoded,), decoder_input_ids=decoder_ids, cache=cache, use_cache=True)
        cache, logits = out.cache, out.logits[0, -1]  # logits: (V,)
        logits[FIRST_SPECIAL:] = -torch.inf
        logits[suppress] = -torch.inf
        if step == 0:
            logits[first_suppress] = -torch.inf
        token = int(logits.argmax())
        if token == END:
            break
        ids.append(token)
        fresh = [token]
    return ids[PREFIX:]


def alignment_heads(config) -> list[tuple[int, int]]:
    from explorer.whisper import TINY_EN_ALIGNMENT_HEADS

    return [tuple(pair) for pair in (getattr(config, "alignment_heads", None) or TINY_EN_ALIGNMENT_HEADS)]


def median_filter(values: np.ndarray, width: int) -> np.ndarray:
    """Median over a sliding window of `width` along the last axis, the ends reflected (as Whisper does)."""
    if values.shape[-1] <= width // 2:
        return values
    pad = width // 2
    padded = np.pad(values, [(0, 0)] * (values.ndim - 1) + [(pad, pad)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)  # (..., F, width)
    return np.median(windows, axis=-1)


def monotonic_path(cost: np.ndarray) -> np.ndarray:
    """(P, 2) (row, column) pairs of the cheapest path from (0, 0) to the last cell of `cost` (N, M) that moves
    right, down or diagonally, never back: dynamic time warping."""
    rows, columns = cost.shape
    values = cost.tolist()
    infinity = float("inf")
    total = [[infinity] * (columns + 1) for _ in range(rows + 1)]
    total[0][0] = 0.0
    step = [[0] * (columns + 1) for _ in range(rows + 1)]  # 0: diagonal, 1: from the row above, 2: from the left
    for i in range(1, rows + 1):
        above, here, row_cost, row_step = total[i - 1], total[i], values[i - 1], step[i]
        for j in range(1, columns + 1):
            diagonal, up, left = above[j - 1], above[j], here[j - 1]
            if diagonal <= up and diagonal <= left:
                best, move = diagonal, 0
            elif up <= left:
                best, move = up, 1
            else:
                best, move = left, 2
            here[j] = row_cost[j - 1] + best
            row_step[j] = move
    i, j, path = rows, columns, []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        move = step[i][j]
        i, j = (i - 1, j - 1) if move == 0 else (i - 1, j) if move == 1 else (i, j - 1)
    return np.array(path[::-1])


def alignment_matrix(cross_raw: np.ndarray, heads: list[tuple[int, int]], frames: int) -> np.ndarray:
    """(n + 1, frames): the alignment heads' attention from the rows that predict each transcript token and the
    end (decoder inputs no-timestamps .. last token), normalised per frame across those rows, median-filtered
    along time and averaged over the heads. `cross_raw` is (L, H, S, 1500), softmax over all frames."""
    weights = np.stack([cross_raw[layer, head, :, :frames] for layer, head in heads])  # (K, S, frames)
    weights = weights[:, PREFIX - 1 : -1]  # (K, n + 1, frames): rows that predict token 0 .. the end
    mean = weights.mean(axis=1, keepdims=True)
    spread = weights.std(axis=1, keepdims=True) + 1e-8
    weights = median_filter((weights - mean) / spread, MEDIAN_WIDTH)
    return weights.mean(axis=0)


def token_times_from(alignment: np.ndarray, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """((n, 2) start/end seconds of each token, the path): a token starts where the path enters its row and
    ends where the path enters the next (the row that predicts the end closes the last token)."""
    path = monotonic_path(-alignment)
    rows = alignment.shape[0]
    entry = np.array([path[path[:, 0] == row, 1].min() for row in range(rows)])  # (n + 1,) first frame per row
    starts = entry[:-1] * FRAME_SECONDS
    ends = np.maximum(entry[1:], entry[:-1] + 1) * FRAME_SECONDS
    return np.clip(np.stack([starts, ends], axis=1), 0.0, seconds), path


def group_words(tokens: list[str], times: np.ndarray) -> list[Word]:
    """Tokens joined into words: a token that begins with a space starts a new word; punctuation stays with
    the word before it. Each word spans its first token's start to its last token's end."""
    groups: list[list[int]] = []
    for index, token in enumerate(tokens):
        punctuation = token.strip() and not any(ch.isalnum() for ch in token)
        if not groups or (token.startswith(" ") and not punctuation):
            groups.append([index])
        else:
            groups[-1].append(index)
    return [Word("".join(tokens[i] for i in group).strip(), float(times[group[0], 0]), float(times[group[-1], 1]),
                 (group[0], group[-1] + 1)) for group in groups if "".join(tokens[i] for i in group).strip()]


@torch.no_grad()
def hear(loaded, audio: Audio) -> HearingRun:
    """Transcribe `audio` with Whisper and collect every attention tensor and the word timings."""
    model, tokenizer = loaded.model, loaded.tokenizer
    if model.config.vocab_size != ENGLISH_VOCAB:
        raise ValueError(f"{loaded.name} is a multilingual Whisper; this page reads English-only Whisper models "
                         "(tiny.en, base.en, small.en), whose special tokens it knows. Choose one of those.")
    seconds = {}  # features, encoder, decoding, attention, alignment
    started = time.perf_counter()
    feature = features(loaded, audio)  # (80, 3000)
    frames = max(1, min(len(audio.samples) // (2 * MEL_HOP), model.config.max_source_positions))
    seconds["features"] = time.perf_counter() - started

    started = time.perf_counter()
    encoded = encode_audio(loaded, feature, attentions=True)
    encoder = torch.cat([each[:, :, :frames, :frames] for each in encoded.attentions]).cpu()  # (L, H, F, F)
    seconds["encoder"] = time.perf_counter() - started

    started = time.perf_counter()
    ids = transcribe(loaded, encoded.last_hidden_state)
    seconds["decoding"] = time.perf_counter() - started

    started = time.perf_counter()
    sequence = [START, NO_TIMESTAMPS, *ids, END]
    out = model(encoder_outputs=(encoded.last_hidden_state,), decoder_input_ids=torch.tensor([sequence], device=loaded.device),
                output_attentions=True, use_cache=False)
    cross_raw = torch.cat(out.cross_attentions).float().cpu().numpy()  # (L, H, S, 1500)
    decoder = torch.cat(out.decoder_attentions).float().cpu().numpy()  # (L, H, S, S)
    del out, encoded
    real = cross_raw[..., :frames]  # (L, H, S, frames)
    share = real.sum(axis=-1)  # (L, H, S)
    cross = real / share[..., None]
    seconds["attention"] = time.perf_counter() - started

    started = time.perf_counter()
    heads = alignment_heads(model.config)
    alignment = alignment_matrix(cross_raw, heads, frames)  # (n + 1, frames)
    times, path = token_times_from(alignment, audio.seconds)
    tokens = readable(tokenizer, ids)
    words = group_words(tokens, times)
    seconds["alignment"] = time.perf_counter() - started
    return HearingRun(
        audio=audio,
        transcript=tokenizer.decode(ids).strip(),
        token_ids=ids,
        tokens=tokens,
        sequence=["<|startoftranscript|>", "<|notimestamps|>", *tokens, "<|endoftext|>"],
        frames=frames,
        mel=feature[:, : 2 * frames],
        cross=cross.astype(np.float32),
        cross_real_share=share.astype(np.float32),
        encoder=encoder.to(torch.float16).numpy(),
        decoder=decoder,
        alignment_heads=heads,
        alignment=alignment,
        path=path,
        token_times=times,
        words=words,
        seconds=seconds,
    )


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance over the reference's word count, case and punctuation ignored."""
    def words(text: str) -> list[str]:
        return "".join(ch.lower() if ch.isalnum() or ch.isspace() or ch == "'" else " " for ch in text).split()

    ref, hyp = words(reference), words(hypothesis)
    distance = np.arange(len(hyp) + 1)
    for i, word in enumerate(ref, 1):
        previous, distance = distance, np.empty_like(distance)
        distance[0] = i
        for j, other in enumerate(hyp, 1):
            distance[j] = min(previous[j] + 1, distance[j - 1] + 1, previous[j - 1] + (word != other))
    return float(distance[-1]) / max(1, len(ref))
