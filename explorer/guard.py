"""The memory guard: estimate what a run or a model load will hold in memory before it starts, and refuse with a
sentence what would exceed the limit (`ATTENTION_EXPLORER_MEMORY_LIMIT`, else a fraction of the memory available).

Estimates come from the model's description (`explorer.config.read_config`) and the token count only, so the
guard runs before any tensor is allocated; its KV cache is the one formula's (`explorer.kv.kv_cache_size`).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import psutil

from explorer.config import read_config
from explorer.dtypes import dtype_of_bytes
from explorer.kv import kv_cache_size
from explorer.params import estimate_parameters
from explorer.settings import Settings, read_settings

Keeps = Literal["all_layers", "one_layer"]  # run_attention keeps every layer's weights; the overview one at a time
KEEP_BYTES = 150 * 2**20  # the overview keeps all layers in float16 up to this size (explorer.run.KEEP_BYTES)


class MemoryLimitError(ValueError):
    """A run or a model load would need more memory than this server allows; the message says what to do."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run holds at its peak, by what holds them."""

    num_tokens: int  # tokens in the run
    attention_bytes: int  # attention probabilities kept: every layer's (H, T, T), and the copies made of them
    activation_bytes: int  # working set of one layer (scores, softmax, q/k/v, MLP), hidden states and logits
    kv_cache_bytes: int  # keys and values a decoder returns: layers · T · (2 · kv_heads · head_dim, or a latent)

    @property
    def total_bytes(self) -> int:
        return self.attention_bytes + self.activation_bytes + self.kv_cache_bytes

    def describe(self) -> str:
        """'attention 283 MB, activations 120 MB, KV cache 7.9 MB'."""
        return (
            f"attention {readable_bytes(self.attention_bytes)}, activations {readable_bytes(self.activation_bytes)}, "
            f"KV cache {readable_bytes(self.kv_cache_bytes)}"
        )


def estimate_run(config, num_tokens: int, dtype_bytes: int = 4, keeps: Keeps = "all_layers") -> MemoryEstimate:
    """Peak memory of one forward pass of `num_tokens` tokens that records attention.

    `all_layers` (explorer.run.run_attention): transformers returns every layer's probabilities in the model's
    dtype, they are stacked (a second copy), and kept as float32. `one_layer` (the overview): a hook reduces
    each layer's float32 copy as it appears, and keeps all layers in float16 only when they fit in KEEP_BYTES.
    """
    model = read_config(config)
    T = max(int(num_tokens), 1)
    one_layer_weights = model.query_heads * T * T  # values in one layer's (H, T, T) probabilities
    if keeps == "all_layers":
        attention = model.num_layers * one_layer_weights * (2 * dtype_bytes + (0 if dtype_bytes == 4 else 4))
    else:
        kept = model.num_layers * one_layer_weights * 2
        attention = (kept if kept <= KEEP_BYTES else 0) + 3 * one_layer_weights * 4  # float32 copy, pool, summaries
    hidden = model.hidden_size
    scores = 3 * one_layer_weights * dtype_bytes  # raw scores, masked scores, softmax of the layer running
    projections = T * (model.query_heads + 2 * model.kv_heads) * model.head_dim * dtype_bytes  # q, k, v
    residual = 4 * T * hidden * dtype_bytes  # hidden states, norm output, attention and MLP outputs
    mlp = 3 * T * (model.intermediate_size or 4 * hidden) * dtype_bytes  # gate, up and their product
    logits = T * (model.vocab_size or 0) * 4 if model.is_decoder else 0  # (1, T, vocab), float32
    kv_cache = kv_cache_size(model, T, 1, dtype_of_bytes(dtype_bytes)).kv_cache_bytes  # 0 for an encoder
    return MemoryEstimate(T, attention, scores + projections + residual + mlp + logits, kv_cache)


def available_memory() -> int:
    """Bytes this process can still allocate: the machine's available memory, capped by a container's limit
    (cgroup v2 or v1), which hosts set below the machine's memory."""
    available = psutil.virtual_memory().available
    container = _cgroup_headroom()
    return min(available, container) if container is not None else available


def memory_limit(settings: Settings | None = None) -> int:
    """Bytes one run or model load may plan to use now: the configured limit, else a fraction of what is free."""
    settings = settings or read_settings()
    if settings.memory_limit_bytes is not None:
        return settings.memory_limit_bytes
    return int(settings.memory_fraction * available_memory())


def longest_fitting_tokens(config, limit_bytes: int, dtype_bytes: int = 4, keeps: Keeps = "all_layers") -> int:
    """The most tokens whose run fits in `limit_bytes` (0 when not even one token fits)."""
    config = read_config(config)  # read once, not at every step of the bisection
    low, high = 0, 1 << 20
    while low < high:  # the estimate grows with tokens: bisect
        middle = (low + high + 1) // 2
        if estimate_run(config, middle, dtype_bytes, keeps).total_bytes <= limit_bytes:
            low = middle
        else:
            high = middle - 1
    return low


def check_run(
    config,
    num_tokens: int,
    model_name: str = "this model",
    dtype_bytes: int = 4,
    keeps: Keeps = "all_layers",
    settings: Settings | None = None,
    limit_bytes: int | None = None,
) -> MemoryEstimate:
    """The estimate of a run, or `MemoryLimitError` with what to do when it exceeds the limit.

    Without `limit_bytes`, the limit is `memory_limit(settings)` less what the runs in flight have reserved.
    """
    limit = limit_bytes if limit_bytes is not None else memory_limit(settings) - LEDGER.reserved_bytes()
    return _within(config, num_tokens, model_name, dtype_bytes, keeps, limit)


def _within(config, num_tokens: int, model_name: str, dtype_bytes: int, keeps: Keeps, limit: int) -> MemoryEstimate:
    config = read_config(config)
    estimate = estimate_run(config, num_tokens, dtype_bytes, keeps)
    if estimate.total_bytes > limit:
        fitting = longest_fitting_tokens(config, max(limit, 0), dtype_bytes, keeps)
        advice = (
            f"choose a shorter text or context, at most about {fitting:,} tokens"
            if fitting > 1
            else "try again in a moment, when other runs have finished, or pick a smaller model"
        )
        raise MemoryLimitError(
            f"Running {num_tokens:,} tokens through {model_name} would need about "
            f"{readable_bytes(estimate.total_bytes)} ({estimate.describe()}), more than the "
            f"{readable_bytes(max(limit, 0))} this server can spare for one run now; {advice}."
        )
    return estimate


def estimate_weights(config, dtype_bytes: int = 4) -> int | None:
    """Bytes of a model's weights from its config, or None when the config is too unusual to count."""
    try:
        return estimate_parameters(config).total * dtype_bytes
    except (ValueError, KeyError, TypeError, AttributeError, ZeroDivisionError):
        return None


def check_model(
    config, model_name: str, dtype_bytes: int = 4, settings: Settings | None = None, limit_bytes: int | None = None
) -> int | None:
    """The estimated weight bytes of a model about to load, or `MemoryLimitError` when they exceed the limit."""
    weights = estimate_weights(config, dtype_bytes)
    limit = limit_bytes if limit_bytes is not None else memory_limit(settings)
    if weights is not None and weights > limit:
        raise MemoryLimitError(
            f"{model_name} has about {readable_bytes(weights)} of weights at {8 * dtype_bytes}-bit precision, more "
            f"than the {readable_bytes(limit)} this server can spare; pick a smaller model."
        )
    return weights


class MemoryLedger:
    """Bytes planned by the runs in flight in this process, so that concurrent sessions cannot overrun the
    limit together: each admitted run counts against the limit of the others until it ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reserved = 0  # bytes of the runs in flight

    def reserved_bytes(self) -> int:
        with self._lock:
            return self._reserved

    @contextlib.contextmanager
    def admit(self, config, num_tokens: int, model_name: str = "this model", dtype_bytes: int = 4,
              keeps: Keeps = "all_layers", settings: Settings | None = None,
              limit_bytes: int | None = None) -> Iterator[MemoryEstimate]:
        """Check a run against the limit left by the runs in flight, and count it until the block ends."""
        limit = limit_bytes if limit_bytes is not None else memory_limit(settings)
        with self._lock:
            estimate = _within(config, num_tokens, model_name, dtype_bytes, keeps, limit - self._reserved)
            self._reserved += estimate.total_bytes
        try:
            yield estimate
        finally:
            with self._lock:
                self._reserved -= estimate.total_bytes


LEDGER = MemoryLedger()  # the process-wide ledger: one per server process, shared by all its sessions


def admit(config, num_tokens: int, model_name: str = "this model", dtype_bytes: int = 4, keeps: Keeps = "all_layers",
          settings: Settings | None = None, limit_bytes: int | None = None):
    """`with admit(config, tokens, name): run...`: refuse (MemoryLimitError) or count the run while it runs."""
    return LEDGER.admit(config, num_tokens, model_name, dtype_bytes, keeps, settings, limit_bytes)


def admit_text(loaded, text: str, max_tokens: int, keeps: Keeps = "all_layers", settings: Settings | None = None):
    """`with admit_text(loaded, text, max_tokens): run...`: `admit` for a loaded model and a text, whose tokens
    are counted with the model's tokenizer and cut to `max_tokens`, as the run will cut them."""
    num_tokens = min(len(loaded.tokenizer(text)["input_ids"]), max_tokens)
    return admit(loaded.config, num_tokens, loaded.entry.label, loaded.dtype.itemsize, keeps, settings)


def readable_bytes(size: float) -> str:
    """'1.5 GB', '283 MB', '12 kB' (powers of 1000, as hosts advertise memory)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(size) >= scale:
            return f"{size / scale:,.1f} {unit}" if size / scale < 10 else f"{size / scale:,.0f} {unit}"
    return f"{int(size)} bytes"


def _cgroup_headroom() -> int | None:
    """Limit minus use of this process's memory cgroup (page cache that can be dropped counts as free)."""
    v2 = Path("/sys/fs/cgroup")
    v1 = Path("/sys/fs/cgroup/memory")
    try:
        if (v2 / "memory.max").exists():
            limit_text = (v2 / "memory.max").read_text().strip()
            if limit_text == "max":
                return None
            usage = int((v2 / "memory.current").read_text())
            stat_name = "inactive_file"
            stat_file = v2 / "memory.stat"
            limit = int(limit_text)
        elif (v1 / "memory.limit_in_bytes").exists():
            limit = int((v1 / "memory.limit_in_bytes").read_text())
            if limit >= 1 << 60:  # v1 writes a huge number for "no limit"
                return None
            usage = int((v1 / "memory.usage_in_bytes").read_text())
            stat_name = "total_inactive_file"
            stat_file = v1 / "memory.stat"
        else:
            return None
        reclaimable = 0
        for line in stat_file.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == stat_name:
                reclaimable = int(value)
        return max(limit - usage + reclaimable, 0)
    except (OSError, ValueError):
        return None
