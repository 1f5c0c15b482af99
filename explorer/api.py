"""The explorer from Python and notebooks, in the order the app works: load a model, run a text, look at its
attention, convert it to another attention variant, measure what that costs in quality and in KV cache, draw it,
and save the figure for a paper.

    from explorer import api

    model = api.load("smollm2")                     # a catalogue key, a hub id (online) or a local folder
    seen = api.attention(model, "The giant ate the apple because it was hungry")
    seen.tokens                                     # ['<|im_start|>', 'The', 'giant', ...]: what the model saw
    seen.weights.values.shape                       # (30, 9, T, T): layer, head, query, key
    api.heatmap(seen, layer=3, head=7)              # a plotly figure: it renders inline in Jupyter
    mqa = api.convert(model, "mqa")                 # a converted copy; the original is never changed
    api.quality(model, mqa).perplexity              # on held-out news prose, against the original
    api.kv_cache("llama-3-8b", tokens=131_072)      # the cache by the formula, for every variant
    api.save(api.kv_chart("llama-3-8b"), "kv.pdf")  # SVG or PDF at a paper's width, fonts embedded

Everything here calls the functions the app and the command line use (explorer.run, explorer.variants,
explorer.quality, explorer.kv, explorer.charts, explorer.export); nothing is computed a second way. Numbers
come back as numpy arrays with a label for every position (`explorer.export.LabelledArray`: `.values`,
`.axes`, `.csv()`, `.json()`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import plotly.graph_objects as go

from explorer import export
from explorer.charts.attention import head_grid, head_heatmap, mask_heatmap, mask_title
from explorer.charts.kv import cache_size_figure
from explorer.charts.variants import frontier_figure
from explorer.export import LabelledArray, labelled

# KV-cache numbers: the one model description, the one cache formula, GPUs and what fits.
from explorer.config import ModelConfig, read_config
from explorer.hardware import GPUS, gpu_memory_lines
from explorer.kv import KVCacheSize, kv_cache_size, variant_layouts, variant_table
from explorer.params import estimate_parameters
from explorer.roofline import context_grid, longest_context, variant_cache_curves, variant_longest_fits
from explorer.loading import LoadedModel, load_model, pick_device
from explorer.quality import (
    EncoderQuality,
    Quality,
    compare,
    compare_encoder,
    encoder_evaluation_ids,
    encoder_reference,
    evaluation_ids,
    reference,
)
from explorer.run import MAX_TOKENS, AttentionRun, run_attention
from explorer.variants import Conversion, VariantSpec, attention_shape, cache_values_per_token
from explorer.variants import convert as convert_model

__all__ = [
    "Attention",
    "KVReport",
    "VariantSpec",
    "attention",
    "cache_values",
    "convert",
    "frontier",
    "heads",
    "heatmap",
    "kv_cache",
    "kv_chart",
    "load",
    "mask",
    "quality",
    "save",
]

Model = LoadedModel | Conversion  # anything that runs: a loaded model or a converted copy of one


# --- Load --------------------------------------------------------------------------------------------------


def load(model: str = "smollm2", device: str | None = None) -> LoadedModel:
    """Load a model with eager attention, in eval mode: a catalogue key ("smollm2", "minilm", "gemma3"), a
    Hugging Face hub id (online; safetensors only, never remote code) or a local folder.

    `device` is "cpu", "cuda" or "mps"; by default CUDA, else MPS, else CPU (`ATTENTION_EXPLORER_DEVICE` too).
    The first load of a packaged GGUF model converts it once into a safetensors cache (30-60 s). A model is
    loaded once per (name, device) and shared, as in the app: never change it; `convert` makes copies.
    """
    return _load(model, device or pick_device()[0].type)


@lru_cache(maxsize=4)
def _load(model: str, device: str) -> LoadedModel:
    return load_model(model, device)


def _loaded(model: Model) -> LoadedModel:
    if isinstance(model, Conversion):
        return model.loaded
    if isinstance(model, LoadedModel):
        return model
    raise TypeError(f"Expected a model from api.load or api.convert, not {type(model).__name__}.")


# --- Run: text -> tokens -> attention ----------------------------------------------------------------------


@dataclass
class Attention:
    """One text run through one model: the tokens it saw and where every head of every layer looked.

    Every array is labelled: layers "L0", heads "H0", tokens "#0 The" (position first, so repeated tokens stay
    apart). Rows are queries (the token attending), columns keys (the token attended to), as on screen.
    """

    model: str  # the model's name, as the app shows it
    run: AttentionRun  # the run itself (explorer.run): token ids, raw arrays, masks, timing
    kv_heads: int | None = None  # KV heads of the model that ran (labels GQA groups in `heads`)
    variant: str = "original"  # the variant label when the model was converted

    @property
    def tokens(self) -> list[str]:
        """The tokens as the model saw them, special tokens included, one readable label each (T,)."""
        return self.run.tokens

    @property
    def weights(self) -> LabelledArray:
        """Every head's weights, (L, H, T, T): [layer, head, query, key]; each query's row sums to 1."""
        layers, heads_ = self.run.attentions.shape[:2]
        return LabelledArray(self.run.attentions, {"layer": [f"L{i}" for i in range(layers)],
                                                   "head": [f"H{h}" for h in range(heads_)],
                                                   "query": labelled(self.tokens), "key": labelled(self.tokens)},
                             "weight", self._about())

    def layer(self, layer: int) -> LabelledArray:
        """One layer's heads, (H, T, T): [head, query, key]."""
        self._check(layer)
        return export.heads(self.run.attentions[layer], self.tokens, **self._about(layer=layer))

    def head(self, layer: int, head: int) -> LabelledArray:
        """One head, (T, T): [query, key]."""
        self._check(layer, head)
        return export.heads(self.run.attentions[layer, head], self.tokens, **self._about(layer=layer, head=head))

    def mask(self, layer: int) -> LabelledArray:
        """The layer's attention mask, (T, T) bool: True where a query may attend to a key (causal for a
        decoder, banded by a sliding window, all True for an encoder)."""
        self._check(layer)
        return export.mask(self.run.masks[layer], self.tokens, **self._about(layer=layer))

    def _about(self, **view) -> dict:
        return {"model": self.model, "variant": self.variant, "text": self.run.text, **view}

    def _check(self, layer: int, head: int = 0) -> None:
        layers, heads_ = self.run.attentions.shape[:2]
        if not 0 <= layer < layers:
            raise ValueError(f"{self.model} has {layers} layers; choose a layer from 0 to {layers - 1}.")
        if not 0 <= head < heads_:
            raise ValueError(f"{self.model} has {heads_} heads per layer; choose a head from 0 to {heads_ - 1}.")


def attention(model: Model, text: str, max_tokens: int = MAX_TOKENS) -> Attention:
    """Run `text` through `model` (loaded or converted) once and keep every layer's attention.

    Texts longer than `max_tokens` tokens are cut (`.run.truncated` says so).
    """
    loaded = _loaded(model)
    variant = model.spec.label() if isinstance(model, Conversion) else "original"
    kv_heads = getattr(loaded.config, "num_key_value_heads", None)
    return Attention(loaded.name, run_attention(loaded, text, max_tokens), kv_heads, variant)


# --- Convert: a variant of the same model --------------------------------------------------------------------


def convert(model: LoadedModel, variant: str | VariantSpec = "mqa", **settings) -> Conversion:
    """A converted copy of `model` (which is never changed): "mha", "gqa" (with `kv_heads=`), "mqa" or "mla"
    (with `latent_rank=`, `form="decoupled"`, `svd="plain"`...), or a ready `VariantSpec`.

    The settings are `VariantSpec`'s fields. `.loaded` of the result runs like any model (`api.attention`
    takes the result directly); MLA conversions also report `.latent_ranks` and `.energy_kept` per layer.
    A setting the model cannot take is refused with a sentence (e.g. a GQA group size that does not divide).
    """
    spec = variant if isinstance(variant, VariantSpec) else VariantSpec(variant, **settings)
    if isinstance(variant, VariantSpec) and settings:
        raise ValueError("Give either a VariantSpec or a variant name with settings, not both.")
    return convert_model(_loaded(model), spec)


def cache_values(model: Model) -> float:
    """KV values a model caches per token, averaged over layers, by the formula of its variant (for an encoder,
    the K/V values it computes per token): 2 x KV heads x head dim, or the MLA latent (+ its RoPE key)."""
    loaded = _loaded(model)
    spec = model.spec if isinstance(model, Conversion) else VariantSpec("original")
    per_layer = cache_values_per_token(spec, attention_shape(loaded.config, loaded.name))
    return sum(per_layer) / len(per_layer)


# --- Quality: a variant against the original on held-out prose ------------------------------------------------

_REFERENCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # original model -> {settings: reference}


def quality(original: LoadedModel, variant: Model, chunks: int = 2, chunk_tokens: int = 256,
            texts: int = 8) -> Quality | EncoderQuality:
    """How far `variant` is from `original` on held-out news prose that no conversion was fitted on.

    Decoders: perplexity, KL(original || variant) and top-1 agreement over `chunks` x `chunk_tokens` tokens
    (the app uses 2 x 256). Encoders: how close `texts` documents' sentence embeddings stay (cosine, rank
    correlation of their similarities) and the last hidden state's relative error. The original's outputs are
    computed once per model and settings, then reused for every variant.
    """
    original = _loaded(original)
    settings = (chunks, chunk_tokens) if original.kind != "encoder" else (texts,)
    references = _REFERENCES.setdefault(original.model, {})
    if settings not in references:
        if original.kind == "encoder":
            references[settings] = encoder_reference(original.model, encoder_evaluation_ids(original.tokenizer, texts))
        else:
            references[settings] = reference(original.model, evaluation_ids(original.tokenizer, chunks, chunk_tokens))
    measure = compare_encoder if original.kind == "encoder" else compare
    return measure(_loaded(variant).model, references[settings])


# --- KV cache: numbers for any config ----------------------------------------------------------------------


@dataclass
class KVReport:
    """The KV cache of a model by the formula (DeepSeek-V2, Table 1), and of each of its attention variants."""

    layout: ModelConfig  # what was read from the config: layers, heads, KV heads, head dim, windows, MLA
    size: KVCacheSize  # the model as built: `.bytes_per_token`, `.kv_cache_bytes`, `.explanation`
    variants: list[KVCacheSize]  # the same model as MHA, GQA, MQA and MLA (and as built)
    weight_bytes: float  # the weights' estimated size in the same dtype
    longest_context: dict[str, int | None]  # GPU name -> longest context that fits beside the weights
    # (None: memory sets no limit, as a sliding window stops the cache growing; 0: the weights do not fit)
    rows: list[dict] = field(default_factory=list)  # one row per variant, as the app's table shows it


def kv_cache(config: str | dict | LoadedModel, tokens: int = 4096, batch: int = 1, dtype: str = "bf16",
             weights_dtype: str | None = None) -> KVReport:
    """The KV cache of `batch` sequences of `tokens` tokens in `dtype` (fp32, bf16, fp16, fp8, int4), beside
    weights in `weights_dtype` (None: the cache's dtype).

    `config` is a reference name ("llama-3-8b", see assets/configs), a config.json path or folder, a config as
    a dict or a transformers config, a hub id (online), or a loaded model.
    """
    name = None
    if isinstance(config, (LoadedModel, Conversion)):
        loaded = _loaded(config)
        config, name = loaded.config, loaded.name
    layout = read_config(config, name)
    weight_bytes = estimate_parameters(layout).weight_bytes(weights_dtype or dtype)
    layouts = variant_layouts(layout)
    return KVReport(
        layout=layout,
        size=kv_cache_size(layout, tokens, batch, dtype),
        variants=[kv_cache_size(each, tokens, batch, dtype) for each in layouts],
        weight_bytes=weight_bytes,
        longest_context={gpu.name: longest_context(layout, gpu.memory_bytes, weight_bytes, batch, dtype) for gpu in GPUS},
        rows=variant_table(layouts, tokens, batch, dtype) if layout.is_decoder else [],
    )


# --- Charts: plotly figures, the app's own ----------------------------------------------------------------------


def heatmap(seen: Attention, layer: int, head: int, title: str | None = None, height: int = 460) -> go.Figure:
    """One head's weights (T, T) as the attention page draws it: queries down, keys across, hover per cell."""
    weights = seen.head(layer, head).values
    return head_heatmap(weights, seen.tokens, title or f"Layer {layer}, head {head}", height)


def heads(seen: Attention, layer: int, title: str | None = None) -> go.Figure:
    """Every head of one layer (H, T, T) as small heatmaps, labelled with the KV head each GQA group shares."""
    weights = seen.layer(layer).values
    return head_grid(weights, seen.tokens, title or f"Layer {layer}: all {len(weights)} heads", seen.kv_heads)


def mask(seen: Attention, layer: int, title: str | None = None) -> go.Figure:
    """The layer's attention mask (T, T): green where a query may attend to a key, grey where it may not."""
    allowed = seen.mask(layer).values
    window = seen.run.layer_windows[layer]
    return mask_heatmap(allowed, seen.tokens, title or mask_title(seen.run.kind, window, len(seen.tokens)))


def kv_chart(config: str | dict | LoadedModel, batch: int = 1, dtype: str = "bf16", max_tokens: int = 2**20,
             log_x: bool = True) -> go.Figure:
    """Weights + KV cache (GiB) against context length for every variant of a model, with GPU memory lines and
    the longest context that fits on each, as the KV cache page draws it."""
    report = kv_cache(config, max_tokens, batch, dtype)
    layout = report.layout
    if not layout.is_decoder:
        raise ValueError(f"{layout.name} is an encoder: it keeps no KV cache, so there is no curve to draw.")
    layouts = variant_layouts(layout)
    contexts = context_grid(max_tokens, include=[w for w in layout.layer_windows if w], min_tokens=128)
    memory_lines = gpu_memory_lines()
    curves = variant_cache_curves(layouts, contexts, batch, dtype)
    fits = variant_longest_fits(layouts, memory_lines, report.weight_bytes, batch, dtype)
    title = f"{layout.name}: weights + KV cache ({dtype}, batch {batch})"
    return cache_size_figure(contexts, curves, report.weight_bytes, memory_lines, fits, log_x=log_x, title=title)


def frontier(points: list[dict], original_perplexity: float, title: str | None = None) -> go.Figure:
    """Perplexity (log) against KV values cached per token and layer, one marker per variant, as the variant
    lab draws it. Each point is {"label", "values", "perplexity"}: `label` a variant label (`spec.label()`),
    `values` from `api.cache_values`, `perplexity` from `api.quality`."""
    figure = frontier_figure(points, original_perplexity)
    if title:
        figure.update_layout(title=title)
    return figure


# --- Save: figures for papers --------------------------------------------------------------------------------


def save(figure: go.Figure, path: str | Path, size: str | float = "page", height: int | None = None) -> Path:
    """Write `figure` to `path` as SVG, PDF or PNG (by its extension), rendered by plotly's kaleido (needs
    Chromium). `size` is the width: "column" (3.5 in), "page" (7 in) or inches; `height` is in CSS pixels
    (96 an inch; by default the figure's own). The labels are those on screen and the PDF embeds its fonts.
    PNG is written at twice the width in pixels, as the app's PNG export."""
    path = Path(path)
    extension = path.suffix.lower().lstrip(".")
    if extension in export.VECTOR_MIME:
        data = export.figure_vector(figure, extension, size, height)
    elif extension == "png":
        inches = export.PAPER_WIDTHS.get(size) if isinstance(size, str) else float(size)
        if inches is None:
            raise ValueError(f"Choose a width of 'column', 'page' or a number of inches, not {size!r}.")
        data = export.figure_png(figure, round(inches * export.CSS_PIXELS_PER_INCH), height)
    else:
        raise ValueError(f"Save a figure as .svg, .pdf or .png, not {path.name!r}.")
    path.write_bytes(data)
    return path
