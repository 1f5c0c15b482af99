"""Run a text through a loaded model and keep what the pictures need: tokens, attention, masks.

The result is plain numpy so that charts and pages never touch the model.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from explorer.catalogue import ModelKind
from explorer.config import read_config
from explorer.loading import LoadedModel
from explorer.prose import prose
from explorer.summaries import HeadSummaries, block_edges, block_labels, pool, summarise_layer

MAX_TOKENS = 512  # longest input drawn in full; longer text is truncated with a notice


@dataclass
class AttentionRun:
    """One forward pass: what the model saw and where every head looked."""

    text: str  # the text as given
    token_ids: list[int]  # what the model saw, special tokens included
    tokens: list[str]  # a readable label per token, same order as token_ids
    attentions: np.ndarray  # (L, H, T, T) float32: [layer, head, query, key], rows sum to 1
    masks: np.ndarray  # (L, T, T) bool: True where a query may attend to a key
    layer_windows: list[int | None]  # sliding window per layer (None: full attention)
    kind: ModelKind  # decoder (causal mask) or encoder (no mask)
    truncated: bool  # the text had more than `max_tokens` tokens and was cut
    forward_seconds: float  # wall time of the forward pass

    @property
    def num_layers(self) -> int:
        return self.attentions.shape[0]

    @property
    def num_heads(self) -> int:
        return self.attentions.shape[1]


def readable_tokens(tokenizer, token_ids: list[int]) -> list[str]:
    """One short label per token, as text rather than byte-level symbols ('Ġthe' -> 'the')."""
    labels = []
    for token_id in token_ids:
        text = tokenizer.decode([token_id])
        text = text.replace("\n", "↵").replace("\t", "⇥").strip()
        labels.append(text if text else "␣")
    return labels


def layer_windows(config) -> list[int | None]:
    """The sliding window of each layer (None where a layer attends to the whole prefix), by the one rule of
    `explorer.config.read_config`."""
    return list(read_config(config).layer_windows)


def attention_mask(kind: ModelKind, num_tokens: int, window: int | None) -> np.ndarray:
    """(T, T) bool: may query i attend to key j? Causal for decoders, banded by a sliding window."""
    if kind == "encoder":
        return np.ones((num_tokens, num_tokens), dtype=bool)
    query = np.arange(num_tokens)[:, None]
    key = np.arange(num_tokens)[None, :]
    allowed = key <= query
    if window is not None:
        allowed &= query - key < window
    return allowed


def encode(loaded: LoadedModel, text: str, max_tokens: int = MAX_TOKENS) -> tuple[list[int], bool]:
    """Token ids for `text` (special tokens as the model expects them), cut to `max_tokens`."""
    token_ids = loaded.tokenizer(text)["input_ids"]
    if len(token_ids) <= max_tokens:
        return token_ids, False
    return token_ids[:max_tokens], True


@torch.inference_mode()
def run_attention(loaded: LoadedModel, text: str, max_tokens: int = MAX_TOKENS) -> AttentionRun:
    """Run `text` through the model once and collect every layer's attention probabilities."""
    if not text.strip():
        raise ValueError("The text is empty: type a sentence to see where the model attends.")
    token_ids, truncated = encode(loaded, text, max_tokens)
    input_ids = torch.tensor([token_ids], device=loaded.device)  # (1, T)
    started = time.perf_counter()
    outputs = loaded.model(input_ids=input_ids, output_attentions=True)
    forward_seconds = time.perf_counter() - started
    if not outputs.attentions:
        raise RuntimeError("The model returned no attention weights; load it with eager attention.")
    attentions = torch.stack(outputs.attentions)[:, 0].float().cpu().numpy()  # (L, H, T, T)
    windows = layer_windows(loaded.config)
    masks = np.stack([attention_mask(loaded.kind, len(token_ids), w) for w in windows])  # (L, T, T)
    return AttentionRun(
        text=text,
        token_ids=token_ids,
        tokens=readable_tokens(loaded.tokenizer, token_ids),
        attentions=attentions,
        masks=masks,
        layer_windows=windows,
        kind=loaded.kind,
        truncated=truncated,
        forward_seconds=forward_seconds,
    )


# --- Long inputs: keep pooled blocks and per-head summaries, not every weight ---------------------------------

MAX_LONG_TOKENS = 2048  # the longest context the overview accepts (a 2048-token eager pass needs ~150 MB a layer)
OVERVIEW_CELLS = 24  # blocks per side of each head's tile in the all-heads overview
KEEP_BYTES = 150 * 2**20  # keep every layer in float16 up to this size (SmolLM2: 512 tokens); beyond, recompute


@dataclass
class AttentionOverview:
    """One forward pass, reduced as it runs: pooled tiles and summaries for every head, full weights if small."""

    text: str  # the text as given
    token_ids: list[int]  # what the model saw, special tokens included
    tokens: list[str]  # a readable label per token
    pooled: np.ndarray  # (L, H, n, n) float32: mean attention of a block of queries to a block of keys
    block_edges: np.ndarray  # (n + 1,) int: block b covers tokens [edges[b], edges[b + 1])
    summaries: HeadSummaries  # entropy, first-token share and mean distance, each (L, H)
    kept: np.ndarray | None  # (L, H, T, T) float16 when it fits in KEEP_BYTES, else None (see layer_attention)
    layer_windows: list[int | None]  # sliding window per layer (None: full attention)
    kind: ModelKind  # decoder (causal mask) or encoder (no mask)
    truncated: bool  # the text had more than `max_tokens` tokens and was cut
    forward_seconds: float  # wall time of the forward pass, reductions included

    @property
    def num_layers(self) -> int:
        return self.pooled.shape[0]

    @property
    def num_heads(self) -> int:
        return self.pooled.shape[1]

    @property
    def block_labels(self) -> list[str]:
        """One label per pooled block: its token, or its range of positions."""
        return block_labels(self.tokens, self.block_edges)

    def mask(self, layer: int) -> np.ndarray:
        """(T, T) bool: the layer's attention mask."""
        return attention_mask(self.kind, len(self.tokens), self.layer_windows[layer])


def fill_with_prose(text: str, num_tokens: int) -> str:
    """`text` followed by news prose from the evaluation text, long enough for `num_tokens` tokens (cut later)."""
    chars = num_tokens * 8  # English prose runs at ~4-5 characters a token: 8 always leaves enough
    return f"{text.strip()}\n\n{prose('evaluation')[:chars]}"


def attention_modules(model: torch.nn.Module) -> tuple[list[torch.nn.Module], int]:
    """The modules whose outputs transformers records as `attentions`, in layer order, and where in their
    output tuple the probabilities sit. Hooks on them see each layer's weights while the pass runs."""
    from transformers.utils.output_capturing import OutputRecorder

    spec = None
    for module in model.modules():
        spec = (getattr(module, "_can_record_outputs", None) or {}).get("attentions")
        if spec is not None:
            break
    if spec is None:
        raise ValueError(f"{type(model).__name__} does not say which modules produce its attention weights.")
    if not isinstance(spec, OutputRecorder):
        spec = OutputRecorder(target_class=spec, index=1)  # transformers' own default for attentions
    modules = [m for m in model.modules() if isinstance(m, spec.target_class)]
    return modules, spec.index


@torch.inference_mode()
def overview_attention(
    loaded: LoadedModel,
    text: str,
    max_tokens: int = MAX_LONG_TOKENS,
    cells: int = OVERVIEW_CELLS,
    keep_bytes: int = KEEP_BYTES,
) -> AttentionOverview:
    """Run `text` once; as each layer's (H, T, T) weights appear, pool them, summarise them, and let them go.

    Peak memory is one layer's weights instead of all of them: 37 MB instead of 1.1 GB for SmolLM2 at 1024.
    All layers are also kept in float16 when they fit in `keep_bytes`, so that changing layer costs nothing.
    """
    if loaded.kind == "encoder-decoder":
        raise ValueError("This is an encoder-decoder model: open the Cross-attention page to see it.")
    if not text.strip():
        raise ValueError("The text is empty: type a sentence to see where the model attends.")
    token_ids, truncated = encode(loaded, text, max_tokens)
    num_tokens = len(token_ids)
    limit = getattr(loaded.config, "max_position_embeddings", None)
    if limit is not None and num_tokens > limit:
        raise ValueError(f"{loaded.name} reads at most {limit} tokens; choose a context of {limit} tokens or fewer.")
    modules, index = attention_modules(loaded.model)
    num_layers, num_heads = len(modules), loaded.config.num_attention_heads
    keep = num_layers * num_heads * num_tokens**2 * 2 <= keep_bytes  # float16: 2 bytes
    edges = block_edges(num_tokens, cells)
    pooled = np.zeros((num_layers, num_heads, len(edges) - 1, len(edges) - 1), dtype=np.float32)  # (L, H, n, n)
    kept = np.zeros((num_layers, num_heads, num_tokens, num_tokens), dtype=np.float16) if keep else None
    entropy, first_token, distance = (np.zeros((num_layers, num_heads), dtype=np.float32) for _ in range(3))

    # The hooks sit on the shared model, where another session's pass may run at the same time (in its own
    # thread): each hook takes only the weights of the pass that registered it.
    owner = threading.get_ident()

    def reduce(layer: int, probabilities: torch.Tensor) -> None:
        if threading.get_ident() != owner:
            return
        weights = probabilities[0].float().cpu().numpy()  # (H, T, T)
        pooled[layer] = pool(weights, cells)
        entropy[layer], first_token[layer], distance[layer] = summarise_layer(weights)
        if kept is not None:
            kept[layer] = weights

    hooks = [
        module.register_forward_hook(lambda _m, _in, out, layer=layer: reduce(layer, out[index]))
        for layer, module in enumerate(modules)
    ]
    started = time.perf_counter()
    try:
        loaded.model(input_ids=torch.tensor([token_ids], device=loaded.device))
    finally:
        for hook in hooks:
            hook.remove()
    return AttentionOverview(
        text=text,
        token_ids=token_ids,
        tokens=readable_tokens(loaded.tokenizer, token_ids),
        pooled=pooled,
        block_edges=edges,
        summaries=HeadSummaries(entropy=entropy, first_token=first_token, distance=distance),
        kept=kept,
        layer_windows=layer_windows(loaded.config),
        kind=loaded.kind,
        truncated=truncated,
        forward_seconds=time.perf_counter() - started,
    )


class _LayerCaptured(Exception):
    """Raised by the capturing hook to stop a forward pass once the wanted layer has run."""


@torch.inference_mode()
def layer_attention(loaded: LoadedModel, overview: AttentionOverview, layer: int) -> np.ndarray:
    """(H, T, T) float32: one layer's full weights, from the kept copy or from a pass that stops after it."""
    if not 0 <= layer < overview.num_layers:
        last = overview.num_layers - 1
        raise ValueError(f"This model has {overview.num_layers} layers; choose a layer from 0 to {last}.")
    if overview.kept is not None:
        return overview.kept[layer].astype(np.float32)
    modules, index = attention_modules(loaded.model)
    captured = {}
    owner = threading.get_ident()  # as in overview_attention: ignore passes of other sessions

    def capture(_module, _inputs, outputs):
        if threading.get_ident() != owner:
            return
        captured["weights"] = outputs[index][0].float().cpu().numpy()  # (H, T, T)
        raise _LayerCaptured  # later layers cannot change this one: skip them

    hook = modules[layer].register_forward_hook(capture)
    try:
        loaded.model(input_ids=torch.tensor([overview.token_ids], device=loaded.device))
    except _LayerCaptured:
        pass
    finally:
        hook.remove()
    return captured["weights"]


# --- Encoder-decoder models: encoder self-attention, decoder causal self-attention, cross-attention ------------

MAX_NEW_TOKENS = 24  # how much the model writes when no decoder text is given


@dataclass
class CrossAttentionRun:
    """One encoder-decoder pass: the three kinds of attention, each (layers, heads, query, key)."""

    source_tokens: list[str]  # what the encoder read
    target_tokens: list[str]  # what the decoder read: its start token, then the output
    encoder: np.ndarray  # (Le, H, S, S) encoder self-attention: bidirectional, no mask
    decoder: np.ndarray  # (Ld, H, T, T) decoder self-attention: causal, upper triangle is zero
    cross: np.ndarray  # (Ld, H, T, S) decoder -> encoder: each output token's weights over the input
    generated: bool  # True when the decoder text is the model's own greedy output
    truncated: bool  # the source text had more than `max_tokens` tokens and was cut


@torch.inference_mode()
def run_cross_attention(
    loaded: LoadedModel, source: str, target: str = "", max_tokens: int = 128, max_new_tokens: int = MAX_NEW_TOKENS
) -> CrossAttentionRun:
    """Run `source` through the encoder and `target` (or, when empty, the model's own greedy output) through
    the decoder with teacher forcing, and collect all three kinds of attention."""
    if loaded.kind != "encoder-decoder":
        raise ValueError(
            f"{loaded.name} is a {loaded.kind}, with no cross-attention: choose an encoder-decoder "
            "such as google-t5/t5-small, facebook/bart-base or Helsinki-NLP/opus-mt-en-de."
        )
    if not source.strip():
        raise ValueError("The text is empty: type a sentence for the encoder to read.")
    source_ids, truncated = encode(loaded, source, max_tokens)
    input_ids = torch.tensor([source_ids], device=loaded.device)  # (1, S)
    start = loaded.config.decoder_start_token_id
    if target.strip():
        target_ids = [start] + loaded.tokenizer(text_target=target)["input_ids"][:max_tokens]
        decoder_ids = torch.tensor([target_ids], device=loaded.device)  # (1, T)
    else:
        decoder_ids = loaded.model.generate(input_ids, max_new_tokens=max_new_tokens, do_sample=False)  # (1, T)
    outputs = loaded.model(input_ids=input_ids, decoder_input_ids=decoder_ids, output_attentions=True)
    stack = lambda layers: torch.stack(layers)[:, 0].float().cpu().numpy()  # noqa: E731  (L, H, q, k)
    return CrossAttentionRun(
        source_tokens=readable_tokens(loaded.tokenizer, source_ids),
        target_tokens=readable_tokens(loaded.tokenizer, decoder_ids[0].tolist()),
        encoder=stack(outputs.encoder_attentions),
        decoder=stack(outputs.decoder_attentions),
        cross=stack(outputs.cross_attentions),
        generated=not target.strip(),
        truncated=truncated,
    )
