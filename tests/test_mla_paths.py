"""The two MLA attention paths on a tiny random Llama whose q/k/v/o projections carry biases (`attention_bias`).

The absorbed path folds the up-projection's key and value biases in (a key bias shifts every score of a query
alike; a value bias passes through the attention weights, which sum to 1): in float64 it must equal the naive
path. Both kernels (materialised for pictures, fused for speed) must agree, and decoding must match a full pass.
"""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from explorer.catalogue import entry_for
from explorer.loading import LoadedModel
from explorer.variants import VariantSpec, convert
from explorer.variants.mla import side_by_side
from explorer.variants.report import absorbed_vs_naive
from tests.decoding import assert_cache_and_decoding


def biased_llama(dtype: torch.dtype) -> LoadedModel:
    """Two layers, 4 query heads over 2 KV heads of 16 dims, every attention bias random (std 0.5)."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, attention_bias=True, max_position_embeddings=256,
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(config).to(dtype)
    for name, parameter in model.named_parameters():
        if name.endswith("bias"):
            parameter.data.normal_(0.0, 0.5)
    model.eval().requires_grad_(False)
    return LoadedModel(entry_for("tiny-llama"), model, None, "decoder", torch.device("cpu"), dtype, 0.0)


def decoupled(path: str) -> VariantSpec:
    """A lossy DeepSeek form (rank 24 of 48): the paths must agree with each other, not with the original."""
    return VariantSpec("mla", form="decoupled", latent_rank=24, rope_dims=8, svd="plain", attn_path=path)


INPUT_IDS = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(1))  # (B, T)


@torch.inference_mode()
def test_absorbed_mla_keeps_the_value_bias_in_float64():
    loaded = biased_llama(torch.float64)
    logits = {path: convert(loaded, decoupled(path)).loaded.model(input_ids=INPUT_IDS).logits for path in
              ("naive", "absorb")}  # (B, T, V) each
    # before the value bias was folded in, the logits differed by 0.12 here
    torch.testing.assert_close(logits["absorb"], logits["naive"], rtol=0, atol=1e-12)
    assert absorbed_vs_naive(convert(loaded, decoupled("absorb")).loaded.model, INPUT_IDS) <= 1e-12


@torch.inference_mode()
@pytest.mark.parametrize("path", ["naive", "absorb"])
def test_the_fused_kernel_gives_the_materialised_kernels_outputs(path):
    loaded = biased_llama(torch.float64)
    model = convert(loaded, decoupled(path)).loaded.model
    materialised = model(input_ids=INPUT_IDS, output_attentions=True)
    model.set_attn_implementation("sdpa")
    fused = model(input_ids=INPUT_IDS)
    torch.testing.assert_close(fused.logits, materialised.logits, rtol=0, atol=1e-12)
    assert len(materialised.attentions) == 2 and materialised.attentions[0].shape == (2, 4, 12, 12)


def test_a_biased_absorbed_model_decodes_as_one_full_pass():
    loaded = biased_llama(torch.float32)
    spec = decoupled("absorb")
    assert_cache_and_decoding(convert(loaded, spec).loaded.model, loaded.config, spec, INPUT_IDS[:1], 3, atol=1e-4)


def test_a_latent_and_rope_key_side_by_side_are_read_without_a_copy():
    row = torch.randn(2, 1, 7, 24 + 8)  # (B, 1, S, r+dr): one cache row per token
    latent, k_pe = row[..., :24], row[..., 24:]  # views
    joined = side_by_side(latent, k_pe)
    assert joined.data_ptr() == row.data_ptr() and torch.equal(joined, row)
    apart = side_by_side(latent.clone(), k_pe.clone())  # separate tensors are concatenated
    assert apart.data_ptr() != row.data_ptr() and torch.equal(apart, row)
