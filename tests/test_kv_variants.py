"""The measured cache of a converted SmolLM2 (MLA: a latent per token and layer) equals the formula of the
converted layout, so the one measuring function serves the variants too."""

from explorer.config import read_config
from explorer.kv import measure_kv_cache
from explorer.variants import VariantSpec, cached_layout, convert


def test_converted_mla_caches_what_the_formula_says(smollm2):
    spec = VariantSpec("mla", form="naive", latent_rank=128, svd="plain")
    converted = convert(smollm2, spec).loaded
    layout = cached_layout(spec, read_config(smollm2.config))
    assert (layout.attention, layout.latent_rank, layout.rope_head_dim) == ("mla", 128, 0)
    measured = measure_kv_cache(converted.model, layout, tokens=24, batch=2)
    assert measured.tensor_count == 2 * 30  # the latent and the (empty, naive form) RoPE key of every layer
    assert measured.measured_bytes == measured.formula_bytes == 2 * 24 * 30 * 128 * 4
