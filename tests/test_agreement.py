"""The modules agree, for every reference config and every variant: the memory guard's cache estimate equals the
one formula (explorer.kv), which equals the variant spec's per-token values, and the bytes measured on the
embedded SmolLM2 in each variant."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer import guard
from explorer.config import read_config, reference_models
from explorer.dtypes import dtype_of_bytes
from explorer.kv import kv_cache_size, measure_kv_cache, values_per_layer
from explorer.variants import VariantSpec, cached_layout, convert
from explorer.variants.spec import AttentionShape, cache_values_per_token

DECODERS = {name: read_config(config, name) for name, config in reference_models().items()
            if read_config(config).is_decoder}


@st.composite
def model_and_spec(draw):
    """A reference decoder and a variant spec its shape allows (converted models cache no sliding windows)."""
    model = DECODERS[draw(st.sampled_from(sorted(DECODERS)))]
    shape = AttentionShape.of(model)
    if model.attention == "mla":  # already MLA: compare it as built
        return model, VariantSpec("original")
    variant = draw(st.sampled_from(["original", "mha", "gqa", "mqa", "mla"]))
    if variant == "gqa":
        reachable = [n for n in range(1, shape.heads + 1)
                     if shape.heads % n == 0 and (shape.kv_heads % n == 0 or n % shape.kv_heads == 0)]
        return model, VariantSpec("gqa", kv_heads=draw(st.sampled_from(reachable)))
    if variant != "mla":
        return model, VariantSpec(variant)
    form = draw(st.sampled_from(["naive", "decoupled"]))
    rope = draw(st.integers(0, shape.head_dim // 2)) * 2 if form == "decoupled" else 32
    full = shape.kv_heads * (2 * shape.head_dim - (rope if form == "decoupled" else 0))
    return model, VariantSpec("mla", form=form, rope_dims=rope, latent_rank=draw(st.integers(1, full)))


@settings(max_examples=150, deadline=None)
@given(model_and_spec(), st.integers(1, 4096), st.sampled_from([4, 2, 1]))
def test_guard_estimate_equals_the_formula_and_the_spec(drawn, tokens, value_bytes):
    model, spec = drawn
    layout = cached_layout(spec, model)
    formula = kv_cache_size(layout, tokens, 1, dtype_of_bytes(value_bytes)).kv_cache_bytes
    assert guard.estimate_run(layout, tokens, value_bytes).kv_cache_bytes == formula
    per_token = cache_values_per_token(spec, model)
    assert per_token == list(values_per_layer(layout))
    cached = kv_cache_size(layout, tokens).cached_tokens_per_layer  # a sliding layer holds at most its window
    assert formula == sum(n * values for n, values in zip(cached, per_token)) * value_bytes


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_the_guard_reads_each_reference_as_the_formula_does(name):
    config = reference_models()[name]
    assert guard.estimate_run(config, 300, 2).kv_cache_bytes == kv_cache_size(read_config(config), 300).kv_cache_bytes


SMOLLM2_VARIANTS = [
    VariantSpec("original"), VariantSpec("mha"), VariantSpec("mqa"), VariantSpec("gqa", kv_heads=9),
    VariantSpec("mla", latent_rank=96, svd="plain"),
]


@pytest.fixture(scope="module")
def smollm2_variants(smollm2):
    return {spec: convert(smollm2, spec).loaded.model for spec in SMOLLM2_VARIANTS}


@pytest.mark.parametrize("spec", SMOLLM2_VARIANTS, ids=VariantSpec.label)
def test_measured_on_smollm2_equals_the_formula_and_the_guard(smollm2, smollm2_variants, spec):
    layout = cached_layout(spec, read_config(smollm2.config))
    for tokens, batch in ((1, 1), (29, 2)):
        measured = measure_kv_cache(smollm2_variants[spec], layout, tokens, batch)
        assert measured.measured_bytes == measured.formula_bytes
        assert measured.formula_bytes == batch * guard.estimate_run(layout, tokens, 4).kv_cache_bytes
