"""A tiny random Llama with SmolLM2's real tokenizer, so conversions and training read real prose quickly."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from explorer.catalogue import ModelEntry
from explorer.loading import LoadedModel


def tiny_llama(tokenizer, key: str, layers: int = 2, dtype: torch.dtype = torch.float32,
               max_positions: int = 512) -> LoadedModel:
    """`layers` layers, 4 query heads over 2 KV heads of 16 dims (width 64), random weights (seed 0), eager."""
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(dtype)
    model.set_attn_implementation("eager")
    model.eval().requires_grad_(False)
    entry = ModelEntry(key=key, label="Tiny Llama (random weights)", kind="decoder",
                       description=f"{layers} layers, 4 query heads, 2 KV heads, width 64", source="hub")
    return LoadedModel(entry, model, tokenizer, "decoder", torch.device("cpu"), dtype, 0.0)
