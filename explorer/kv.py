"""The KV cache: its size by the one formula, the layouts a model's variants would cache, and the bytes of a real
cache weighed from its tensors beside the formula.

Per token and layer (DeepSeek-V2, Table 1): MHA/GQA/MQA cache 2·n_g·d_h values, MLA caches d_c + d_h^R. A
sliding-window layer stops growing at its window. Everything reads `explorer.config.ModelConfig`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import torch

from explorer.config import Attention, ModelConfig, classify, read_config, reference_models
from explorer.dtypes import DTYPE_BITS, dtype_bits

TORCH_DTYPE_NAMES = {
    torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16",
    torch.float8_e4m3fn: "fp8", torch.float8_e5m2: "fp8",
}


# --- the formula ------------------------------------------------------------------------------------------------

def values_per_layer(layout: ModelConfig) -> tuple[int, ...]:
    """Cached numbers per token in each layer: 2·n_g·d_h, or d_c + d_h^R for MLA. An encoder keeps no cache;
    for it these are the K/V values each layer computes per token, what a cache would hold."""
    if layout.attention == "mla":
        return tuple(layout.latent_rank_of(i) + layout.rope_head_dim for i in range(layout.num_layers))
    return (2 * layout.kv_heads * layout.head_dim,) * layout.num_layers


def values_per_token_per_layer(layout: ModelConfig) -> float:
    """Cached numbers per token and layer, averaged over layers (equal in every layer unless converted)."""
    values = values_per_layer(layout)
    mean = sum(values) / len(values)
    return int(mean) if mean == int(mean) else mean


@dataclass(frozen=True)
class KVCacheSize:
    """The KV cache of `batch` sequences of `tokens` tokens each, by the formula."""

    layout: ModelConfig  # the attention layout the numbers come from
    # request
    tokens: int  # context length per sequence
    batch: int  # sequences held at once
    dtype: str  # cache dtype: "fp32", "bf16", "fp16", "fp8" or "int4"
    # result
    bits_per_value: int  # 32, 16, 8 or 4
    bytes_per_token: float  # one more token of one sequence, before any sliding window is full
    cached_tokens_per_layer: tuple[int, ...]  # min(tokens, window) for each layer
    kv_cache_bytes: int  # the whole cache: batch x sum over layers of cached tokens x values x bits / 8
    explanation: str  # one sentence with the formula and its numbers

    @property
    def fields_used(self) -> dict[str, object]:
        return self.layout.fields_used


def kv_cache_size(layout, tokens: int, batch: int = 1, dtype: str = "bf16") -> KVCacheSize:
    """The cache of `batch` sequences of `tokens` tokens; sliding-window layers hold at most their window
    (the window includes the token being decoded; between steps transformers keeps window - 1 of them).
    `layout` is a ModelConfig or anything `read_config` reads."""
    layout = read_config(layout)
    bits = dtype_bits(dtype)
    if tokens < 0 or batch < 1:
        raise ValueError("Choose 0 or more tokens and a batch of at least 1 sequence.")
    if not layout.is_decoder:
        return KVCacheSize(
            layout, tokens, batch, dtype, bits, 0.0, (0,) * layout.num_layers, 0,
            f"{layout.name} is an encoder: it reads the whole text at once and keeps no KV cache.",
        )
    values = values_per_layer(layout)
    cached = tuple(tokens if window is None else min(tokens, window) for window in layout.layer_windows)
    total_bits = batch * sum(count * each for count, each in zip(cached, values)) * bits
    if layout.attention == "mla":
        latent = values_per_token_per_layer(layout) - layout.rope_head_dim  # d_c, averaged when it varies
        per_layer = f"({'' if latent == layout.latent_rank else '~'}{latent:g} latent + {layout.rope_head_dim} RoPE key)"
    else:
        heads = f"{layout.kv_heads} KV head{'s' if layout.kv_heads > 1 else ''}"
        per_layer = f"2 (K and V) x {heads} x {layout.head_dim} dims"
    windows = sorted({w for w in layout.layer_windows if w is not None})
    window_text = (
        f"; {sum(w is not None for w in layout.layer_windows)} sliding-window layers stop at "
        f"{', '.join(f'{w:,}' for w in windows)} tokens" if windows else ""
    )
    per_token = sum(values) * bits / 8
    return KVCacheSize(
        layout=layout, tokens=tokens, batch=batch, dtype=dtype, bits_per_value=bits,
        bytes_per_token=per_token,
        cached_tokens_per_layer=cached,
        kv_cache_bytes=math.ceil(total_bits / 8),
        explanation=(
            f"{layout.num_layers} layers x {per_layer} x {bits // 8 if bits >= 8 else 0.5} bytes ({dtype}) = "
            f"{per_token:,.0f} bytes per token{window_text}."
        ),
    )


def cache_curve(layout: ModelConfig, context_lengths: Sequence[int], batch: int = 1, dtype: str = "bf16") -> list[int]:
    """Cache bytes at each context length (for charts)."""
    return [kv_cache_size(layout, tokens, batch, dtype).kv_cache_bytes for tokens in context_lengths]


# --- the same model with another attention ----------------------------------------------------------------------

def convert_layout(
    layout: ModelConfig,
    attention: Attention,
    kv_heads: int | None = None,
    latent_rank: int | None = None,
    rope_head_dim: int | None = None,
) -> ModelConfig:
    """The same decoder with another attention, for the calculator: mha, gqa with `kv_heads`, mqa, or mla with
    `latent_rank` and `rope_head_dim` (defaults: DeepSeek-V2's choice d_c = 4·d_h and d_h^R = d_h / 2). A real
    conversion's layout comes from `explorer.variants.spec.cached_layout`, which checks its settings first."""
    if not layout.is_decoder:
        raise ValueError(f"{layout.name} is an encoder: it keeps no KV cache, so there are no variants to compare.")
    if attention == "gqa":
        divisors = [d for d in range(1, layout.query_heads + 1) if layout.query_heads % d == 0]
        if kv_heads not in divisors:
            raise ValueError(
                f"{layout.name} has {layout.query_heads} query heads; choose a KV-head count that divides it: "
                f"{', '.join(map(str, divisors))}."
            )
    if attention == "mla":
        latent_rank = 4 * layout.head_dim if latent_rank is None else latent_rank
        rope_head_dim = layout.head_dim // 2 if rope_head_dim is None else rope_head_dim
    return with_attention(layout, attention, kv_heads, latent_rank, rope_head_dim)


def with_attention(
    layout: ModelConfig,
    attention: Attention,
    kv_heads: int | None = None,
    latent_rank: int | None = None,
    rope_head_dim: int | None = None,
    layer_latent_ranks: tuple[int, ...] = (),
) -> ModelConfig:
    """`layout` with another attention, as given (no defaults, and encoders too): what a converted model caches,
    or would cache per token if it kept a cache."""
    base = dict(latent_rank=None, rope_head_dim=None, layer_latent_ranks=(), notes=(), converted=True)
    if attention == "mha":
        return dataclasses.replace(layout, attention="mha", kv_heads=layout.query_heads, **base)
    if attention == "mqa":
        return dataclasses.replace(layout, attention="mqa", kv_heads=1, **base)
    if attention == "gqa":
        return dataclasses.replace(layout, attention=classify(kv_heads, layout.query_heads), kv_heads=kv_heads,
                                   **base)
    if attention == "mla":
        if layer_latent_ranks:
            latent_rank = round(sum(layer_latent_ranks) / len(layer_latent_ranks))
        if latent_rank is None or rope_head_dim is None or min((latent_rank, *layer_latent_ranks)) < 1 \
                or rope_head_dim < 0:
            raise ValueError("Choose a latent rank of at least 1 and a RoPE key size of 0 or more.")
        return dataclasses.replace(
            layout, attention="mla", kv_heads=layout.query_heads, latent_rank=latent_rank,
            rope_head_dim=rope_head_dim, layer_latent_ranks=tuple(layer_latent_ranks), notes=(), converted=True,
        )
    raise ValueError(f"Unknown attention '{attention}': choose mha, gqa, mqa or mla.")


def variant_layouts(layout: ModelConfig) -> list[ModelConfig]:
    """The model as it is plus the variants worth comparing: MHA, GQA (its own, or 8 KV heads), MQA and MLA."""
    if not layout.is_decoder:
        return []
    candidates = [layout, convert_layout(layout, "mha")]
    if layout.attention != "gqa" and layout.query_heads % 8 == 0 and layout.query_heads > 8:
        candidates.append(convert_layout(layout, "gqa", kv_heads=8))
    candidates += [convert_layout(layout, "mqa"), convert_layout(layout, "mla")]
    unique: dict[tuple, ModelConfig] = {}
    for candidate in candidates:
        key = (candidate.attention, candidate.kv_heads, candidate.latent_rank, candidate.rope_head_dim)
        unique.setdefault(key, candidate)
    return sorted(unique.values(), key=lambda each: -values_per_token_per_layer(each))


# --- measured: the bytes of a real cache ------------------------------------------------------------------------

def cache_tensors(cache) -> list[torch.Tensor]:
    """Every tensor a cache holds: a transformers Cache (each layer's keys and values), or any nesting of
    tensors in lists, tuples and dicts (legacy tuples, custom variant caches)."""
    if cache is None:
        return []
    if isinstance(cache, torch.Tensor):
        return [cache]
    if hasattr(cache, "layers"):  # transformers 5 Cache: one layer object per model layer
        return [tensor for layer in cache.layers for tensor in cache_tensors([layer.keys, layer.values])]
    if isinstance(cache, dict):
        cache = list(cache.values())
    if isinstance(cache, (list, tuple)):
        return [tensor for item in cache for tensor in cache_tensors(item)]
    raise TypeError(f"Cannot list the tensors of a {type(cache).__name__}: pass a Cache, tensors, or lists of them.")


def cache_bytes(cache) -> int:
    """Bytes of the values a cache holds (sum of numel x element size over its tensors)."""
    return sum(tensor.numel() * tensor.element_size() for tensor in cache_tensors(cache))


@dataclass(frozen=True)
class MeasuredCache:
    """A real cache after one forward pass, beside the formula for the same tokens."""

    model_name: str  # the model measured
    tokens: int  # tokens run through the model
    batch: int  # sequences
    has_cache: bool  # False for encoders
    dtype: str  # dtype of the cached tensors ("fp32" on CPU)
    tensor_count: int  # tensors found in the cache
    measured_bytes: int  # sum of the cache tensors' bytes
    formula_bytes: int  # kv_cache_size for the same layout, tokens, batch and dtype
    cuda_peak_bytes: int | None  # CUDA allocator peak during the forward pass, above what was allocated before
    cuda_retained_bytes: int | None  # CUDA memory still allocated afterwards with only the cache kept
    explanation: str  # one sentence for the page


def _cache_of(outputs):
    return outputs["cache"] if "cache" in outputs else outputs.get("past_key_values")  # renamed in transformers 5


@torch.inference_mode()
def measure_kv_cache(
    model: torch.nn.Module, layout: ModelConfig | None = None, tokens: int = 64, batch: int = 1
) -> MeasuredCache:
    """Run `batch` x `tokens` token ids through `model` with use_cache=True and weigh the real cache.

    The formula uses `layout`, by default read from the model's config; pass the converted layout
    (`explorer.variants.spec.cached_layout`) when the model's attention no longer matches its config.
    """
    if tokens < 1 or batch < 1:
        raise ValueError("Measure at least 1 token in a batch of at least 1 sequence.")
    layout = layout or read_config(model.config)
    parameter = next(model.parameters())
    model_dtype = TORCH_DTYPE_NAMES.get(parameter.dtype, str(parameter.dtype))
    if not layout.is_decoder:
        return MeasuredCache(
            model_name=layout.name, tokens=tokens, batch=batch, has_cache=False, dtype=model_dtype,
            tensor_count=0, measured_bytes=0, formula_bytes=0, cuda_peak_bytes=None, cuda_retained_bytes=None,
            explanation=f"{layout.name} is an encoder: it reads the whole text at once and keeps no KV cache, "
            "so there is nothing to measure.",
        )
    vocab_size = model.config.get_text_config().vocab_size
    input_ids = (torch.arange(batch * tokens, device=parameter.device) % vocab_size).reshape(batch, tokens)  # (B, T)
    on_cuda = parameter.device.type == "cuda"
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        allocated_before = torch.cuda.memory_allocated()
    outputs = model(input_ids=input_ids, use_cache=True)
    cache = _cache_of(outputs)
    del outputs  # keep only the cache, so retained memory is the cache's
    cuda_peak = cuda_retained = None
    if on_cuda:
        torch.cuda.synchronize()
        cuda_peak = torch.cuda.max_memory_allocated() - allocated_before
        cuda_retained = torch.cuda.memory_allocated() - allocated_before
    tensors = cache_tensors(cache)
    dtype = TORCH_DTYPE_NAMES.get(tensors[0].dtype, str(tensors[0].dtype)) if tensors else model_dtype
    measured = cache_bytes(tensors)
    formula = kv_cache_size(layout, tokens, batch, dtype).kv_cache_bytes
    verdict = "equal to" if measured == formula else f"{measured / formula:.4f}x"
    # transformers keeps window - 1 tokens of a full sliding layer between steps; the next token completes it
    full = [i for i, window in enumerate(layout.layer_windows) if window is not None and tokens >= window]
    one_token_per_full_window = batch * sum(values_per_layer(layout)[i] for i in full) * DTYPE_BITS[dtype] // 8
    why = (
        f" transformers keeps window - 1 tokens in each of the {len(full)} full sliding-window layers between "
        "steps (the next token completes the window); the formula counts the whole window."
        if full and measured == formula - one_token_per_full_window
        else ""
    )
    return MeasuredCache(
        model_name=layout.name, tokens=tokens, batch=batch, has_cache=True, dtype=dtype,
        tensor_count=len(tensors), measured_bytes=measured, formula_bytes=formula,
        cuda_peak_bytes=cuda_peak, cuda_retained_bytes=cuda_retained,
        explanation=(
            f"{len(tensors)} cache tensors hold {measured:,} bytes after {tokens} tokens x {batch} "
            f"sequence{'s' if batch > 1 else ''}, {verdict} the formula's {formula:,} bytes.{why}"
        ),
    )


@torch.inference_mode()
def measured_cache(model, input_ids: torch.Tensor) -> tuple[list[int], list[int]]:
    """(values, bytes) per cached token for each layer, read from the cache tensors of one forward pass.

    Every layer's cache holds two tensors (keys and values; MLA keeps its latent and its RoPE key there),
    each (B, heads, S, d). Dividing by the S positions it holds gives the per-token size even where a
    sliding-window layer (Gemma-3) keeps only its last window of tokens.
    """
    cache = _cache_of(model(input_ids=input_ids, use_cache=True))
    B = input_ids.shape[0]  # batch
    values, sizes = [], []
    for layer in cache.layers:
        tensors = cache_tensors([layer.keys, layer.values])
        values.append(sum(t.numel() // (B * t.shape[-2]) for t in tensors))
        sizes.append(sum(t.numel() * t.element_size() // (B * t.shape[-2]) for t in tensors))
    return values, sizes


@torch.inference_mode()
def computed_kv(model, attention_layers, input_ids: torch.Tensor) -> tuple[list[int], list[int]]:
    """(values, bytes) per token for each layer: the K/V tensors each attention layer computes in one pass.

    An encoder keeps no cache across steps: this weighs what a cache would hold for these tokens. A converted
    layer hands its K/V to its `hook_cached` tap ((keys, values), or MLA's (latent, RoPE key)); an original
    layer's are the outputs of its key and value projections (`key`/`value` or `k_proj`/`v_proj`).
    """
    B, T = input_ids.shape  # batch, tokens
    seen: list[list[torch.Tensor]] = [[] for _ in attention_layers]

    def keep(index):
        def hook(module, inputs, output):
            seen[index].extend(cache_tensors(output))

        return hook

    handles = []
    for i, layer in enumerate(attention_layers):
        taps = [layer.hook_cached] if hasattr(layer, "hook_cached") else _kv_projections(layer)
        handles += [tap.register_forward_hook(keep(i)) for tap in taps]
    try:
        model(input_ids=input_ids)
    finally:
        for handle in handles:
            handle.remove()
    values = [sum(t.numel() for t in tensors) // (B * T) for tensors in seen]
    sizes = [sum(t.numel() * t.element_size() for t in tensors) // (B * T) for tensors in seen]
    return values, sizes


def _kv_projections(layer) -> list[torch.nn.Module]:
    """The modules whose outputs are an original layer's keys and values."""
    for names in (("key", "value"), ("k_proj", "v_proj")):
        if all(hasattr(layer, name) for name in names):
            return [getattr(layer, name) for name in names]
    raise ValueError(f"Cannot find the key and value projections of a {type(layer).__name__} layer.")


@dataclass(frozen=True)
class Measurable:
    """One model to weigh: a label, the model, the layout it should cache, and (encoders) its attention layers."""

    label: str  # e.g. the variant spec's label
    model: torch.nn.Module  # the (converted) model
    layout: ModelConfig  # what the formula says it caches
    attention_layers: Sequence[torch.nn.Module] = ()  # an encoder's attention modules, whose K/V are weighed


def measured_table(models: Sequence[Measurable], tokens: int) -> list[dict[str, object]]:
    """Measured cache beside the formula, one row per model: a decoder's cache tensors after `tokens` tokens, or
    the K/V tensors an encoder computes for them (it keeps no cache: what a cache would hold)."""
    rows = []
    for each in models:
        formula = values_per_token_per_layer(each.layout)
        if each.layout.is_decoder:
            measured = measure_kv_cache(each.model, each.layout, tokens, 1)
            rows.append({
                "variant": each.label, "values / token / layer": formula, "cache tensors": measured.tensor_count,
                "measured bytes": measured.measured_bytes, "formula bytes": measured.formula_bytes,
                "measured / formula": round(measured.measured_bytes / measured.formula_bytes, 4),
                "dtype": measured.dtype,
            })
            continue
        per_token = values_per_token_per_layer(each.layout)
        input_ids = torch.randint(1000, each.model.config.vocab_size, (1, tokens),
                                  generator=torch.Generator().manual_seed(0))  # (1, T): any ids weigh the same
        values, sizes = computed_kv(each.model, each.attention_layers, input_ids)
        rows.append({
            "variant": each.label, "values / token / layer": per_token,
            "computed values / token / layer": sum(values) / len(values), "computed bytes / token": sum(sizes),
            "measured / formula": round(sum(values) / len(values) / per_token, 4),
            "note": "an encoder keeps no cache: these are the K/V tensors it computes, what a cache would hold",
        })
    return rows


# --- tables for people ------------------------------------------------------------------------------------------

def reference_table(dtype: str = "bf16") -> list[dict[str, object]]:
    """One row per reference model (its own attention, as built): cached values and bytes per token."""
    rows = []
    for name, config in reference_models().items():
        layout = read_config(config, name)
        size = kv_cache_size(layout, 1, 1, dtype)
        rows.append({
            "model": name,
            "attention": layout.label if layout.is_decoder else "encoder (no cache)",
            "layers": layout.num_layers,
            "values / token / layer": values_per_token_per_layer(layout) if layout.is_decoder else 0,
            f"KiB / token ({dtype})": round(size.bytes_per_token / 1024, 3),
            "source": config.get("_source", "").split(";")[0],
        })
    return sorted(rows, key=lambda row: -row[f"KiB / token ({dtype})"])


def variant_table(layouts: Sequence[ModelConfig], tokens: int, batch: int, dtype: str) -> list[dict[str, object]]:
    """One row per variant of a model: values and bytes per token, the whole cache at `tokens`, and the saving."""
    if not layouts:
        return []
    largest = max(kv_cache_size(layout, tokens, batch, dtype).kv_cache_bytes for layout in layouts) or 1
    rows = []
    for layout in layouts:
        size = kv_cache_size(layout, tokens, batch, dtype)
        rows.append({
            "variant": layout.legend,
            "values / token / layer": values_per_token_per_layer(layout),
            "KiB / token": round(size.bytes_per_token / 1024, 3),
            f"cache at {tokens:,} tokens (GiB)": round(size.kv_cache_bytes / 2**30, 3),
            "vs MHA": f"{size.kv_cache_bytes / largest:.1%}",
        })
    return rows
