"""The measured cache of a converted SmolLM2 (MLA: a latent per token and layer) equals the formula of the
converted layout, so the one measuring function serves the variants too."""

from explorer.kv import attention_layout, convert_layout, measure_kv_cache
from explorer.variants import VariantSpec, convert


def test_converted_mla_caches_what_the_formula_says(smollm2):
    converted = convert(smollm2, VariantSpec("mla", form="naive", latent_rank=128, svd="plain")).loaded
    layout = convert_layout(attention_layout(smollm2.config), "MLA", latent_rank=128, rope_head_dim=0)
    measured = measure_kv_cache(converted, tokens=24, batch=2, layout=layout)
    assert measured.tensor_count == 2 * 30  # the latent and the (empty, naive form) RoPE key of every layer
    assert measured.measured_bytes == measured.formula_bytes == 2 * 24 * 30 * 128 * 4
