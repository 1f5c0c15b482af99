"""Generate token by token under any attention variant, and watch the real KV cache grow while it does.

A decoder makes one token per step: the prefill reads the whole prompt and fills the cache, then every decode step
feeds the token just made, reads every cached key and value, and adds one token's worth to the cache. Each step
here reports the token, where the query that chose it looked (one layer, every head), the cache weighed from the
cache tensors themselves (`explorer.kv.cache_bytes`) beside the formula (`explorer.variants.cache_bytes_per_token`),
and the seconds it took. Two variants on the same prompt are compared by their first differing token and the KL
between their next-token distributions on the same context.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal

import numpy as np
import torch

from explorer.kv import cache_bytes
from explorer.loading import LoadedModel
from explorer.run import attention_modules, layer_windows, readable_tokens
from explorer.variants import VariantSpec, attention_shape, cache_bytes_per_token

MAX_STEPS = 512  # the most tokens one generation makes on a local server
HOSTED_MAX_STEPS = 64  # ... and on a small shared host (the memory guard still checks every run)
PREFILL_CHUNK = 256  # prompt tokens per forward pass when filling a long cache: bounds the (H, T, S) scores


@dataclass(frozen=True)
class Sampling:
    """How the next token is picked from the model's distribution. Temperature 0 is greedy (argmax)."""

    temperature: float = 0.0  # 0: greedy; otherwise logits are divided by it before the softmax
    top_k: int = 0  # keep only the k most likely tokens (0: all)
    top_p: float = 1.0  # keep the smallest set of tokens whose probabilities add up to p (1: all)
    seed: int = 0  # seeds the sampler, so a shared link reproduces the same continuation

    def __post_init__(self):
        if not 0.0 <= self.temperature <= 5.0:
            raise ValueError("Choose a temperature from 0 (greedy) to 5.")
        if self.top_k < 0:
            raise ValueError("Choose top-k of 0 (every token) or more.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("Choose top-p above 0 and at most 1 (1 keeps every token).")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def label(self) -> str:
        if self.greedy:
            return "greedy"
        kept = (f", top-k {self.top_k}" if self.top_k else "") + (f", top-p {self.top_p:g}" if self.top_p < 1 else "")
        return f"sampled at temperature {self.temperature:g}{kept}, seed {self.seed}"


@dataclass(frozen=True)
class Step:
    """One generated token and what making it cost."""

    index: int  # 0: the token chosen from the prefill; 1, 2, ...: decode steps
    phase: Literal["prefill", "decode"]
    token_id: int
    token: str  # a readable label ("the", "↵")
    piece: str  # the exact text the token adds to the continuation
    attention: np.ndarray  # (H, S) float32: the choosing query's attention over the S cached positions
    cached_tokens: int  # S: tokens in the cache after this step
    cache_bytes: int  # weighed: bytes of the cache tensors after this step
    formula_bytes: int  # cached_tokens x the formula's bytes per token
    seconds: float  # wall time of the forward pass and the pick (prefill: the whole prompt)


@dataclass
class Generation:
    """A finished (or stopped) generation: the prompt, one `Step` per token, and its totals."""

    label: str  # the variant's label, e.g. "original" or "mla naive r=192 data"
    prompt_ids: list[int]
    prompt_tokens: list[str]
    bytes_per_token: int  # the formula: cache bytes added by one token, all layers (before a window is full)
    prompt: str = ""  # the prompt, decoded
    steps: list[Step] = field(default_factory=list)
    text: str = ""  # the continuation, decoded as a whole

    @property
    def token_ids(self) -> list[int]:
        return [step.token_id for step in self.steps]

    @property
    def prefill_seconds(self) -> float:
        return sum(step.seconds for step in self.steps if step.phase == "prefill")

    @property
    def decode_seconds(self) -> float:
        return sum(step.seconds for step in self.steps if step.phase == "decode")

    @property
    def decode_tokens_per_second(self) -> float | None:
        """Tokens made per second by decode steps alone (the prefill is counted apart); None before any."""
        decoded = [step for step in self.steps if step.phase == "decode"]
        return len(decoded) / self.decode_seconds if decoded and self.decode_seconds > 0 else None

    def to_json(self) -> dict:
        """The CLI's report: tokens, text, and per step the token, the cache measured and by formula, seconds."""
        return {
            "variant": self.label,
            "prompt_tokens": len(self.prompt_ids),
            "generated_tokens": [step.token for step in self.steps],
            "generated_ids": self.token_ids,
            "text": self.text,
            "bytes_per_token_formula": self.bytes_per_token,
            "prefill_seconds": self.prefill_seconds,
            "decode_seconds": self.decode_seconds,
            "decode_tokens_per_second": self.decode_tokens_per_second,
            "steps": [
                {
                    "step": step.index,
                    "phase": step.phase,
                    "token": step.token,
                    "token_id": step.token_id,
                    "cached_tokens": step.cached_tokens,
                    "cache_bytes_measured": step.cache_bytes,
                    "cache_bytes_formula": step.formula_bytes,
                    "seconds": step.seconds,
                }
                for step in self.steps
            ],
        }


@dataclass(frozen=True)
class CacheFormula:
    """The formula's cache of one variant of a model: bytes per token in each layer, and each layer's window."""

    layer_bytes: tuple[int, ...]  # bytes one token adds to each layer's cache (explorer.variants.cache_bytes_per_token)
    windows: tuple[int | None, ...]  # sliding window of each layer (None: it keeps every token)

    @property
    def bytes_per_token(self) -> int:
        """Bytes one token adds, all layers, before any sliding window is full."""
        return sum(self.layer_bytes)

    def bytes_at(self, tokens: int) -> int:
        """The cache after `tokens` tokens. Between steps transformers keeps window - 1 tokens in a sliding-window
        layer (the next token completes its window), so such a layer holds min(tokens, window - 1)."""
        return sum(size * (tokens if window is None else min(tokens, window - 1))
                   for size, window in zip(self.layer_bytes, self.windows))


def cache_formula(loaded: LoadedModel, spec: VariantSpec) -> CacheFormula:
    """The formula for `spec` applied to `loaded`'s shape, at the model's own precision, with its sliding windows."""
    shape = attention_shape(loaded.config, loaded.entry.label)
    return CacheFormula(tuple(cache_bytes_per_token(spec, shape, loaded.dtype.itemsize)),
                        tuple(layer_windows(loaded.config)))


def formula_bytes_per_token(loaded: LoadedModel, spec: VariantSpec) -> int:
    """Cache bytes one token adds under `spec`, all layers, at the model's own precision (the formula)."""
    return cache_formula(loaded, spec).bytes_per_token


def prompt_ids(loaded: LoadedModel, text: str) -> list[int]:
    """The prompt's token ids as the model's tokenizer makes them; a sentence when there are none."""
    ids = loaded.tokenizer(text)["input_ids"]
    if not ids:
        raise ValueError("The prompt has no tokens: type a few words for the model to continue.")
    return list(ids)


def step_limit(hosted: bool) -> int:
    """The most tokens one generation may make on this server."""
    return HOSTED_MAX_STEPS if hosted else MAX_STEPS


def pick(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """The next token id from (V,) logits: the argmax when greedy, else a draw after temperature, top-k, top-p."""
    if sampling.greedy:
        return int(torch.argmax(logits))
    scaled = logits.float() / sampling.temperature  # (V,)
    if sampling.top_k:
        kth = torch.topk(scaled, min(sampling.top_k, scaled.numel())).values[-1]
        scaled = scaled.masked_fill(scaled < kth, -math.inf)  # (V,)
    if sampling.top_p < 1.0:
        order = torch.argsort(scaled, descending=True)  # (V,)
        probs = torch.softmax(scaled[order], dim=-1)  # (V,) in falling order
        before = torch.cumsum(probs, dim=-1) - probs  # mass of the more likely tokens
        dropped = order[before >= sampling.top_p]  # tokens outside the nucleus (the first is always kept)
        scaled[dropped] = -math.inf
    probs = torch.softmax(scaled, dim=-1)  # (V,)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.inference_mode()
def generate_steps(
    loaded: LoadedModel,
    spec: VariantSpec,
    input_ids: list[int],
    steps: int,
    layer: int = 0,
    sampling: Sampling = Sampling(),
    stop_at_eos: bool = True,
) -> Iterator[Step]:
    """Yield one `Step` per generated token: the prefill's, then one per decode step.

    `loaded` is the model already converted to `spec` (`explorer.variants.convert(...).loaded`, or the original);
    `spec` gives the formula the weighed cache is set against. The attention row is that of the query whose
    logits chose the token (the last prompt token, then each token fed back), over every cached position.
    """
    if steps < 1:
        raise ValueError("Generate at least one token.")
    model = loaded.model
    modules, index = attention_modules(model)
    if not 0 <= layer < len(modules):
        raise ValueError(f"{loaded.entry.label} has {len(modules)} layers (0-{len(modules) - 1}); choose one of them.")
    formula = cache_formula(loaded, spec)
    eos = set(_eos_ids(loaded))
    generator = torch.Generator().manual_seed(sampling.seed) if not sampling.greedy else None
    seen: list[torch.Tensor] = []
    owner = threading.get_ident()  # the model is shared by every session: ignore passes of other threads

    def keep_row(module, inputs, output):
        if threading.get_ident() == owner:
            seen.append(output[index][0, :, -1, :].float())  # (H, S): the last query's row

    handle = modules[layer].register_forward_hook(keep_row)
    try:
        ids = torch.tensor([input_ids], device=loaded.device)  # (1, P)
        cache = None
        for step in range(steps):
            seen.clear()
            started = time.perf_counter()
            outputs = model(input_ids=ids, cache=cache, use_cache=True)
            token_id = pick(outputs.logits[0, -1], sampling, generator)
            seconds = time.perf_counter() - started
            cache = outputs.cache
            cached = cache.get_seq_length()
            yield Step(
                index=step,
                phase="prefill" if step == 0 else "decode",
                token_id=token_id,
                token=readable_tokens(loaded.tokenizer, [token_id])[0],
                piece=loaded.tokenizer.decode([token_id]),
                attention=seen[-1].cpu().numpy(),
                cached_tokens=cached,
                cache_bytes=cache_bytes(cache),
                formula_bytes=formula.bytes_at(cached),
                seconds=seconds,
            )
            if stop_at_eos and token_id in eos:
                return
            ids = torch.tensor([[token_id]], device=loaded.device)  # (1, 1): only the new token is fed
    finally:
        handle.remove()


def generate(
    loaded: LoadedModel,
    spec: VariantSpec,
    text: str | list[int],
    steps: int,
    layer: int = 0,
    sampling: Sampling = Sampling(),
    on_step: Callable[[Step], None] | None = None,
) -> Generation:
    """Run `generate_steps` to the end and gather a `Generation` (`text` is the prompt, or its token ids)."""
    ids = prompt_ids(loaded, text) if isinstance(text, str) else list(text)
    generation = start(loaded, spec, ids)
    for step in generate_steps(loaded, spec, ids, steps, layer, sampling):
        add(generation, step, loaded)
        if on_step is not None:
            on_step(step)
    return generation


def start(loaded: LoadedModel, spec: VariantSpec, ids: list[int]) -> Generation:
    """An empty `Generation` for a prompt, to which `add` appends steps as they come."""
    return Generation(spec.label(), ids, readable_tokens(loaded.tokenizer, ids), formula_bytes_per_token(loaded, spec),
                      loaded.tokenizer.decode(ids))


def add(generation: Generation, step: Step, loaded: LoadedModel) -> None:
    """Append a step, and decode the continuation as a whole (pieces of one character can span tokens)."""
    generation.steps.append(step)
    generation.text = loaded.tokenizer.decode(generation.token_ids)


def _eos_ids(loaded: LoadedModel) -> list[int]:
    """The token ids that end a generation, as transformers' own `generate` reads them."""
    config = getattr(loaded.model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None) if config is not None else None
    if eos is None:
        eos = loaded.tokenizer.eos_token_id
    if eos is None:
        return []
    return list(eos) if isinstance(eos, (list, tuple)) else [int(eos)]


# ---------------------------------------------------------------------------------------------------------
# Longer contexts than the steps run: the cache measured up to a budget, the formula beyond
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachePoint:
    """The cache of one model after `tokens` tokens: weighed from its tensors and by the formula."""

    tokens: int
    measured_bytes: int
    formula_bytes: int


@torch.inference_mode()
def fill_cache(loaded: LoadedModel, spec: VariantSpec, input_ids: list[int], chunk: int = PREFILL_CHUNK) -> list[CachePoint]:
    """Prefill `input_ids` in chunks of `chunk` tokens and weigh the cache after each chunk.

    Chunking keeps the attention scores of one pass at (H, chunk, S) instead of (H, T, T), so a long context fits
    where a single pass would not; the cache it leaves is the same.
    """
    formula = cache_formula(loaded, spec)
    points, cache = [], None
    for first in range(0, len(input_ids), chunk):
        ids = torch.tensor([input_ids[first : first + chunk]], device=loaded.device)  # (1, chunk)
        cache = loaded.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1).cache
        cached = cache.get_seq_length()
        points.append(CachePoint(cached, cache_bytes(cache), formula.bytes_at(cached)))
    return points


def formula_curve(formula: CacheFormula, lengths: list[int]) -> list[int]:
    """Cache bytes at each context length by the formula (sliding windows stop growing when full)."""
    return [formula.bytes_at(tokens) for tokens in lengths]


def context_lengths(longest: int, points: int = 48) -> list[int]:
    """Context lengths from 1 to `longest`, spaced evenly on a log axis, with 4k, 32k and 128k among them."""
    grid = np.unique(np.geomspace(1, max(longest, 2), points).round().astype(int)).tolist()
    marks = [tokens for tokens in (4_096, 32_768, 131_072) if tokens <= longest]
    return sorted(set(grid) | set(marks) | {longest})


# ---------------------------------------------------------------------------------------------------------
# A second variant named in one word, for links and the command line
# ---------------------------------------------------------------------------------------------------------


def compare_spec(name: str) -> VariantSpec | None:
    """The variant a compact name stands for (None for "none"): "original", "mha", "mqa", "gqa-3", "mla-192"
    (naive, data-aware latent), "mla-192-plain" (plain SVD), "mla-160-rope32" (DeepSeek's decoupled form with a
    32-dim shared RoPE key, absorbed path). The model checks the numbers when the variant is converted."""
    parts = name.strip().lower().split("-")
    kind, numbers = parts[0], parts[1:]
    try:
        if kind in ("none", "original", "mha", "mqa") and not numbers:
            return None if kind == "none" else VariantSpec(kind)
        if kind == "gqa" and len(numbers) == 1:
            return VariantSpec("gqa", kv_heads=int(numbers[0]))
        if kind == "mla" and numbers:
            rank, options = int(numbers[0]), numbers[1:]
            svd = "plain" if "plain" in options else "data"
            rope = [int(option[4:]) for option in options if option.startswith("rope")]
            if set(options) - {"plain"} - {f"rope{r}" for r in rope} or len(rope) > 1:
                raise ValueError
            if rope:
                return VariantSpec("mla", form="decoupled", latent_rank=rank, rope_dims=rope[0], svd=svd,
                                   attn_path="absorb")
            return VariantSpec("mla", latent_rank=rank, svd=svd)
    except ValueError:
        pass
    raise ValueError(f"'{name}' names no variant: use none, original, mha, mqa, gqa-3, mla-192, mla-192-plain "
                     "or mla-160-rope32.")


def compare_name(spec: VariantSpec | None) -> str:
    """The compact name of a variant, the inverse of `compare_spec` for the variants it can name."""
    if spec is None:
        return "none"
    if spec.variant == "gqa":
        return f"gqa-{spec.kv_heads}"
    if spec.variant == "mla":
        plain = "-plain" if spec.svd == "plain" else ""
        rope = f"-rope{spec.rope_dims}" if spec.form == "decoupled" else ""
        return f"mla-{spec.latent_rank}{plain}{rope}"
    return spec.variant
