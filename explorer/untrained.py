"""A tiny encoder-decoder with random weights, built offline in a second, so cross-attention can be shown
without the network.

Its pictures show the mechanics (shapes, masks, a rectangle of decoder × encoder weights), not anything
learned: it is labelled "untrained (random weights)" wherever it appears. Online, any hub encoder-decoder
(T5, BART, Marian) loads through `explorer.loading.load_model` instead.
"""

from __future__ import annotations

import time

import torch

from explorer.catalogue import CATALOGUE, ModelEntry
from explorer.loading import LoadedModel, ModelLoadError

UNTRAINED_KEY = "tiny-t5-untrained"
UNTRAINED_NOTE = "untrained (random weights)"

ENTRY = ModelEntry(
    key=UNTRAINED_KEY,
    label=f"Tiny T5, {UNTRAINED_NOTE}",
    kind="encoder-decoder",
    description="T5 architecture with 2 encoder and 2 decoder layers, 4 heads, width 64 and random weights; "
    "all-MiniLM-L6-v2's tokenizer. It shows the shape of cross-attention, not what a trained model learns.",
    # The tokenizer is the only file it reads: MiniLM's, from its package.
    source="safetensors-package",
    package=CATALOGUE["minilm"].package,
    package_file=CATALOGUE["minilm"].package_file,
    install_hint=CATALOGUE["minilm"].install_hint,
)


def tiny_encoder_decoder(seed: int = 0) -> LoadedModel:
    """A 2 + 2 layer T5 with random weights (fixed by `seed`) and MiniLM's WordPiece tokenizer, on the CPU."""
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    started = time.perf_counter()
    folder = ENTRY.package_path()
    if folder is None:
        raise ModelLoadError(
            f"The tiny model borrows MiniLM's tokenizer, which is not installed. To enable it: {ENTRY.install_hint}."
        )
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=64,
        d_kv=16,  # per-head width: 4 heads × 16 = 64
        d_ff=128,
        num_layers=2,  # encoder layers
        num_decoder_layers=2,
        num_heads=4,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,  # T5's convention: the decoder starts from the pad token
    )
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    model.set_attn_implementation("eager")  # SDPA would return no attention weights
    model.eval().requires_grad_(False)
    return LoadedModel(
        entry=ENTRY,
        model=model,
        tokenizer=tokenizer,
        kind="encoder-decoder",
        device=torch.device("cpu"),
        dtype=torch.float32,
        load_seconds=time.perf_counter() - started,
    )


def is_untrained(loaded: LoadedModel) -> bool:
    """Whether the model's weights are random (its pictures must say so)."""
    return loaded.entry.key == UNTRAINED_KEY
